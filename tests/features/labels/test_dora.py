"""DORA metrics against a straightforward loop computation, and the ``dora`` command end to end."""

from __future__ import annotations

import io
import json
import math
import statistics
from collections import defaultdict
from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from features.history.schema import History
from features.history.store import HistoryStore
from features.labels.attribution import AttributionConfig, attribute, max_lag_from
from features.labels.dora import DoraConfig, dora_metrics, period_start, service_teams
from pipelines.cli.dora import register
from tests.features.labels.test_attribution import (
    at,
    brute_force_window,
    deploy,
    incident,
    make_history,
    random_history,
)

TEAMS = {"api": ("core", "platform"), "web": ("core", "platform"), "db": ("data", "storage")}


def teamed_history(seed: int) -> History:
    """A random history whose squads/tribes are a fixed function of the service."""
    h = random_history(seed)
    d = h.deploys.copy()
    d["squad"] = d["service"].map({s: t[0] for s, t in TEAMS.items()}).astype("string")
    d["tribe"] = d["service"].map({s: t[1] for s, t in TEAMS.items()}).astype("string")
    return History(d, h.toggle_events, h.incidents)


def loop_metrics(h: History, config: AttributionConfig, by: str, period: str) -> dict[tuple[str, str], dict]:
    """DORA metrics one record at a time, from the brute-force time-window links."""
    links = brute_force_window(h, config.max_lag, config.scope == "project")
    as_of = max(
        [
            *h.deploys["created_at"],
            *h.deploys["finished_at"].dropna(),
            *h.toggle_events["occurred_at"],
            *h.incidents["created_at"],
            *h.incidents["resolved_at"].dropna(),
        ]
    )

    def group(service: Any) -> str:
        if by == "all":
            return "all"
        if service is None or pd.isna(service):
            return "(unknown)"
        return str(service) if by == "service" else TEAMS[str(service)][0 if by == "squad" else 1]

    def start(ts: pd.Timestamp) -> str:
        day = ts.date()
        first = day - timedelta(days=day.weekday()) if period == "week" else day.replace(day=1)
        return first.isoformat()

    out: dict[tuple[str, str], dict] = defaultdict(
        lambda: {"deployments": 0, "mature": 0, "failed": 0, "restore": [], "recovery": [], "incidents": 0}
    )
    failed_deploys = {cid for kind, cid in links.values() if kind == "deploy"}
    live = {}
    deploy_rows: Any = h.deploys.itertuples()
    incident_rows: Any = h.incidents.itertuples()
    for d in deploy_rows:
        if d.environment != "production" or d.status not in ("success", "rolled_back"):
            continue
        t = d.finished_at if not pd.isna(d.finished_at) else d.created_at
        live[d.deploy_id] = (t, d.service)
        row = out[(group(d.service), start(t))]
        row["deployments"] += 1
        if t + config.window <= as_of:
            row["mature"] += 1
            row["failed"] += d.deploy_id in failed_deploys
    resolved = {}
    for i in incident_rows:
        row = out[(group(i.service), start(i.created_at))]
        row["incidents"] += 1
        if not pd.isna(i.resolved_at):
            resolved[i.incident_id] = i.resolved_at
            row["restore"].append((i.resolved_at - i.created_at).total_seconds() / 3600)
    for incident_id, (kind, cid) in links.items():
        if kind == "deploy" and incident_id in resolved:
            t, service = live[cid]
            out[(group(service), start(t))]["recovery"].append((resolved[incident_id] - t).total_seconds() / 3600)
    return dict(out)


@pytest.mark.parametrize(("seed", "by", "period"), [(0, "service", "week"), (1, "squad", "month"), (2, "all", "week")])
def test_dora_matches_loop_computation(seed: int, by: str, period: str) -> None:
    h = teamed_history(seed)
    config = AttributionConfig(include_toggles=seed != 1)
    if seed == 1:  # without toggles, the brute force must not see them either
        h = History(h.deploys, h.toggle_events.iloc[0:0], h.incidents)
    attribution = attribute(h, config)
    metrics = dora_metrics(h, attribution, DoraConfig(by=by, period=period))  # type: ignore[arg-type]
    expected = loop_metrics(h, config, by, period)

    rows: Any = metrics.itertuples()
    got = {(r.group, r.period_start.date().isoformat()): r for r in rows}
    assert set(got) == set(expected)
    assert sum(r["failed"] for r in expected.values()) > 5
    for key, exp in expected.items():
        row = got[key]
        assert row.deployments == exp["deployments"], key
        assert row.mature_deployments == exp["mature"], key
        assert row.failed_deployments == exp["failed"], key
        assert row.incidents == exp["incidents"], key
        days = 7 if period == "week" else pd.Timestamp(key[1]).days_in_month
        assert row.deploys_per_day == pytest.approx(exp["deployments"] / days)
        if exp["mature"]:
            assert row.change_failure_rate == pytest.approx(exp["failed"] / exp["mature"])
        else:
            assert pd.isna(row.change_failure_rate)
        for column, values in (
            ("time_to_restore_hours", exp["restore"]),
            ("failed_deployment_recovery_hours", exp["recovery"]),
        ):
            if values:
                assert getattr(row, column) == pytest.approx(statistics.median(values)), (key, column)
            else:
                assert pd.isna(getattr(row, column)), (key, column)
        assert row.recoveries == len(exp["recovery"])


def test_period_start_weeks_begin_monday_and_months_on_the_first() -> None:
    ts = pd.Series(pd.to_datetime(["2024-01-07T23:59:59Z", "2024-01-08T00:00:00Z", "2024-02-29T12:00:00Z"]))
    assert [t.isoformat() for t in period_start(ts, "week")] == [
        "2024-01-01T00:00:00+00:00",
        "2024-01-08T00:00:00+00:00",
        "2024-02-26T00:00:00+00:00",
    ]
    assert period_start(ts, "month").dt.strftime("%Y-%m-%d").tolist() == ["2024-01-01", "2024-01-01", "2024-02-01"]


def test_teams_come_from_latest_deploy_naming_them() -> None:
    h = make_history(
        deploys=[
            deploy("gh:1", 0, squad="old", tribe="t1"),
            deploy("gh:2", 5, squad="new"),
            deploy("gh:3", 1, service="web"),
        ]
    )
    teams = service_teams(h.deploys).set_index("service")
    assert teams.loc["api", "squad"] == "new" and teams.loc["api", "tribe"] == "t1"
    assert teams["squad"].isna().to_dict() == {"api": False, "web": True}


def test_failed_deployment_recovery_uses_failed_deploys_only() -> None:
    h = make_history(
        deploys=[deploy("gh:1", 0, finished_at=at(1)), deploy("gh:2", 10, label=0)],
        incidents=[
            incident("i", 2, resolved_at=at(5)),
            incident("j", 11, resolved_at=at(12)),  # linked to gh:2, which is externally not failed
            incident("k", 3, resolved_at=at(4), environment="staging"),  # not a production incident
        ],
    )
    m = dora_metrics(h, attribute(h, AttributionConfig()), DoraConfig(by="all", period="week"))
    assert len(m) == 1
    row = m.iloc[0]
    assert row["recoveries"] == 1 and row["failed_deployment_recovery_hours"] == pytest.approx(4.0)
    assert row["incidents"] == 2 and row["time_to_restore_hours"] == pytest.approx(2.0)


def test_max_lag_parser_is_shared_by_the_command_and_the_flows() -> None:
    assert max_lag_from("none") is None and max_lag_from("NONE") is None and max_lag_from(None) is None
    assert max_lag_from("1.5") == max_lag_from(1.5) == pd.Timedelta(minutes=90)
    for bad in ("0", "-3", "soon", "nan", "inf", 0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="max lag must be"):
            max_lag_from(bad)


# --------------------------------------------------------------------------------------------
# The command


@pytest.fixture()
def home(tmp_path: Path) -> Path:
    h = teamed_history(0)
    store = HistoryStore(tmp_path / "home" / "store")
    with store.lock():
        store.commit({"deploys": h.deploys, "toggle_events": h.toggle_events, "incidents": h.incidents}, None, 0)
    return tmp_path / "home"


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app)

    @app.callback()
    def _root() -> None:  # keeps "dora" a subcommand, as in the real CLI
        pass

    return app


def test_cli_csv_json_table_and_plot(home: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    app = _app()
    h = HistoryStore(home / "store").read_history()
    expected = dora_metrics(h, attribute(h, AttributionConfig()), DoraConfig(by="squad", period="month"))

    res = runner.invoke(app, ["dora", "--home", str(home), "--by", "squad", "--period", "month", "--format", "csv"])
    assert res.exit_code == 0, res.output
    csv = pd.read_csv(io.StringIO(res.stdout))
    assert csv["group"].tolist() == expected["group"].tolist()
    assert csv["deployments"].tolist() == expected["deployments"].tolist()
    assert csv["failed_deployments"].tolist() == expected["failed_deployments"].tolist()

    out = tmp_path / "out" / "dora.json"
    plot = tmp_path / "trend.png"
    res = runner.invoke(
        app, ["dora", "--home", str(home), "--by", "all", "--format", "json", "--out", str(out), "--plot", str(plot)]
    )
    assert res.exit_code == 0, res.output
    records = json.loads(out.read_text())
    n_live = int((h.deploys["environment"].eq("production") & h.deploys["status"].eq("success")).sum())
    assert {r["group"] for r in records} == {"all"} and sum(r["deployments"] for r in records) == n_live
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    res = runner.invoke(
        app, ["dora", "--home", str(home), "--by", "tribe", "--max-lag", "none"], env={"COLUMNS": "200"}
    )
    assert res.exit_code == 0, res.output
    assert "platform" in res.stdout and "storage" in res.stdout and "DevLake" in res.stdout

    table = tmp_path / "dora.txt"
    res = runner.invoke(app, ["dora", "--home", str(home), "--by", "squad", "--out", str(table)])
    assert res.exit_code == 0, res.output
    assert "DORA metrics" in table.read_text() and "core" in table.read_text() and "data" in table.read_text()

    res = runner.invoke(app, ["dora", "--home", str(home), "--max-lag", "soon"])
    assert res.exit_code != 0


def test_cli_on_empty_store(tmp_path: Path) -> None:
    res = CliRunner().invoke(_app(), ["dora", "--home", str(tmp_path), "--format", "json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == []
