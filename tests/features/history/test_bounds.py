"""Implausible timestamps are quarantined naming the field and the bound; zero-time placeholders become missing."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from features.history.bounds import TimeBounds, check_time_bounds, is_zero_time
from features.history.ingest import PreparedFile, prepare_source_file
from features.history.schema import DEPLOYS, conform
from features.sources.base import SourceError
from features.sources.config import load_sources_config
from features.sources.kinds import source_kinds

NOW = pd.Timestamp("2026-03-01T12:00:00Z")

CONFIG = """\
sources:
  - name: ci
    table: deploys
    format: csv
    path: deploys.csv
    defaults: {{service: api, environment: production, status: success}}
{extra}"""


def _prepare(tmp_path: Path, csv: str, extra: str = "") -> PreparedFile:
    (tmp_path / "deploys.csv").write_text(csv)
    (tmp_path / "sources.yaml").write_text(CONFIG.format(extra=extra))
    config = load_sources_config(tmp_path / "sources.yaml", source_kinds())
    source = config.sources[0]
    path = source.paths[0]
    return prepare_source_file(source, path, source.parse(path), NOW)


@pytest.mark.parametrize(
    ("created_at", "bound"),
    [
        ("0001-01-01T00:00:00Z", "earlier than 2000-01-01T00:00:00+00:00 (time_bounds.not_before)"),
        ("1900-01-01T00:00:00Z", "earlier than 2000-01-01T00:00:00+00:00 (time_bounds.not_before)"),
        ("2200-01-01T00:00:00Z", "later than 2026-03-02T12:00:00+00:00 (ingest time"),
        ("9999-12-31T23:59:59Z", "later than 2026-03-02T12:00:00+00:00 (ingest time"),
    ],
)
def test_implausible_created_at_is_quarantined_naming_field_and_bound(tmp_path: Path, created_at: str, bound: str):
    prepared = _prepare(tmp_path, f"deploy_id,created_at\n1,2026-02-01T10:00:00Z\n2,{created_at}\n")
    assert prepared.read == 2 and prepared.quarantined == 1
    assert prepared.rows["deploy_id"].tolist() == ["ci:1"]
    reject = prepared.rejects.iloc[0]
    assert (reject["record"], reject["field"], reject["file"]) == (2, "created_at", "deploys.csv")
    assert reject["reason"].startswith("created_at ") and bound in reject["reason"], reject["reason"]
    assert reject["value"].startswith(created_at[:4])
    # what is kept converts to nanoseconds (the year-1 and year-9999 values would overflow)
    prepared.rows["created_at"].astype("datetime64[ns, UTC]")


def test_zero_time_placeholders_in_optional_fields_become_missing_and_are_counted(tmp_path: Path):
    csv = (
        "deploy_id,created_at,finished_at,updated_at\n"
        "1,2026-02-01T10:00:00Z,0001-01-01T00:00:00Z,2026-02-01T10:05:00Z\n"
        "2,2026-02-01T11:00:00Z,9999-12-31T23:59:59Z,1970-01-01T00:00:00Z\n"
        "3,2026-02-01T12:00:00Z,2026-02-01T12:10:00Z,1900-01-01T00:00:00Z\n"
        "4,2026-02-01T13:00:00Z,1950-06-01T08:00:00Z,\n"  # not a placeholder: a typo, quarantined
    )
    prepared = _prepare(tmp_path, csv)
    assert prepared.zero_times == {"finished_at": 2, "updated_at": 2}
    assert prepared.rows["deploy_id"].tolist() == ["ci:1", "ci:2", "ci:3"]
    assert prepared.rows["finished_at"].isna().tolist() == [True, True, False]
    assert prepared.rows["updated_at"].isna().tolist() == [False, True, True]
    assert prepared.quarantined == 1
    assert prepared.rejects[["record", "field"]].values.tolist() == [[4, "finished_at"]]
    assert "finished_at before the plausible range" in prepared.rejects["reason"].iat[0]


def test_time_bounds_are_set_per_source_in_sources_yaml(tmp_path: Path):
    csv = "deploy_id,created_at\n1,1995-05-01T00:00:00Z\n2,2026-06-01T00:00:00Z\n3,2027-06-01T00:00:00Z\n"
    default = _prepare(tmp_path, csv)
    assert default.rows["deploy_id"].tolist() == []
    wide = _prepare(tmp_path, csv, "    time_bounds: {not_before: 1990-01-01, max_days_ahead: 120}\n")
    assert wide.rows["deploy_id"].tolist() == ["ci:1", "ci:2"]
    assert wide.rejects["reason"].iat[0].startswith("created_at after the plausible range: later than 2026-06-29")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("    time_bounds: {max_days_ahead: -1}\n", "sources[0].time_bounds.max_days_ahead"),
        ("    time_bounds: {not_before: someday}\n", "sources[0].time_bounds.not_before"),
        ("    time_bounds: {after: 3}\n", "sources[0].time_bounds.after"),
    ],
)
def test_bad_time_bounds_name_the_key_and_line(tmp_path: Path, extra: str, message: str):
    with pytest.raises(SourceError, match=r"sources.yaml: line 7: " + message.replace("[", r"\[").replace("]", r"\]")):
        _prepare(tmp_path, "deploy_id,created_at\n1,2026-02-01T10:00:00Z\n", extra)


def test_zero_time_detection():
    values = pd.Series(
        pd.to_datetime(
            [
                "0001-01-01T00:00:00Z",
                "1970-01-01T00:00:00Z",
                "1900-01-01T00:00:00Z",
                "9999-12-31T23:59:59.999999Z",
                "1970-01-01T00:00:01Z",
                "2024-01-01T00:00:00Z",
                None,
            ],
            utc=True,
            format="ISO8601",
        )
    )
    assert is_zero_time(values).tolist() == [True, True, True, True, False, False, False]


def test_check_leaves_in_range_rows_alone():
    frame = pd.DataFrame(
        {
            "deploy_id": ["a"],
            "service": ["s"],
            "environment": ["production"],
            "status": ["success"],
            "source": ["x"],
            "created_at": ["2025-01-01T00:00:00Z"],
        }
    )
    conformed = conform(DEPLOYS, frame, source="x", file="f")
    checked = check_time_bounds(DEPLOYS, conformed, pd.Series([1]).to_numpy(), TimeBounds(), NOW, source="x", file="f")
    assert checked.conformed is conformed and checked.zero_times == {}


def test_planned_deploys_may_lie_up_to_the_horizon_ahead(tmp_path: Path):
    from pipelines.flows.score_batch import read_upcoming

    path = tmp_path / "upcoming.csv"
    path.write_text(
        "service,created_at\napi,2026-03-11T00:00:00Z\napi,2026-04-20T00:00:00Z\napi,0001-01-01T00:00:00Z\n"
    )
    valid, rejects = read_upcoming(path, NOW)  # default horizon: 30 days
    assert valid["deploy_id"].tolist() == ["upcoming:1"]
    assert rejects["record"].tolist() == [2, 3]
    assert "(scoring time 2026-03-01T12:00:00+00:00 plus 30 days" in rejects["reason"].iat[0]
    valid, rejects = read_upcoming(path, NOW, horizon_days=60)
    assert valid["deploy_id"].tolist() == ["upcoming:1", "upcoming:2"]
    assert rejects["record"].tolist() == [3]
