"""The canonical history schema and the boundary check every record passes.

Three event tables (deploys, toggle_events, incidents) and the software catalog (``catalog``:
who owns which service) follow ``docs/data-model.md``. Connectors hand
``conform`` a frame of canonical column names holding loosely typed values; ``conform`` coerces
each column, and every record that fails a check goes to quarantine with the field and reason,
so one bad record never stops an ingest and never reaches the store.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

from features.history.environments import ENVIRONMENTS

ColumnKind = Literal["str", "timestamp", "count", "float", "bool", "enum", "label"]

#: Column of the frames connectors produce: the 1-based number of the record in its file.
RECORD_COLUMN = "_record"
#: Prefix of declared numeric change metrics (``extra_features``) in the deploys table.
EXTRA_PREFIX = "extra_"

DEPLOY_STATUSES = ("success", "failure", "canceled", "running", "rolled_back", "other")
TOGGLE_ACTIONS = (
    "created",
    "enabled",
    "disabled",
    "targeting_changed",
    "rollout_changed",
    "variants_changed",
    "archived",
    "deleted",
    "other",
)
#: Toggle actions that change what a flag serves ("flips"): attribution labels them, features count
#: them. ``created`` (a new flag serves its default, the old behaviour), ``archived``/``deleted``
#: (clean-up after the code path is gone) and ``other`` do not change what users get.
FLIP_ACTIONS = ("enabled", "disabled", "targeting_changed", "rollout_changed", "variants_changed")
INCIDENT_STATUSES = ("open", "acknowledged", "resolved")
SEVERITIES = ("sev1", "sev2", "sev3", "sev4", "sev5")

#: Longest text accepted in an ordinary field; longer values are quarantined, not truncated.
MAX_TEXT = 2048
#: Longest original record kept in ``raw``.
MAX_RAW = 65536
#: Largest plausible size of one change (lines); anything above is treated as corrupt input.
MAX_LINES = 50_000_000
#: An ISO 8601 timestamp that carries its own offset (``Z``, ``+01:00``, ``-0500``).
_OFFSET_RE = r"(?:[Zz]|[+-]\d{2}:?\d{2})$"


@dataclass(frozen=True)
class Column:
    """One canonical column: its kind, whether a record needs it, and its allowed values."""

    name: str
    kind: ColumnKind
    required: bool = False
    choices: tuple[str, ...] = ()
    max_length: int = MAX_TEXT
    doc: str = ""


@dataclass(frozen=True)
class TableSpec:
    """A canonical table: its primary key and its columns, in storage order."""

    name: str
    key: str
    time_column: str
    columns: tuple[Column, ...]
    allows_extra: bool = False

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"{self.name} has no column {name!r}")

    def extra_columns(self, frame: pd.DataFrame) -> list[str]:
        """The declared numeric change metrics present in ``frame``, in sorted order."""
        if not self.allows_extra:
            return []
        return sorted(c for c in frame.columns if str(c).startswith(EXTRA_PREFIX))


def _common_tail() -> tuple[Column, ...]:
    return (
        Column("updated_at", "timestamp", doc="when the tool last changed the record"),
        Column("url", "str"),
        Column("raw", "str", max_length=MAX_RAW, doc="the original record as JSON"),
    )


DEPLOYS = TableSpec(
    name="deploys",
    key="deploy_id",
    time_column="created_at",
    allows_extra=True,
    columns=(
        Column("deploy_id", "str", required=True, max_length=256, doc='"{source}:{native id}"'),
        Column("source", "str", required=True, max_length=128),
        Column("service", "str", required=True, max_length=256),
        Column("environment", "enum", required=True, choices=ENVIRONMENTS),
        Column("environment_raw", "str"),
        Column("commit_sha", "str", max_length=256),
        Column("commit_shas", "str", doc="space-separated shas shipped, where known"),
        Column("prev_commit_sha", "str", max_length=256),
        Column("ref", "str"),
        Column("status", "enum", required=True, choices=DEPLOY_STATUSES),
        Column("status_raw", "str"),
        Column("created_at", "timestamp", required=True),
        Column("started_at", "timestamp"),
        Column("finished_at", "timestamp"),
        Column("author", "str", max_length=256),
        Column("commit_count", "count"),
        Column("lines_added", "count"),
        Column("lines_deleted", "count"),
        Column("files_changed", "count"),
        Column("is_rollback", "bool"),
        Column("reverts_deploy_id", "str", max_length=256),
        Column("touches_infra", "bool"),
        Column("squad", "str", max_length=256),
        Column("tribe", "str", max_length=256),
        Column("label", "label", doc="externally attributed failure label (e.g. SZZ), 0/1"),
        *_common_tail(),
    ),
)

TOGGLE_EVENTS = TableSpec(
    name="toggle_events",
    key="event_id",
    time_column="occurred_at",
    columns=(
        Column("event_id", "str", required=True, max_length=256),
        Column("source", "str", required=True, max_length=128),
        Column("flag_key", "str", required=True, max_length=512),
        Column("project", "str", max_length=256),
        Column("environment", "enum", choices=ENVIRONMENTS),
        Column("environment_raw", "str"),
        Column("service", "str", max_length=256),
        Column("action", "enum", required=True, choices=TOGGLE_ACTIONS),
        Column("action_raw", "str"),
        Column("occurred_at", "timestamp", required=True),
        Column("actor", "str", max_length=256),
        Column("new_enabled", "bool"),
        Column("comment", "str", max_length=8192),
        *_common_tail(),
    ),
)

INCIDENTS = TableSpec(
    name="incidents",
    key="incident_id",
    time_column="created_at",
    columns=(
        Column("incident_id", "str", required=True, max_length=256),
        Column("source", "str", required=True, max_length=128),
        Column("title", "str", max_length=8192),
        Column("service", "str", max_length=256),
        Column("environment", "enum", choices=ENVIRONMENTS),
        Column("severity", "enum", choices=SEVERITIES),
        Column("priority", "str", max_length=64),
        Column("urgency", "str", max_length=64),
        Column("status", "enum", required=True, choices=INCIDENT_STATUSES),
        Column("status_raw", "str"),
        Column("created_at", "timestamp", required=True),
        Column("acknowledged_at", "timestamp"),
        Column("resolved_at", "timestamp"),
        Column("caused_by_deploy_id", "str", max_length=256),
        Column("caused_by_commit_sha", "str", max_length=256),
        Column("caused_by_flag_key", "str", max_length=512),
        Column("not_change_related", "bool", doc="marked by the tool as caused by no change"),
        *_common_tail(),
    ),
)

OWNERSHIP_MODES = ("fill", "override")

CATALOG = TableSpec(
    name="catalog",
    key="entity_ref",
    time_column="updated_at",
    columns=(
        Column("entity_ref", "str", required=True, max_length=512, doc='"component:default/checkout"'),
        Column("source", "str", required=True, max_length=128),
        Column("kind", "str", required=True, max_length=64, doc="component, system, group (lower case)"),
        Column("namespace", "str", max_length=256),
        Column("name", "str", required=True, max_length=256),
        Column("title", "str", max_length=512),
        Column("type", "str", max_length=128, doc="component type (service, ...) or group type (squad, tribe, ...)"),
        Column("lifecycle", "str", max_length=128),
        Column("owner", "str", max_length=512, doc="owning group name (``group:`` and default namespace dropped)"),
        Column("system", "str", max_length=256),
        Column("parent", "str", max_length=256, doc="a group's parent group name"),
        Column("depends_on", "str", doc="space-separated names of the components it depends on"),
        Column("slack_channel", "str", max_length=256, doc="annotation slack.com/channel"),
        Column("ownership", "enum", choices=OWNERSHIP_MODES, doc="fill deploys' squad/tribe, or override them"),
        *_common_tail(),
    ),
)

QUARANTINE_COLUMNS = ("table", "source", "file", "record", "field", "reason", "value")
#: What identifies a quarantine row: a re-ingest of the same record's field replaces it, never repeats it.
QUARANTINE_KEY = ("table", "source", "file", "record", "field")

TABLES: dict[str, TableSpec] = {t.name: t for t in (DEPLOYS, TOGGLE_EVENTS, INCIDENTS, CATALOG)}


def table_spec(name: str) -> TableSpec:
    """The spec of a canonical table, with a clear error for an unknown name."""
    try:
        return TABLES[name]
    except KeyError:
        raise ValueError(f"unknown table {name!r}; expected one of {sorted(TABLES)}") from None


# --------------------------------------------------------------------------------------------
# Timestamps


@dataclass(frozen=True)
class TimestampFormat:
    """How a source writes its timestamps: ``unix_s``, ``unix_ms``, ``iso8601`` or strftime."""

    format: str = "iso8601"
    timezone: str | None = None


def parse_timestamps(values: pd.Series, how: TimestampFormat) -> tuple[pd.Series, pd.Series]:
    """Parse ``values`` to UTC; returns (timestamps, reason per failed value or None).

    Naive timestamps are localised to ``how.timezone``; without one they are rejected, because
    guessing a zone silently shifts every feature window.
    """
    n = len(values)
    out = pd.Series(pd.NaT, index=values.index, dtype="datetime64[us, UTC]")
    reasons = pd.Series([None] * n, index=values.index, dtype=object)
    present = values.notna() & values.astype(str).str.strip().ne("")
    if not present.any():
        return out, reasons
    vals = values[present]
    is_ts = vals.map(lambda v: isinstance(v, (pd.Timestamp, np.datetime64)) or hasattr(v, "tzinfo"))
    numeric = pd.to_numeric(vals.where(~is_ts), errors="coerce") if how.format in ("unix_s", "unix_ms") else None

    parsed = pd.Series(pd.NaT, index=vals.index, dtype="datetime64[us, UTC]")
    bad = pd.Series(None, index=vals.index, dtype=object)

    if is_ts.any():
        ts = vals[is_ts].map(pd.Timestamp)
        naive = ts.map(lambda t: t.tzinfo is None)
        _place(parsed, bad, ts, naive, how)

    rest = vals[~is_ts]
    if len(rest):
        if numeric is not None:
            num = numeric[~is_ts]
            finite = num.notna() & np.isfinite(num.astype(float))
            bad[rest.index[~finite]] = f"not a {how.format} timestamp"
            unit: Literal["s", "ms"] = "s" if how.format == "unix_s" else "ms"
            ok = num[finite].astype(float)
            limit = 1e11 if unit == "s" else 1e14
            out_of_range = ok.abs() > limit
            bad[ok.index[out_of_range]] = f"{how.format} timestamp out of range"
            ok = ok[~out_of_range]
            parsed[ok.index] = pd.to_datetime(ok.to_numpy(), unit=unit, utc=True)
        else:
            text = rest.astype(str).str.strip()
            if how.format == "iso8601":
                aware = text.str.contains(_OFFSET_RE, regex=True)
                conv_aware = pd.to_datetime(text[aware], errors="coerce", format="ISO8601", utc=True)
                conv_naive = pd.to_datetime(text[~aware], errors="coerce", format="ISO8601")
                reason = "not an ISO 8601 timestamp"
            else:
                aware = pd.Series("%z" in how.format or "%Z" in how.format, index=text.index)
                conv_aware = pd.to_datetime(text[aware], errors="coerce", format=how.format, utc=True)
                conv_naive = pd.to_datetime(text[~aware], errors="coerce", format=how.format)
                reason = f"does not match {how.format!r}"
            for conv in (conv_aware, conv_naive):
                bad[conv.index[conv.isna()]] = reason
            good_aware = conv_aware[conv_aware.notna()]
            if len(good_aware):
                parsed[good_aware.index] = good_aware.dt.tz_convert("UTC")
            good_naive = conv_naive[conv_naive.notna()]
            if len(good_naive):
                _place_naive(parsed, bad, good_naive, how)
    out[vals.index] = parsed
    reasons[vals.index] = bad
    return out, reasons


def _place(parsed: pd.Series, bad: pd.Series, ts: pd.Series, naive: pd.Series, how: TimestampFormat) -> None:
    aware = ts[~naive]
    if len(aware):
        parsed[aware.index] = pd.to_datetime(aware.map(lambda t: t.tz_convert("UTC")), utc=True)
    if naive.any():
        _place_naive(parsed, bad, pd.to_datetime(ts[naive]), how)


def _place_naive(parsed: pd.Series, bad: pd.Series, ts: pd.Series, how: TimestampFormat) -> None:
    if how.timezone is None:
        bad[ts.index] = "naive timestamp and no timezone configured for the source"
        return
    try:
        localized = ts.dt.tz_localize(how.timezone, ambiguous="NaT", nonexistent="NaT")
    except Exception as exc:  # an unknown zone name is a config error, not a record error
        raise ValueError(f"unknown timezone {how.timezone!r}: {exc}") from exc
    missing = localized.isna()
    bad[ts.index[missing]] = f"ambiguous or non-existent local time in {how.timezone}"
    parsed[ts.index[~missing]] = localized[~missing].dt.tz_convert("UTC")


# --------------------------------------------------------------------------------------------
# Conforming a frame to a table


@dataclass
class Conformed:
    """The result of ``conform``: valid rows in canonical dtypes, and one row per failure."""

    valid: pd.DataFrame
    rejects: pd.DataFrame = field(default_factory=lambda: empty_quarantine())
    kept: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))  # input row -> in ``valid``


def empty_quarantine() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="Int64" if c == "record" else object) for c in QUARANTINE_COLUMNS})


def empty_table(spec: TableSpec) -> pd.DataFrame:
    """A zero-row frame with the table's canonical dtypes."""
    return pd.DataFrame({c.name: pd.Series(dtype=_dtype(c)) for c in spec.columns})


def _dtype(col: Column) -> str:
    return {
        "str": "string",
        "enum": "string",
        "timestamp": "datetime64[us, UTC]",
        "count": "Int64",
        "float": "Float64",
        "bool": "boolean",
        "label": "Int8",
    }[col.kind]


_TRUE = {"true", "1", "yes", "y", "t", "1.0"}
_FALSE = {"false", "0", "no", "n", "f", "0.0"}


def conform(
    spec: TableSpec,
    frame: pd.DataFrame,
    *,
    source: str,
    file: str,
    timestamps: TimestampFormat = TimestampFormat(),
) -> Conformed:
    """Coerce ``frame`` to ``spec``; records failing any check move to the rejects.

    ``frame`` holds canonical column names (a subset is fine) and ``RECORD_COLUMN``. Columns
    starting with ``extra_`` are declared numeric metrics (deploys only). The input is not
    modified. Rejects carry table, source, file, record, field, reason and the offending value.
    """
    n = len(frame)
    records = frame[RECORD_COLUMN].to_numpy() if RECORD_COLUMN in frame else np.arange(1, n + 1)
    failures: list[tuple[int, str, str, object]] = []  # (position, field, reason, value)
    out: dict[str, pd.Series] = {}
    index = frame.index

    for col in spec.columns:
        values = frame[col.name] if col.name in frame.columns else pd.Series([None] * n, index=index, dtype=object)
        converted, reasons = _convert(col, values, timestamps)
        if col.required:
            missing = converted.isna() & reasons.isna()
            reasons = reasons.where(~missing, "required field is missing")
        for pos in np.flatnonzero(reasons.notna().to_numpy()):
            failures.append((int(pos), col.name, str(reasons.iat[int(pos)]), values.iat[int(pos)]))
        out[col.name] = converted

    for name in spec.extra_columns(frame):
        values = frame[name]
        converted, reasons = _convert(Column(name, "float"), values, timestamps)
        for pos in np.flatnonzero(reasons.notna().to_numpy()):
            failures.append((int(pos), name, str(reasons.iat[int(pos)]), values.iat[int(pos)]))
        out[name] = converted

    unknown = [c for c in frame.columns if c != RECORD_COLUMN and c not in out]
    if unknown:
        raise ValueError(f"{file}: columns {unknown} are not canonical columns of {spec.name}")

    result = pd.DataFrame(out, index=index)
    bad_positions = sorted({f[0] for f in failures})
    keep = np.ones(n, dtype=bool)
    keep[bad_positions] = False
    valid = result.iloc[keep].reset_index(drop=True)

    rejects = pd.DataFrame(
        {
            "table": spec.name,
            "source": source,
            "file": file,
            "record": pd.array([int(records[p]) for p, *_ in failures], dtype="Int64"),
            "field": [f for _, f, _, _ in failures],
            "reason": [r for _, _, r, _ in failures],
            "value": [_short(v) for *_, v in failures],
        },
        columns=list(QUARANTINE_COLUMNS),
    )
    if not failures:
        rejects = empty_quarantine()
    return Conformed(valid=valid, rejects=rejects, kept=keep)


def _short(value: object, limit: int = 200) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


def _blank(values: pd.Series) -> pd.Series:
    return values.isna() | values.map(lambda v: isinstance(v, str) and v.strip() == "")


def _convert(col: Column, values: pd.Series, timestamps: TimestampFormat) -> tuple[pd.Series, pd.Series]:
    """Convert one column; returns (converted values, reason per failing value or None)."""
    reasons = pd.Series(None, index=values.index, dtype=object)
    blank = _blank(values)
    if col.kind == "timestamp":
        return parse_timestamps(values.where(~blank), timestamps)

    if col.kind in ("str", "enum"):
        text = values.where(~blank).map(lambda v: v if v is None or isinstance(v, str) else _stringify(v))
        text = text.where(~blank, None)
        lengths = text.map(lambda v: len(v) if isinstance(v, str) else 0)
        reasons[lengths > col.max_length] = f"text longer than {col.max_length} characters"
        if col.kind == "enum":
            norm = text.map(lambda v: v.strip().lower() if isinstance(v, str) else v)
            unknown = norm.notna() & ~norm.isin(col.choices)
            reasons[unknown & reasons.isna()] = f"unknown value; expected one of {', '.join(col.choices)}"
            text = norm
        return text.astype("string"), reasons

    if col.kind == "bool":

        def to_bool(v: object) -> object:
            if isinstance(v, (bool, np.bool_)):
                return bool(v)
            s = str(v).strip().lower()
            return True if s in _TRUE else False if s in _FALSE else "?"

        conv = values.where(~blank).map(lambda v: None if _is_missing(v) else to_bool(v))
        reasons[conv.eq("?")] = "not a boolean (true/false/1/0)"
        conv = conv.where(~conv.eq("?"), None)
        return conv.astype("boolean"), reasons

    # numeric kinds
    numbers = pd.to_numeric(values.where(~blank).map(_numeric_or_nan), errors="coerce").astype(float)
    notnum = numbers.isna() & ~blank
    reasons[notnum] = "not a number"
    infinite = np.isinf(numbers)
    reasons[infinite] = "not a finite number"
    numbers = numbers.where(~infinite)
    if col.kind == "float":
        return numbers.astype("Float64"), reasons
    if col.kind == "label":
        badlabel = numbers.notna() & ~numbers.isin([0.0, 1.0])
        reasons[badlabel] = "label must be 0 or 1"
        return numbers.where(~badlabel).astype("Int8"), reasons
    negative = numbers < 0
    reasons[negative] = "negative count"
    fractional = numbers.notna() & (numbers != np.floor(numbers))
    reasons[fractional & reasons.isna()] = "count is not a whole number"
    absurd = numbers > MAX_LINES
    reasons[absurd & reasons.isna()] = f"implausibly large (over {MAX_LINES})"
    ok = numbers.where(reasons.isna())
    return ok.astype("Int64"), reasons


def _is_missing(v: object) -> bool:
    return v is None or v is pd.NA or v is pd.NaT or (isinstance(v, float) and math.isnan(v))


def _numeric_or_nan(v: object) -> object:
    if isinstance(v, (bool, np.bool_)):
        return float(v)
    if isinstance(v, str):
        s = v.strip().lower()
        if s in ("true", "false"):
            return 1.0 if s == "true" else 0.0
        return s
    return v


def _stringify(v: object) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def canonical_order(spec: TableSpec, frame: pd.DataFrame) -> pd.DataFrame:
    """Columns in canonical order (extras last), rows sorted by key: the stored layout."""
    cols = spec.column_names + spec.extra_columns(frame)
    return frame[cols].sort_values(spec.key, kind="stable").reset_index(drop=True)


@dataclass(frozen=True)
class History:
    """The canonical tables, as read from the store (canonical dtypes, sorted by key).

    ``catalog`` (the software catalog's entities) is optional: histories built without one get
    an empty table, so ownership simply stays what the deploys say.
    """

    deploys: pd.DataFrame
    toggle_events: pd.DataFrame
    incidents: pd.DataFrame
    catalog: pd.DataFrame = field(default_factory=lambda: empty_table(CATALOG))

    @classmethod
    def empty(cls) -> History:
        return cls(empty_table(DEPLOYS), empty_table(TOGGLE_EVENTS), empty_table(INCIDENTS), empty_table(CATALOG))
