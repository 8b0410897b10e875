"""The degradation's onset: where the per-deploy concordance's cumulative sum peaks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from models.monitoring.onset import OnsetConfig, concordance, degradation_onset

TIMES = pd.Series(pd.date_range("2026-01-01", periods=6000, freq="25min", tz="UTC"))


def test_concordance_averages_to_the_auc_for_either_class() -> None:
    rng = np.random.default_rng(0)
    y = rng.random(3000) < 0.15
    p = np.round(rng.random(3000) + 0.3 * y, 2)  # ties included
    c = concordance(y, p)
    auc = roc_auc_score(y, p)
    assert c[y].mean() == pytest.approx(auc) and c[~y].mean() == pytest.approx(auc)
    assert np.isnan(concordance(np.zeros(5, bool), np.arange(5.0))).all()  # one class: nothing to rank


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_onset_lands_near_the_change_of_ranking(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=len(TIMES))
    change = len(TIMES) * 6 // 10
    slope = np.where(np.arange(len(TIMES)) < change, 0.9, 0.35)  # the model keeps ranking by x
    y = rng.random(len(TIMES)) < 1 / (1 + np.exp(2 - slope * x))
    p = 1 / (1 + np.exp(2 - 0.9 * x))
    onset = degradation_onset(TIMES, y, p)
    assert onset is not None and abs(onset - TIMES[change]) < pd.Timedelta(days=10)
    # the order of the rows does not matter, their times do
    order = rng.permutation(len(TIMES))
    assert degradation_onset(TIMES[order], y[order], p[order]) == onset


def test_too_few_predictions_place_no_onset() -> None:
    y = np.arange(500) % 7 == 0
    assert degradation_onset(TIMES[:500], y, np.linspace(0, 1, 500)) is None
    assert degradation_onset(TIMES[:500], y, np.linspace(0, 1, 500), OnsetConfig(min_side=100)) is not None
