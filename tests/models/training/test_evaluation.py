"""Code tests of the metrics: hand-computed cases for gating recall, effort-aware recall, Popt, ECE."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from models.training.config import METRIC_KEYS
from models.training.evaluation import (
    evaluate,
    expected_calibration_error,
    gain_curve,
    gating_recall,
    metrics_by_group,
    permutation_importance,
    popt,
    recall_at_effort,
)


def test_gating_recall_counts_failures_in_the_riskiest_share():
    y = np.array([1, 0, 1, 0, 0, 0, 0, 0, 0, 1])
    s = np.array([0.9, 0.8, 0.7, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.05])
    assert gating_recall(y, s, 0.1) == pytest.approx(1 / 3)  # one deploy gated, it failed
    assert gating_recall(y, s, 0.3) == pytest.approx(2 / 3)
    assert gating_recall(y, s, 1.0) == 1.0
    assert math.isnan(gating_recall(np.zeros(5), np.ones(5), 0.2))


def test_recall_at_effort_reviews_by_risk_per_line():
    # Equal scores: the small change has the higher risk per line and is reviewed first.
    y = np.array([1, 0, 1])
    s = np.array([0.5, 0.5, 0.5])
    effort = np.array([10.0, 50.0, 940.0])
    assert recall_at_effort(y, s, effort, 0.2) == pytest.approx(0.5)  # 10 + 50 lines read of a 200-line budget
    # Ranking by risk per line: the big risky change costs more than the budget and is not found.
    assert recall_at_effort(y, np.array([0.9, 0.1, 0.99]), effort, 0.2) == pytest.approx(0.5)
    assert recall_at_effort(y, s, np.array([10.0, 100.0, 100.0]), 0.2) == pytest.approx(0.5)  # budget 42 lines


def test_popt_is_one_for_the_optimal_order_and_zero_for_the_worst():
    y = np.array([1, 0, 0, 1, 0])
    effort = np.array([5.0, 100.0, 20.0, 50.0, 10.0])
    density = y / effort
    assert popt(y, density * effort, effort) == pytest.approx(1.0)  # scores are ranked per line
    worst = (1 - y) * effort**2 + y * 1e-9 * effort**1.5  # per line: defect-free and big first
    assert popt(y, worst, effort) == pytest.approx(0.0, abs=1e-6)
    assert 0 < popt(y, np.full(5, 0.5), effort) < 1


def test_ece_is_zero_for_calibrated_bins_and_the_gap_otherwise():
    y = np.array([0, 1, 0, 1])
    assert expected_calibration_error(y, np.full(4, 0.5)) == pytest.approx(0.0)
    assert expected_calibration_error(y, np.full(4, 0.9)) == pytest.approx(0.4)


def test_evaluate_returns_every_key_and_nan_where_undefined():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    out = evaluate(y, rng.random(200), rng.integers(1, 100, 200))
    assert tuple(out) == METRIC_KEYS
    assert 0.3 < out["roc_auc"] < 0.7
    one_class = evaluate(np.zeros(10, dtype=int), np.full(10, 0.1))
    assert math.isnan(one_class["roc_auc"]) and one_class["ece"] == pytest.approx(0.1)


def test_gain_curve_ends_at_all_failures_caught():
    gated, caught = gain_curve(np.array([0, 1, 1, 0]), np.array([0.1, 0.9, 0.8, 0.2]))
    assert gated[0] == 0 and caught[0] == 0 and caught[2] == 1.0 and gated[-1] == 1.0


def test_metrics_by_group_reports_counts_and_rates():
    import pandas as pd

    frame = pd.DataFrame({"tribe": ["a", "a", "b", None]})
    out = metrics_by_group(frame, "tribe", np.array([1, 0, 1, 0]), np.array([0.9, 0.1, 0.5, 0.2]))
    assert out["tribe"].tolist() == ["(missing)", "a", "b"]
    assert out.set_index("tribe").loc["a", "roc_auc"] == 1.0


def test_metrics_by_group_equal_a_mask_and_sklearn_per_group_with_ties_and_one_outcome_groups():
    rng = np.random.default_rng(5)
    n = 3_000
    frame = pd.DataFrame({"squad": rng.choice(["s1", "s2", "s10", "tiny", None], n, p=[0.3, 0.3, 0.3, 0.001, 0.099])})
    y = (rng.random(n) < 0.2).astype(int)
    p = np.round(rng.random(n), 1)  # heavy ties
    y[(frame["squad"] == "tiny").to_numpy()] = 0  # one outcome only: no AUC
    out = metrics_by_group(frame, "squad", y, p, min_size=2).set_index("squad")
    keys = frame["squad"].fillna("(missing)").to_numpy()
    for key in sorted(set(keys), key=str):
        mask = keys == key
        if mask.sum() < 2:
            assert key not in out.index
            continue
        row = out.loc[key]
        assert row["n"] == mask.sum() and row["failures"] == y[mask].sum()
        assert row["mean_p"] == pytest.approx(p[mask].mean()) and row["observed_rate"] == pytest.approx(y[mask].mean())
        expected = roc_auc_score(y[mask], p[mask]) if len(set(y[mask])) == 2 else None
        assert (np.isnan(row["roc_auc"]) and expected is None) or row["roc_auc"] == pytest.approx(expected)
    assert list(out.index) == sorted(out.index, key=str)


def _informative_columns(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=n)
    noise = rng.normal(size=n)
    y = (signal + 0.5 * rng.normal(size=n) > 1.0).astype(np.int64)
    return np.column_stack([noise, signal]), np.empty((n, 0), dtype=object), y


def test_permutation_importance_ranks_the_informative_column_first():
    design, _, y = _informative_columns(2_000)
    groups = [np.array([0]), np.array([1])]
    result, rows = permutation_importance(lambda d: d[:, 1], design, groups, ["noise", "signal"], y)
    assert rows == 2_000
    assert list(result["feature"]) == ["signal", "noise"]
    assert result.loc[0, "importance"] > 0.3
    assert result.loc[1, "importance"] == pytest.approx(0.0)


def test_permutation_importance_scores_a_bounded_seeded_sample():
    design, _, y = _informative_columns(5_000)
    seen_rows: list[int] = []

    def score(d: np.ndarray) -> np.ndarray:
        seen_rows.append(len(d))
        return d[:, 1]

    names, groups = ["noise", "signal"], [np.array([0]), np.array([1])]
    first, rows = permutation_importance(score, design, groups, names, y, repeats=2, seed=3, max_rows=800)
    assert set(seen_rows) == {800} and rows == 800
    assert len(seen_rows) == 1 + 2 * 2  # the unshuffled sample, then each feature times each repeat
    again, _ = permutation_importance(score, design, groups, names, y, repeats=2, seed=3, max_rows=800)
    pd.testing.assert_frame_equal(first, again)
    other, _ = permutation_importance(score, design, groups, names, y, repeats=2, seed=4, max_rows=800)
    assert not first.equals(other)  # the seed picks the sample and the shuffles
    assert list(first["feature"]) == ["signal", "noise"]


def test_permutation_importance_shuffles_a_group_of_columns_together():
    design, _, y = _informative_columns(1_000)
    both = np.column_stack([design, design[:, 1]])  # "signal" encoded as two columns

    def score(d: np.ndarray) -> np.ndarray:
        return d[:, 1] + d[:, 2]  # both columns carry the signal

    table, _ = permutation_importance(score, both, [np.array([0]), np.array([1, 2])], ["noise", "signal"], y)
    alone, _ = permutation_importance(score, both, [np.array([0]), np.array([1])], ["noise", "signal"], y)
    assert (
        table.set_index("feature").loc["signal", "importance"] > alone.set_index("feature").loc["signal", "importance"]
    )


def test_permutation_importance_scored_side_by_side_equals_one_by_one():
    from concurrent.futures import ThreadPoolExecutor

    design, _, y = _informative_columns(3_000, seed=2)
    groups = [np.array([0]), np.array([1])]
    one_by_one = permutation_importance(lambda d: d[:, 1] + 0.1 * d[:, 0], design, groups, ["a", "b"], y, 3, 7)
    with ThreadPoolExecutor(max_workers=2) as pool:
        side = permutation_importance(
            lambda d: d[:, 1] + 0.1 * d[:, 0], design, groups, ["a", "b"], y, 3, 7, map_each=pool.map
        )
    pd.testing.assert_frame_equal(one_by_one[0], side[0])
    assert one_by_one[0]["importance"].iloc[0] > 0.05  # the informative column's drop is real
