"""The issue's case end to end: implausible deploy times are quarantined, placeholders counted in the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from features.history.store import HistoryStore
from pipelines.cli.main import build_app

pytestmark = pytest.mark.flow

CONFIG = """\
sources:
  - name: ci
    table: deploys
    format: csv
    path: deploys.csv
    timezone: UTC
    defaults: {service: api, environment: production, status: success}
"""
CSV = (
    "deploy_id,created_at,finished_at\n"
    "1,0001-01-01T00:00:00Z,\n"
    "2,1900-01-01,\n"
    "3,2200-01-01,\n"
    "4,9999-12-31T23:59:59Z,\n"
    "5,2024-05-01T10:00:00Z,0001-01-01T00:00:00Z\n"
    "6,2024-05-01T11:00:00Z,2024-05-01T11:03:00Z\n"
)


def test_implausible_times_are_quarantined_and_placeholders_counted(prefect_harness: None, tmp_path: Path) -> None:
    (tmp_path / "deploys.csv").write_text(CSV)
    (tmp_path / "sources.yaml").write_text(CONFIG)
    home = tmp_path / "home"
    result = CliRunner().invoke(
        build_app(),
        ["ingest", "--config", str(tmp_path / "sources.yaml"), "--home", str(home), "--json", str(tmp_path / "r.json")],
    )
    assert result.exit_code == 0, result.output
    assert "ci: zero-time placeholders (0001-01-01 ...) stored as missing: finished_at 1" in result.output
    report = json.loads((tmp_path / "r.json").read_text())["sources"][0]
    assert (report["read"], report["inserted"], report["quarantined"]) == (6, 2, 4)
    assert report["zero_times"] == {"finished_at": 1}
    store = HistoryStore(home / "store")
    deploys = store.read("deploys")
    assert deploys["deploy_id"].tolist() == ["ci:5", "ci:6"]
    assert deploys["finished_at"].isna().tolist() == [True, False]
    quarantine = store.read_quarantine()
    assert quarantine["record"].tolist() == [1, 2, 3, 4]
    assert set(quarantine["field"]) == {"created_at"}
    assert quarantine["reason"].str.contains("plausible range").all()
