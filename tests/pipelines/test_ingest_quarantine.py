"""Ingest that reads right: quarantine reasons in the report, exit 3 when a source yields no rows,
``incident-risk quarantine`` to read the entries, and a fixed re-ingest leaving no stale entries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from features.history.ingest import SourceCounts
from features.history.store import HistoryStore
from pipelines.cli.main import build_app
from pipelines.flows.ingest import IngestReport

CONFIG = """\
sources:
  - name: ci
    table: deploys
    format: csv
    path: deploys.csv
    columns: {deploy_id: id, created_at: at}
    defaults: {service: api, environment: production, status: success}
  - name: inc
    table: incidents
    format: jsonl
    path: incidents.jsonl
"""
BROKEN_CSV = "id,at\nd1,yesterday\nd2,soon\nd3,2026-03-01 10:00\n"
FIXED_CSV = "id,at\nd1,2026-03-01T08:00:00Z\nd2,2026-03-01T09:00:00Z\nd3,2026-03-01T10:00:00Z\n"
JSONL = (
    '{"incident_id": "9", "service": "api", "status": "closed", "created_at": "2026-03-01T11:00:00Z"}\n'
    '{"incident_id": "10", "status": "open", "created_at": "soon"}\n'
)


@pytest.mark.flow
def test_quarantine_reported_shown_and_replaced_on_fixed_reingest(prefect_harness: None, tmp_path: Path) -> None:
    (tmp_path / "deploys.csv").write_text(BROKEN_CSV)
    (tmp_path / "incidents.jsonl").write_text(JSONL)
    config = tmp_path / "sources.yaml"
    config.write_text(CONFIG)
    home = tmp_path / "home"
    app, runner = build_app(), CliRunner()
    report_path = tmp_path / "report.json"

    broken = runner.invoke(app, ["ingest", "--config", str(config), "--home", str(home), "--json", str(report_path)])
    assert broken.exit_code == 3, broken.output
    assert "every source reconciles" not in broken.output
    assert "ci: 3 of 3 quarantined, top reasons: at: " not in broken.output  # canonical field names only
    assert "ci: 3 of 3 quarantined, top reasons: created_at: not an ISO 8601 timestamp (2)" in broken.output
    error = [line for line in broken.output.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "no rows from source ci (3 read, 3 quarantined" in error[0]
    assert "incident-risk quarantine --source ci" in error[0]
    report = json.loads(report_path.read_text())
    assert report["empty_sources"] == ["ci"]
    ci = next(s for s in report["sources"] if s["source"] == "ci")
    assert [(r["field"], r["count"]) for r in ci["top_reasons"]] == [("created_at", 2), ("created_at", 1)]
    assert ci["top_reasons"][0]["examples"] == [
        {"file": "deploys.csv", "record": 1, "field": "created_at", "value": "yesterday"}
    ]
    # the quarantine was committed, so it can be read
    shown = runner.invoke(app, ["quarantine", "--source", "ci", "--home", str(home)])
    assert shown.exit_code == 0, shown.output
    assert "ci (deploys): 3 entries for 3 records" in shown.output
    assert "2  created_at: not an ISO 8601 timestamp" in shown.output
    assert "deploys.csv record 1, field created_at = 'yesterday'" in shown.output
    assert "naive timestamp and no timezone configured" in shown.output
    assert "inc" not in shown.output
    every = runner.invoke(app, ["quarantine", "--home", str(home)])
    assert "ci (deploys)" in every.output and "inc (incidents): 1 entries for 1 records" in every.output
    unknown = runner.invoke(app, ["quarantine", "--source", "nope", "--home", str(home)])
    assert "no quarantine entries for source 'nope' (sources with entries: ci, inc)" in unknown.output

    (tmp_path / "deploys.csv").write_text(FIXED_CSV)
    fixed = runner.invoke(app, ["ingest", "--config", str(config), "--home", str(home)])
    assert fixed.exit_code == 0, fixed.output
    store = HistoryStore(home / "store")
    assert store.read("deploys")["deploy_id"].tolist() == ["ci:d1", "ci:d2", "ci:d3"]
    assert store.read("incidents")["incident_id"].tolist() == ["inc:9"]
    quarantine = store.read_quarantine()
    assert list(zip(quarantine["source"], quarantine["record"], strict=True)) == [("inc", 2)]
    cleared = runner.invoke(app, ["quarantine", "--source", "ci", "--home", str(home), "--json"])
    assert json.loads(cleared.output) == []


def test_a_source_with_no_records_is_an_empty_source() -> None:
    report = IngestReport(
        config="s.yaml",
        sources=[SourceCounts("ci", "deploys", files=1), SourceCounts("gh", "deploys", files=1, read=2, inserted=2)],
    )
    assert report.empty_sources == ["ci"]
    assert report.as_dict()["empty_sources"] == ["ci"]
    line = report.empty_sources_line()
    assert "ci (0 read, 0 quarantined; no records in its files)" in line and "gh" not in line


def test_quarantine_without_a_store_says_so(tmp_path: Path) -> None:
    result = CliRunner().invoke(build_app(), ["quarantine", "--home", str(tmp_path)])
    assert result.exit_code == 0
    assert f"no quarantine entries for the store at {tmp_path / 'store'}" in result.output
