"""``incident-risk suspects`` and ``incident-risk links`` through the whole CLI app: answers, formats, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from pipelines.cli.incidents import EXIT_BAD_INPUT, EXIT_UNAVAILABLE
from pipelines.cli.main import build_app
from tests.helpers.scoring import home_with_champion, simulated

NAME = "incident-risk-test-suspects-cli"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("suspects-home")
    home_with_champion(path, NAME)
    return path


@pytest.fixture(scope="module")
def caused() -> pd.DataFrame:
    sim = simulated()
    truth = sim.history.incidents.merge(sim.incident_truth, on="incident_id")
    return truth[truth["cause_kind"].eq("deploy")]


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(build_app(), list(args))
    return result.exit_code, result.stdout, result.stderr


def test_suspects_of_a_stored_incident_as_json(home: Path, caused: pd.DataFrame) -> None:
    row = caused.iloc[2]
    code, out, err = run("suspects", row["incident_id"], "--home", str(home), "--model", NAME, "--format", "json")
    assert code == 0, err
    body = json.loads(out)
    assert body["incident"]["incident_id"] == row["incident_id"] and body["incident"]["service"] == row["service"]
    assert row["cause_id"] in [s["change_id"] for s in body["suspects"]]
    assert len(body["suspects"]) <= 5 and 0 <= body["background_share"] <= 1


def test_suspects_of_an_opening_incident_as_a_table(home: Path, caused: pd.DataFrame) -> None:
    row = caused.iloc[4]
    at = row["created_at"].isoformat()
    args = ("suspects", "--service", row["service"], "--at", at, "--top", "2", "--home", str(home), "--model", NAME)
    code, out, err = run(*args)
    assert code == 0, err
    assert f"Suspects for an incident on {row['service']}" in out
    assert "no recent change:" in out and "share" in out
    code, out, _ = run(*args, "--format", "json")
    assert len(json.loads(out)["suspects"]) <= 2


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("suspects", "incidents:nope"), "incident_id"),
        (("suspects", "--service", "no-such-svc"), "service"),
        (("suspects", "--service", "reviews-svc", "--at", "2999-01-01T00:00:00Z"), "at"),
        (("suspects", "--service", "reviews-svc", "--at", "2026-01-20T10:00:00"), "at"),
        (("suspects", "--service", "reviews-svc", "--at", "not-a-time"), "--at"),
        (("suspects", "incidents:x", "--service", "reviews-svc"), "INCIDENT_ID or --service"),
        (("suspects",), "INCIDENT_ID or --service"),
    ],
)
def test_suspects_bad_input_exits_2_naming_the_field(home: Path, args: tuple[str, ...], named: str) -> None:
    code, _, err = run(*args, "--home", str(home), "--model", NAME)
    assert code == EXIT_BAD_INPUT
    assert named in err


def test_suspects_without_a_champion_exits_4(home: Path) -> None:
    code, _, err = run("suspects", "--service", "reviews-svc", "--home", str(home), "--model", "no-such-model")
    assert code == EXIT_UNAVAILABLE and "no usable" in err


def test_links_export_default_and_devlake_rules(home: Path, tmp_path: Path) -> None:
    out = tmp_path / "links.csv"
    code, _, err = run("links", "--home", str(home), "--format", "csv", "--out", str(out))
    assert code == 0, err
    frame = pd.read_csv(out)
    linked, unlinked = frame[frame["linked"]], frame[~frame["linked"]]
    assert set(linked["method"]) >= {"explicit", "time_window"}
    assert set(unlinked["reason"]) >= {"marked not change-related"}
    assert linked["lag_hours"].ge(0).all() and linked["lag_hours"].le(24).all()
    incidents = simulated().history.incidents
    assert set(linked["incident_id"]) | set(unlinked["incident_id"]) == set(incidents["incident_id"])

    code, text, err = run("links", "--home", str(home), "--rules", "devlake", "--format", "json")
    assert code == 0, err
    devlake = json.loads(text)
    assert devlake["rules"] == "devlake"
    assert {r["method"] for r in devlake["links"]} == {"time_window"}  # no cause fields, no rollbacks
    assert {r["change_kind"] for r in devlake["links"]} == {"deploy"}  # no flags

    code, text, _ = run("links", "--home", str(home), "--max-lag", "1")
    assert code == 0 and "Incident -> change links (default rules)" in text

    code, _, err = run("links", "--home", str(home), "--rules", "both", "--format", "csv", "--out", str(out))
    assert code == 0, err
    both = pd.read_csv(out)
    assert set(both["rules"]) == {"default", "devlake"}
    assert (both["rules"].eq("default") & both["linked"]).sum() == len(linked)


def test_links_bad_max_lag_exits_2(home: Path) -> None:
    code, _, err = run("links", "--home", str(home), "--max-lag", "-3")
    assert code == EXIT_BAD_INPUT and "max_lag" in err
