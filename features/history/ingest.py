"""Pure ingest logic: turn a parsed export into canonical rows and merge them into a table.

The flow (pipelines/flows/ingest.py) reads files and commits; everything between is here, as
functions of DataFrames, so it is tested without Prefect or a store.

Merge rule, per primary key: a new key is *inserted*; a key whose content (every canonical
column) is identical is *unchanged*; a key with different content *updates* the stored row
unless both carry ``updated_at`` and the stored one is newer (then the stored row stays and the
record counts as *unchanged*: the store already holds a newer version). Without ``updated_at``
the later ingest wins. Within one file, repeated keys with identical content count once
(the repeats are *unchanged*); repeated keys with conflicting content are all quarantined,
because nothing says which is right. Every record read lands in exactly one of the four counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.history.bounds import TimeBounds, check_time_bounds
from features.history.quarantine import ReasonCount
from features.history.schema import (
    RECORD_COLUMN,
    Conformed,
    TableSpec,
    conform,
    empty_quarantine,
    table_spec,
)
from features.sources.base import ParsedFile
from features.sources.config import SourceConfig


@dataclass
class SourceCounts:
    """How the records of one source (all its files) went; ``read`` always reconciles."""

    source: str
    table: str
    files: int = 0
    read: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    quarantined: int = 0
    other: dict[str, int] = field(default_factory=dict)
    zero_times: dict[str, int] = field(default_factory=dict)  # field -> zero-time sentinels stored as missing
    #: the most frequent quarantine reasons of this ingest, so a refused export is seen at once
    top_reasons: list[ReasonCount] = field(default_factory=list)

    @property
    def reconciles(self) -> bool:
        return self.read == self.inserted + self.updated + self.unchanged + self.quarantined

    @property
    def rows(self) -> int:
        """Records that are in the store after this ingest (new, updated or already there)."""
        return self.inserted + self.updated + self.unchanged

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "table": self.table,
            "files": self.files,
            "read": self.read,
            "inserted": self.inserted,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "quarantined": self.quarantined,
            "other": dict(self.other),
            "zero_times": dict(self.zero_times),
            "top_reasons": [r.as_dict() for r in self.top_reasons],
        }


@dataclass(frozen=True)
class PreparedFile:
    """One file's canonical rows (deduplicated) and its quarantine, ready to merge."""

    table: str
    rows: pd.DataFrame
    rejects: pd.DataFrame
    read: int
    quarantined: int
    duplicates: int
    other: dict[str, int]
    zero_times: dict[str, int] = field(default_factory=dict)


def prepare_file(
    parsed: ParsedFile,
    *,
    source: str,
    file: str,
    id_prefix: str,
    defaults: dict[str, Any],
    service_map: dict[str, str],
    time_bounds: TimeBounds = TimeBounds(),
    now: pd.Timestamp | None = None,
) -> PreparedFile:
    """Apply the source's defaults, service map and id prefix, then check every record.

    ``now`` is the ingest time the plausible time range counts from (default: the current time).
    """
    spec = table_spec(parsed.table)
    frame = parsed.frame.copy()
    if RECORD_COLUMN not in frame.columns:
        frame[RECORD_COLUMN] = np.arange(1, len(frame) + 1)
    for column, value in defaults.items():
        if column not in spec.column_names:
            raise ValueError(f"defaults.{column}: not a column of {spec.name}")
        if column in frame.columns:
            frame[column] = frame[column].where(~_blank(frame[column]), value)
        else:
            frame[column] = value
    if service_map and "service" in frame.columns:
        frame["service"] = frame["service"].map(lambda s: service_map.get(s, s) if isinstance(s, str) else s)
    frame["source"] = source
    if spec.key in frame.columns:
        keys = frame[spec.key]
        frame[spec.key] = keys.where(_blank(keys), f"{id_prefix}:" + keys.astype(str).str.strip())

    conformed: Conformed = conform(spec, frame, source=source, file=file, timestamps=parsed.timestamps)
    checked = check_time_bounds(
        spec,
        conformed,
        frame[RECORD_COLUMN].to_numpy()[conformed.kept],
        time_bounds,
        pd.Timestamp.now(tz="UTC") if now is None else now,
        source=source,
        file=file,
    )
    conformed = checked.conformed
    parse_rejects = parsed.rejects.assign(source=source, file=file) if len(parsed.rejects) else parsed.rejects
    # Records the connector could not map at all have no row; every other unit counted is a row
    # (one record may yield several, e.g. a DevLake multi-repo deployment).
    unmapped = set(parse_rejects["record"].dropna().astype(int)) - set(frame[RECORD_COLUMN].astype(int))
    read = len(frame) + len(unmapped)

    records = frame[RECORD_COLUMN].to_numpy()[conformed.kept]
    rows, conflicts, duplicates = _dedupe(spec, conformed.valid, records, source=source, file=file)
    rejects = pd.concat([df for df in (parse_rejects, conformed.rejects, conflicts) if len(df)] or [empty_quarantine()])
    quarantined = len(unmapped) + int((~conformed.kept).sum()) + len(conflicts)
    return PreparedFile(
        table=spec.name,
        rows=rows,
        rejects=rejects.reset_index(drop=True),
        read=read,
        quarantined=quarantined,
        duplicates=duplicates,
        other=dict(parsed.other_counts),
        zero_times=checked.zero_times,
    )


def prepare_source_file(
    source: SourceConfig, path: Path, parsed: ParsedFile, now: pd.Timestamp | None = None
) -> PreparedFile:
    """``prepare_file`` with the defaults, service map, id prefix and time bounds the source declares."""
    return prepare_file(
        parsed,
        source=source.name,
        file=source.display(path),
        id_prefix=source.id_prefix,
        defaults=source.defaults,
        service_map=source.service_map,
        time_bounds=source.time_bounds,
        now=now,
    )


def _blank(values: pd.Series) -> pd.Series:
    return values.isna() | values.map(lambda v: isinstance(v, str) and not v.strip())


def _dedupe(
    spec: TableSpec, valid: pd.DataFrame, records: np.ndarray, *, source: str, file: str
) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """Drop identical repeats of a key; quarantine every copy of a key with conflicting content."""
    if valid.empty:
        return valid, empty_quarantine(), 0
    hashes = row_hashes(valid)
    dup_key = valid[spec.key].duplicated(keep=False).to_numpy()
    if not dup_key.any():
        return valid, empty_quarantine(), 0
    groups = pd.DataFrame({"key": valid[spec.key].to_numpy(), "hash": hashes.to_numpy()})
    distinct = groups.groupby("key", sort=False)["hash"].transform("nunique").to_numpy()
    conflicting = dup_key & (distinct > 1)
    conflicts = pd.DataFrame(
        {
            "table": spec.name,
            "source": source,
            "file": file,
            "record": pd.array(records[conflicting], dtype="Int64"),
            "field": spec.key,
            "reason": "duplicate key with conflicting content in the same file",
            "value": valid[spec.key].to_numpy()[conflicting],
        }
    )
    kept = valid[~conflicting]
    repeat = kept[spec.key].duplicated(keep="first").to_numpy()
    return kept[~repeat].reset_index(drop=True), conflicts if len(conflicts) else empty_quarantine(), int(repeat.sum())


def row_hashes(frame: pd.DataFrame) -> pd.Series:
    """A content hash per row over every column, independent of column order."""
    cols = sorted(frame.columns)
    return pd.util.hash_pandas_object(frame[cols], index=False)


@dataclass(frozen=True)
class MergeCounts:
    inserted: int
    updated: int
    unchanged: int


def merge_rows(spec: TableSpec, current: pd.DataFrame, incoming: pd.DataFrame) -> tuple[pd.DataFrame, MergeCounts]:
    """Upsert ``incoming`` (unique keys) into ``current``; returns the new table and counts."""
    if incoming.empty:
        return current, MergeCounts(0, 0, 0)
    extra = sorted(set(spec.extra_columns(current)) | set(spec.extra_columns(incoming)))
    columns = spec.column_names + extra
    cur = _with_columns(current, columns).set_index(spec.key, drop=False)
    inc = _with_columns(incoming, columns).set_index(spec.key, drop=False)

    existing = inc.index.isin(cur.index)
    new_rows = inc[~existing]
    both = inc[existing]
    old = cur.loc[both.index]
    same = row_hashes(both.reset_index(drop=True)).to_numpy() == row_hashes(old.reset_index(drop=True)).to_numpy()
    # NaT compares False, so a record without updated_at is never stale: the later ingest wins
    stale = (both["updated_at"].reset_index(drop=True) < old["updated_at"].reset_index(drop=True)).to_numpy()
    replace = ~same & ~stale
    replacements = both[replace]

    result = cur.copy()
    if len(replacements):
        result = result.drop(index=replacements.index)
    parts = [p for p in (result, replacements, new_rows) if len(p)]
    merged = pd.concat(parts, ignore_index=True) if parts else cur.reset_index(drop=True)
    merged = merged.sort_values(spec.key, kind="stable").reset_index(drop=True)
    return merged, MergeCounts(inserted=len(new_rows), updated=int(replace.sum()), unchanged=int((~replace).sum()))


def _with_columns(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    out = frame.copy()
    for c in columns:
        if c not in out.columns:
            out[c] = pd.Series(pd.NA, index=out.index, dtype="Float64")
    return out[columns]
