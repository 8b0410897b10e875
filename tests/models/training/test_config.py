"""Code tests of the typed training config: a misspelled choice is refused when the config is built."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from features.history.choices import check_choice
from features.labels.attribution import AttributionConfig
from features.labels.dora import DoraConfig
from models.registry.gate import decide
from models.training.config import METRIC_KEYS, CandidateGrid, GateConfig, TrainConfig
from models.training.estimators import choose_calibration
from pipelines.flows.runners import RunnerConfig


def test_gate_metric_typo_is_refused_naming_the_allowed_metrics() -> None:
    # Before the check, "rocauc" read NaN for both sides and promoted an AUC 0.70 challenger over 0.90.
    with pytest.raises(ValueError, match="gate metric must be one of roc_auc, pr_auc") as err:
        GateConfig(metric="rocauc")  # type: ignore[arg-type]
    assert all(k in str(err.value) for k in METRIC_KEYS)


def test_gate_on_a_valid_metric_keeps_the_better_champion() -> None:
    gate = GateConfig(metric="roc_auc", min_roc_auc=0.5, min_pr_auc_lift=0.0, max_ece=1.0)
    challenger = {"roc_auc": 0.70, "pr_auc": 0.2, "ece": 0.01}
    champion = {"roc_auc": 0.90, "pr_auc": 0.3, "ece": 0.01}
    assert not decide(challenger, champion, 0.1, gate).promote


def test_misspelled_selection_metric_is_refused() -> None:
    with pytest.raises(ValueError, match="selection_metric must be one of .*roc_auc.*got 'roc-auc'"):
        TrainConfig(selection_metric="roc-auc")  # type: ignore[arg-type]


def test_every_choice_field_is_checked() -> None:
    with pytest.raises(ValueError, match="calibration must be one of auto, isotonic, sigmoid"):
        TrainConfig(calibration="platt")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="candidate kind must be one of logreg, hgb"):
        CandidateGrid("xgb", ())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="scope must be one of service, project"):
        AttributionConfig(scope="org")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="change_time must be one of finished, created"):
        AttributionConfig(change_time="started")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="by must be one of service, squad, tribe, all"):
        DoraConfig(by="team")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="period must be one of week, month"):
        DoraConfig(period="day")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="task runner must be one of sequential, threads, dask"):
        RunnerConfig(kind="ray")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="gate metric"):
        replace(TrainConfig(), gate=GateConfig(metric="auc"))  # type: ignore[arg-type]


def test_a_model_with_an_unknown_calibration_fails_before_any_fitting() -> None:
    scores, y, folds = np.linspace(0, 1, 8), np.array([0, 1] * 4), np.repeat([0, 1], 4)
    with pytest.raises(ValueError, match="calibration must be one of auto, isotonic, sigmoid; got 'platt'"):
        choose_calibration(scores, y, folds, "platt", 50)  # type: ignore[arg-type]


def test_valid_choices_are_accepted() -> None:
    for metric in METRIC_KEYS:
        assert TrainConfig(selection_metric=metric, gate=GateConfig(metric=metric)).selection_metric == metric
    check_choice("x", "b", ("a", "b"))
