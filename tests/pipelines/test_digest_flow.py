"""The digest flow end to end: store + champion -> MLflow run with the chart -> one Slack message per squad
and tribe (fake Slack on loopback), a dry run that sends nothing, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from features.history.store import HistoryStore
from models.notify.config import NotifyConfig, SlackConfig
from models.notify.digest import NO_RANKING
from pipelines.flows.digest import EXPERIMENT, run_digest
from pipelines.settings import resolve_settings
from tests.helpers.scoring import home_with_champion
from tests.helpers.slack import TOKEN, fake_slack

NAME = "incident-risk-test-digest"
WEEK = "2026-01-26"  # the simulated history (30 days from 2026-01-05) holds this whole week


@pytest.fixture
def stocked(home: Path) -> Path:
    home_with_champion(home, NAME)
    return home


@pytest.mark.flow
def test_digest_sends_one_message_per_squad_and_tribe_and_logs_the_chart(prefect_harness: None, stocked: Path) -> None:
    settings = resolve_settings(stocked)
    with fake_slack([(429, {"Retry-After": "1"})]) as slack:
        notify = NotifyConfig(slack=SlackConfig(token=TOKEN, base_url=slack.api_url))
        report = run_digest(settings, notify, week_start=WEEK, model_name=NAME, out_dir=stocked / "out")
        assert report.scored and report.sent == len(report.messages) and not report.failed
        # with a champion, incidents naming no cause carry the suspects model's ranking
        assert NO_RANKING not in json.dumps(report.messages) and "no recent change (" in json.dumps(report.messages)
        assert len(slack.messages) == len(report.messages) and slack.problems == []
    catalog = HistoryStore(stocked / "store").read_history().catalog
    groups = catalog[catalog["kind"] == "group"]
    assert {m["channel"] for m in slack.messages} <= {f"#{c}" for c in groups["slack_channel"]}
    assert any(m["channel"].startswith("#tribe-") for m in slack.messages)
    run = MlflowClient().get_run(str(report.run_id))
    assert run.info.experiment_id == MlflowClient().get_experiment_by_name(EXPERIMENT).experiment_id
    artifacts = {a.path for a in MlflowClient().list_artifacts(str(report.run_id))}
    assert {f"digest-{WEEK}.png", "messages.json"} <= artifacts
    assert TOKEN not in json.dumps(run.data.params) and TOKEN not in json.dumps(run.data.tags)
    written = sorted((stocked / "out").glob("*.json"))
    assert len(written) == len(report.messages) and (stocked / "out" / f"digest-{WEEK}.png").exists()


@pytest.mark.flow
def test_dry_run_prints_block_kit_and_sends_nothing(prefect_harness: None, stocked: Path) -> None:
    from pipelines.cli.main import build_app

    with fake_slack() as slack:
        result = CliRunner().invoke(
            build_app(), ["digest", "--home", str(stocked), "--week", WEEK, "--dry-run", "--model", NAME]
        )
        assert result.exit_code == 0, result.output
        assert slack.requests == 0
    messages = json.loads(result.stdout)
    assert messages and all({"channel", "text", "blocks"} <= set(m) for m in messages)
    bad = CliRunner().invoke(build_app(), ["digest", "--home", str(stocked), "--week", "2026-01-27", "--dry-run"])
    assert bad.exit_code == 2 and "must be a Monday" in bad.output
    unset = CliRunner().invoke(build_app(), ["digest", "--home", str(stocked), "--week", WEEK], env={})
    assert unset.exit_code == 2 and "SLACK_BOT_TOKEN" in unset.output
