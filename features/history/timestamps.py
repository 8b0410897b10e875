"""The one timestamp rule after ingest: every time is timezone-aware UTC, and a naive one is refused.

Ingest is the only place a naive time gets a zone: ``conform`` localises it with the source's
configured ``timezone`` or quarantines it (``features.history.schema``). Past that boundary a naive
timestamp means someone skipped it, so the converters here raise rather than guess. The single
exception is a date typed on the command line (``--test-start 2026-03-01``), which callers read
with ``naive_is_utc=True``: the option's help says so.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


def _naive(what: str) -> ValueError:
    return ValueError(f"{what} is a naive timestamp; times are timezone-aware UTC (give an offset or 'Z')")


def utc_timestamp(value: Any, what: str, *, naive_is_utc: bool = False) -> pd.Timestamp:
    """``value`` (aware datetime, ``pd.Timestamp`` or ISO text) as a UTC ``pd.Timestamp``.

    Raises ``ValueError`` naming ``what`` when it is missing or unparseable, or naive (unless
    ``naive_is_utc``, reserved for command-line dates).
    """
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise ValueError(f"{what} {value!r} is not a date/time") from None
    if ts is pd.NaT:
        raise ValueError(f"{what} is missing")
    if ts.tzinfo is None:
        if not naive_is_utc:
            raise _naive(what)
        return ts.tz_localize("UTC")
    return ts.tz_convert("UTC")


def utc_micros(value: Any, what: str) -> int:
    """One time as UTC microseconds since the epoch; integers are taken as microseconds already."""
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, datetime) and value.tzinfo is None:
        raise _naive(what)
    return int(utc_timestamp(value, what).as_unit("us").value // 1000)


def utc_micros_column(values: pd.Series, what: str) -> tuple[IntArray, BoolArray]:
    """A column as UTC microseconds since the epoch, and which values are present.

    An aware column converts as is; a naive datetime column, or text without an offset, is refused.
    """
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        ts = values
    elif pd.api.types.is_datetime64_dtype(values.dtype):
        raise _naive(f"{what} column")
    else:
        parsed = [None if v is None or v is pd.NA or v is pd.NaT else pd.Timestamp(v) for v in values]
        if any(t is not None and t is not pd.NaT and t.tzinfo is None for t in parsed):
            raise _naive(f"{what} column")
        ts = pd.to_datetime(pd.Series(parsed, index=values.index, dtype=object), utc=True)
    plain = ts.dt.tz_convert("UTC").dt.tz_localize(None).dt.as_unit("us")
    present = plain.notna().to_numpy()
    return plain.to_numpy().view(np.int64).copy(), present
