"""The scoring context: the champion bundle and the store's history prepared once for point-in-time features.

``load_scoring_context`` is the one way the HTTP service, the CI gate's local mode and the batch flow
get what scoring needs (champion bundle, store version, labels, feature index, the store's data end).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.history.schema import History
from features.history.store import HistoryStore
from features.labels.attribution import AttributionConfig, attribute, data_end
from features.labels.dora import team_lookup
from features.pointintime.compute import (
    EntityArrays,
    FeatureConfig,
    PreparedHistory,
    build_features,
    compute_features,
    prepare_history,
)
from models.scoring.compiled import FastScorer, compile_fast_scorer
from models.scoring.upcoming import _SIZE_COLUMNS, UpcomingDeploy
from models.training.estimators import RiskModel


@dataclass(frozen=True)
class FeatureIndex:
    """The store's history prepared once per refresh (``features.pointintime.compute.prepare_history``), for one
    ``FeatureConfig``, and each service's teams for filling a request's squad and tribe.

    A request only runs ``compute_features`` on one row against it: the training build's own code,
    so serving cannot drift from training (``tests/test_scoring_features.py`` checks every deploy).
    """

    prepared: PreparedHistory
    teams: Mapping[str, tuple[str | None, str | None]]

    @property
    def config(self) -> FeatureConfig:
        return self.prepared.config

    @property
    def n_deploys(self) -> int:
        return self.prepared.n_deploys


def build_feature_index(history: History, deploy_labels: pd.DataFrame, config: FeatureConfig) -> FeatureIndex:
    """Index ``history`` (and its labels, usable once matured) for one-row feature queries."""
    return FeatureIndex(prepared=prepare_history(history, deploy_labels, config), teams=team_lookup(history.deploys))


def entity_features(
    index: FeatureIndex, deploy: UpcomingDeploy, extra_columns: Sequence[str] = ()
) -> tuple[dict[str, float], dict[str, str]]:
    """(numeric, categorical) features of one deploy; ``build_features`` on a one-row frame, minus pandas.

    ``extra_columns`` are ``extra_*`` inputs wanted as columns even when the deploy lacks them (then
    missing), as ``batch_features`` adds the model's to a frame.
    """
    features = compute_features(index.prepared, EntityArrays.from_mapping(_entity_row(deploy, extra_columns)))
    numeric = {name: float(values[0]) for name, values in features.numeric.items()}
    return numeric, {name: str(values[0]) for name, values in features.categorical.items()}


def _entity_row(deploy: UpcomingDeploy, extra_columns: Sequence[str]) -> dict[str, Any]:
    """The deploy as the entity columns the features read (what ``deploys_frame`` makes of it)."""
    return {
        "created_at": deploy.micros,
        "service": deploy.service,
        "author": deploy.author,
        "squad": deploy.squad,
        "tribe": deploy.tribe,
        **{c: getattr(deploy, c) for c in (*_SIZE_COLUMNS, "touches_infra", "is_rollback")},
        **dict.fromkeys(extra_columns),
        **deploy.extra,
    }


@dataclass(frozen=True)
class ModelInfo:
    """Where the model came from: registry name, version and alias, its run, training time and test metrics."""

    name: str
    version: str
    run_id: str | None = None
    alias: str | None = None
    trained_at: str | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "run_id": self.run_id, "alias": self.alias}


@dataclass(frozen=True)
class ModelBundle:
    """A fitted model with everything scoring needs: the compiled scorer and the configs it was trained with."""

    model: RiskModel
    scorer: FastScorer
    info: ModelInfo
    feature_config: FeatureConfig
    attribution_config: AttributionConfig
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def needs_medians(self) -> bool:
        """A tree model saved without training medians: explanations need them from the store."""
        return self.scorer.trees is not None and not self.metadata.get("feature_medians")

    def with_medians(self, medians: Mapping[str, float]) -> ModelBundle:
        return replace(self, scorer=compile_fast_scorer(self.model, medians))


def make_bundle(
    model: RiskModel,
    info: ModelInfo,
    metadata: Mapping[str, Any] | None = None,
    reference: Mapping[str, float] | None = None,
) -> ModelBundle:
    """Bundle a fitted model; its configs come from ``metadata`` (the registry's serving metadata), else
    ``model.metadata``, else the defaults."""
    meta = dict(metadata if metadata is not None else (model.metadata or {}))
    medians = {**dict(meta.get("feature_medians") or {}), **dict(reference or {})}
    return ModelBundle(
        model=model,
        scorer=compile_fast_scorer(model, medians),
        info=info,
        feature_config=feature_config_from(meta.get("feature_config")),
        attribution_config=attribution_config_from(meta.get("attribution_config")),
        metadata=meta,
    )


def champion_version(client: Any, name: str, alias: str) -> tuple[str, str | None] | None:
    """(version, run id) the alias points at, or None when it points nowhere (cheap: one registry query)."""
    from mlflow.exceptions import MlflowException

    try:
        mv = client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None
    return str(mv.version), mv.run_id


def load_bundle(client: Any, name: str, version: str, alias: str | None = None) -> ModelBundle:
    """A registered model version with its serving metadata (loaded with the registry's trust list)."""
    from mlflow.models import get_model_info

    from models.registry.artifacts import load_model

    uri = f"models:/{name}/{version}"
    mv = client.get_model_version(name, version)
    model = load_model(uri)
    meta = dict(get_model_info(uri).metadata or {})
    metrics = {k: float(v) for k, v in (meta.get("test_metrics") or {}).items() if v is not None}
    info = ModelInfo(name, str(version), mv.run_id, alias, meta.get("trained_at"), metrics)
    return make_bundle(model, info, meta)


def feature_config_from(value: Any) -> FeatureConfig:
    """A ``FeatureConfig`` from itself, a dict of its fields (``models.training.dataset.config_dict``) or None."""
    if value is None:
        return FeatureConfig()
    if isinstance(value, FeatureConfig):
        return value
    data = dict(value)
    for key in ("history_environments", "business_hours", "extra_columns"):
        if data.get(key) is not None:
            data[key] = tuple(data[key])
    known = {f.name for f in fields(FeatureConfig)}
    return FeatureConfig(**{k: v for k, v in data.items() if k in known})


def attribution_config_from(value: Any) -> AttributionConfig:
    """An ``AttributionConfig`` from itself, a dict of its fields (timedeltas as text) or None."""
    if value is None:
        return AttributionConfig()
    if isinstance(value, AttributionConfig):
        return value
    data = dict(value)
    for key in ("max_lag", "maturity_window"):
        if isinstance(data.get(key), str) and data[key].lower() not in ("none", "null"):
            data[key] = pd.Timedelta(data[key])
        elif isinstance(data.get(key), str):
            data[key] = None
    known = {f.name for f in fields(AttributionConfig)}
    return AttributionConfig(**{k: v for k, v in data.items() if k in known})


def feature_medians(
    history: History, deploy_labels: pd.DataFrame, config: FeatureConfig, numeric: Sequence[str], limit: int = 20_000
) -> dict[str, float]:
    """Median of each numeric feature over the latest ``limit`` counted deploys of the history.

    Stands in for the training medians when a tree model was saved without them: the store's deploys
    are what the model was trained on (see ``compile_fast_scorer``).
    """
    deploys = history.deploys
    keep = deploys["environment"].astype("string").isin(list(config.history_environments)).fillna(False)
    entities = deploys.loc[keep.to_numpy(dtype=bool)].sort_values("created_at", kind="stable").tail(limit)
    if not len(entities):
        return {}
    table = build_features(entities, history, deploy_labels, config)
    return {c: float(np.nanmedian(table[c].to_numpy(dtype=np.float64))) for c in numeric if c in table}


#: How old the store's newest event may be, relative to the scored time, before scores are flagged stale.
DEFAULT_MAX_DATA_AGE_HOURS = 72.0


@dataclass(frozen=True)
class ScoringContext:
    """Everything scoring needs, of one champion version and one store version; never mutated, only replaced."""

    bundle: ModelBundle
    index: FeatureIndex
    history: History
    labels: pd.DataFrame
    store_version: int
    data_end: pd.Timestamp | None
    loaded_at: float

    def data_age_hours(self, at: pd.Timestamp) -> float | None:
        """Hours from the store's newest event to ``at`` (None for an empty store)."""
        if self.data_end is None:
            return None
        return float((at - self.data_end) / pd.Timedelta(hours=1))

    def is_stale(self, at: pd.Timestamp, max_age_hours: float) -> bool:
        """True when scoring at ``at`` would rest on a history that ended more than ``max_age_hours`` before."""
        age = self.data_age_hours(at)
        return age is None or age > max_age_hours


class ScoringUnavailable(LookupError):
    """No model version has the alias: nothing can be scored (the gate's exit 4, the service's 503)."""


def load_scoring_context(
    store_dir: Path,
    model_name: str,
    alias: str,
    client: Any = None,
    previous: ScoringContext | None = None,
) -> ScoringContext:
    """The scoring context of ``model_name@alias`` on the store's current version.

    Returns ``previous`` itself when neither the alias nor the store moved; otherwise reuses what
    did not change (the loaded bundle, the read history). ``client``: an ``MlflowClient`` (default:
    MLflow's own tracking URI resolution).
    """
    if client is None:
        from mlflow import MlflowClient

        client = MlflowClient()
    target = champion_version(client, model_name, alias)
    if target is None:
        raise ScoringUnavailable(f"no model version has the alias {model_name}@{alias}; train one first")
    store = HistoryStore(store_dir)
    manifest = store.manifest()
    same_model = previous is not None and previous.bundle.info.version == target[0]
    same_store = previous is not None and previous.store_version == manifest.version
    if previous is not None and same_model and same_store:
        return previous
    bundle = (
        previous.bundle if previous is not None and same_model else load_bundle(client, model_name, target[0], alias)
    )
    history = previous.history if previous is not None and same_store else store.read_history(manifest)
    return make_scoring_context(bundle, history, manifest.version)


def make_scoring_context(
    bundle: ModelBundle, history: History, store_version: int, labels: pd.DataFrame | None = None
) -> ScoringContext:
    """Label ``history`` with the bundle's attribution rule (unless ``labels`` are given: monitoring labels
    as of a past day) and index it for its feature config."""
    if labels is None:
        labels = attribute(history, bundle.attribution_config).deploy_labels
    if bundle.needs_medians:
        bundle = bundle.with_medians(feature_medians(history, labels, bundle.feature_config, bundle.scorer.numeric))
    return ScoringContext(
        bundle=bundle,
        index=build_feature_index(history, labels, bundle.feature_config),
        history=history,
        labels=labels,
        store_version=store_version,
        data_end=data_end(history),
        loaded_at=time.time(),
    )
