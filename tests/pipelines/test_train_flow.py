"""The training flow end to end on a simulated store (once, under Prefect), and the CLI commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from models.training.config import METRIC_KEYS, CandidateGrid, TrainConfig
from pipelines.cli.train import register
from pipelines.settings import prepare_runtime, resolve_settings

SMALL = TrainConfig(
    candidates=(CandidateGrid("logreg", (("C", (0.1,)),)), CandidateGrid("hgb", (("max_iter", (40,)),))),
    n_splits=3,
    permutation_repeats=1,
)


def _store(home: Path) -> None:
    from features.history.store import HistoryStore
    from features.simulation.simulator import SimulationConfig, simulate

    h = simulate(SimulationConfig(days=60, services=12, seed=2)).history
    store = HistoryStore(home / "store")
    with store.lock():
        store.commit({"deploys": h.deploys, "toggle_events": h.toggle_events, "incidents": h.incidents}, None, 0)


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def test_training_table_holds_matured_eligible_deploys_with_their_labels():
    from features.labels.attribution import AttributionConfig, attribute
    from features.pointintime.compute import FeatureConfig
    from features.simulation.simulator import SimulationConfig, simulate
    from models.training.dataset import build_training_table, fingerprint

    history = simulate(SimulationConfig(days=30, services=6, seed=4)).history
    table = build_training_table(history, AttributionConfig(), FeatureConfig())
    labels = attribute(history, AttributionConfig()).deploy_labels.set_index("deploy_id")
    rows = labels.loc[table.frame["deploy_id"]]
    assert rows["mature"].all() and rows["eligible"].all()
    assert (table.frame["label"].to_numpy() == rows["failed"].astype(int).to_numpy()).all()
    assert table.excluded["immature"] == int((labels["eligible"] & ~labels["mature"]).sum())
    assert len(table.frame) + sum(table.excluded.values()) == len(labels)
    deploys = history.deploys.set_index("deploy_id").loc[table.frame["deploy_id"]]
    expected = deploys["lines_added"].astype(float).fillna(0) + deploys["lines_deleted"].astype(float).fillna(0)
    assert (table.frame["effort"].fillna(0).to_numpy() == expected.to_numpy()).all()
    assert fingerprint(table) == fingerprint(build_training_table(history, AttributionConfig(), FeatureConfig()))


def test_empty_store_is_a_clear_error(home: Path):
    from pipelines.flows.train import TrainingError, run_training

    settings = resolve_settings(home)
    prepare_runtime(settings)
    with pytest.raises(TrainingError, match="holds no deploys"):
        run_training(settings, orchestrate=False, progress=lambda _m: None)
    import mlflow

    runs = mlflow.search_runs(experiment_names=["incident-risk"], output_format="list")
    assert [r.info.status for r in runs] == ["FAILED"]  # opened at the start, closed as failed


def test_parent_run_is_watchable_from_the_start_and_the_experiment_is_classical_ml(home: Path):
    """MLflow 3 opens an experiment without ``mlflow.experimentKind`` in GenAI mode."""
    import time

    from mlflow import MlflowClient

    from pipelines.flows.train import TrainOptions, run_training

    _store(home)
    settings = resolve_settings(home)
    prepare_runtime(settings)
    seen: dict[str, object] = {}

    def progress(line: str) -> None:
        if line.startswith("training table:"):  # features built, the search not started
            runs = MlflowClient().search_runs(
                [MlflowClient().get_experiment_by_name("incident-risk").experiment_id],
                "tags.run_kind = 'training'",
            )
            seen["status"] = [r.info.status for r in runs]
            seen["at"] = time.time() * 1000

    outcome = run_training(settings, TrainOptions(train=SMALL), progress=progress, orchestrate=False)
    assert seen["status"] == ["RUNNING"]
    client = MlflowClient()
    run = client.get_run(outcome.run_id)
    assert run.info.status == "FINISHED" and run.info.start_time < seen["at"]  # type: ignore[operator]
    assert (run.info.end_time - run.info.start_time) / 1000 >= outcome.seconds["train"]
    assert client.get_experiment(run.info.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    assert run.data.tags["calibration_reason"].startswith(run.data.tags["calibration"])


@pytest.mark.flow
def test_train_flow_writes_metrics_registers_and_lists_runs(home: Path, prefect_harness: None):
    from pipelines.flows.train import TrainOptions, run_training

    _store(home)
    settings = resolve_settings(home)
    prepare_runtime(settings)
    out = home / "metrics.json"
    lines: list[str] = []
    outcome = run_training(settings, TrainOptions(metrics_out=out, train=SMALL), progress=lines.append)
    doc = json.loads(out.read_text())
    assert set(doc) >= {"run_id", "model_name", "model_version", "split", "n_train", "n_test", "test", "baselines"}
    assert tuple(doc["test"]) == METRIC_KEYS
    assert set(doc["baselines"]) == {"lines_added", "service_failure_rate"}
    assert doc["run_id"] == outcome.run_id and doc["model_version"] == "1"
    assert doc["n_train"] > 4 * doc["n_test"] * 0.9
    assert any(line.startswith("training table:") for line in lines)
    assert (home / "mlartifacts").exists()

    runner = CliRunner()
    listed = runner.invoke(_app(), ["runs", "--home", str(home)])
    assert listed.exit_code == 0, listed.output
    assert outcome.run_id[:8] in listed.output and "test roc_auc" in listed.output
    refused = runner.invoke(_app(), ["promote", "--revert", "--home", str(home)])
    assert refused.exit_code == 1 and "no earlier champion" in refused.output
    forced = runner.invoke(_app(), ["promote", "1", "--reason", "test", "--home", str(home)])
    assert forced.exit_code == 0 and "champion is now v1" in forced.output


def test_train_rejects_a_bad_task_runner_before_any_work(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from pipelines.cli.main import build_app

    runner = CliRunner()
    bad = runner.invoke(build_app(), ["train", "--home", str(tmp_path), "--task-runner", "gpu"])
    assert bad.exit_code == 2 and "task runner must be one of" in bad.output
    both = runner.invoke(build_app(), ["train", "--home", str(tmp_path), "--task-runner", "dask", "--no-prefect"])
    assert both.exit_code == 2 and "needs Prefect" in both.output
