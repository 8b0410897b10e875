"""The generic connector: any CSV, Parquet, JSON or JSON-lines file with a column mapping."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import Field, field_validator

from features.history.schema import EXTRA_PREFIX, RECORD_COLUMN, TimestampFormat, table_spec
from features.sources.base import KindOptions, ParsedFile, SourceError, SourceKind, read_json_records, read_text

FileFormat = Literal["csv", "parquet", "json", "jsonl"]


class GenericOptions(KindOptions):
    """Keys of a generic source; see docs/sources.md for each."""

    table: Literal["deploys", "toggle_events", "incidents"]
    format: FileFormat
    columns: dict[str, str] = Field(default_factory=dict)
    timestamp_format: str = "iso8601"
    timezone: str | None = None
    label: str | None = None
    extra_features: list[str] = Field(default_factory=list)

    @field_validator("columns")
    @classmethod
    def _canonical_targets(cls, value: dict[str, str], info: Any) -> dict[str, str]:
        table = info.data.get("table")
        if table is None:
            return value
        allowed = set(table_spec(table).column_names)
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise ValueError(f"{unknown} are not columns of {table}; expected some of {sorted(allowed)}")
        return value


def read_table_file(path: Path, display: str, fmt: FileFormat) -> pd.DataFrame:
    """Read a whole file as strings/objects (no type guessing): typing happens in conform."""
    if fmt == "parquet":
        if not path.exists():
            raise SourceError(f"{display}: file not found")
        try:
            return pd.read_parquet(path)
        except Exception as exc:
            raise SourceError(f"{display}: not a readable Parquet file ({exc})") from None
    if fmt == "csv":
        import io

        text = read_text(path, display)
        try:
            return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_values=[""])
        except pd.errors.ParserError as exc:
            raise SourceError(f"{display}: malformed CSV ({' '.join(str(exc).split())})") from None
        except pd.errors.EmptyDataError:
            raise SourceError(f"{display}: file is empty") from None
    records = read_json_records(path, display)
    bad = [n for n, rec in records if not isinstance(rec, dict)]
    if bad:
        raise SourceError(f"{display}: record {bad[0]}: expected a JSON object per record")
    frame = pd.DataFrame([rec for _, rec in records], dtype=object)
    frame.index = pd.Index([n for n, _ in records])
    return frame


def parse_generic(path: Path, display: str, options: GenericOptions) -> ParsedFile:
    """Map a file's columns to canonical ones; typing and checks are left to ``conform``."""
    raw = read_table_file(path, display, options.format)
    spec = table_spec(options.table)
    records = (
        pd.Series(raw.index, index=raw.index).astype("int64")
        if options.format in ("json", "jsonl")
        else pd.Series(range(1, len(raw) + 1), index=raw.index, dtype="int64")
    )
    missing = [f"columns.{canon}: {col!r}" for canon, col in options.columns.items() if col not in raw.columns]
    if options.label and options.label not in raw.columns:
        missing.append(f"label: {options.label!r}")
    missing += [f"extra_features: {c!r}" for c in options.extra_features if c not in raw.columns]
    if missing:
        raise SourceError(
            f"{display}: mapped column not in file ({'; '.join(missing)}); file has {list(raw.columns)[:20]}"
        )

    out: dict[str, pd.Series] = {RECORD_COLUMN: records}
    for canon in spec.column_names:
        if canon in options.columns:
            out[canon] = raw[options.columns[canon]]
        elif canon in raw.columns:
            out[canon] = raw[canon]
    if options.label:
        out["label"] = raw[options.label]
    for name in options.extra_features:
        out[EXTRA_PREFIX + name] = raw[name]
    frame = pd.DataFrame(out, index=raw.index).reset_index(drop=True)
    if "raw" not in frame.columns:
        frame["raw"] = [json.dumps(r, ensure_ascii=False, default=str) for r in raw.to_dict("records")]
    return ParsedFile(
        table=options.table,
        frame=frame,
        timestamps=TimestampFormat(options.timestamp_format, options.timezone),
    )


GENERIC = SourceKind(
    name="generic",
    table=None,
    description="Any CSV, Parquet, JSON or JSON-lines file, mapped column by column",
    options=GenericOptions,
    parse=parse_generic,
)
