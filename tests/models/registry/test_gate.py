"""The promotion gate compares champion and challenger out of sample: on deploys after both training ends."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from models.registry.artifacts import CHAMPION, MODEL_NAME, load_model
from models.registry.gate import ChampionInfo, judge
from models.training.config import CandidateGrid, GateConfig, TrainConfig
from models.training.evaluation import evaluate
from models.training.tracking import RunContext, log_training, runs_table
from models.training.train import LABEL, TIME, train
from tests.helpers.synthetic import synthetic_table

# A flexible model that fits its training rows closely: re-scored on them it looks better than it is.
CONFIG = TrainConfig(
    candidates=(CandidateGrid("hgb", (("max_iter", (300,)), ("max_leaf_nodes", (63,)))),),
    n_splits=3,
    permutation_repeats=1,
)
DAY = pd.Timestamp("2024-01-01", tz="UTC")


@pytest.fixture(scope="module")
def table():
    return synthetic_table(3000, seed=5)[0]


def _train(table, test_day: int, gate: GateConfig | None = None):
    config = CONFIG if gate is None else replace(CONFIG, gate=gate)
    with threadpool_limits(limits=1):
        return train(table, config, test_start=DAY + pd.Timedelta(days=test_day))


def _context(home: Path) -> RunContext:
    return RunContext("gate", "fp", "rule", "syn-1", {}, {}, artifact_root=str(home / "art"))


def test_champion_is_rescored_only_after_its_training_end(table, home: Path) -> None:
    champion_result = _train(table, test_day=130)
    first = log_training(champion_result, _context(home))
    assert first.outcome.decision.promote
    champion = load_model(f"models:/{MODEL_NAME}@{CHAMPION}")
    champion_end = pd.Timestamp(champion_result.split["train_end"])

    # A retrain with an earlier test start: days 90..130 of its test period are the champion's training data.
    challenger = _train(table, test_day=90)
    test = challenger.test_frame
    after = (test[TIME] > champion_end).to_numpy()
    assert 0.3 < 1 - after.mean() < 0.6  # a large in-sample share, as in the reported trial
    y = test[LABEL].to_numpy()
    in_sample = evaluate(y, champion.predict_proba(test)[:, 1])
    out_of_sample = evaluate(y[after], champion.predict_proba(test[after])[:, 1])
    assert in_sample["roc_auc"] > out_of_sample["roc_auc"] + 0.02  # the bias the gate must not reward

    # the plain verdict (what benchmarks/monitoring.py gates with) is the one the registry records
    effort = test["effort"].to_numpy(dtype=np.float64, na_value=np.nan) if "effort" in test else None
    verdict = judge(
        ChampionInfo(first.outcome.version, champion, ""), challenger.test_metrics, test, y, effort,
        challenger.config.gate, challenger.test_scores, pd.Timestamp(challenger.split["train_end"]),
    )  # fmt: skip

    second = log_training(challenger, _context(home))
    outcome = second.outcome
    assert verdict.decision == outcome.decision and verdict.period == outcome.comparison
    assert verdict.champion_metrics == outcome.champion_metrics
    assert outcome.comparison is not None and outcome.comparison.n == int(after.sum())
    assert pd.Timestamp(outcome.comparison.after) == champion_end
    assert pd.Timestamp(outcome.comparison.start) > champion_end
    assert outcome.champion_metrics is not None
    assert outcome.champion_metrics["roc_auc"] == pytest.approx(out_of_sample["roc_auc"])
    expected = evaluate(y[after], challenger.test_scores[after])
    assert outcome.challenger_compared is not None
    assert outcome.challenger_compared["roc_auc"] == pytest.approx(expected["roc_auc"])

    # the period is recorded on the run, in the report and in `runs`
    run = mlflow.get_run(second.run_id)
    assert run.data.tags["gate_period_n"] == str(int(after.sum()))
    assert run.data.tags["gate_period_after"] == str(champion_end)
    report = Path(mlflow.artifacts.download_artifacts(run_id=second.run_id, artifact_path="report/report.html"))
    text = report.read_text()
    assert "Promotion gate" in text and f"{int(after.sum())} test deploys" in text
    assert "Challenger vs champion, same deploys" in text
    runs = runs_table("gate")
    assert runs.loc["gate n", runs.columns[0]] == str(int(after.sum()))


def test_gate_refuses_without_enough_deploys_after_both_training_ends(table, home: Path) -> None:
    assert log_training(_train(table, test_day=175), _context(home)).outcome.decision.promote
    challenger = _train(table, test_day=90, gate=GateConfig(min_comparison_rows=500))
    outcome = log_training(challenger, _context(home)).outcome
    assert not outcome.decision.promote and outcome.champion_metrics is None
    assert "only" in outcome.decision.reason and "need >= 500" in outcome.decision.reason
    assert "manual decision" in outcome.decision.reason
    assert np.isfinite(outcome.comparison.n) and outcome.comparison.n < 500
