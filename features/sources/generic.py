"""The generic connector: any CSV, Parquet, JSON or JSON-lines file with a column mapping."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import Field, field_validator, model_validator

from features.history.schema import (
    DEPLOY_STATUSES,
    EXTRA_PREFIX,
    INCIDENT_STATUSES,
    RECORD_COLUMN,
    TimestampFormat,
    table_spec,
)
from features.sources.base import KindOptions, ParsedFile, SourceError, SourceKind, read_json_records, read_text
from features.sources.normalize import (
    DEPLOY_STATUS_WORDS,
    INCIDENT_STATUS_WORDS,
    Environment,
    Severity,
    environment,
    incident_status,
    severity,
    status_or_other,
    status_table,
)

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
    #: raw environment name (case-insensitive) -> canonical, over the word matching of every connector
    environment_map: dict[str, Environment] = Field(default_factory=dict)
    #: raw status (case-insensitive) -> the table's canonical status, over the built-in words
    status_map: dict[str, str] = Field(default_factory=dict)
    #: raw severity/priority name (case-insensitive) -> sev1..sev5, over P1/SEV-1/words
    severity_map: dict[str, Severity] = Field(default_factory=dict)
    #: the same as ``severity_map`` (the name the incident connectors use)
    priority_map: dict[str, Severity] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _maps_fit_the_table(self) -> GenericOptions:
        statuses = {"deploys": DEPLOY_STATUSES, "incidents": INCIDENT_STATUSES}.get(self.table)
        if self.status_map and statuses is None:
            raise ValueError(f"status_map: {self.table} have no status")
        wrong = {k: v for k, v in self.status_map.items() if statuses is not None and v not in statuses}
        if wrong:
            raise ValueError(
                f"status_map: {wrong} are not statuses of {self.table}; expected one of {list(statuses or [])}"
            )
        if (self.severity_map or self.priority_map) and self.table != "incidents":
            raise ValueError(f"severity_map/priority_map: only incidents have a severity, not {self.table}")
        return self

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
    frame, other = normalise_values(frame, options)
    return ParsedFile(
        table=options.table,
        frame=frame,
        timestamps=TimestampFormat(options.timestamp_format, options.timezone),
        other_counts=dict(sorted(other.items())),
    )


def _present(value: Any) -> bool:
    return not (value is None or value is pd.NA or (isinstance(value, float) and value != value) or value == "")


def _raw_column(name: str, columns: list[str]) -> str | None:
    return name if name in columns else None


def _with_canonical(frame: pd.DataFrame, column: str, raw_column: str | None, canonical: list[Any]) -> pd.DataFrame:
    """``column`` replaced by ``canonical``; the file's value is kept in ``raw_column`` (when the
    table has one and the file did not fill it) where it differs from the canonical value."""
    raw = frame[column]
    if raw_column is not None and raw_column not in frame.columns:
        differs = [_present(r) and str(r).strip().lower() != c for r, c in zip(raw, canonical, strict=True)]
        frame[raw_column] = raw.where(pd.Series(differs, index=raw.index, dtype=bool), None)
    frame[column] = canonical
    return frame


def normalise_values(frame: pd.DataFrame, options: GenericOptions) -> tuple[pd.DataFrame, Counter[str]]:
    """Environment, status and severity words as the tool connectors read them (``prod``, ``ok``,
    ``failed``, ``P2``, ``closed``), with the source's maps on top; statuses no table knows become
    ``other`` (deploys) or open/resolved (incidents) and are counted, like every connector does."""
    out = frame.copy()
    columns = table_spec(options.table).column_names
    other: Counter[str] = Counter()
    if "environment" in out.columns:
        envs = [environment(v, options.environment_map) if _present(v) else None for v in out["environment"]]
        out = _with_canonical(out, "environment", _raw_column("environment_raw", columns), envs)
    if "status" in out.columns and options.table == "deploys":
        words = status_table(DEPLOY_STATUS_WORDS, options.status_map)
        statuses = [status_or_other(words, str(s), other) if _present(s) else None for s in out["status"]]
        out = _with_canonical(out, "status", _raw_column("status_raw", columns), statuses)
    elif "status" in out.columns and options.table == "incidents":
        words = status_table(INCIDENT_STATUS_WORDS, options.status_map)
        resolved = out["resolved_at"] if "resolved_at" in out.columns else pd.Series(None, index=out.index)
        statuses = [
            incident_status(words, str(s), r if _present(r) else None, other) if _present(s) else None
            for s, r in zip(out["status"], resolved, strict=True)
        ]
        out = _with_canonical(out, "status", _raw_column("status_raw", columns), statuses)
    if options.table == "incidents":
        out = _severity(out, {**options.priority_map, **options.severity_map})
    return out, other


def _severity(frame: pd.DataFrame, overrides: dict[str, str]) -> pd.DataFrame:
    """sev1..sev5 from the ``severity`` column, else from ``priority``; an unknown name leaves
    ``severity`` empty and is kept in ``priority``, as the incident connectors do."""
    n = len(frame)
    given = frame["severity"] if "severity" in frame.columns else pd.Series([None] * n, index=frame.index)
    priority = frame["priority"] if "priority" in frame.columns else pd.Series([None] * n, index=frame.index)
    if not (given.map(_present).any() or priority.map(_present).any()):
        return frame
    names = [g if _present(g) else p for g, p in zip(given.tolist(), priority.tolist(), strict=True)]
    sevs = [severity(name, overrides) if _present(name) else None for name in names]
    kept = [
        p if _present(p) else (g if _present(g) and s is None else None)
        for g, p, s in zip(given.tolist(), priority.tolist(), sevs, strict=True)
    ]
    frame["severity"] = sevs
    frame["priority"] = kept
    return frame


GENERIC = SourceKind(
    name="generic",
    table=None,
    description="Any CSV, Parquet, JSON or JSON-lines file, mapped column by column",
    options=GenericOptions,
    parse=parse_generic,
)
