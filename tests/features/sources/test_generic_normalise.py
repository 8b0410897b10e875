"""Code tests of the generic connector's value normalisation: the words the tool connectors
understand (``prod``, ``ok``/``failed``, ``P2``, ``closed``) are understood in any CSV too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from features.history.ingest import prepare_file
from features.sources.base import SourceError
from features.sources.config import load_sources_config
from features.sources.generic import GenericOptions, parse_generic
from features.sources.kinds import source_kinds

DEPLOYS_CSV = """\
id,app,env,state,at
d1,api,prod,ok,2026-03-01T09:00:00Z
d2,api,Production,failed,2026-03-01T10:00:00Z
d3,web,prd-eu-1,Cancelled,2026-03-01T11:00:00Z
d4,web,live-blue,green,2026-03-01T12:00:00Z
d5,web,stg,weird,2026-03-01T13:00:00Z
d6,web,production,success,2026-03-01T14:00:00Z
"""

INCIDENTS_CSV = """\
id,title,svc,sev,prio,state,opened,closed_at
i1,api down,api,P2,,closed,2026-03-01T09:00:00Z,2026-03-01T10:00:00Z
i2,slow,web,,High,open,2026-03-01T09:00:00Z,
i3,odd,web,Sev-Critical,,ack,2026-03-01T09:00:00Z,
i4,odd,web,purple,,mystery,2026-03-01T09:00:00Z,2026-03-01T11:00:00Z
"""


def _prepared(tmp_path: Path, name: str, text: str, options: dict[str, Any]):  # type: ignore[no-untyped-def]
    path = tmp_path / name
    path.write_text(text)
    parsed = parse_generic(path, name, GenericOptions(format="csv", **options))  # type: ignore[arg-type]
    return parsed, prepare_file(parsed, source="ci", file=name, id_prefix="ci", defaults={}, service_map={})


def test_deploy_environment_and_status_words_are_understood_not_quarantined(tmp_path: Path) -> None:
    columns = {"deploy_id": "id", "service": "app", "environment": "env", "status": "state", "created_at": "at"}
    options = {
        "table": "deploys",
        "columns": columns,
        "environment_map": {"Live-Blue": "staging"},
        "status_map": {"GREEN": "success"},
    }
    parsed, prepared = _prepared(tmp_path, "deploys.csv", DEPLOYS_CSV, options)
    assert prepared.rejects.empty, prepared.rejects.to_dict("records")
    rows = prepared.rows.set_index("deploy_id")
    production = "production"
    assert rows["environment"].tolist() == [production, production, production, "staging", "staging", production]
    assert rows["status"].tolist() == ["success", "failure", "canceled", "success", "other", "success"]
    # the file's own words are kept where they differ from the canonical value
    assert rows.loc["ci:d1", "environment_raw"] == "prod"
    assert rows.loc["ci:d3", "status_raw"] == "Cancelled"
    assert rows["environment_raw"].isna()["ci:d6"] and rows["status_raw"].isna()["ci:d6"]
    # an unknown status is "other" and counted, like every tool connector does
    assert parsed.other_counts == {"weird": 1}


def test_incident_severity_priority_and_status_words(tmp_path: Path) -> None:
    columns = {
        "incident_id": "id",
        "service": "svc",
        "severity": "sev",
        "priority": "prio",
        "status": "state",
        "created_at": "opened",
        "resolved_at": "closed_at",
    }
    options = {"table": "incidents", "columns": columns, "severity_map": {"sev-critical": "sev1"}}
    parsed, prepared = _prepared(tmp_path, "incidents.csv", INCIDENTS_CSV, options)
    assert prepared.rejects.empty, prepared.rejects.to_dict("records")
    rows = prepared.rows.set_index("incident_id")
    assert rows["severity"].fillna("-").tolist() == ["sev2", "sev2", "sev1", "-"]
    assert rows["status"].tolist() == ["resolved", "open", "acknowledged", "resolved"]
    # an unknown severity is left empty and its name kept in priority; the given priority stays
    assert rows.loc["ci:i4", "priority"] == "purple"
    assert rows.loc["ci:i2", "priority"] == "High"
    assert rows.loc["ci:i1", "status_raw"] == "closed"
    assert parsed.other_counts == {"mystery": 1}


def test_priority_map_is_the_same_as_severity_map(tmp_path: Path) -> None:
    columns = {"incident_id": "id", "service": "svc", "priority": "sev", "status": "state", "created_at": "opened"}
    options = {"table": "incidents", "columns": columns, "priority_map": {"purple": "sev4"}}
    _, prepared = _prepared(tmp_path, "incidents.csv", INCIDENTS_CSV, options)
    assert prepared.rows.set_index("incident_id").loc["ci:i4", "severity"] == "sev4"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("    status_map: {green: shipped}\n", "not statuses of deploys"),
        ("    severity_map: {P1: sev1}\n", "only incidents have a severity"),
        ("    environment_map: {blue: prod}\n", "environment_map.blue"),
    ],
)
def test_bad_maps_are_config_errors_naming_the_key(tmp_path: Path, extra: str, message: str) -> None:
    (tmp_path / "d.csv").write_text(DEPLOYS_CSV)
    config = tmp_path / "sources.yaml"
    config.write_text(
        "sources:\n  - name: ci\n    path: d.csv\n    table: deploys\n    format: csv\n"
        "    columns: {deploy_id: id, service: app, environment: env, status: state, created_at: at}\n" + extra
    )
    with pytest.raises(SourceError, match=message) as caught:
        load_sources_config(config, source_kinds())
    assert str(config) in str(caught.value) and "line" in str(caught.value)
