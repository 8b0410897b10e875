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


def test_paired_rule_needs_roc_auc_and_a_sane_alpha() -> None:
    with pytest.raises(ValueError, match="paired"):
        GateConfig(rule="paired", metric="brier")
    with pytest.raises(ValueError, match="alpha"):
        GateConfig(rule="paired", alpha=0.7)
    with pytest.raises(ValueError, match="rule"):
        GateConfig(rule="sometimes")  # type: ignore[arg-type]
