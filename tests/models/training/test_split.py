"""The cheap count the CLI checks before training agrees with the split training makes."""

from __future__ import annotations

import pandas as pd
import pytest

from features.labels.attribution import AttributionConfig
from features.pointintime.compute import FeatureConfig
from features.simulation.simulator import SimulationConfig, simulate
from models.training.dataset import build_training_table
from models.training.split import time_split, training_period
from models.training.train import LABEL


@pytest.mark.parametrize(
    ("test_fraction", "test_start"), [(0.2, None), (0.5, None), (0.2, pd.Timestamp("2026-01-20T00:00:00Z"))]
)
def test_training_period_counts_what_training_splits_off(test_fraction: float, test_start: pd.Timestamp | None) -> None:
    history = simulate(SimulationConfig(days=30, services=4, seed=5)).history
    period = training_period(history, AttributionConfig(), test_fraction, test_start)
    table = build_training_table(history, AttributionConfig(), FeatureConfig()).sorted()
    split = time_split(table.frame, test_fraction, test_start)
    assert period.matured == len(table.frame)
    assert period.train_rows == len(split.train)
    assert period.train_failures == int(table.frame[LABEL].to_numpy()[split.train].sum())
    assert period.excluded == table.excluded
    assert period.split_error is None


def test_a_test_start_before_every_deploy_is_a_split_error() -> None:
    history = simulate(SimulationConfig(days=20, services=2, seed=1)).history
    period = training_period(history, AttributionConfig(), 0.2, pd.Timestamp("2000-01-01T00:00:00Z"))
    assert period.train_rows == 0 and period.split_error is not None and "0 training" in period.split_error
