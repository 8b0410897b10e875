"""The monitor end to end: the service logs its scores, the flow judges them against matured outcomes.

A simulated store and a registered model (tests/models/scoring/test_scoring_helpers.py); the
history's production deploys are scored through the real app (``/v1/score/batch``), whose
shutdown flush writes the prediction log; the flow then runs under the session's Prefect harness.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from models.monitoring.alarms import AlarmConfig
from models.monitoring.outcomes import WindowConfig
from models.monitoring.predlog import feature_rows, predictions_dir, read_predictions, write_records
from models.serving.app import ServiceConfig, create_app
from pipelines.settings import resolve_settings
from tests.helpers.scoring import fitted, register, simulated, write_store

NAME = "incident-risk-test-monitor"
SMALL = AlarmConfig(min_labels=50, min_failures=5)


def _body(row: pd.Series) -> dict:
    return {
        "service": str(row.service),
        "deploy_id": str(row.deploy_id),
        "author": str(row.author),
        "lines_added": int(row.lines_added),
        "lines_deleted": int(row.lines_deleted),
        "files_changed": int(row.files_changed),
        "touches_infra": bool(row.touches_infra),
        "planned_at": pd.Timestamp(row.created_at).isoformat(),
    }


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A home whose prediction log holds the service's scores of every production deploy."""
    home = tmp_path_factory.mktemp("monitor-home")
    history = simulated().history
    write_store(home, history)
    version = register(home, fitted("logreg"), NAME)
    deploys = history.deploys[history.deploys["environment"] == "production"]
    bodies = [_body(r) for r in deploys.itertuples()]
    config = ServiceConfig(
        store_dir=home / "store", model_name=NAME, refresh_seconds=3600, prediction_flush_seconds=3600
    )
    with TestClient(create_app(config)) as client:
        for start in range(0, len(bodies), 500):
            assert client.post("/v1/score/batch", json={"deploys": bodies[start : start + 500]}).status_code == 200
        assert read_predictions(predictions_dir(home)).empty  # buffered: nothing written on the request path
    return home, version


def test_the_service_logged_every_score_at_shutdown(served: tuple[Path, str]) -> None:
    home, version = served
    log = read_predictions(predictions_dir(home))
    production = simulated().history.deploys.query("environment == 'production'")
    assert len(log) == len(production) and set(log["deploy_id"]) == set(production["deploy_id"])
    assert (log["caller"] == "/v1/score/batch").all() and (log["model_version"] == version).all()
    assert log["squad"].notna().all() and log["feature_set_version"].notna().all()
    assert feature_rows(log)["lines_added"].iloc[0] >= 0 and feature_rows(log)["service"].notna().all()


@pytest.mark.flow
def test_monitor_flow_logs_metrics_tables_and_figures_to_mlflow(
    prefect_harness: None, served: tuple[Path, str]
) -> None:
    from mlflow import MlflowClient

    from pipelines.flows.monitor import EXPERIMENT, MonitorOptions, run_monitor

    home, version = served
    outcome = run_monitor(resolve_settings(home), MonitorOptions(model_name=NAME, alarm=SMALL))
    assert outcome.model_version == version and outcome.run_id
    counts = outcome.summary["predictions"]
    assert counts["matured"] > 100 and counts["unmatched"] == 0
    assert outcome.summary["latest_window"]["roc_auc"] > 0.6
    client = MlflowClient()
    run = client.get_run(outcome.run_id)
    assert client.get_experiment(run.info.experiment_id).name == EXPERIMENT
    assert run.data.tags["model_version"] == version and "latest_roc_auc" in run.data.metrics
    assert len(client.get_metric_history(outcome.run_id, "rolling_roc_auc")) >= 2  # AUC over time
    files = {f.path for f in client.list_artifacts(outcome.run_id)} | {
        f.path for f in client.list_artifacts(outcome.run_id, "figures")
    }
    assert {"summary.json", "feature_drift.csv", "realised_vs_predicted_by_squad.csv"} <= files
    assert {"figures/auc_over_time.png", "figures/drift.png", "figures/realised_vs_predicted.png"} <= files
    assert "realised_vs_predicted_by_band.csv" in files  # per-band metrics
    prom = (home / "monitor.prom").read_text()
    assert f'incident_risk_monitor_alarm{{model="{NAME}",version="{version}"}} {int(outcome.firing)}' in prom
    assert "incident_risk_monitor_last_run_timestamp_seconds" in prom


@pytest.mark.flow
def test_a_decayed_model_fires_the_alarm_emits_and_retrains(
    prefect_harness: None, served: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pipelines.flows.monitor as monitor

    home, _ = served
    inverted = tmp_path / "home"
    write_store(inverted, simulated().history)
    log = read_predictions(predictions_dir(home))
    planned = pd.to_datetime(log["planned_at"], utc=True)
    late = (planned > planned.min() + pd.Timedelta(days=18)).to_numpy()
    log.loc[late, "probability"] = 1.0 - log.loc[late, "probability"]  # the ranking turns upside down
    write_records(predictions_dir(inverted), log.to_dict("records"))
    calls: list[tuple[str, float, pd.Timestamp | None]] = []

    def fake_retrain(settings, config, as_of, onset):
        calls.append((str(settings.home), config.window_days, onset))
        return {"ok": 1}

    monkeypatch.setattr(monitor, "retrain", fake_retrain)
    import pipelines.flows.artifacts as artifacts

    events: list[artifacts.EventSpec] = []
    summaries: list[tuple[str, str]] = []
    monkeypatch.setattr(artifacts, "emit", events.append)
    monkeypatch.setattr(monitor, "publish_summary", lambda key, markdown, *a, **k: summaries.append((key, markdown)))
    ten_days = AlarmConfig(window=WindowConfig(days=10), min_labels=50, min_failures=5)
    options = monitor.MonitorOptions(model_name=NAME, alarm=ten_days, retrain=True)
    outcome = monitor.run_monitor(resolve_settings(inverted), options)
    assert outcome.firing and outcome.exit_code == 3
    assert any(r.startswith("AUC") for r in outcome.summary["alarm"]["reasons"])
    ((where, days, onset),) = calls
    assert where == str(inverted.resolve()) and days == 30.0 and outcome.retrain == {"ok": 1}
    # the retrain is told when the ranking turned: within a few days of the inversion
    assert onset is not None and abs(onset - (planned.min() + pd.Timedelta(days=18))) < pd.Timedelta(days=3)
    assert outcome.summary["degradation_onset"] == onset.isoformat()
    # the one decay-alarm event the documented retraining automation listens to (docs/automations.md)
    assert [e.event for e in events] == [artifacts.DECAY_ALARM]
    assert events[0].payload["model_version"] == outcome.model_version and events[0].payload["reasons"]
    ((key, markdown),) = summaries
    assert key == "monitor-summary" and "**decay alarm**" in markdown and "Retrain" in markdown


@pytest.mark.flow
def test_a_young_retrained_champion_is_retrained_from_its_onset_alarm_or_not(
    prefect_harness: None, served: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import pipelines.flows.monitor as monitor

    home, _ = served
    calls: list[tuple[pd.Timestamp | None, bool]] = []

    def fake_retrain(settings, config, as_of, onset, follow_up=False):
        calls.append((onset, follow_up))
        return {"follow_up": follow_up}

    monkeypatch.setattr(monitor, "retrain", fake_retrain)
    monkeypatch.setattr(monitor, "publish_summary", lambda *a, **k: None)
    now = pd.Timestamp.now(tz="UTC")
    young, old = now - pd.Timedelta(days=20), now - pd.Timedelta(days=200)
    options = monitor.MonitorOptions(model_name=NAME, alarm=SMALL, retrain=True)

    monkeypatch.setattr(monitor, "champion_onset", lambda: young)
    outcome = monitor.run_monitor(resolve_settings(home), options)
    assert calls == [(young, True)]  # a follow-up from the recorded onset
    assert outcome.retrain == {"follow_up": True}
    calls.clear()
    no_follow = monitor.MonitorOptions(model_name=NAME, alarm=SMALL, retrain=True,
                                       retraining=monitor.RetrainConfig(follow_change=False))  # fmt: skip
    outcome = monitor.run_monitor(resolve_settings(home), no_follow)
    assert [follow_up for _, follow_up in calls] == ([False] if outcome.firing else [])
    calls.clear()
    monkeypatch.setattr(monitor, "champion_onset", lambda: old)  # 200 days: past the follow-ups' 180
    outcome = monitor.run_monitor(resolve_settings(home), options)
    assert [follow_up for _, follow_up in calls] == ([False] if outcome.firing else [])
    assert all(onset != old for onset, _ in calls)
    calls.clear()
    outcome = monitor.run_monitor(resolve_settings(home), monitor.MonitorOptions(model_name=NAME, alarm=SMALL))
    assert calls == [] and outcome.retrain is None  # no --retrain: never


def test_the_retrain_tags_its_version_with_the_onset_and_the_champion_reads_it(
    served: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    import pipelines.flows.monitor as monitor
    import pipelines.flows.train as train_flow
    from models.training.train import TrainingTable

    home, _ = served
    name = f"{NAME}-onset"
    version = register(tmp_path, fitted("logreg"), name)  # the champion of its own registered model
    monkeypatch.setattr(monitor, "MODEL_NAME", name)  # the name the training flow registers under
    created = pd.date_range("2026-06-01", periods=60, freq="D", tz="UTC")
    frame = pd.DataFrame({"deploy_id": range(60), "created_at": created, "x": range(60), "label": [0, 1] * 30})
    monkeypatch.setattr(monitor, "retrain_table_task", lambda *a: TrainingTable(frame, ("x",), (), {}, "r", "v"))
    outcome = train_flow.TrainOutcome("run", version, True, "better", {}, {})
    seen: list[train_flow.TrainOptions] = []
    monkeypatch.setattr(train_flow, "run_training", lambda _s, options, **_k: seen.append(options) or outcome)
    assert monitor.champion_onset(name) is None  # not retrained from a change

    onset = pd.Timestamp("2026-06-20", tz="UTC")
    done = monitor.retrain(resolve_settings(home), monitor.RetrainConfig(), None, onset, follow_up=True)
    assert done["trigger"] == "follow-up of the change from 2026-06-20"
    assert done["model_version"] == version and done["onset"] == onset.isoformat()
    assert seen[-1].train.gate.alpha == 0.5 and seen[-1].source.startswith("monitor: follow-up")  # z > 0
    assert monitor.champion_onset(name) == onset
    client = MlflowClient()
    client.set_model_version_tag(name, version, monitor.ONSET_TAG, "last tuesday")
    with pytest.raises(monitor.MonitorError, match=f"v{version}: tag retrain_onset='last tuesday' is not a time"):
        monitor.champion_onset(name)
    client.delete_model_version_tag(name, version, monitor.ONSET_TAG)
    monitor.retrain(resolve_settings(home), monitor.RetrainConfig(from_onset=False), None, onset)  # a fixed window
    assert monitor.champion_onset(name) is None  # learnt from no onset: nothing to follow
    assert seen[-1].train.gate.alpha == 0.05 and seen[-1].source.startswith("monitor: decay alarm")


@pytest.mark.flow
def test_nothing_to_judge_is_a_clear_error_and_nothing_is_logged(
    prefect_harness: None, served: tuple[Path, str], tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    from pipelines.flows.monitor import EXPERIMENT, MonitorError, MonitorOptions, run_monitor

    home, version = served
    client = MlflowClient()
    experiment = client.get_experiment_by_name(EXPERIMENT)
    before = len(client.search_runs([experiment.experiment_id])) if experiment else 0
    empty = tmp_path / "empty"
    write_store(empty, simulated().history)
    with pytest.raises(MonitorError, match="no predictions"):
        run_monitor(resolve_settings(empty), MonitorOptions(model_name=NAME))
    log = read_predictions(predictions_dir(home))
    fresh = tmp_path / "fresh"
    write_store(fresh, simulated().history)
    log["deploy_id"] = "deploys:not-shipped-yet-" + log["deploy_id"].astype(str)
    write_records(predictions_dir(fresh), log.to_dict("records"))
    with pytest.raises(MonitorError, match="no matured labels yet"):
        run_monitor(resolve_settings(fresh), MonitorOptions(model_name=NAME))
    gone = tmp_path / "gone"
    write_store(gone, simulated().history)
    log["model_version"] = "999"
    write_records(predictions_dir(gone), log.to_dict("records"))
    with pytest.raises(MonitorError, match="v999 made the latest predictions but cannot be loaded"):
        run_monitor(resolve_settings(gone), MonitorOptions(model_name=NAME))
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert (len(client.search_runs([experiment.experiment_id])) if experiment else 0) == before


@pytest.mark.flow
def test_cli_exit_codes(prefect_harness: None, served: tuple[Path, str], tmp_path: Path) -> None:
    from pipelines.cli.main import build_app

    home, _ = served
    app = build_app()
    runner = CliRunner()
    nothing = runner.invoke(app, ["monitor", "--home", str(tmp_path / "nothing"), "--model", NAME])
    assert nothing.exit_code == 4 and "no predictions" in nothing.output
    bad = runner.invoke(app, ["monitor", "--home", str(home), "--model", NAME, "--as-of", "yesterday-ish"])
    assert bad.exit_code == 2
    ok = runner.invoke(app, ["monitor", "--home", str(home), "--model", NAME, "--min-labels", "50", "--json"])
    assert ok.exit_code in (0, 3), ok.output
    body = json.loads(ok.output)
    assert body["firing"] == (ok.exit_code == 3) and body["predictions"]["matured"] > 100


def test_metrics_expose_the_score_distribution_per_band_and_logging_can_be_off(
    served: tuple[Path, str], tmp_path: Path
) -> None:
    home, _ = served
    off = tmp_path / "log-off"
    config = ServiceConfig(
        store_dir=home / "store", model_name=NAME, refresh_seconds=3600, log_predictions=False,
        prediction_log_dir=off,
    )  # fmt: skip
    row = next(simulated().history.deploys.query("environment == 'production'").itertuples())
    with TestClient(create_app(config)) as client:
        band = client.post("/v1/score", json=_body(row)).json()["band"]
        text = client.get("/metrics").text
    assert f'incident_risk_score_probability_count{{band="{band}"}} 1.0' in text
    assert 'incident_risk_score_probability_bucket{band="' in text
    assert not off.exists()
