"""Plausible time ranges: implausible timestamps are quarantined, zero-time sentinels become missing.

A deploy dated 1900-01-01 or 2200-01-01 is a typo or a tool's placeholder; stored, it poisons
DORA figures, attribution windows and feature windows. Every timestamp of a record is checked
against a range: not before ``not_before`` (default 2000-01-01) and not after the reference time
(the ingest time, or "now" when scoring) plus ``max_days_ahead`` (default 1 day; planned deploys
for scoring use a longer horizon).

Exporters write "unset" as a zero time: Go's ``0001-01-01T00:00:00Z``, Unix ``1970-01-01T00:00:00Z``,
SQL Server's ``1900-01-01``, or the largest date ``9999-12-31``. In an optional field (``finished_at``,
``resolved_at``...) such a sentinel means "missing": it is stored as missing and counted. In a
required field (the table's time column) it is a record without a time: quarantined like any
out-of-range value, with a reason naming the field and the bound.

The checks run on the microsecond timestamps ``conform`` produces (they hold year 1 to 9999),
before anything converts them to nanoseconds, which cannot represent those years.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from features.history.schema import Conformed, TableSpec, empty_quarantine

#: Default earliest plausible time: no tool this project reads existed before it.
DEFAULT_NOT_BEFORE = pd.Timestamp("2000-01-01", tz="UTC")
#: Default tolerance after the reference time (clock skew between tools and this machine).
DEFAULT_DAYS_AHEAD = 1.0


@dataclass(frozen=True)
class TimeBounds:
    """The plausible range of a source's timestamps; ``max_days_ahead`` counts from the reference time."""

    not_before: pd.Timestamp = DEFAULT_NOT_BEFORE
    max_days_ahead: float = DEFAULT_DAYS_AHEAD

    def __post_init__(self) -> None:
        if self.max_days_ahead < 0 or not np.isfinite(self.max_days_ahead):
            raise ValueError(f"time_bounds.max_days_ahead must be a finite number >= 0, got {self.max_days_ahead}")

    def latest(self, now: pd.Timestamp) -> pd.Timestamp:
        """The latest plausible time for a reference time ``now``."""
        return pd.Timestamp(now).tz_convert("UTC") + pd.Timedelta(days=self.max_days_ahead)


def parse_time_bound(value: object) -> pd.Timestamp:
    """A ``not_before`` value from config (a YAML date, datetime or ISO text) as a UTC timestamp."""
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        value = dt.datetime(value.year, value.month, value.day)
    try:
        ts = pd.Timestamp(value)  # type: ignore[arg-type]
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not a date or ISO 8601 time: {value!r} ({exc})") from None
    if ts is pd.NaT:
        raise ValueError(f"not a date or ISO 8601 time: {value!r}")
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def is_zero_time(values: pd.Series) -> pd.Series:
    """True where a timestamp is a tool's placeholder for "unset" (see the module docstring)."""
    ts = values.dt.tz_convert("UTC")
    midnight = ts.dt.hour.eq(0) & ts.dt.minute.eq(0) & ts.dt.second.eq(0) & ts.dt.microsecond.eq(0)
    day = ts.dt.strftime("%Y-%m-%d")
    zero_day = day.isin(["0001-01-01", "1900-01-01", "1970-01-01"]) & midnight
    return (zero_day | day.eq("9999-12-31")).fillna(False).astype(bool)


@dataclass(frozen=True)
class BoundsChecked:
    """``conformed`` with out-of-range records moved to the rejects; ``zero_times``: field -> sentinels cleared."""

    conformed: Conformed
    zero_times: dict[str, int]


def check_time_bounds(
    spec: TableSpec,
    conformed: Conformed,
    records: np.ndarray,
    bounds: TimeBounds,
    now: pd.Timestamp,
    *,
    source: str,
    file: str,
    reference: str = "ingest time",
) -> BoundsChecked:
    """Quarantine valid rows with a timestamp outside ``bounds``; clear zero-time sentinels in optional fields.

    ``records`` are the record numbers of ``conformed.valid``'s rows; ``reference`` names ``now`` in
    reasons. Rows ``conform`` rejected stay as they are; a newly rejected row gets a quarantine row per bad field.
    """
    valid = conformed.valid.copy()
    latest = bounds.latest(now)
    n = len(valid)
    bad = np.zeros(n, dtype=bool)
    failures: list[pd.DataFrame] = []
    zero_times: dict[str, int] = {}
    for col in spec.columns:
        if col.kind != "timestamp" or col.name not in valid.columns or n == 0:
            continue
        values = valid[col.name]
        present = values.notna()
        if not col.required:
            zero = (is_zero_time(values) & present).to_numpy()
            if zero.any():
                zero_times[col.name] = int(zero.sum())
                valid.loc[zero, col.name] = pd.NaT
                values = valid[col.name]
                present = values.notna()
        early = (present & (values < bounds.not_before)).to_numpy()
        late = (present & (values > latest)).to_numpy()
        for mask, reason in (
            (early, f"before the plausible range: earlier than {_iso(bounds.not_before)} (time_bounds.not_before)"),
            (
                late,
                f"after the plausible range: later than {_iso(latest)} ({reference} {_iso(now)} plus "
                f"{bounds.max_days_ahead:g} days, time_bounds.max_days_ahead)",
            ),
        ):
            if mask.any():
                failures.append(
                    pd.DataFrame(
                        {
                            "table": spec.name,
                            "source": source,
                            "file": file,
                            "record": pd.array(records[mask].astype(int), dtype="Int64"),
                            "field": col.name,
                            "reason": f"{col.name} {reason}",
                            "value": [_iso(v) for v in values[mask]],
                        }
                    )
                )
                bad |= mask
    if not bad.any() and not zero_times:
        return BoundsChecked(conformed, {})
    kept = conformed.kept.copy()
    kept[np.flatnonzero(kept)[bad]] = False
    new = pd.concat(failures).sort_values("record", kind="stable") if failures else empty_quarantine()
    rejects = pd.concat([df for df in (conformed.rejects, new) if len(df)] or [empty_quarantine()])
    return BoundsChecked(
        replace(conformed, valid=valid[~bad].reset_index(drop=True), rejects=rejects.reset_index(drop=True), kept=kept),
        zero_times,
    )


def _iso(ts: object) -> str:
    return pd.Timestamp(ts).isoformat()  # type: ignore[arg-type]
