"""Shared builders for the scoring, service and gate tests (a simulated history, fitted models, a champion).

A small simulated history (``features.simulation.simulator``), models fitted on its point-in-time training table
through models' own code (``build_training_table``, ``make_classifier``, ``RiskModel``), and the
registry's own logging and registration, so the service loads exactly what training would register.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.history.store import HistoryStore
from features.labels.attribution import AttributionConfig
from features.pointintime.compute import FeatureConfig
from features.simulation.simulator import SimulatedHistory, SimulationConfig, simulate
from models.training.config import TrainConfig
from models.training.dataset import build_training_table, config_dict
from models.training.estimators import RiskModel
from models.training.train import LABEL, TrainingTable, make_classifier

ATTRIBUTION = AttributionConfig()
FEATURES = FeatureConfig(service_timezones={"reviews-svc": "Europe/Berlin"})
PARAMS: dict[str, dict[str, Any]] = {
    "logreg": {"C": 0.3},
    "hgb": {
        "learning_rate": 0.1,
        "max_leaf_nodes": 7,
        "max_iter": 25,
        "min_samples_leaf": 20,
        "l2_regularization": 1.0,
    },
}


@functools.cache
def simulated(days: int = 30, services: int = 8, seed: int = 1) -> SimulatedHistory:
    return simulate(SimulationConfig(days=days, services=services, seed=seed))


@functools.cache
def training_table(days: int = 30, services: int = 8, seed: int = 1) -> TrainingTable:
    return build_training_table(simulated(days, services, seed).history, ATTRIBUTION, FEATURES).sorted()


@functools.cache
def fitted(kind: str, days: int = 30, services: int = 8, seed: int = 1) -> RiskModel:
    table = training_table(days, services, seed)
    clf = make_classifier(kind, PARAMS[kind], table, TrainConfig())  # type: ignore[arg-type]
    y = table.frame[LABEL].to_numpy(dtype=np.int64)
    return RiskModel(clf, n_splits=3).fit(table.frame[table.features], y)


def serving_metadata(model: RiskModel) -> dict[str, Any]:
    """The fields of ``models.training.tracking.serving_metadata`` the service reads."""
    return {
        "feature_config": config_dict(FEATURES),
        "attribution_config": config_dict(ATTRIBUTION),
        "trained_at": "2026-02-01T00:00:00+00:00",
        "test_metrics": {"roc_auc": 0.7, "pr_auc": 0.3, "ece": float("nan")},
        "band_shares": {"high": 0.1, "medium": 0.2},
    }


def write_store(home: Path, history: Any) -> HistoryStore:
    """Commit ``history`` (with its Backstage catalog when it has one) as the store under ``home``."""
    store = HistoryStore(home / "store")
    tables = {"deploys": history.deploys, "toggle_events": history.toggle_events, "incidents": history.incidents}
    catalog = getattr(history, "catalog", None)
    if catalog is not None:
        tables["catalog"] = catalog
    with store.lock():
        store.commit(tables, None, store.manifest().version)
    return store


def register(home: Path, model: RiskModel, name: str, alias: str | None = "champion") -> str:
    """Log and register ``model`` as the registry does for a training run; optionally alias it.

    Tests register under their own model ``name`` in the session's MLflow database, so no other test's
    ``incident-risk`` champion can move under them (and no database is created per test).
    """
    import mlflow
    from mlflow import MlflowClient

    from models.registry.artifacts import log_model
    from models.registry.gate import register_version
    from models.training.tracking import ensure_experiment

    client = MlflowClient()
    experiment = ensure_experiment(client, f"{name}-tests", str(home / "mlartifacts"))
    table = training_table()
    with mlflow.start_run(experiment_id=experiment.experiment_id) as run:
        uri = log_model(model, table.frame.head(5), serving_metadata(model))
    version = register_version(client, uri, run.info.run_id, name=name)
    if alias is not None:
        client.set_registered_model_alias(name, alias, version)
    return version


def home_with_champion(home: Path, name: str, kind: str = "logreg") -> Path:
    """``home`` holding the simulated history's store and a ``kind`` champion registered as ``name``."""
    write_store(home, simulated().history)
    register(home, fitted(kind), name)
    return home


def upcoming() -> pd.DataFrame:
    return simulated().upcoming
