"""The service's scoring state: one immutable snapshot (model + store version), swapped off the request path."""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from features.history.schema import History
from features.history.store import HistoryStore
from features.labels.attribution import attribute
from models.registry.artifacts import CHAMPION, MODEL_NAME
from models.scoring.context import (
    FeatureIndex,
    ModelBundle,
    build_feature_index,
    champion_version,
    feature_medians,
    load_bundle,
)

log = logging.getLogger("incident_risk.service")


@dataclass(frozen=True)
class ServiceConfig:
    """Where the service reads from and how it behaves; passed to ``create_app``."""

    store_dir: Path
    tracking_uri: str | None = None  # None: MLflow's own resolution (MLFLOW_TRACKING_URI)
    model_name: str = MODEL_NAME
    alias: str = CHAMPION
    refresh_seconds: float = 30.0
    max_body_bytes: int = 1_000_000
    tokens: tuple[str, ...] = ()  # empty: no auth
    top_factors: int = 6
    log_predictions: bool = True  # every score into the prediction log (models/monitoring/predlog.py)
    prediction_log_dir: Path | None = None  # None: <store_dir>/../predictions, beside the store
    prediction_flush_seconds: float = 5.0  # the most a crash loses


@dataclass(frozen=True)
class Snapshot:
    """Everything one request needs; never mutated, only replaced."""

    bundle: ModelBundle
    index: FeatureIndex
    history: History
    store_version: int
    loaded_at: float


def _settle_heap() -> None:
    """Keep the long-lived snapshot out of the garbage collector's way.

    A snapshot holds millions of objects (history frames, indexes); every full collection would
    traverse them all, stalling requests for tens to hundreds of milliseconds — the p99. After a
    swap, unfreeze (so the replaced snapshot can be freed), collect once here in the refresh
    thread, then freeze what survives: later collections only scan what requests allocate.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


class ScoringState:
    """Holds the current ``Snapshot`` and refreshes it when the store or the registry alias moved."""

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.snapshot: Snapshot | None = None
        self.last_error: str | None = None
        self._lock = threading.Lock()  # one refresh at a time; requests never take it
        self._on_swap: list[Callable[[Snapshot], None]] = []

    def on_swap(self, hook: Callable[[Snapshot], None]) -> None:
        """Call ``hook`` with every new snapshot (and now, with the current one if there is one)."""
        self._on_swap.append(hook)
        if self.snapshot is not None:
            hook(self.snapshot)

    def refresh(self) -> bool:
        """Rebuild what changed and swap it in; True when a new snapshot was installed.

        Failures keep the current snapshot (a broken new model or store never takes the service down).
        """
        with self._lock:
            try:
                changed = self._refresh()
                self.last_error = None
                return changed
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("refresh failed, keeping the current model and store view: %s", self.last_error)
                raise

    def _refresh(self) -> bool:
        from mlflow import MlflowClient

        cfg = self.config
        client = MlflowClient(tracking_uri=cfg.tracking_uri) if cfg.tracking_uri else MlflowClient()
        target = champion_version(client, cfg.model_name, cfg.alias)
        if target is None:
            raise LookupError(f"no model version has the alias {cfg.model_name}@{cfg.alias}")
        store = HistoryStore(cfg.store_dir)
        manifest = store.manifest()
        current = self.snapshot
        same_model = current is not None and current.bundle.info.version == target[0]
        if same_model and current is not None and current.store_version == manifest.version:
            return False
        bundle = (
            current.bundle
            if same_model and current is not None
            else load_bundle(client, cfg.model_name, target[0], cfg.alias)
        )
        if current is not None and current.store_version == manifest.version:
            history = current.history
        else:
            history = History(*(store.read(t, manifest) for t in ("deploys", "toggle_events", "incidents")))
        labels = attribute(history, bundle.attribution_config).deploy_labels
        if bundle.needs_medians:
            bundle = bundle.with_medians(feature_medians(history, labels, bundle.feature_config, bundle.scorer.numeric))
        index = build_feature_index(history, labels, bundle.feature_config)
        snap = Snapshot(bundle, index, history, manifest.version, time.time())
        self.snapshot = snap  # the swap: one reference assignment
        _settle_heap()
        for hook in self._on_swap:
            hook(snap)
        log.info("serving %s v%s on store version %d", cfg.model_name, bundle.info.version, manifest.version)
        return True
