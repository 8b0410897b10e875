"""The promotion gate (pure), safe serialisation, and the MLflow registry round trip."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from threadpoolctl import threadpool_limits

from models.registry.artifacts import RegistryError, dumps, loads
from models.registry.gate import decide
from models.training.config import CandidateGrid, GateConfig, TrainConfig
from models.training.estimators import RiskClassifier, RiskModel
from models.training.train import train
from tests.helpers.synthetic import synthetic_table

GOOD = {"roc_auc": 0.75, "pr_auc": 0.4, "ece": 0.03}
CONFIG = TrainConfig(
    candidates=(CandidateGrid("logreg", (("C", (0.3,)),)), CandidateGrid("hgb", (("max_iter", (30,)),))),
    n_splits=3,
    permutation_repeats=1,
)


def test_gate_promotes_a_first_model_that_meets_minimum_quality():
    d = decide(GOOD, None, failure_rate=0.2, gate=GateConfig())
    assert d.promote and "no champion" in d.reason


@pytest.mark.parametrize(
    ("metrics", "why"),
    [
        ({**GOOD, "roc_auc": 0.55}, "roc_auc"),
        ({**GOOD, "pr_auc": 0.21}, "pr_auc lift"),
        ({**GOOD, "ece": 0.2}, "ece"),
        ({**GOOD, "roc_auc": math.nan}, "roc_auc"),
    ],
)
def test_gate_rejects_below_minimum_quality(metrics, why):
    d = decide(metrics, None, failure_rate=0.2, gate=GateConfig())
    assert not d.promote and why in d.reason


def test_gate_needs_the_margin_over_the_champion():
    gate = GateConfig(margin=0.01)
    assert not decide(GOOD, {**GOOD, "roc_auc": 0.745}, 0.2, gate).promote
    assert decide(GOOD, {**GOOD, "roc_auc": 0.739}, 0.2, gate).promote
    lower = GateConfig(metric="log_loss", margin=0.01)
    assert decide({**GOOD, "log_loss": 0.40}, {**GOOD, "log_loss": 0.42}, 0.2, lower).promote


def test_gate_can_refuse_when_the_champion_cannot_be_compared():
    strict = GateConfig(promote_when_champion_unscorable=False)
    d = decide(GOOD, None, 0.2, strict, champion_note="champion needs columns missing")
    assert not d.promote and "manual" in d.reason


class _Foreign(ClassifierMixin, BaseEstimator):
    def fit(self, X, y):
        self.classes_ = [0, 1]
        return self


@pytest.fixture(scope="module")
def small_results():
    with threadpool_limits(limits=1):
        table, _ = synthetic_table(900, seed=11)
        return train(table, CONFIG), table


def test_skops_round_trip_trusts_only_listed_types(small_results):
    result, table = small_results
    restored = loads(dumps(result.model))
    assert (restored.predict_proba(table.frame) == result.model.predict_proba(table.frame)).all()
    foreign = RiskModel(RiskClassifier(_Foreign()))
    foreign.classifier_ = RiskClassifier(_Foreign())
    with pytest.raises(RegistryError, match="not on the trust list"):
        dumps(foreign)


def test_training_is_logged_registered_gated_and_promotable(small_results, home: Path):
    import mlflow
    from mlflow import MlflowClient

    from models.registry.artifacts import CHALLENGER, CHAMPION, MODEL_NAME, load_model
    from models.registry.gate import current_champion, gate_and_alias, promote, register_version
    from models.training.tracking import RunContext, log_training, runs_table

    result, table = small_results
    context = RunContext("t", "fp", "rule", "syn-1", {"max_lag": "1 day"}, {"w": 1}, artifact_root=str(home / "art"))
    first = log_training(result, context)
    client = MlflowClient()
    assert first.outcome.decision.promote
    assert str(client.get_model_version_by_alias(MODEL_NAME, CHAMPION).version) == first.outcome.version
    run = mlflow.get_run(first.run_id)
    assert run.data.tags["gate_decision"] == "promote" and run.data.tags["data_fingerprint"] == "fp"
    assert run.data.params["train.seed"] == "0" and "test_roc_auc" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(first.run_id, "report")}
    assert {"report/report.html", "report/roc.png", "report/gain.png", "report/calibration.png"} <= artifacts
    html = Path(mlflow.artifacts.download_artifacts(run_id=first.run_id, artifact_path="report/report.html"))
    assert "data:image/png;base64," in html.read_text()
    nested = mlflow.search_runs([run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{first.run_id}'")
    assert len(nested) == len(result.candidates)
    loaded = load_model(f"models:/{MODEL_NAME}@{CHAMPION}")
    assert loaded.metadata["feature_set_version"] == "syn-1"
    assert loaded.metadata["numeric_features"] == list(table.numeric)
    assert set(loaded.metadata["band_thresholds"]) == {"medium", "high"}

    # The same model again: no gain over the champion re-scored on the same test period -> rejected.
    second = register_version(client, first.model_uri, first.run_id)
    y = result.test_frame["label"].to_numpy()
    outcome = gate_and_alias(client, second, result.test_metrics, result.test_frame, y, None, CONFIG.gate)
    assert not outcome.decision.promote and "margin" in outcome.decision.reason
    assert outcome.champion_metrics["roc_auc"] == pytest.approx(result.test_metrics["roc_auc"])
    assert client.get_model_version(MODEL_NAME, second).tags["gate_decision"] == "reject"
    assert str(client.get_model_version_by_alias(MODEL_NAME, CHALLENGER).version) == second
    assert str(client.get_model_version_by_alias(MODEL_NAME, CHAMPION).version) == first.outcome.version

    # Forced promotion and revert are recorded on the version and the registered model.
    assert promote(client, second, reason="hotfix") == second
    assert client.get_model_version(MODEL_NAME, second).tags["promoted_by"] == "manual"
    assert promote(client, revert=True) == first.outcome.version
    assert "revert" in client.get_registered_model(MODEL_NAME).tags["champion_log"]
    with pytest.raises(RegistryError, match="no version"):
        promote(client, "999")

    # A champion whose files vanished is reported, not trusted, and training still registers.
    source = Path(mlflow.artifacts.download_artifacts(f"models:/{MODEL_NAME}@{CHAMPION}"))
    assert source.exists()
    store_dir = home / "art"
    for skops_file in store_dir.rglob("model.skops"):
        skops_file.unlink()
    champ = current_champion(client)
    assert champ.model is None and "cannot be loaded" in champ.note
    shutil.rmtree(source, ignore_errors=True)
    assert runs_table("t").shape[1] == 1
