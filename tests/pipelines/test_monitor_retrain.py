"""Which rows the monitor's retrain learns from: the latest window, back to the degradation's onset."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import pytest

from models.training.config import GateConfig, TrainConfig
from models.training.train import TrainingTable
from pipelines.flows.deployments import window_table
from pipelines.flows.monitor import RetrainConfig, retrain_line, retrain_options
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
    # the default training config, no reduced search; the retrain's gate is the paired test
    assert options.train == replace(TrainConfig(), gate=replace(GateConfig(), rule="paired"))
    follow_up = retrain_options(LATEST, "monitor: test", RetrainConfig(), follow_up=True)
    assert follow_up.train.gate == replace(GateConfig(), rule="paired", alpha=0.5)  # better at all
    margin = retrain_options(LATEST, "monitor: test", RetrainConfig(gate_rule="margin"))
    assert margin.train == TrainConfig()
    with pytest.raises(ValueError, match="rule"):
        RetrainConfig(gate_rule="sometimes")  # type: ignore[arg-type]


def test_a_champion_retrained_from_a_change_is_followed_while_the_onset_is_young() -> None:
    config = RetrainConfig()  # follow_change, from the onset, for 180 days (two 90-day windows)
    onset = LATEST - pd.Timedelta(days=40)
    assert config.follows(onset, LATEST)
    # past 90 days the window slides (the latest 90 days) and is still followed, past an early onset
    assert config.follows(onset, onset + pd.Timedelta(days=120))
    assert config.days(onset + pd.Timedelta(days=120), onset) == 90.0
    assert config.follows(onset, onset + pd.Timedelta(days=179.9))
    assert not config.follows(onset, onset + pd.Timedelta(days=180))
    assert not config.follows(None, LATEST)  # a champion not retrained from a change (nightly, first model)
    assert not RetrainConfig(follow_change=False).follows(onset, LATEST)
    assert not RetrainConfig(from_onset=False).follows(onset, LATEST)  # a fixed window would learn nothing new
    assert RetrainConfig(follow_days=30).follows(onset, LATEST) is False
    with pytest.raises(ValueError, match="follow-ups"):
        RetrainConfig(follow_days=0)


def test_the_retrain_is_said_in_one_line_with_its_trigger_and_verdict() -> None:
    done = {"trigger": "follow-up of the change from 2026-06-20", "model_version": "7", "promoted": True,
            "reason": "better on the same deploys (z > 0)", "rows": 4200, "rows_from": "2026-06-20"}  # fmt: skip
    assert retrain_line(done) == (
        "retrained on 4200 deploys from 2026-06-20 (follow-up of the change from 2026-06-20): "
        "v7 promoted, better on the same deploys (z > 0)"
    )
    assert "v7 not promoted" in retrain_line({**done, "promoted": False})
