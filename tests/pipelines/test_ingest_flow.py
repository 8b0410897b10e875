"""Flow tests: the ingest command end to end under one Prefect test harness."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from features.history.store import HistoryStore
from pipelines.cli.main import build_app
from pipelines.flows.runners import RunnerConfig

pytestmark = pytest.mark.flow

CONFIG = """\
sources:
  - name: changes
    table: deploys
    format: csv
    path: changes.csv
    columns: {deploy_id: _id, created_at: date, lines_added: la}
    timestamp_format: unix_s
    timezone: UTC
    defaults: {service: qt, environment: production, status: success}
    label: bug
    extra_features: [ns]
  - name: incidents
    table: incidents
    format: jsonl
    path: incidents.jsonl
"""

CSV = "_id,date,la,bug,ns\n1,1136073600,10,0,1\n2,1136077200,-5,1,2\n3,1136080800,7,1,1\n3,1136080800,7,1,1\n"
JSONL = (
    '{"incident_id": "9", "service": "qt", "status": "resolved", "created_at": "2006-01-01T02:00:00Z",'
    ' "resolved_at": "2006-01-01T03:00:00Z", "severity": "SEV2"}\n'
    '{"incident_id": "10", "status": "open", "created_at": "yesterday"}\n'
)


def _write(folder: Path) -> Path:
    (folder / "changes.csv").write_text(CSV)
    (folder / "incidents.jsonl").write_text(JSONL)
    config = folder / "sources.yaml"
    config.write_text(CONFIG)
    return config


def _snapshot(store: Path) -> dict[str, str]:
    return {
        str(p.relative_to(store)): hashlib.sha256(p.read_bytes()).hexdigest() for p in store.rglob("*") if p.is_file()
    }


def test_ingest_twice_leaves_store_identical(prefect_harness: None, tmp_path: Path) -> None:
    config = _write(tmp_path)
    home = tmp_path / "home"
    runner = CliRunner()
    app = build_app()
    first = runner.invoke(
        app, ["ingest", "--config", str(config), "--home", str(home), "--json", str(tmp_path / "r.json")]
    )
    assert first.exit_code == 0, first.output
    assert "changes" in first.output and "quarantined" in first.output
    store = HistoryStore(home / "store")
    history = store.read_history()
    assert history.deploys["deploy_id"].tolist() == ["changes:1", "changes:3"]
    assert history.incidents["severity"].tolist() == ["sev2"]
    quarantine = store.read_quarantine()
    assert sorted(zip(quarantine["source"], quarantine["record"], quarantine["field"], strict=True)) == [
        ("changes", 2, "lines_added"),
        ("incidents", 2, "created_at"),
    ]
    before = _snapshot(home / "store")
    second = runner.invoke(app, ["ingest", "--config", str(config), "--home", str(home)])
    assert second.exit_code == 0, second.output
    assert "store unchanged" in second.output
    assert _snapshot(home / "store") == before


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (
            lambda d: (d / "incidents.jsonl").write_text('{"incident_id": "9", "sta'),
            "incidents.jsonl: line 1: invalid JSON",
        ),
        (lambda d: (d / "incidents.jsonl").unlink(), "incidents.jsonl: file not found"),
        (lambda d: (d / "changes.csv").write_bytes(b"_id,date\n1,\xff\xfe\n"), "changes.csv: line 2: not valid UTF-8"),
        (lambda d: (d / "changes.csv").write_text(""), "changes.csv: file is empty"),
        (lambda d: (d / "changes.csv").write_text("x,date\n1,2\n"), "changes.csv: mapped column not in file"),
        (
            lambda d: (d / "sources.yaml").write_text(CONFIG.replace("    label: bug", "    lable: bug")),
            "sources.yaml: line 10: sources[0].lable: unknown key",
        ),
    ],
)
def test_bad_file_fails_cleanly_and_store_is_untouched(
    prefect_harness: None, tmp_path: Path, damage: object, message: str
) -> None:
    config = _write(tmp_path)
    home = tmp_path / "home"
    runner = CliRunner()
    app = build_app()
    assert runner.invoke(app, ["ingest", "--config", str(config), "--home", str(home), "-q"]).exit_code == 0
    before = _snapshot(home / "store")
    damage(tmp_path)  # type: ignore[operator]
    result = runner.invoke(app, ["ingest", "--config", str(config), "--home", str(home)])
    assert result.exit_code == 1
    error_lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and message in error_lines[0], result.output
    assert _snapshot(home / "store") == before


def test_every_command_has_help() -> None:
    app = build_app()
    runner = CliRunner()
    top = runner.invoke(app, ["--help"])
    assert top.exit_code == 0
    import typer.main

    for name in typer.main.get_command(app).commands:  # type: ignore[attr-defined]
        result = runner.invoke(app, [name, "--help"])
        assert result.exit_code == 0 and "Usage" in result.output, name


def test_home_is_read_from_the_command_line_before_typer() -> None:
    from pipelines.cli.main import home_from_argv

    assert home_from_argv(["train", "--home", "/x/h", "--seed", "1"]) == Path("/x/h")
    assert home_from_argv(["ingest", "--home=/y"]) == Path("/y")
    assert home_from_argv(["demo"]) is None


@pytest.mark.parametrize(
    "runner",
    [RunnerConfig("sequential"), RunnerConfig("dask", workers=2, processes=True)],
    ids=["sequential", "dask-local-cluster"],
)
def test_parallel_ingest_gives_the_same_store(prefect_harness: None, tmp_path: Path, runner: RunnerConfig) -> None:
    """Files are parsed on the task runner (threads by default); any runner commits the same tables."""
    from pipelines.flows.ingest import run_ingest

    config = _write(tmp_path)
    threaded = run_ingest(config, tmp_path / "threads", quiet=True)
    other = run_ingest(config, tmp_path / "other", quiet=True, runner=runner)
    assert threaded.ok and other.ok, (threaded.error, other.error)
    assert [s.as_dict() for s in other.sources] == [s.as_dict() for s in threaded.sources]
    left, right = HistoryStore(tmp_path / "threads"), HistoryStore(tmp_path / "other")
    for table in ("deploys", "toggle_events", "incidents"):
        pd.testing.assert_frame_equal(left.read(table), right.read(table))
    pd.testing.assert_frame_equal(left.read_quarantine(), right.read_quarantine())
