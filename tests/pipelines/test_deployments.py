"""prefect.yaml and the scheduled flows: the file validates against the flows' parameter schemas,
a broken file is caught, and the scheduled flows run (ingest, DORA, rolling-window training)."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from pipelines.cli.main import build_app
from pipelines.flows.deployments import DEFAULT_PREFECT_FILE, recent_rows, validate_prefect_yaml
from tests.helpers.paths import REPO


def _deployments() -> list[dict[str, Any]]:
    return yaml.safe_load(DEFAULT_PREFECT_FILE.read_text())["deployments"]


def test_prefect_yaml_declares_the_five_scheduled_deployments_and_each_validates():
    checks = validate_prefect_yaml(DEFAULT_PREFECT_FILE)
    assert [c.problems for c in checks] == [[]] * len(checks)
    by_flow = {c.flow_name: c for c in checks}
    assert set(by_flow) == {
        "scheduled-ingest",
        "scheduled-train",
        "scheduled-score-batch",
        "scheduled-dora",
        "scheduled-digest",
        "scheduled-monitor",
    }
    assert by_flow["scheduled-digest"].schedules == ["cron 0 8 * * 1 UTC"]  # Monday morning
    assert by_flow["scheduled-monitor"].schedules == ["cron 30 1 * * * UTC"]  # daily, before the nightly train
    assert by_flow["scheduled-monitor"].parameters["retrain"] is True
    assert by_flow["scheduled-monitor"].parameters["false_alarm_rate"] == 0.05  # the drift check's looks budget
    assert by_flow["scheduled-monitor"].parameters["retrain_gate"] == "paired"  # the retrain's paired DeLong gate
    assert by_flow["scheduled-monitor"].parameters["retrain_follow"] is True  # follow-ups after a change
    assert all(c.work_pool == "incident-risk" and c.schedules for c in checks)
    assert by_flow["scheduled-ingest"].schedules == ["cron 5 * * * * UTC"]  # hourly
    assert by_flow["scheduled-train"].schedules == ["cron 30 2 * * * UTC"]  # nightly
    train = by_flow["scheduled-train"].parameters
    assert train["window_days"] > 0 and train["task_runner"] == "dask"


def _broken(tmp_path: Path, edit: Any) -> list[list[str]]:
    data = yaml.safe_load(DEFAULT_PREFECT_FILE.read_text())
    edit(data["deployments"])
    path = tmp_path / "prefect.yaml"
    path.write_text(yaml.safe_dump(data))
    # entrypoints are relative to the file: point them back at the repository's modules
    (tmp_path / "pipelines").symlink_to(REPO / "pipelines")
    return [c.problems for c in validate_prefect_yaml(path)]


@pytest.mark.parametrize(
    ("edit", "index", "expected"),
    [
        (lambda d: d[1]["parameters"].update(window_days="lots"), 1, "window_days"),
        (lambda d: d[1]["parameters"].update(task_runner="gpu"), 1, "task_runner"),
        (lambda d: d[1]["parameters"].update(windw_days=30), 1, "no such parameter"),
        (lambda d: d[3]["parameters"].update(period="fortnight"), 3, "period"),
        (lambda d: d[0]["schedules"][0].update(cron="61 * * * *"), 0, "schedules[0]"),
        (lambda d: d[2].pop("work_pool"), 2, "work_pool"),
        (lambda d: d[0].update(entrypoint="pipelines/flows/deployments.py:no_such_flow"), 0, "no_such_flow"),
        (lambda d: d[0].update(entrypoint="pipelines/flows/deployments.py:recent_rows"), 0, "not a flow"),
    ],
)
def test_a_broken_deployment_is_reported_and_the_others_stay_valid(tmp_path: Path, edit, index, expected):
    problems = _broken(tmp_path, edit)
    assert any(expected in p for p in problems[index]), problems[index]
    assert all(not p for i, p in enumerate(problems) if i != index)


def test_deploy_check_command_exit_codes(tmp_path: Path):
    runner = CliRunner()
    ok = runner.invoke(build_app(), ["deploy", "--check", "--file", str(DEFAULT_PREFECT_FILE)])
    assert ok.exit_code == 0, ok.output
    assert ok.output.count("ok ") == len(yaml.safe_load(DEFAULT_PREFECT_FILE.read_text())["deployments"])
    data = yaml.safe_load(DEFAULT_PREFECT_FILE.read_text())
    bad = copy.deepcopy(data)
    bad["deployments"][1]["parameters"]["workers"] = "many"
    path = tmp_path / "prefect.yaml"
    path.write_text(yaml.safe_dump(bad))
    (tmp_path / "pipelines").symlink_to(REPO / "pipelines")
    result = runner.invoke(build_app(), ["deploy", "--check", "--file", str(path)])
    assert result.exit_code == 2 and "workers" in result.output
    # registering needs a persistent server: refuse without PREFECT_API_URL (the test env has none)
    result = runner.invoke(build_app(), ["deploy", "--file", str(DEFAULT_PREFECT_FILE)])
    assert result.exit_code == 2 and "PREFECT_API_URL" in result.output


def test_recent_rows_keeps_the_rolling_window_up_to_the_latest_row():
    times = pd.date_range("2026-01-01", periods=10, freq="D", tz="UTC")
    frame = pd.DataFrame({"created_at": times, "x": range(10)})
    assert recent_rows(frame, 3)["x"].tolist() == [7, 8, 9]
    assert recent_rows(frame, 3, pd.Timestamp("2026-01-05", tz="UTC"))["x"].tolist() == [2, 3, 4]
    assert len(recent_rows(frame, 100)) == 10


@pytest.fixture(scope="module")
def sim_exports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from features.simulation.export import write_exports
    from features.simulation.simulator import SimulationConfig, simulate

    out = tmp_path_factory.mktemp("exports")
    write_exports(simulate(SimulationConfig(days=60, services=8, seed=5)), out, "generic")
    return out


@pytest.mark.flow
@pytest.mark.slow
def test_scheduled_flows_ingest_report_and_train_on_the_recent_window(
    prefect_harness: None, home: Path, sim_exports: Path
):
    from mlflow import MlflowClient

    from models.registry.artifacts import CHALLENGER, MODEL_NAME
    from pipelines.flows.deployments import DeploymentFlowError, scheduled_dora, scheduled_ingest, scheduled_train

    (home / "sources.yaml").symlink_to(sim_exports / "sources.yaml")
    with pytest.raises(DeploymentFlowError, match="no deploys"):
        scheduled_dora(home=str(home))
    report = scheduled_ingest(home=str(home))  # the deployment's default: {home}/sources.yaml
    assert report["ok"] and report["committed"] and report["totals"]["inserted"] > 0
    again = scheduled_ingest(config=str(sim_exports / "sources.yaml"), home=str(home))
    assert not again["committed"] and again["store_version"] == report["store_version"]

    dora = scheduled_dora(home=str(home), by="all", period="week", out_path="{home}/reports/dora.csv")
    frame = pd.read_csv(dora["out"])
    assert dora["rows"] == len(frame) > 0 and set(frame["group"]) == {"all"}

    outcome = scheduled_train(home=str(home), window_days=30, test_fraction=0.25, seed=1)
    run = MlflowClient().get_run(outcome["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["source"] == "scheduled-train window=30d"
    split = json.loads(
        Path(MlflowClient().download_artifacts(outcome["run_id"], "data_summary.json", str(home))).read_text()
    )
    span = pd.Timestamp(split["test_end"]) - pd.Timestamp(split["train_start"])
    assert span <= pd.Timedelta(days=30)  # only the rolling window's deploys are training rows
    version = MlflowClient().get_model_version_by_alias(MODEL_NAME, CHALLENGER)
    assert str(version.version) == outcome["model_version"]


@pytest.mark.flow
def test_scheduled_score_batch_skips_without_a_file_and_never_overwrites(prefect_harness: None, home: Path):
    from models.registry.artifacts import MODEL_NAME
    from pipelines.flows.deployments import scheduled_score_batch
    from tests.helpers.scoring import fitted, register, simulated, write_store

    sim = simulated()
    write_store(home, sim.history)
    register(home, fitted("logreg"), MODEL_NAME)
    skipped = scheduled_score_batch(home=str(home))  # the deployment's defaults; no {home}/upcoming/ yet
    assert skipped["skipped"] and "upcoming.csv does not exist" in skipped["reason"]
    assert not (home / "scores").exists()

    upcoming = home / "upcoming" / "upcoming.csv"
    upcoming.parent.mkdir()
    frame = sim.upcoming[["deploy_id", "service", "created_at", "lines_added"]].head(5)
    frame.assign(created_at=frame["created_at"].map(lambda t: t.isoformat())).to_csv(upcoming, index=False)
    daily = "{home}/scores/{date}.parquet"  # one name per day: the second run of the day must not replace the first
    first = scheduled_score_batch(home=str(home), out_path=daily)
    second = scheduled_score_batch(home=str(home), out_path=daily)
    assert not first["skipped"] and first["n_scored"] == 5 and first["output"] != second["output"]
    assert second["output"].endswith("-2.parquet") and Path(first["output"]).exists()
    default = scheduled_score_batch(home=str(home))
    assert Path(default["output"]).parent.name == first["output"].rsplit("/", 1)[1].removesuffix(".parquet")


@pytest.mark.flow
def test_scheduled_dora_logs_the_demo_trend_run(prefect_harness: None, home: Path):
    from mlflow import MlflowClient

    from pipelines.flows.deployments import scheduled_dora
    from pipelines.flows.dora import DORA_EXPERIMENT
    from tests.helpers.scoring import simulated, write_store

    write_store(home, simulated().history)
    dora = scheduled_dora(home=str(home), by="tribe", period="week")
    client = MlflowClient()
    run = client.get_run(dora["run_id"])
    assert client.get_experiment(run.info.experiment_id).name == DORA_EXPERIMENT
    assert run.data.params == {"by": "tribe", "period": "week"} and run.data.metrics["deployments"] > 0
    assert {a.path for a in client.list_artifacts(dora["run_id"])} == {"dora.csv", "dora_trends.png"}
    logged = pd.read_csv(client.download_artifacts(dora["run_id"], "dora.csv", str(home)))
    assert logged.equals(pd.read_csv(dora["out"]))


def test_scheduled_flows_parse_max_lag_by_the_shared_parser() -> None:
    from features.labels.attribution import max_lag_from
    from pipelines.flows.deployments import DeploymentFlowError, _max_lag

    assert _max_lag(None) is None and _max_lag(6.0) == max_lag_from("6") == pd.Timedelta(hours=6)
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(DeploymentFlowError, match="max_lag_hours: max lag must be"):
            _max_lag(bad)
