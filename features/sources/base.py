"""What every source kind (connector) provides, and helpers they share.

A kind is a pure parse function from one export file to a ``ParsedFile``: a frame of canonical
column names (loosely typed values, checked later by ``features.history.schema.conform``) plus the
records it could not map. Kinds never touch the store; the ingest flow does.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import pandas as pd
from pydantic import BaseModel, ConfigDict

from features.history.schema import QUARANTINE_COLUMNS, RECORD_COLUMN, TimestampFormat, empty_quarantine


class SourceError(Exception):
    """A file or config that cannot be read at all: one clear line naming the file."""


class KindOptions(BaseModel):
    """Base of a kind's own config keys; unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


OptionsT = TypeVar("OptionsT", bound=KindOptions)


@dataclass
class ParsedFile:
    """One export file mapped to canonical columns.

    ``frame`` has canonical column names of ``table`` plus ``RECORD_COLUMN`` (1-based record
    number in the file) and usually ``raw`` (the original record as JSON). ``rejects`` holds
    records that could not be mapped at all, in quarantine columns. ``other_counts`` counts
    values mapped to ``other`` (unknown event types, statuses), by raw value.
    """

    table: str
    frame: pd.DataFrame
    rejects: pd.DataFrame = field(default_factory=empty_quarantine)
    timestamps: TimestampFormat = TimestampFormat("iso8601", "UTC")
    other_counts: dict[str, int] = field(default_factory=dict)
    records_read: int | None = None  # defaults to len(frame) + distinct rejected records


@dataclass(frozen=True)
class SourceKind(Generic[OptionsT]):
    """A registered connector: its name, table, option model and parse function."""

    name: str
    table: str | None  # None: the config chooses (the generic kind)
    description: str
    options: type[OptionsT]
    parse: Callable[[Path, str, OptionsT], ParsedFile]


def reject_rows(table: str, source: str, file: str, rows: Iterable[tuple[int, str, str, object]]) -> pd.DataFrame:
    """Quarantine rows from (record, field, reason, value) tuples."""
    data = [
        (table, source, file, rec, fld, reason, None if v is None else str(v)[:200]) for rec, fld, reason, v in rows
    ]
    if not data:
        return empty_quarantine()
    frame = pd.DataFrame(data, columns=list(QUARANTINE_COLUMNS))
    frame["record"] = frame["record"].astype("Int64")
    return frame


def read_json_records(path: Path, display: str, envelope_keys: tuple[str, ...] = ()) -> list[tuple[int, Any]]:
    """Records of a JSON or JSON-lines export: (record number, record) pairs.

    Accepts a JSON array, a JSON object whose records sit under one of ``envelope_keys``
    (an API page such as ``{"items": [...]}``), a single object (a webhook payload), or JSON
    lines (one record or one page per line). Record numbers are 1-based positions in the
    array, or line numbers for JSON lines. Truncated JSON and wrong encodings raise
    ``SourceError`` naming the file and line.
    """
    text = read_text(path, display)
    stripped = text.lstrip()
    if not stripped:
        raise SourceError(f"{display}: file is empty")
    suffixes = [x.lower() for x in path.suffixes]
    if ".jsonl" in suffixes or ".ndjson" in suffixes or _looks_like_json_lines(stripped):
        out: list[tuple[int, Any]] = []
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SourceError(f"{display}: line {lineno}: invalid JSON ({exc.msg})") from None
            except RecursionError:
                raise SourceError(f"{display}: line {lineno}: {_TOO_DEEP}") from None
            page = _unwrap(obj, envelope_keys)
            out.extend((lineno, rec) for rec in page)
        return out
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SourceError(f"{display}: line {exc.lineno}: invalid or truncated JSON ({exc.msg})") from None
    except RecursionError:
        raise SourceError(f"{display}: {_TOO_DEEP}") from None
    return list(enumerate(_unwrap(obj, envelope_keys), start=1))


_TOO_DEEP = "JSON nested too deeply to read (no export nests hundreds of levels: a corrupt or hostile file)"


def _looks_like_json_lines(text: str) -> bool:
    first = text.split("\n", 1)[0].strip()
    if not first.startswith("{") or "\n" not in text.strip():
        return False
    try:
        json.loads(first)
    except json.JSONDecodeError:
        return False
    return True


def _unwrap(obj: Any, envelope_keys: tuple[str, ...]) -> list[Any]:
    if isinstance(obj, list):
        return obj
    if isinstance(obj, dict):
        for key in envelope_keys:
            if isinstance(obj.get(key), list):
                return list(obj[key])
        return [obj]
    return [obj]


def read_text(path: Path, display: str) -> str:
    """A file's text as UTF-8, with clear errors for missing, empty or mis-encoded files."""
    if not path.exists():
        raise SourceError(f"{display}: file not found")
    if path.is_dir():
        raise SourceError(f"{display}: is a directory, expected a file")
    data = path.read_bytes()
    if path.suffix.lower() == ".gz":
        import gzip

        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise SourceError(f"{display}: not a readable gzip file ({exc})") from None
    if not data.strip():
        raise SourceError(f"{display}: file is empty")
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise SourceError(f"{display}: file is UTF-16 encoded; save it as UTF-8")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise SourceError(f"{display}: line {line}: not valid UTF-8 (byte {exc.start})") from None


def to_raw(record: Any) -> str:
    """The original record as compact JSON, for the ``raw`` provenance column."""
    return json.dumps(record, ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=str)


def dig(record: Mapping[str, Any], *path: str | int, default: Any = None) -> Any:
    """``record[a][b]...`` or ``default`` when any step is missing or of the wrong type."""
    cur: Any = record
    for step in path:
        if isinstance(step, int):
            if not isinstance(cur, list) or not -len(cur) <= step < len(cur):
                return default
            cur = cur[step]
        else:
            if not isinstance(cur, Mapping) or step not in cur:
                return default
            cur = cur[step]
    return default if cur is None else cur


def frame_from_rows(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """A frame from mapped rows, each carrying ``RECORD_COLUMN``; object dtype throughout."""
    if not rows:
        return pd.DataFrame({RECORD_COLUMN: pd.Series(dtype="int64")})
    return pd.DataFrame(rows, dtype=object).astype({RECORD_COLUMN: "int64"})
