"""The service's scoring state: one immutable ``ScoringContext`` (model + store version), swapped off the request
path."""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from models.registry.artifacts import CHAMPION, MODEL_NAME
from models.scoring.advice import AdviceConfig
from models.scoring.context import DEFAULT_MAX_DATA_AGE_HOURS, ScoringContext, load_scoring_context

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
    #: Past this many hours between the store's newest event and the scored time, scores say
    #: ``stale_history`` and ``/readyz`` says degraded (a stalled ingest silently lowers scores).
    max_data_age_hours: float = DEFAULT_MAX_DATA_AGE_HOURS
    dependencies: Path | None = None  # dependencies.yaml or a Backstage catalog, for incident suspects
    advice: AdviceConfig = field(default_factory=AdviceConfig)  # which actions ``advice: true`` evaluates
    log_predictions: bool = True  # every score into the prediction log (models/monitoring/predlog.py)
    prediction_log_dir: Path | None = None  # None: <store_dir>/../predictions, beside the store
    prediction_flush_seconds: float = 5.0  # the most a crash loses


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
    """Holds the current ``ScoringContext`` and refreshes it when the store or the registry alias moved."""

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.snapshot: ScoringContext | None = None
        self.last_error: str | None = None
        self._lock = threading.Lock()  # one refresh at a time; requests never take it
        self._on_swap: list[Callable[[ScoringContext], None]] = []

    def on_swap(self, hook: Callable[[ScoringContext], None]) -> None:
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
        current = self.snapshot
        snap = load_scoring_context(cfg.store_dir, cfg.model_name, cfg.alias, client, current)
        if snap is current:
            return False
        self.snapshot = snap  # the swap: one reference assignment
        _settle_heap()
        for hook in self._on_swap:
            hook(snap)
        log.info("serving %s v%s on store version %d", cfg.model_name, snap.bundle.info.version, snap.store_version)
        return True
