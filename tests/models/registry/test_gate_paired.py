"""The retrain's gate: a paired DeLong test, so a small win on a few hundred deploys is not a promotion."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.registry.gate import decide, paired_auc_test
from models.training.config import GateConfig
from models.training.evaluation import rank_auc

PAIRED = GateConfig(rule="paired")
GOOD = {"roc_auc": 0.70, "pr_auc": 0.3, "ece": 0.01}


def _scores(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.15).astype(int)
    signal = y + rng.standard_normal(n)
    a = signal + 0.3 * rng.standard_normal(n)  # the same signal, each with its own noise
    b = signal + 0.3 * rng.standard_normal(n)
    return y, a, b


def test_paired_auc_test_measures_the_difference_and_its_noise() -> None:
    y, a, b = _scores(1000, seed=1)
    diff, se, z = paired_auc_test(y, a, b)
    assert diff == pytest.approx(rank_auc(y, a) - rank_auc(y, b), abs=1e-12)
    # against a bootstrap of deploys: the DeLong SE is the resampled difference's spread
    rng = np.random.default_rng(2)
    boot = []
    for _ in range(400):
        i = rng.integers(0, len(y), len(y))
        boot.append(rank_auc(y[i], a[i]) - rank_auc(y[i], b[i]))
    assert se == pytest.approx(float(np.std(boot, ddof=1)), rel=0.2)
    # paired: far smaller than the SE of either AUC alone
    single = [rank_auc(y[i], a[i]) for i in (rng.integers(0, len(y), len(y)) for _ in range(200))]
    assert se < 0.6 * float(np.std(single, ddof=1))
    assert z == pytest.approx(diff / se)
    assert all(math.isnan(v) for v in paired_auc_test(np.array([1, 0, 0]), a[:3], b[:3]))


def test_paired_rule_promotes_only_a_challenger_better_beyond_noise() -> None:
    champion = {"roc_auc": 0.695}
    small_win = decide(GOOD, champion, 0.15, PAIRED, paired=(0.005, 0.012, 0.42))
    assert not small_win.promote and "not better beyond noise" in small_win.reason
    # the margin rule would have promoted that same 0.005 win
    assert decide(GOOD, champion, 0.15, GateConfig(), paired=(0.005, 0.012, 0.42)).promote
    clear = decide(GOOD, {"roc_auc": 0.66}, 0.15, PAIRED, paired=(0.04, 0.015, 2.67))
    assert clear.promote and "better" in clear.reason
    # a gain below the margin but beyond the paired noise: promoted (the margin gate would refuse it)
    assert decide(GOOD, {"roc_auc": 0.697}, 0.15, PAIRED, paired=(0.003, 0.001, 3.0)).promote
    assert not decide(GOOD, {"roc_auc": 0.697}, 0.15, GateConfig(), paired=(0.003, 0.001, 3.0)).promote
    # no paired test (too few deploys of an outcome): not promoted under the paired rule
    assert not decide(GOOD, champion, 0.15, PAIRED, paired=None).promote
    # minimum quality still first
    assert not decide({**GOOD, "roc_auc": 0.55}, champion, 0.15, PAIRED, paired=(0.1, 0.01, 10.0)).promote


def test_alpha_one_half_promotes_a_challenger_better_on_the_same_deploys_and_keeps_the_champion_on_a_tie() -> None:
    any_gain = GateConfig(rule="paired", alpha=0.5)  # the monitor's follow-up retrains
    champion = {"roc_auc": 0.690}
    small = decide(GOOD, champion, 0.15, any_gain, paired=(0.004, 0.005, 0.8))
    assert small.promote and "better on the same deploys (z > 0)" in small.reason
    assert not decide(GOOD, champion, 0.15, PAIRED, paired=(0.004, 0.005, 0.8)).promote  # not beyond noise
    # the same rows retrained: the same model, no churn
    y, a, _ = _scores(500, seed=3)
    same = decide(GOOD, champion, 0.15, any_gain, paired=paired_auc_test(y, a, a))
    assert not same.promote and "not better on the same deploys (z <= 0)" in same.reason
    assert not decide(GOOD, champion, 0.15, any_gain, paired=(-0.001, 0.005, -0.2)).promote
    assert not decide({**GOOD, "roc_auc": 0.55}, champion, 0.15, any_gain, paired=(0.1, 0.01, 10.0)).promote


def test_paired_rule_needs_roc_auc_and_a_sane_alpha() -> None:
    with pytest.raises(ValueError, match="paired"):
        GateConfig(rule="paired", metric="brier")
    with pytest.raises(ValueError, match="alpha"):
        GateConfig(rule="paired", alpha=0.7)
    with pytest.raises(ValueError, match="rule"):
        GateConfig(rule="sometimes")  # type: ignore[arg-type]


class _Stub:
    """A champion as ``judge`` sees it: its columns, its training end, its probabilities (column ``old``)."""

    def __init__(self, end: str) -> None:
        self.metadata = {"training_period": {"start": "2026-01-01", "end": end}}
        self.classifier_ = type("C", (), {"numeric_": ["old"], "categorical_": []})()

    def predict_proba(self, frame):  # type: ignore[no-untyped-def]
        p = 1 / (1 + np.exp(-frame["old"].to_numpy(dtype=np.float64)))
        return np.column_stack([1 - p, p])


def test_judge_runs_the_paired_test_on_the_deploys_after_both_training_ends() -> None:
    import pandas as pd

    from models.registry.gate import ChampionInfo, judge
    from models.training.evaluation import evaluate

    rng = np.random.default_rng(3)
    n = 1200
    y = (rng.random(n) < 0.15).astype(int)
    old = y * 0.5 + rng.standard_normal(n)  # the champion ranks weakly
    new = y * 1.5 + rng.standard_normal(n)  # the challenger clearly better
    t = pd.date_range("2026-03-01", periods=n, freq="h", tz="UTC")
    frame = pd.DataFrame({"created_at": t, "old": old})
    metrics = {**evaluate(y, 1 / (1 + np.exp(-new))), "ece": 0.01}  # calibration is not what this test is about
    champion = ChampionInfo("1", _Stub("2026-03-20"), "")  # type: ignore[arg-type]
    verdict = judge(champion, metrics, frame, y, None, PAIRED, 1 / (1 + np.exp(-new)), t[100])
    after = (t > pd.Timestamp("2026-03-20", tz="UTC")).sum()
    assert verdict.period is not None and verdict.period.n == after
    assert verdict.decision.promote and "paired se" in verdict.decision.reason
    # the same challenger against itself as champion: no difference, not promoted
    frame_same = frame.assign(old=new)
    same = judge(champion, metrics, frame_same, y, None, PAIRED, 1 / (1 + np.exp(-new)), t[100])
    assert not same.decision.promote and "not better beyond noise" in same.decision.reason
