"""Training logic on synthetic tables: data tests (split, leakage), model and behavioural tests."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from threadpoolctl import threadpool_limits

import models.training.train
from models.training.config import CandidateGrid, TrainConfig
from models.training.split import time_split
from models.training.train import TrainingTable, search, select, train
from tests.helpers.synthetic import synthetic_table

SMALL = TrainConfig(
    candidates=(
        CandidateGrid("logreg", (("C", (0.1, 1.0)),)),
        CandidateGrid("hgb", (("max_iter", (60,)), ("max_leaf_nodes", (7,)), ("min_samples_leaf", (30,)))),
    ),
    n_splits=3,
    permutation_repeats=1,
)


@pytest.fixture(autouse=True)
def _one_thread():
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def trained():
    table, p_true = synthetic_table(2500, seed=3)
    with threadpool_limits(limits=1):
        return table, p_true, train(table, SMALL)


# ---- data tests ---------------------------------------------------------------------------


def test_time_split_puts_the_latest_share_in_test_and_keeps_same_instant_deploys_together():
    times = pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-03", "2024-01-04"], utc=True)
    frame = pd.DataFrame({"created_at": times})
    split = time_split(frame, test_fraction=0.4)
    assert split.train.tolist() == [0, 1] and split.test.tolist() == [2, 3, 4]
    dated = time_split(frame, test_start=pd.Timestamp("2024-01-04", tz="UTC"))
    assert dated.test.tolist() == [4]
    with pytest.raises(ValueError, match="leaves 5 training and 0 test"):
        time_split(frame, test_start=pd.Timestamp("2030-01-01", tz="UTC"))


def test_training_table_rejects_bad_labels_and_missing_columns():
    table, _ = synthetic_table(50)
    with pytest.raises(ValueError, match="lacks columns"):
        TrainingTable(table.frame.drop(columns="hour"), table.numeric, table.categorical)
    bad = table.frame.assign(label=2)
    with pytest.raises(ValueError, match="label must be 0/1"):
        TrainingTable(bad, table.numeric, table.categorical)


def test_service_failure_rate_baseline_is_the_feature_scored_alone(trained):
    table, _, result = trained
    assert set(result.baseline_metrics) == {"lines_added", "service_failure_rate"}
    y = result.test_frame["label"].to_numpy()
    expected = roc_auc_score(y, result.test_frame["service_failure_rate"].to_numpy())
    assert result.baseline_metrics["service_failure_rate"]["roc_auc"] == pytest.approx(expected)


def test_training_does_not_read_test_labels():
    table, _ = synthetic_table(1200, seed=5)
    base = train(table, SMALL)
    flipped = table.frame.copy()
    test_rows = flipped.index[-base.n_test :]
    flipped.loc[test_rows, "label"] = 1 - flipped.loc[test_rows, "label"]
    other = train(TrainingTable(flipped, table.numeric, table.categorical), SMALL)
    np.testing.assert_array_equal(base.test_scores, other.test_scores)
    assert base.chosen.name == other.chosen.name


def test_same_data_and_config_give_the_same_metrics(trained):
    table, _, first = trained
    second = train(table, SMALL)
    assert second.test_metrics == first.test_metrics
    assert second.baseline_metrics == first.baseline_metrics
    assert [c.mean_metrics for c in second.candidates] == [c.mean_metrics for c in first.candidates]


def test_search_reports_each_candidate_as_it_finishes(monkeypatch):
    table, _ = synthetic_table(600, seed=1)
    events: list[str] = []
    real = models.training.train.evaluate_candidate

    def evaluate(*args):  # type: ignore[no-untyped-def]
        events.append("evaluate")
        return real(*args)

    monkeypatch.setattr(models.training.train, "evaluate_candidate", evaluate)
    results = search(table.sorted(), replace(SMALL, search="grid"), progress=events.append)
    assert len(results) == 3
    assert events[0::2] == ["evaluate"] * 3
    assert [line.split(" ")[1] for line in events[1::2]] == ["1/3", "2/3", "3/3"]
    assert all(" s; training rows per fold " in line and "roc_auc=" in line for line in events[1::2])


def test_selection_picks_the_best_validation_score(trained):
    *_, result = trained
    finished = [c for c in result.candidates if len(c.fold_metrics) == SMALL.n_splits]
    best = max(c.mean_metrics["roc_auc"] for c in finished)
    assert result.chosen.mean_metrics["roc_auc"] == best
    assert select(finished, "log_loss").mean_metrics["log_loss"] == min(c.mean_metrics["log_loss"] for c in finished)


# ---- model and behavioural tests -----------------------------------------------------------


def test_model_approaches_the_oracle_and_beats_both_baselines(trained):
    table, p_true, result = trained
    y = result.test_frame["label"].to_numpy()
    oracle = roc_auc_score(y, p_true[-result.n_test :])
    assert result.test_metrics["roc_auc"] >= 0.93 * oracle
    for name, metrics in result.baseline_metrics.items():
        assert result.test_metrics["roc_auc"] > metrics["roc_auc"], name


def test_probabilities_are_calibrated_on_the_test_period(trained):
    *_, result = trained
    assert result.test_metrics["ece"] < 0.06
    assert abs(result.test_scores.mean() - result.test_frame["label"].mean()) < 0.05


def test_bigger_infra_changes_score_riskier(trained):
    """Directional expectation: more lines, touching infra, less experience -> higher risk."""
    *_, result = trained
    row = result.test_frame.iloc[[0]].copy()
    base = result.model.predict_proba(row)[0, 1]
    bigger = result.model.predict_proba(row.assign(lines_added=row["lines_added"] * 20 + 500))[0, 1]
    infra = result.model.predict_proba(row.assign(touches_infra=1.0))[0, 1]
    assert bigger > base
    assert infra >= result.model.predict_proba(row.assign(touches_infra=0.0))[0, 1]


def test_scores_ignore_identity_columns(trained):
    """Invariance: deploy id, timestamps and non-feature columns do not move the score."""
    *_, result = trained
    rows = result.test_frame.head(20)
    renamed = rows.assign(deploy_id="other", created_at=pd.Timestamp("2030-01-01", tz="UTC"), squad="x")
    np.testing.assert_array_equal(result.model.predict_proba(rows), result.model.predict_proba(renamed))


def test_unknown_service_still_scores(trained):
    *_, result = trained
    row = result.test_frame.iloc[[0]].assign(service="brand-new-service", tribe=None)
    p = result.model.predict_proba(row)[0, 1]
    assert 0 < p < 1


def test_bands_and_report_inputs_are_complete(trained):
    *_, result = trained
    bands = result.model.band(result.test_frame)
    assert set(bands) <= {"low", "medium", "high"}
    assert 0.03 < (bands == "high").mean() < 0.25
    assert set(result.group_metrics) == {"tribe", "squad"}
    assert set(result.importance["feature"]) == set(table_features(result))
    assert result.data_summary["n_train"] + result.data_summary["n_test"] == 2500


def table_features(result):
    clf = result.model.classifier_
    return [*clf.numeric_, *clf.categorical_]
