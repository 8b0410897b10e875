"""Code tests of the generic connector: every file format maps the same record the same way."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from features.history.schema import DEPLOYS, RECORD_COLUMN, conform
from features.sources.base import SourceError
from features.sources.generic import GenericOptions, parse_generic

RECORDS = [
    {"_id": "a1", "date": "2026/03/01 09:30", "la": 12, "svc": "api", "bug": 1, "ns": 2.5},
    {"_id": "a2", "date": "2026/03/01 10:00", "la": 0, "svc": "web", "bug": 0, "ns": 1.0},
]
OPTIONS = {
    "table": "deploys",
    "columns": {"deploy_id": "_id", "created_at": "date", "lines_added": "la", "service": "svc"},
    "timestamp_format": "%Y/%m/%d %H:%M",
    "timezone": "Europe/Berlin",
    "label": "bug",
    "extra_features": ["ns"],
}


def _write(folder: Path, fmt: str) -> Path:
    path = folder / f"changes.{fmt}"
    frame = pd.DataFrame(RECORDS)
    if fmt == "csv":
        frame.to_csv(path, index=False)
    elif fmt == "parquet":
        frame.to_parquet(path)
    elif fmt == "json":
        path.write_text(json.dumps(RECORDS))
    else:
        path.write_text("\n".join(json.dumps(r) for r in RECORDS) + "\n")
    return path


@pytest.mark.parametrize("fmt", ["csv", "parquet", "json", "jsonl"])
def test_every_format_gives_the_same_canonical_rows(tmp_path: Path, fmt: str) -> None:
    path = _write(tmp_path, fmt)
    parsed = parse_generic(path, path.name, GenericOptions(format=fmt, **OPTIONS))  # type: ignore[arg-type]
    frame = parsed.frame.assign(source="s", environment="production", status="success")
    result = conform(DEPLOYS, frame, source="s", file=path.name, timestamps=parsed.timestamps)
    assert result.rejects.empty
    valid = result.valid
    assert valid["deploy_id"].tolist() == ["a1", "a2"]
    assert valid["created_at"].tolist() == [pd.Timestamp("2026-03-01T08:30Z"), pd.Timestamp("2026-03-01T09:00Z")]
    assert valid["lines_added"].tolist() == [12, 0]
    assert valid["label"].tolist() == [1, 0]
    assert valid["extra_ns"].tolist() == [2.5, 1.0]
    assert parsed.frame[RECORD_COLUMN].tolist() == [1, 2]
    assert json.loads(valid["raw"].iloc[0])["_id"] == "a1"


def test_json_records_must_be_objects(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text('[{"_id": 1}, 5]')
    with pytest.raises(SourceError, match=r"x.json: record 2: expected a JSON object"):
        parse_generic(path, "x.json", GenericOptions(format="json", **OPTIONS))  # type: ignore[arg-type]


def test_unreadable_parquet_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "x.parquet"
    path.write_text("not parquet")
    with pytest.raises(SourceError, match=r"x.parquet: not a readable Parquet file"):
        parse_generic(path, "x.parquet", GenericOptions(format="parquet", **OPTIONS))  # type: ignore[arg-type]
