"""Outcomes join, rolling metrics, PSI and the alarm rule, on small synthetic frames."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from models.monitoring.alarms import AlarmConfig, evaluate_alarm
from models.monitoring.drift import feature_drift, newcomer_share, psi_categorical, psi_numeric
from models.monitoring.outcomes import (
    MATURED,
    PENDING,
    UNMATCHED,
    WindowConfig,
    join_outcomes,
    matured,
    realised_vs_predicted,
    rolling_metrics,
    window_metrics,
)
from models.monitoring.predlog import records_frame
from models.training.evaluation import rank_auc

T0 = pd.Timestamp("2026-03-01", tz="UTC")


def _pred(deploy_id: str, at: pd.Timestamp, p: float, **kw: object) -> dict:
    return {
        "prediction_id": deploy_id + str(at),
        "logged_at": at,
        "deploy_id": deploy_id,
        "has_deploy_id": not deploy_id.startswith("request:"),
        "service": "svc",
        "squad": "sq",
        "planned_at": at,
        "probability": p,
        "band": "low",
        "model_name": "m",
        "model_version": "1",
        "features": "{}",
        **kw,
    }


def _labels(rows: list[tuple[str, bool, bool]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "deploy_id": [r[0] for r in rows],
            "eligible": True,
            "failed": [r[1] for r in rows],
            "mature": [r[2] for r in rows],
            "matured_at": T0,
        }
    )


def _deploys(ids: list[str], shas: list[str | None]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "deploy_id": ids,
            "service": "svc",
            "environment": "production",
            "commit_sha": shas,
            "created_at": T0,
        }
    )


def test_join_labels_matured_predictions_leaves_pending_and_unmatched_alone() -> None:
    preds = records_frame(
        [
            _pred("d:1", T0, 0.1),
            _pred("d:1", T0 + pd.Timedelta(hours=1), 0.3),  # re-scored: the latest counts
            _pred("d:2", T0, 0.2),
            _pred("d:9", T0, 0.2),
            _pred("ci-run-7", T0, 0.4, commit_sha="abc"),  # the CI's own id, matched by service + sha
            _pred("request:x", T0, 0.5),
        ]
    )
    labels = _labels([("d:1", True, True), ("d:2", False, False), ("d:3", False, True)])
    joined = join_outcomes(preds, labels, _deploys(["d:1", "d:2", "d:3"], [None, None, "abc"]))
    by_id = joined.set_index("deploy_id")
    assert len(joined) == 4  # one row per deploy id; request ids cannot be judged
    assert by_id.loc["d:1", "outcome"] == MATURED and by_id.loc["d:1", "label"] == 1
    assert by_id.loc["d:1", "probability"] == 0.3
    assert by_id.loc["d:2", "outcome"] == PENDING and pd.isna(by_id.loc["d:2", "label"])
    assert by_id.loc["d:9", "outcome"] == UNMATCHED
    assert by_id.loc["ci-run-7", "outcome"] == MATURED and by_id.loc["ci-run-7", "matched_id"] == "d:3"
    assert sorted(matured(joined)["label"].tolist()) == [0, 1]


def test_rank_auc_equals_sklearn() -> None:
    rng = np.random.default_rng(3)
    y = (rng.random(400) < 0.2).astype(int)
    p = np.round(rng.random(400) + 0.4 * y, 1)  # ties
    assert rank_auc(y, p) == pytest.approx(roc_auc_score(y, p))
    assert math.isnan(rank_auc(np.zeros(5, dtype=int), np.ones(5)))


def _scored(n: int, auc_signal: float, seed: int = 0, start: pd.Timestamp = T0, days: int = 28) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.15).astype(int)
    p = np.clip(0.15 + auc_signal * (y - 0.15) + 0.08 * rng.standard_normal(n), 0.001, 0.999)
    at = start + pd.to_timedelta(np.sort(rng.random(n)) * days, unit="D")
    return pd.DataFrame({"label": y, "probability": p, "planned_at": at, "squad": np.where(y | (p > 0.2), "a", "b")})


def test_window_metrics_have_intervals_around_the_point_estimate() -> None:
    m = window_metrics(_scored(1500, 0.1), WindowConfig(n_boot=100))
    assert m["n"] == 1500 and m["roc_auc_lo"] < m["roc_auc"] < m["roc_auc_hi"]
    assert m["ece_lo"] <= m["ece"] + 1e-9 and 0 <= m["recall_at_10pct"] <= 1
    # the standard error matches the interval's width (a normal 90% interval is 3.29 SE wide)
    assert m["roc_auc_se"] == pytest.approx((m["roc_auc_hi"] - m["roc_auc_lo"]) / 3.29, rel=0.3)


def test_rolling_windows_end_every_step_and_cover_the_period() -> None:
    frame = _scored(3000, 0.1, days=70)
    rolling = rolling_metrics(frame, WindowConfig(days=28, step_days=7, n_boot=10), end=T0 + pd.Timedelta(days=70))
    assert len(rolling) == 10
    assert (rolling["window_end"].diff().dropna() == pd.Timedelta(days=7)).all()
    assert rolling["n"].iloc[-1] == pytest.approx(3000 * 28 / 70, rel=0.15)


def test_a_first_matured_prediction_alone_still_makes_one_window() -> None:
    # a champion promoted hours ago: its only matured predictions share one planned time
    frame = _scored(3, 0.1).assign(planned_at=T0)
    rolling = rolling_metrics(frame, WindowConfig(days=28, step_days=7, n_boot=10), end=T0)
    assert len(rolling) == 1 and rolling["n"].iloc[0] == 3 and rolling["window_end"].iloc[0] == T0


def test_realised_vs_predicted_flags_a_group_whose_rate_is_off() -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "squad": ["ok"] * 2000 + ["off"] * 2000,
            "probability": 0.1,
            "label": np.r_[(rng.random(2000) < 0.1), (rng.random(2000) < 0.2)].astype(int),
        }
    )
    table = realised_vs_predicted(frame, "squad").set_index("squad")
    assert table.loc["off", "miscalibrated"] and not table.loc["ok", "miscalibrated"]
    assert table.loc["off", "gap"] == pytest.approx(0.1, abs=0.03)


def test_psi_is_zero_on_the_same_distribution_and_large_on_a_shift() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(0, 1, 5000)
    assert psi_numeric(ref, rng.normal(0, 1, 5000)) < 0.02
    assert psi_numeric(ref, rng.normal(1, 1, 5000)) > 0.25
    with_missing = np.r_[rng.normal(0, 1, 2500), np.full(2500, np.nan)]
    assert psi_numeric(ref, with_missing) > 1  # half missing is a new bin
    assert psi_categorical(["a"] * 50 + ["b"] * 50, ["a"] * 50 + ["b"] * 50) == pytest.approx(0)
    assert psi_categorical(["a"] * 90 + ["b"] * 10, ["a"] * 10 + ["b"] * 90) > 1
    assert newcomer_share(["s1", "s2"], ["s1", "s3", "s3", None]) == 0.5


def test_feature_drift_ranks_by_importance() -> None:
    rng = np.random.default_rng(1)
    ref = pd.DataFrame({"x": rng.normal(size=1000), "y": rng.normal(size=1000), "c": ["u"] * 1000})
    cur = pd.DataFrame({"x": rng.normal(2, 1, 1000), "y": rng.normal(size=1000), "c": ["v"] * 1000})
    out = feature_drift(ref, cur, ["x", "y"], ["c"], {"x": 0.5, "y": 0.9, "c": 0.1})
    assert out.set_index("feature").loc["x", "rank"] == 2 and out["feature"].iloc[-1] == "y"


def _window(
    auc: float, hi: float, ece: float = 0.01, ece_lo: float = 0.005, n: float = 2000.0, expected: float = 0.78
) -> dict:
    """A window's metrics; by default its probabilities expected more than it ranked (``expected``)."""
    return {"n": n, "failures": 200.0, "roc_auc": auc, "roc_auc_hi": hi, "roc_auc_lo": auc - (hi - auc),
            "roc_auc_se": (hi - auc) / 1.645, "ece": ece, "ece_lo": ece_lo,
            "expected_roc_auc": expected, "roc_auc_gap_se": (hi - auc) / 1.645}  # fmt: skip


def _psi(value: float) -> pd.DataFrame:
    return pd.DataFrame({"feature": ["x", "y"], "kind": "numeric", "psi": [value, 0.0], "rank": [1, 2]})


#: The rule before the baseline's own noise was counted: the baseline treated as exact.
EXACT = AlarmConfig(baseline_windows=None)


def test_alarm_fires_when_the_whole_auc_interval_is_below_the_floor() -> None:
    fired = evaluate_alarm(_window(0.62, 0.66), 0.72, _psi(0.0), 0.0, EXACT)
    assert fired.firing and fired.reasons[0].startswith("AUC")
    assert not evaluate_alarm(_window(0.66, 0.70), 0.72, _psi(0.0), 0.0, EXACT).firing  # within noise


def test_auc_check_counts_the_baselines_own_error() -> None:
    """A drop the exact-baseline rule fires on is within the noise of a difference of two estimates."""
    window = _window(0.62, 0.66)  # SE 0.024: 0.62 + 3.0 * 0.024 = 0.69 < 0.72, not < 0.69 with the margin
    assert not evaluate_alarm(window, 0.72, _psi(0.0), 0.0, AlarmConfig(), baseline_se=0.0).firing
    much_worse = _window(0.55, 0.57)  # SE 0.012; SE_d with a 0.012 baseline SE: 0.017, bound 0.602 < 0.69
    report = evaluate_alarm(much_worse, 0.72, _psi(0.0), 0.0, AlarmConfig(), baseline_se=0.012)
    assert report.firing and report.reasons[0].startswith("AUC")
    # the same drop against a noisier baseline is no longer beyond noise
    assert not evaluate_alarm(much_worse, 0.72, _psi(0.0), 0.0, AlarmConfig(), baseline_se=0.05).firing


def test_alarm_needs_enough_labels() -> None:
    report = evaluate_alarm(_window(0.5, 0.55, n=100), 0.72, _psi(0.0), 0.0, AlarmConfig())
    assert not report.firing and not report.enough_labels and "too small" in report.warnings[0]


def test_drift_alone_only_warns_unless_configured() -> None:
    healthy = _window(0.72, 0.75)
    report = evaluate_alarm(healthy, 0.72, _psi(0.6), 0.0, AlarmConfig())
    assert not report.firing and "drift without degradation" in report.warnings[0]
    assert evaluate_alarm(healthy, 0.72, _psi(0.6), 0.0, AlarmConfig(drift_alone=True)).firing
    worse = _window(0.675, 0.69)  # below the champion beyond repeated looks (0.675 + 3.04 SE), above the floor
    assert not evaluate_alarm(worse, 0.72, _psi(0.1), 0.0, EXACT).firing
    assert evaluate_alarm(worse, 0.72, _psi(0.6), 0.0, EXACT).firing
    assert not evaluate_alarm(worse, 0.72, _psi(0.6).assign(rank=[9, 10]), 0.0, EXACT).firing
    # with the baseline's own error: the same window against a baseline of SE 0.009 is still within noise,
    # (0.675 + 3.02 * sqrt(0.0091**2 + 0.009**2) = 0.714 < 0.72 fires; with SE 0.02 it does not)
    assert evaluate_alarm(worse, 0.72, _psi(0.6), 0.0, AlarmConfig(), baseline_se=0.002).firing
    assert not evaluate_alarm(worse, 0.72, _psi(0.6), 0.0, AlarmConfig(), baseline_se=0.02).firing
    # unknown baseline SE (the test AUC): taken to be the window's
    unknown = evaluate_alarm(worse, 0.72, _psi(0.6), 0.0, AlarmConfig())
    assert unknown == evaluate_alarm(worse, 0.72, _psi(0.6), 0.0, AlarmConfig(), baseline_se=worse["roc_auc_se"])


def test_a_window_that_ranks_as_its_probabilities_expect_is_a_harder_month_not_decay() -> None:
    harder = _window(0.675, 0.69, expected=0.68)  # below the baseline, but as its own probabilities expect
    report = evaluate_alarm(harder, 0.72, _psi(0.6), 0.0, AlarmConfig())
    assert not report.firing and "drift without degradation" in report.warnings[0]
    assert evaluate_alarm(harder, 0.72, _psi(0.6), 0.0, AlarmConfig(expected_auc_check=False)).firing
    decayed = _window(0.675, 0.69, expected=0.72)  # 0.675 + 3.04 gap SE = 0.703 < 0.72
    fired = evaluate_alarm(decayed, 0.72, _psi(0.6), 0.0, AlarmConfig())
    assert fired.firing and "its probabilities expected 0.720" in fired.reasons[0]
    unknown = {k: v for k, v in decayed.items() if k != "expected_roc_auc"}  # an older assessment
    assert evaluate_alarm(unknown, 0.72, _psi(0.6), 0.0, AlarmConfig()).firing  # the baseline alone decides


def test_expected_auc_is_the_mean_auc_of_outcomes_drawn_from_the_probabilities() -> None:
    from models.monitoring.outcomes import expected_auc

    rng = np.random.default_rng(5)
    p = np.round(rng.beta(2, 12, 600), 2)  # ties
    draws = [rank_auc((rng.random(600) < p).astype(int), p) for _ in range(2000)]
    assert expected_auc(p) == pytest.approx(np.nanmean(draws), abs=0.005)
    assert expected_auc(np.full(50, 0.2)) == pytest.approx(0.5)  # no spread: nothing to rank
    assert math.isnan(expected_auc(np.array([0.3])))
    # in a window of deploys scored by their true risk, realised and expected agree; when outcomes stop
    # following the scores (the drift), realised falls short by many gap standard errors
    scores = p.repeat(4)[:2000]

    def window(risk: np.ndarray) -> dict[str, float]:
        labels = (rng.random(len(risk)) < risk).astype(int)
        return window_metrics(pd.DataFrame({"label": labels, "probability": scores}), WindowConfig(n_boot=100))

    calibrated = window(scores)
    assert abs(calibrated["roc_auc"] - calibrated["expected_roc_auc"]) / calibrated["roc_auc_gap_se"] < 3
    drifted = window(rng.permutation(scores))
    assert (drifted["expected_roc_auc"] - drifted["roc_auc"]) / drifted["roc_auc_gap_se"] > 3


def test_drift_check_asks_for_more_than_one_looks_interval() -> None:
    """The whole 90% interval below the baseline is a 5% test at each look; checked daily it fires by chance."""
    slightly_worse = _window(0.69, 0.715)  # 90% interval below 0.72, but 0.69 + 3.04 SE = 0.737
    report = evaluate_alarm(slightly_worse, 0.72, _psi(0.6), 0.0, EXACT)
    assert not report.firing and "drift without degradation" in report.warnings[0]
    per_look = AlarmConfig(false_alarm_rate=None, baseline_windows=None)
    assert evaluate_alarm(slightly_worse, 0.72, _psi(0.6), 0.0, per_look).firing
    # a looser budget (fewer or rarer looks, or a higher rate) asks for less
    assert AlarmConfig(false_alarm_rate=0.2).drift_z() < AlarmConfig().drift_z()
    assert AlarmConfig(looks_every_days=7).drift_z() < AlarmConfig().drift_z()
    with pytest.raises(ValueError, match="false_alarm_rate"):
        AlarmConfig(false_alarm_rate=1.5)
    with pytest.raises(ValueError, match="needs false_alarm_rate"):
        AlarmConfig(false_alarm_rate=None)
    with pytest.raises(ValueError, match="baseline_windows"):
        AlarmConfig(baseline_windows=0)


def test_repeated_looks_z_controls_the_chance_of_any_false_fire() -> None:
    from scipy.stats import norm

    from models.monitoring.alarms import repeated_looks_z

    assert repeated_looks_z(0.05, 28, 1) == pytest.approx(norm.ppf(0.95), abs=0.03)  # one look: the plain test
    z = repeated_looks_z(0.05, 28, 180)
    assert 2.8 < z < 3.3 and z == repeated_looks_z(0.05, 28, 180)  # seeded
    assert repeated_looks_z(0.05, 28, 365) > z > repeated_looks_z(0.05, 28, 180, every_days=7)
    # checked against an independent simulation of the same moving window, at that level
    rng = np.random.default_rng(11)
    daily = rng.standard_normal((4000, 180 + 27))
    cum = np.concatenate([np.zeros((4000, 1)), np.cumsum(daily, axis=1)], axis=1)
    looks = (cum[:, 28:] - cum[:, :-28]) / math.sqrt(28)
    assert (looks.max(axis=1) > z).mean() == pytest.approx(0.05, abs=0.015)
    assert (looks.max(axis=1) > norm.ppf(0.95)).mean() > 0.5  # the uncorrected test: most runs fire somewhere


def test_repeated_looks_z_with_a_noisy_baseline_keeps_the_false_fire_budget() -> None:
    """An independent simulation of the rule: a baseline of the first 56 days before the window, a 28-day
    window, 180 daily looks, nothing changed. At the level z fires in about 5% of runs; the exact-baseline
    level (the window's SE alone) fires far more often, because every look shares one baseline draw."""
    from models.monitoring.alarms import repeated_looks_z

    z = repeated_looks_z(0.05, 28, 180, baseline_days=56)
    assert 2.7 < z < 3.4 and z == AlarmConfig().drift_z()
    rng = np.random.default_rng(12)
    runs, w, looks = 4000, 28, 180
    daily = rng.standard_normal((runs, 1 + w + looks - 1))
    cum = np.concatenate([np.zeros((runs, 1)), np.cumsum(daily, axis=1)], axis=1)
    ends = 1 + w + np.arange(looks)
    window = (cum[:, ends] - cum[:, ends - w]) / w
    b = np.minimum(ends - w, 56)
    base = cum[:, b] / b
    gap = base - window
    assert (gap / np.sqrt(1 / b + 1 / w)).max(axis=1).__gt__(z).mean() == pytest.approx(0.05, abs=0.015)
    exact = repeated_looks_z(0.05, 28, 180)  # the window's SE only, the baseline taken as exact
    assert (gap / np.sqrt(1 / w)).max(axis=1).__gt__(exact).mean() > 0.15


def test_live_baseline_is_the_first_windows_before_the_judged_one() -> None:
    from models.monitoring.assess import live_baseline

    good = _scored(3000, 0.12, seed=5, days=56)  # the first 56 days, ranked well
    bad = _scored(1500, 0.02, seed=6, start=T0 + pd.Timedelta(days=56), days=28)  # then worse
    done = pd.concat([good, bad], ignore_index=True)
    cfg = AlarmConfig()
    end = pd.Timestamp(bad["planned_at"].max())
    auc, se, source = live_baseline(done, 0.9, cfg, end)
    assert auc == pytest.approx(rank_auc(good["label"].to_numpy(), good["probability"].to_numpy()))
    assert 0 < se < 0.03 and source.startswith("live")
    # the judged window is never in its own baseline: judged at day 40, only the first 12 days count
    early = done[pd.to_datetime(done["planned_at"]) <= T0 + pd.Timedelta(days=40)]
    first = good[pd.to_datetime(good["planned_at"]) <= T0 + pd.Timedelta(days=12)]
    auc12, _, _ = live_baseline(early, 0.9, cfg, T0 + pd.Timedelta(days=40))
    assert auc12 == pytest.approx(rank_auc(first["label"].to_numpy(), first["probability"].to_numpy()))
    # too few live labels before the window: the test AUC, SE unknown
    auc0, se0, source0 = live_baseline(early, 0.9, cfg, T0 + pd.Timedelta(days=29))
    assert auc0 == 0.9 and math.isnan(se0) and source0.startswith("test")


def test_calibration_alarm_needs_the_whole_ece_interval_above_the_bound() -> None:
    assert evaluate_alarm(_window(0.72, 0.75, ece=0.09, ece_lo=0.07), 0.72, _psi(0), 0.0, AlarmConfig()).firing
    assert not evaluate_alarm(_window(0.72, 0.75, ece=0.06, ece_lo=0.03), 0.72, _psi(0), 0.0, AlarmConfig()).firing


def test_the_baseline_is_the_lower_of_the_test_auc_and_the_first_live_window() -> None:
    from models.monitoring.assess import baseline_auc

    weak = _scored(2000, 0.05, seed=4)  # a live AUC well below a test AUC of 0.9
    live = rank_auc(weak["label"].to_numpy(), weak["probability"].to_numpy())
    assert baseline_auc(weak, 0.9, EXACT) == pytest.approx(live)
    assert baseline_auc(weak, 0.55, EXACT) == 0.55
    assert baseline_auc(weak.head(100), 0.9, EXACT) == 0.9  # too few labels: the test AUC
