"""Which rows the monitor's retrain learns from: the latest window, back to the degradation's onset, and the
older history of the nightly window with recency weights."""

from __future__ import annotations

import math
from dataclasses import replace

import pandas as pd
import pytest

from models.training.config import GateConfig, TrainConfig
from models.training.train import TrainingTable
from models.training.weights import effective_days
from pipelines.flows.deployments import window_table
from pipelines.flows.monitor import HALF_LIFE_DAYS, RetrainConfig, retrain_options, retrain_train_options
from pipelines.flows.train import TrainingError

LATEST = pd.Timestamp("2026-09-01", tz="UTC")


def test_the_window_reaches_back_to_the_onset_within_its_bounds() -> None:
    config = RetrainConfig()  # 30 days at least, back to the onset, at most 90
    days_before = lambda d: LATEST - pd.Timedelta(days=d)  # noqa: E731
    assert config.days(LATEST, None) == 30.0  # no onset placed: the latest 30 days
    assert config.days(LATEST, days_before(10)) == 30.0  # a recent change: still 30 days (enough rows)
    assert config.days(LATEST, days_before(48)) == 48.0  # weeks after it: every row since the change
    assert config.days(LATEST, days_before(200)) == 90.0  # bounded
    assert RetrainConfig(from_onset=False).days(LATEST, days_before(48)) == 30.0
    assert RetrainConfig(window_days=120).days(LATEST, days_before(48)) == 120.0  # the least window wins
    with pytest.raises(ValueError, match="positive"):
        RetrainConfig(window_days=0)


def test_window_table_keeps_the_latest_rows_and_refuses_an_empty_cut() -> None:
    times = pd.date_range(end=LATEST, periods=100, freq="D")
    frame = pd.DataFrame({"deploy_id": range(100), "created_at": times, "x": range(100), "label": [0, 1] * 50})
    table = TrainingTable(frame, ("x",), (), {}, "rule", "v")
    cut = window_table(table, RetrainConfig().days(LATEST, LATEST - pd.Timedelta(days=48)))
    assert len(cut.frame) == 48 and cut.numeric == ("x",) and cut.label_rule == "rule"
    with pytest.raises(TrainingError, match="no training rows"):
        window_table(TrainingTable(frame.iloc[:0], ("x",), (), {}, "rule", "v"), 30)


def test_the_retrain_trains_as_the_product_does_with_labels_as_of_the_monitor() -> None:
    options = retrain_options(LATEST, "monitor: test")
    assert options.as_of == LATEST and options.source == "monitor: test"
    assert options.train == TrainConfig()  # the default training config, no reduced search


def test_the_retrain_weights_the_nightly_history_by_recency_around_its_window() -> None:
    assert RetrainConfig().half_life_days is None  # off by default
    config = RetrainConfig(half_life_days=HALF_LIFE_DAYS)  # half-life 30 ln 2 over the nightly's 180 days
    onset = LATEST - pd.Timedelta(days=48)
    assert config.half_life_days == pytest.approx(30 * math.log(2), abs=0.05)
    assert effective_days(config.half_life_days) == pytest.approx(30.0, abs=0.1)  # as much as 30 fresh days
    assert config.rows_days(LATEST, onset) == 180.0  # the rows: the nightly's window
    assert RetrainConfig(max_window_days=300).rows_days(LATEST, LATEST - pd.Timedelta(days=250)) == 250.0
    trained = config.train_config(TrainConfig(), LATEST, onset)
    assert trained.half_life_days == config.half_life_days
    assert trained.recent_days == 48.0  # test period and validation in the window back to the onset
    # the gate: the challenger replaces the alarmed champion unless the paired test says it ranks worse
    assert trained.gate.rule == "not_worse" and trained.gate.with_validation
    assert replace(trained, half_life_days=None, recent_days=None, gate=GateConfig()) == TrainConfig()  # nothing else
    off = RetrainConfig(half_life_days=None)  # unweighted: the window alone
    assert off.rows_days(LATEST, onset) == 48.0
    assert off.train_config(TrainConfig(), LATEST, onset).half_life_days is None
    plain = RetrainConfig(half_life_days=None, after_alarm_gate=False)  # the training config as it is
    assert plain.train_config(TrainConfig(), LATEST, onset) == TrainConfig()
    with pytest.raises(ValueError, match="half-life"):
        RetrainConfig(half_life_days=0)
    with pytest.raises(ValueError, match="history"):
        RetrainConfig(history_days=0)


def test_the_retrain_options_carry_the_recent_window_of_the_table_they_train_on() -> None:
    times = pd.date_range(end=LATEST, periods=200, freq="D")
    frame = pd.DataFrame({"deploy_id": range(200), "created_at": times, "x": range(200), "label": [0, 1] * 100})
    table = TrainingTable(frame, ("x",), (), {}, "rule", "v")
    options = retrain_train_options(retrain_options(LATEST), RetrainConfig(half_life_days=HALF_LIFE_DAYS), table, None)
    assert options.train.recent_days == 30.0 and options.train.half_life_days == HALF_LIFE_DAYS
    assert options.as_of == LATEST


def test_the_cli_and_the_deployment_default_to_the_retrains_settings() -> None:
    import inspect

    from pipelines.cli.monitor import monitor
    from pipelines.flows.deployments import scheduled_monitor

    cli = inspect.signature(monitor).parameters
    assert (cli["retrain_half_life_days"].default.default or None) == RetrainConfig().half_life_days  # 0: off
    assert cli["retrain_gate_not_worse"].default.default is RetrainConfig().after_alarm_gate
    flow = inspect.signature(scheduled_monitor.fn).parameters
    assert flow["retrain_half_life_days"].default == RetrainConfig().half_life_days
    assert flow["retrain_gate_not_worse"].default is RetrainConfig().after_alarm_gate
