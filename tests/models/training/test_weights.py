"""Recency-weighted training: weights that halve with age, validation on the recent rows, weighted fits."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from threadpoolctl import threadpool_limits

from models.training.config import CandidateGrid, TrainConfig
from models.training.estimators import RiskClassifier, fold_scores, rolling_origin_splits
from models.training.train import TrainingTable, recent_test_start, train
from models.training.weights import effective_days, recency_weights, recent_count

START = pd.Timestamp("2026-01-01", tz="UTC")
ONE_LOGREG = TrainConfig(candidates=(CandidateGrid("logreg", (("C", (1.0,)),)),), n_splits=3, permutation_repeats=1)


@pytest.fixture(autouse=True)
def _one_thread():
    with threadpool_limits(limits=1):
        yield


def drifted_table(n: int = 6000, days: int = 180, change_day: int = 150, seed: int = 0) -> TrainingTable:
    """``x1`` sets the risk before ``change_day``, ``x2`` after it; the service's effect never changes."""
    rng = np.random.default_rng(seed)
    offsets = np.sort(rng.uniform(0, days, n))
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    service = rng.choice(np.array(["a", "b", "c", "d"], dtype=object), n)
    effect = pd.Series({"a": -0.8, "b": -0.2, "c": 0.3, "d": 0.9})[service].to_numpy()
    after = offsets >= change_day
    logit = -1.8 + effect + np.where(after, 1.2 * x2, 1.2 * x1)
    label = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    frame = pd.DataFrame(
        {
            "deploy_id": [f"d{i}" for i in range(n)],
            "created_at": START + pd.to_timedelta(offsets, unit="D"),
            "label": label,
            "x1": x1,
            "x2": x2,
            "service": service,
        }
    )
    return TrainingTable(frame, ("x1", "x2"), ("service",))


def test_weights_halve_every_half_life_counted_from_the_latest_row() -> None:
    times = pd.Series(START + pd.to_timedelta([0, 10, 20, 30], unit="D"))
    assert recency_weights(times, 10.0).tolist() == pytest.approx([0.125, 0.25, 0.5, 1.0])
    later = recency_weights(times, 10.0, latest=START + pd.Timedelta(days=40))
    assert later.tolist() == pytest.approx([0.0625, 0.125, 0.25, 0.5])
    assert effective_days(30 * math.log(2)) == pytest.approx(30.0)  # the default weighs 30 fresh days
    assert recent_count(times, 15.0) == 2
    with pytest.raises(ValueError, match="positive"):
        recency_weights(times, 0.0)


def test_recent_validation_blocks_lie_in_the_latest_rows_and_train_on_everything_before() -> None:
    splits = rolling_origin_splits(1000, 4, recent=250)
    assert [len(va) for _, va in splits] == [50] * 4
    assert splits[0][1][0] == 800 and splits[-1][1][-1] == 999  # the last 200 rows validate, 50 each
    assert all(len(tr) == va[0] and tr[0] == 0 for tr, va in splits)  # every older row trains every fold
    # as many recent rows as the table: the usual split
    assert [va.tolist() for _, va in rolling_origin_splits(100, 4, recent=100)] == [
        va.tolist() for _, va in rolling_origin_splits(100, 4)
    ]
    with pytest.raises(ValueError, match="recent rows"):
        rolling_origin_splits(1000, 4, recent=3)


def test_fold_weights_count_from_the_fold_so_a_common_factor_changes_nothing() -> None:
    table = drifted_table(1500)
    X, y = table.frame[["x1", "x2", "service"]], table.frame["label"].to_numpy()
    tr, va = np.arange(1000), np.arange(1000, 1500)
    w = recency_weights(table.frame["created_at"], 20.0)
    clf = RiskClassifier(numeric=("x1", "x2"), categorical=("service",))
    a, _ = fold_scores(clf, X, y, tr, va, sample_weight=w)
    b, _ = fold_scores(clf, X, y, tr, va, sample_weight=w * 0.01)
    plain, _ = fold_scores(clf, X, y, tr, va)
    assert np.allclose(a, b)
    assert not np.allclose(a, plain)


def test_a_weighted_fit_follows_the_recent_regime() -> None:
    table = drifted_table()
    frame = table.frame
    cut = START + pd.Timedelta(days=170)
    old, new = frame[frame["created_at"] < cut], frame[frame["created_at"] >= cut]
    clf = RiskClassifier(numeric=("x1", "x2"), categorical=("service",))
    plain = clf.fit(old[["x1", "x2", "service"]], old["label"]).predict_proba(new)[:, 1]
    w = recency_weights(old["created_at"], 7.0)
    weighted = clf.fit(old[["x1", "x2", "service"]], old["label"], sample_weight=w).predict_proba(new)[:, 1]
    auc_plain, auc_weighted = roc_auc_score(new["label"], plain), roc_auc_score(new["label"], weighted)
    assert auc_weighted > auc_plain + 0.05, (auc_plain, auc_weighted)
    with pytest.raises(ValueError, match="sample_weight"):
        clf.fit(old[["x1", "x2", "service"]], old["label"], sample_weight=np.zeros(len(old)))


def test_training_with_recency_tests_and_validates_on_the_recent_window_and_beats_the_unweighted_fit() -> None:
    table = drifted_table()
    config = replace(ONE_LOGREG, half_life_days=10.0, recent_days=30.0)
    result = train(table, config)
    times = table.frame["created_at"]
    window_start = times.max() - pd.Timedelta(days=30)
    # the test period: the latest fifth of the last 30 days' rows (not of the whole table)
    recent = int((times > window_start).sum())
    assert result.n_test == pytest.approx(recent * 0.2, abs=2)
    assert pd.Timestamp(result.split["test_start"]) == recent_test_start(table.sorted().frame, 30.0, 0.2)
    # out-of-fold scores (calibration, bands) only on the window's rows before the test period
    scored = result.chosen.oof_folds >= 0
    train_times = table.sorted().frame["created_at"].iloc[: result.n_train].reset_index(drop=True)
    assert scored.any() and (train_times[scored] > window_start).all()
    unweighted = train(table, replace(ONE_LOGREG, recent_days=30.0))
    assert unweighted.n_test == result.n_test  # the same test deploys
    assert result.test_metrics["roc_auc"] > unweighted.test_metrics["roc_auc"] + 0.05


def test_recency_settings_must_be_positive() -> None:
    with pytest.raises(ValueError, match="half_life_days"):
        TrainConfig(half_life_days=0.0)
    with pytest.raises(ValueError, match="recent_days"):
        TrainConfig(recent_days=-1.0)
