"""Reading vendor exports: the record checks every connector makes, and readers of loosely typed values.

A connector reads its export with ``load_tool_records`` (wrong-kind files refused, non-objects
quarantined), maps each record with ``row`` and the value readers here (``text``, ``pick``,
``to_utc``, ...), and returns ``ToolRecords.result``. The vocabularies those values are mapped to
(environments, statuses, severities, causes) are in ``features.sources.normalize``.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from features.history.schema import MAX_RAW, RECORD_COLUMN
from features.sources.base import (
    ParsedFile,
    SourceError,
    frame_from_rows,
    read_json_records,
    reject_rows,
    to_raw,
)

# --------------------------------------------------------------------------------------------
# Records and files


def require_shape(
    records: list[tuple[int, Any]], display: str, kind: str, matches: Callable[[dict[str, Any]], bool], expected: str
) -> None:
    """Refuse a file of the wrong kind: records exist but none has the fields this kind needs."""
    objects = [r for _, r in records if isinstance(r, dict)]
    if records and not any(matches(r) for r in objects):
        keys = sorted(objects[0])[:12] if objects else []
        found = f"first record has keys {keys}" if objects else "no record is a JSON object"
        raise SourceError(f"{display}: does not look like a {kind} export: expected {expected}; {found}")


def non_object_rejects(table: str, kind: str, display: str, records: list[tuple[int, Any]]) -> pd.DataFrame:
    """Quarantine rows for records that are not JSON objects (nothing to map)."""
    rows = [(n, "record", "not a JSON object", rec) for n, rec in records if not isinstance(rec, dict)]
    return reject_rows(table, kind, display, rows)


def parsed(
    table: str,
    rows: list[dict[str, Any]],
    *,
    rejects: pd.DataFrame | None = None,
    other: Counter[str] | None = None,
    records_read: int | None = None,
) -> ParsedFile:
    """A ``ParsedFile`` from mapped rows (timestamps are already UTC ``pd.Timestamp`` or raw text)."""
    frame = frame_from_rows(rows)
    out = ParsedFile(table=table, frame=frame, other_counts=dict(sorted((other or Counter()).items())))
    if rejects is not None:
        out.rejects = rejects
    out.records_read = records_read
    return out


@dataclass
class ToolRecords:
    """A vendor export after the checks every connector makes, so each one only maps its records."""

    table: str
    #: the JSON-object records left to map, with their record numbers
    records: list[tuple[int, dict[str, Any]]]
    #: quarantine rows for the records that are not JSON objects
    rejects: pd.DataFrame
    #: counts for the ``other_counts`` of the result (``skipped:...`` and unknown raw values)
    other: Counter[str] = field(default_factory=Counter)
    #: every record read, objects or not (``records_read``)
    read: int = 0

    def result(self, rows: list[dict[str, Any]]) -> ParsedFile:
        """The ``ParsedFile`` of the mapped rows, with these rejects and counts."""
        return parsed(self.table, rows, rejects=self.rejects, other=self.other, records_read=self.read)


def load_tool_records(
    path: Path,
    display: str,
    *,
    kind: str,
    table: str,
    matches: Callable[[dict[str, Any]], bool],
    expected: str,
    envelope_keys: tuple[str, ...] = (),
    skipped: str | None = None,
    expand: Callable[[Any], list[Any]] | None = None,
) -> ToolRecords:
    """Read an export, refuse it if it is of another kind, quarantine non-objects.

    ``expand`` splits a record into several (GraphQL pages); with ``skipped``, objects that do
    not ``match`` are dropped here and counted as ``skipped:<skipped>``.
    """
    records = read_json_records(path, display, envelope_keys)
    if expand is not None:
        records = [(n, r) for n, rec in records for r in expand(rec)]
    require_shape(records, display, kind, matches, expected)
    out = ToolRecords(table, [], non_object_rejects(table, kind, display, records), read=len(records))
    for n, rec in records:
        if not isinstance(rec, dict):
            continue
        if skipped is not None and not matches(rec):
            out.other[f"skipped:{skipped}"] += 1
            continue
        out.records.append((n, rec))
    return out


def raw_of(records: list[Any]) -> str:
    """``raw`` for a row built from one record, or from several (folded webhook deliveries).

    Folded rows keep every delivery; if that is too long, the bulky repository/sender objects
    that each webhook repeats are dropped first.
    """
    if len(records) == 1:
        return to_raw(records[0])
    text = to_raw(records)
    if len(text) <= MAX_RAW:
        return text
    bulky = {"repository", "sender", "organization", "installation", "enterprise", "project"}
    slim = [{k: v for k, v in r.items() if k not in bulky} if isinstance(r, dict) else r for r in records]
    return to_raw(slim)


def row(record_no: int, record: Any, **values: Any) -> dict[str, Any]:
    """A mapped row: canonical values (``None`` dropped later by conform) plus record and raw."""
    out = {RECORD_COLUMN: record_no, **values}
    out.setdefault("raw", to_raw(record))
    return out


# --------------------------------------------------------------------------------------------
# Values


def obj(value: Any) -> dict[str, Any]:
    """``value`` if it is a JSON object, else an empty one (tool fields are often null)."""
    return value if isinstance(value, dict) else {}


def text(value: Any) -> str | None:
    """A field's display text: strings as-is, {name|value|summary|displayName} objects, numbers."""
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
    if isinstance(value, Mapping):
        for key in ("value", "name", "summary", "displayName", "key", "login", "emailAddress", "email"):
            if isinstance(value.get(key), (str, int)) and not isinstance(value.get(key), bool):
                return text(value[key])
        return None
    if isinstance(value, list):
        return text(value[0]) if value else None
    return str(value)


def pick(record: Any, path: str) -> Any:
    """The value at a dotted ``path`` (``fields.components.0.name``); a list of ``{name, value}``
    objects can be stepped into by name (``custom_fields.root_cause``)."""
    cur = record
    for step in path.split("."):
        if isinstance(cur, Mapping):
            cur = cur.get(step)
        elif isinstance(cur, list):
            if step.lstrip("-").isdigit():
                i = int(step)
                cur = cur[i] if -len(cur) <= i < len(cur) else None
            else:
                named = [
                    x for x in cur if isinstance(x, Mapping) and step in (x.get("name"), x.get("key"), x.get("id"))
                ]
                cur = named[0].get("value") if named else None
        else:
            return None
        if cur is None:
            return None
    return cur


def to_utc(value: Any) -> Any:
    """An ISO 8601 value as a UTC ``pd.Timestamp``; unparseable or naive text is returned
    unchanged so that ``conform`` quarantines it with its reason."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, pd.Timestamp):
        return value.tz_convert("UTC") if value.tzinfo else value
    if isinstance(value, str):
        try:
            ts = pd.Timestamp(value.strip())
        except (ValueError, TypeError):
            return value
        if ts is pd.NaT or ts.tzinfo is None:
            return value
        return ts.tz_convert("UTC")
    return value


def epoch_ms(value: Any) -> Any:
    """Epoch milliseconds (number or numeric text) as a UTC ``pd.Timestamp``; else unchanged."""
    if value is None or isinstance(value, bool):
        return None if value is None else value
    try:
        number = float(value)
    except (TypeError, ValueError):
        return value
    if number != number or abs(number) > 1e14:
        return value
    return pd.Timestamp(int(number), unit="ms", tz="UTC")


def latest(values: Iterable[Any]) -> Any:
    """The latest of some timestamps (ignoring missing and unparsed ones)."""
    stamps = [v for v in values if isinstance(v, pd.Timestamp) and v.tzinfo is not None]
    return max(stamps) if stamps else None


def earliest(values: Iterable[Any]) -> Any:
    stamps = [v for v in values if isinstance(v, pd.Timestamp) and v.tzinfo is not None]
    return min(stamps) if stamps else None


def as_bool(value: Any) -> bool | None:
    """Loose truthiness of a tool field ("true", "yes", 1, a non-empty option); None if absent."""
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value != 0
    if isinstance(value, str):
        s = value.strip().lower()
        return s not in ("", "false", "no", "0", "n", "off", "none")
    if isinstance(value, Mapping):
        inner = text(value)
        return as_bool(inner) if inner is not None else bool(value)
    if isinstance(value, list):
        return bool(value)
    return bool(value)


def repo_from_url(url: Any) -> str | None:
    """``owner/name`` of a repository URL (GitHub, GitLab with groups, Bitbucket), API or web."""
    if not isinstance(url, str) or not url.strip():
        return None
    m = re.match(r"^[a-z]+://[^/]+/(.*)$", url.strip())
    path = m.group(1) if m else url.strip()
    path = path.split("/-/")[0]
    path = re.sub(r"^(api/v\d+/)?repos/", "", path)
    path = re.sub(r"^(?:addon|commits?|deployments?|pipelines?)/.*$", "", path)
    parts = [p for p in path.split("/") if p]
    for stop in ("commit", "commits", "deployments", "addon", "pipelines", "jobs", "tree", "src"):
        if stop in parts:
            parts = parts[: parts.index(stop)]
    if parts and parts[-1].endswith(".git"):
        parts[-1] = parts[-1][:-4]
    return "/".join(parts) or None


def camelize_keys(obj: Any) -> Any:
    """Lower-case the first letter of every key (``CommitOid`` -> ``commitOid``, ``ID`` -> ``id``):
    DevLake re-serialises GitHub GraphQL nodes with Go's PascalCase names."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            key = (
                k.lower()
                if isinstance(k, str) and k.isupper()
                else (k[:1].lower() + k[1:] if isinstance(k, str) else k)
            )
            out[key] = camelize_keys(v)
        return out
    if isinstance(obj, list):
        return [camelize_keys(v) for v in obj]
    return obj


def json_object(value: Any) -> dict[str, Any]:
    """A free-form payload that may be an object or a JSON string of one (GitHub ``payload``)."""
    if isinstance(value, dict):
        return value
    if isinstance(value, str) and value.strip().startswith("{"):
        try:
            obj = json.loads(value)
        except json.JSONDecodeError:
            return {}
        return obj if isinstance(obj, dict) else {}
    return {}


def adf_text(doc: Any) -> str:
    """Plain text of a Jira description/comment: a string (API v2) or Atlassian Document Format."""
    if doc is None:
        return ""
    if isinstance(doc, str):
        return doc
    if isinstance(doc, dict):
        own = str(doc["text"]) if isinstance(doc.get("text"), str) else ""
        return " ".join([own, *(adf_text(c) for c in doc.get("content") or [])]).strip()
    if isinstance(doc, list):
        return " ".join(adf_text(c) for c in doc)
    return ""
