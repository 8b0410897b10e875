"""The quarantine as a reader sees it: per source, the reasons records were refused, with examples.

Ingest writes one quarantine row per failed check (table, source, file, record, field, reason,
value). A source's quarantine is replaced on each ingest of that source, so fixing an export and
re-ingesting leaves no stale entries for records that are now stored; these are plain functions
of that frame, shared by the ingest report and ``incident-risk quarantine``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from features.history.schema import QUARANTINE_KEY, empty_quarantine

#: The columns that identify one quarantine entry: a re-ingest replaces, never repeats.


@dataclass(frozen=True)
class ReasonCount:
    """How many quarantine entries failed one check (a field and a reason), with a few examples."""

    field: str
    reason: str
    count: int
    examples: tuple[dict[str, Any], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"field": self.field, "reason": self.reason, "count": self.count, "examples": list(self.examples)}

    def line(self) -> str:
        return f"{self.field}: {self.reason} ({self.count})"


@dataclass(frozen=True)
class SourceQuarantine:
    """One source's quarantine: its size and its reasons, most frequent first."""

    source: str
    table: str
    entries: int
    records: int
    reasons: list[ReasonCount] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "table": self.table,
            "entries": self.entries,
            "records": self.records,
            "reasons": [r.as_dict() for r in self.reasons],
        }


def replace_sources(current: pd.DataFrame, new: pd.DataFrame, sources: Iterable[str]) -> pd.DataFrame:
    """``current`` with every entry of ``sources`` replaced by ``new``: an ingest of a source says
    all there is to say about its records, so entries of records it now stores go away."""
    replaced = set(sources)
    kept = current[~current["source"].astype(str).isin(replaced)]
    parts = [p for p in (kept, new) if len(p)]
    if not parts:
        return empty_quarantine()
    both = pd.concat(parts, ignore_index=True)
    both["record"] = both["record"].astype("Int64")
    return both.drop_duplicates(subset=list(QUARANTINE_KEY), keep="last").reset_index(drop=True)


def reason_counts(entries: pd.DataFrame, *, limit: int | None = 3, examples: int = 0) -> list[ReasonCount]:
    """The (field, reason) pairs of ``entries``, most frequent first (ties by field, reason), each
    with up to ``examples`` entries naming file, record, field and value."""
    if entries.empty:
        return []
    frame = entries.assign(field=entries["field"].astype(str), reason=entries["reason"].astype(str))
    counts = frame.groupby(["field", "reason"], sort=False).size().reset_index(name="count")
    counts = counts.sort_values(["count", "field", "reason"], ascending=[False, True, True], kind="stable")
    if limit is not None:
        counts = counts.head(limit)
    out = []
    for fld, reason, count in counts.itertuples(index=False):
        sample = frame[(frame["field"] == fld) & (frame["reason"] == reason)].head(examples)
        shown = tuple(
            {
                "file": str(r["file"]),
                "record": None if pd.isna(r["record"]) else int(r["record"]),
                "field": fld,
                "value": None if pd.isna(r["value"]) else str(r["value"]),
            }
            for _, r in sample.iterrows()
        )
        out.append(ReasonCount(field=fld, reason=reason, count=int(count), examples=shown))
    return out


def summarise(
    quarantine: pd.DataFrame, *, source: str | None = None, limit: int | None = None, examples: int = 3
) -> list[SourceQuarantine]:
    """Per source (sorted by name; only ``source`` when given): entries, records and reasons."""
    frame = quarantine if source is None else quarantine[quarantine["source"].astype(str) == source]
    out = []
    for (name, table), group in frame.groupby(["source", "table"], sort=True):
        out.append(
            SourceQuarantine(
                source=str(name),
                table=str(table),
                entries=len(group),
                records=int(group[["file", "record"]].drop_duplicates().shape[0]),
                reasons=reason_counts(group, limit=limit, examples=examples),
            )
        )
    return out
