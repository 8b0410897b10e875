"""Point-in-time features of deploys: one code path for training rows and for scoring a new deploy.

An entity is a deploy (one row of the deploys table) and its event timestamp is ``created_at``.
Every feature of an entity uses only what was known strictly before that timestamp: events with
an equal timestamp are not seen (Feast's point-in-time join includes them; we do not, so two
deploys at the same instant never see each other), and a failure label counts only once it had
matured. Training passes every historic deploy as entities, scoring passes a one-row frame of the
upcoming deploy; both run the same functions against the same history, so they cannot disagree.

Two stages, shared by training and serving: ``prepare_history`` indexes everything that depends
only on the history (once per training build, once per store refresh in the service), and
``compute_features`` answers the entities against it (``EntityArrays.from_frame`` for a table,
``EntityArrays.from_mapping`` for one request). ``build_features`` is the two in a row.

Windows are sorted-array searches (``features.pointintime.windows``), vectorised over all entities and all
groups at once. Definitions, windows and reasons are in ``docs/features.md``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import numpy.typing as npt
import pandas as pd

from features.history.schema import ENVIRONMENTS, EXTRA_PREFIX, FLIP_ACTIONS, TOGGLE_ACTIONS, History
from features.history.timestamps import utc_micros, utc_micros_column
from features.pointintime.windows import (
    OPEN_END,
    BoolArray,
    EventStreams,
    IntArray,
    Queries,
    SortedEvents,
    SortedIntervals,
    StreamWindows,
    count_before,
    group_time_order,
    min_start_covering,
    nonempty_intervals,
    previous_in_group,
    sort_events,
    sort_intervals,
)

FloatArray = npt.NDArray[np.float64]
ObjectArray = npt.NDArray[np.object_]
#: A text column: str or None in an object array (a request), or pandas' compact string array (a table).
TextArray = ObjectArray | pd.api.extensions.ExtensionArray

#: Categorical feature columns, returned as strings; encoded inside the model pipeline.
CATEGORICAL_COLUMNS = ("service", "squad", "tribe")
#: Value of a categorical feature whose input is missing.
MISSING_CATEGORY = "(missing)"
#: Identity columns leading every feature frame.
KEY_COLUMNS = ("deploy_id", "created_at")

MINUTE = 60_000_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR

_SIZE_COLUMNS = ("lines_added", "lines_deleted", "files_changed", "commit_count")
_KIND_COLUMNS = ("touches_infra", "is_rollback")
_NUMBER_COLUMNS = (*_SIZE_COLUMNS, *_KIND_COLUMNS)
_TEXT_COLUMNS = ("service", "author", "squad", "tribe")
_WORDS = {"true": 1.0, "false": 0.0, "yes": 1.0, "no": 0.0}
#: Up to this many entities, per-row Python beats pandas' fixed per-call cost (a scoring request).
_FEW_ROWS = 16
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class FeatureConfig:
    """Every tunable of the feature definitions; changing one changes features, so models log it.

    - ``flip_window_minutes``: width of ``toggle_flips_recent`` (flips just before the deploy).
    - ``stale_after_days``: an enabled toggle untouched for longer than this is stale.
    - ``smoothing_prior_weight``: pseudo-count pulling past failure rates towards the prior.
    - ``service_timezones``: service -> IANA zone for timing features; UTC for unlisted services.
    - ``base_failure_rate``: prior failure rate before any label has matured at all.
    - ``history_environments``: deploy environments counted in history windows (and the incident
      and toggle environments counted, besides events without an environment).
    - ``business_hours``: local [start, end) hours of the working day.
    - ``friday_afternoon_hour``: local hour from which Friday counts as afternoon.
    - ``max_gap_days``: cap (and fill value when there is none) of "time since the last ...".
    - ``extra_columns``: declared ``extra_*`` change metrics to pass through; ``None`` means every
      ``extra_*`` column present in the entities or the history deploys, so a scoring frame that
      lacks one still gets the column (value 0, missing indicator 1).
    """

    flip_window_minutes: int = 30
    stale_after_days: int = 30
    smoothing_prior_weight: float = 10.0
    service_timezones: Mapping[str, str] = field(default_factory=dict)
    base_failure_rate: float = 0.1
    history_environments: tuple[str, ...] = ("production",)
    business_hours: tuple[int, int] = (9, 17)
    friday_afternoon_hour: int = 12
    max_gap_days: float = 365.0
    extra_columns: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.flip_window_minutes <= 0:
            raise ValueError("flip_window_minutes must be positive")
        if self.stale_after_days <= 0:
            raise ValueError("stale_after_days must be positive")
        if not self.smoothing_prior_weight > 0:
            raise ValueError("smoothing_prior_weight must be positive")
        if not 0 < self.base_failure_rate < 1:
            raise ValueError("base_failure_rate must be in (0, 1)")
        unknown = [e for e in self.history_environments if e not in ENVIRONMENTS]
        if not self.history_environments or unknown:
            raise ValueError(f"history_environments must be a non-empty subset of {ENVIRONMENTS}; got {unknown}")
        start, end = self.business_hours
        if not 0 <= start < end <= 24:
            raise ValueError("business_hours must be (start, end) with 0 <= start < end <= 24")
        if not 0 <= self.friday_afternoon_hour <= 23:
            raise ValueError("friday_afternoon_hour must be in 0..23")
        if not self.max_gap_days > 0:
            raise ValueError("max_gap_days must be positive")
        if self.extra_columns is not None and any(not c.startswith(EXTRA_PREFIX) for c in self.extra_columns):
            raise ValueError(f"extra_columns must start with {EXTRA_PREFIX!r}")
        for service, zone in self.service_timezones.items():
            try:
                ZoneInfo(zone)
            except (ZoneInfoNotFoundError, ValueError, TypeError):
                raise ValueError(f"unknown timezone {zone!r} for service {service!r}") from None


def feature_columns(features: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(numeric, categorical) feature column names of a frame from ``build_features``."""
    names = [str(c) for c in features.columns if c not in KEY_COLUMNS]
    categorical = [c for c in names if c in CATEGORICAL_COLUMNS]
    return [c for c in names if c not in CATEGORICAL_COLUMNS], categorical


def build_features(
    entities: pd.DataFrame, history: History, deploy_labels: pd.DataFrame, config: FeatureConfig
) -> pd.DataFrame:
    """Features of each entity deploy from events strictly before its ``created_at``.

    Returns one row per entity in entity order (the entities' index is kept): ``deploy_id``,
    ``created_at`` (UTC), then the numeric feature columns (float64) and the categorical ones
    (strings, ``MISSING_CATEGORY`` when absent). Both stages are the ones scoring uses:
    ``compute_features(prepare_history(...), EntityArrays.from_frame(entities))``.
    """
    return features_frame(prepare_history(history, deploy_labels, config), entities)


def features_frame(prepared: PreparedHistory, entities: pd.DataFrame) -> pd.DataFrame:
    """``build_features`` on a history already prepared (the scoring context holds one per store version)."""
    ents = EntityArrays.from_frame(entities)
    features = compute_features(prepared, ents)
    created = pd.Series(pd.to_datetime(ents.t, unit="us", utc=True), index=entities.index).dt.as_unit("us")
    out = pd.DataFrame(
        {"deploy_id": _text(entities, "deploy_id"), "created_at": created, **features.numeric},
        index=entities.index,
    )
    for name, values in features.categorical.items():
        out[name] = values
    return out


# --------------------------------------------------------------------------------------------
# Stage 1: everything that depends only on the history (once per build, once per store refresh)


@dataclass(frozen=True)
class Vocabulary:
    """Integer codes of the names the history holds; any other name (or none) codes -1, i.e. no events."""

    names: pd.Index  # code -> name (object dtype)
    codes: Mapping[str, int]  # name -> code

    @classmethod
    def of(cls, names: list[str]) -> Vocabulary:
        return cls(pd.Index(names, dtype=object), dict(zip(names, range(len(names)), strict=True)))

    def encode(self, values: TextArray) -> IntArray:
        """Codes of a text column; a dict walk for a request's few rows, a hash join for a table."""
        if len(values) <= _FEW_ROWS:
            return np.array([self.codes.get(v, -1) if isinstance(v, str) else -1 for v in values], dtype=np.int64)
        return np.asarray(self.names.get_indexer(pd.Index(values, dtype=object)), dtype=np.int64)


@dataclass(frozen=True)
class PreparedHistory:
    """The history's counted events as window indexes (``features.pointintime.windows``), for one ``FeatureConfig``.

    Nothing here depends on the entities, so training builds it once per table and the service once
    per store refresh; ``compute_features`` then only searches it. Streams per service: ``deploy``,
    ``incident``, ``flip`` (toggle flips), ``toggle`` (every toggle event), the starts and ends of
    the ``actor`` (an actor's flips count as recent), ``enabled`` and ``stale`` flag intervals, and
    ``label``/``failure`` (matured labels, failed ones, at the time they became usable).
    """

    config: FeatureConfig
    services: Vocabulary
    authors: Vocabulary
    pair_keys: IntArray  # sorted author * n_services + service of the (author, service) pairs deployed
    n_services: int
    by_service: EventStreams
    service_windows: StreamWindows  # every (stream, lag) count per service, searched at once
    service_last: StreamWindows  # latest deploy and incident
    enabled: SortedIntervals  # per service: stretches in which a flag stayed enabled (for the oldest one)
    by_author: EventStreams  # deploy, label, failure
    author_windows: StreamWindows
    by_pair: SortedEvents  # deploys per (author, service)
    everyone: EventStreams  # label, failure in one group
    everyone_windows: StreamWindows
    zoned: Vocabulary  # the services with a configured timezone
    service_zone: IntArray  # position in ``zone_names`` of each zoned service's timezone
    zone_names: tuple[str, ...]
    history_extras: tuple[str, ...]  # ``extra_*`` columns of the history's deploys
    n_deploys: int


def prepare_history(history: History, deploy_labels: pd.DataFrame, config: FeatureConfig) -> PreparedHistory:
    """Index the history (and its labels, usable once matured) for point-in-time feature queries."""
    hist = _history_view(history, deploy_labels, config)
    (dep_svc, inc_svc, tog_svc), services = _vocabulary(hist.deploy_service, hist.incident_service, hist.toggle_service)
    (dep_author,), authors = _vocabulary(hist.deploy_author)
    n_services, n_authors = len(services.codes), len(authors.codes)
    dep_t = hist.deploy_t
    known = dep_author >= 0
    pair_keys = np.unique(dep_author[known] * n_services + dep_svc[known])
    dep_pair = _pair_codes(pair_keys, n_services, dep_author, dep_svc)

    tog, tog_t = hist.toggles, hist.toggle_t
    action = _choice_codes(_text(tog, "action"), TOGGLE_ACTIONS)
    action = np.where(action < 0, TOGGLE_ACTIONS.index("other"), action)
    flip = np.isin(action, [TOGGLE_ACTIONS.index(a) for a in FLIP_ACTIONS])
    actor_g, actor_start, actor_end = nonempty_intervals(
        *_actor_intervals(tog_svc[flip], tog_t[flip], _text(tog, "actor")[flip])
    )
    on_g, on_start, on_end = _enabled_intervals(tog, tog_svc, tog_t, action)
    stale_g, stale_start, stale_end = nonempty_intervals(on_g, on_start + config.stale_after_days * DAY, on_end)
    enabled = sort_intervals(on_g, on_start, on_end)
    on_g, on_start, on_end = nonempty_intervals(on_g, on_start, on_end)

    row, label_t, failed = hist.label_row, hist.label_t, hist.label_failed
    label_svc, label_author = dep_svc[row], dep_author[row]
    by_label_author = label_author >= 0
    zeros = np.zeros(len(label_t), dtype=np.int64)
    by_service = EventStreams.of(
        n_services,
        {
            "deploy": (dep_svc, dep_t),
            "incident": (inc_svc, hist.incident_t),
            "flip": (tog_svc[flip], tog_t[flip]),
            "toggle": (tog_svc, tog_t),
            "actor_start": (actor_g, actor_start),
            "actor_end": (actor_g, actor_end),
            "enabled_start": (on_g, on_start),
            "enabled_end": (on_g, on_end),
            "stale_start": (stale_g, stale_start),
            "stale_end": (stale_g, stale_end),
            "label": (label_svc, label_t),
            "failure": (label_svc[failed], label_t[failed]),
        },
    )
    by_author = EventStreams.of(
        n_authors,
        {
            "deploy": (dep_author[known], dep_t[known]),
            "label": (label_author[by_label_author], label_t[by_label_author]),
            "failure": (label_author[by_label_author & failed], label_t[by_label_author & failed]),
        },
    )
    everyone = EventStreams.of(1, {"label": (zeros, label_t), "failure": (zeros[failed], label_t[failed])})
    zone_names = tuple(sorted(set(config.service_timezones.values())))
    return PreparedHistory(
        config=config,
        services=services,
        authors=authors,
        pair_keys=pair_keys,
        n_services=n_services,
        by_service=by_service,
        service_windows=by_service.windows((*_SERVICE_WINDOWS, ("flip", config.flip_window_minutes * MINUTE))),
        service_last=by_service.windows((("deploy", 0), ("incident", 0))),
        enabled=enabled,
        by_author=by_author,
        author_windows=by_author.windows(_AUTHOR_WINDOWS),
        by_pair=sort_events(dep_pair[dep_pair >= 0], dep_t[dep_pair >= 0]),
        everyone=everyone,
        everyone_windows=everyone.windows((("label", 0), ("failure", 0))),
        zoned=Vocabulary.of(list(config.service_timezones)),
        service_zone=np.array([zone_names.index(z) for z in config.service_timezones.values()], dtype=np.int64),
        zone_names=zone_names,
        history_extras=tuple(sorted({str(c) for c in history.deploys.columns if str(c).startswith(EXTRA_PREFIX)})),
        n_deploys=len(dep_t),
    )


# --------------------------------------------------------------------------------------------
# Stage 2: the entities (every historic deploy for training, one upcoming deploy for scoring)


@dataclass(frozen=True)
class EntityArrays:
    """The entity columns the features read, as arrays (so one request pays no pandas).

    ``numbers`` holds the change-size, change-kind and ``extra_*`` inputs as float64 with NaN for
    missing; text columns are object arrays of str or None for a request, and stay pandas' compact
    string arrays for a table (a Python str per row would cost a training build ~60 bytes a value).
    """

    t: IntArray  # created_at as UTC microseconds
    service: TextArray
    author: TextArray
    squad: TextArray
    tribe: TextArray
    numbers: Mapping[str, FloatArray]

    def __len__(self) -> int:
        return len(self.t)

    @property
    def extra_names(self) -> tuple[str, ...]:
        return tuple(c for c in self.numbers if c.startswith(EXTRA_PREFIX))

    def number(self, name: str) -> FloatArray:
        """A numeric input; all missing when the entities lack it."""
        values = self.numbers.get(name)
        return np.full(len(self.t), np.nan) if values is None else values

    @classmethod
    def from_frame(cls, entities: pd.DataFrame) -> EntityArrays:
        """Entities from a canonical or loosely typed frame (training, batch scoring)."""
        if "created_at" not in entities.columns:
            raise ValueError("entities need a created_at column (the time the features are computed at)")
        t, present = utc_micros_column(entities["created_at"], "entities.created_at")
        if not present.all():
            raise ValueError(f"entities.created_at is missing in rows {np.flatnonzero(~present)[:10].tolist()}")
        extras = [str(c) for c in entities.columns if str(c).startswith(EXTRA_PREFIX)]
        text = {c: _text(entities, c).array for c in _TEXT_COLUMNS}
        return cls(t=t, **text, numbers={c: _numbers(entities, c) for c in (*_NUMBER_COLUMNS, *extras)})

    @classmethod
    def from_mapping(cls, row: Mapping[str, Any]) -> EntityArrays:
        """One entity from a mapping of its columns (a scoring request), without pandas.

        ``created_at`` is UTC microseconds or a timezone-aware timestamp; absent keys are missing.
        """
        values = {c: v for c, v in row.items() if c in _NUMBER_COLUMNS or c.startswith(EXTRA_PREFIX)}
        numbers = {c: np.array([_number(values.get(c))]) for c in (*_NUMBER_COLUMNS, *values)}
        text = {c: np.array([_opt_text(row.get(c))], dtype=object) for c in _TEXT_COLUMNS}
        return cls(t=np.array([utc_micros(row["created_at"], "created_at")], dtype=np.int64), **text, numbers=numbers)


@dataclass(frozen=True)
class EntityFeatures:
    """Feature columns of the entities, in the training table's column order."""

    numeric: Mapping[str, FloatArray]
    categorical: Mapping[str, ObjectArray]  # str, ``MISSING_CATEGORY`` when absent


def compute_features(prepared: PreparedHistory, entities: EntityArrays) -> EntityFeatures:
    """Point-in-time features of the entities against a prepared history: the only feature definitions."""
    p, t = prepared, entities.t
    q_svc = p.services.encode(entities.service)
    q_author = p.authors.encode(entities.author)
    by_svc = Queries.of(q_svc, t)  # most windows group by service: sort those queries once
    by_author = Queries.of(q_author, t)
    by_pair = Queries.of(_pair_codes(p.pair_keys, p.n_services, q_author, q_svc), t)
    svc = _counts(p.by_service, p.service_windows, by_svc)
    auth = _counts(p.by_author, p.author_windows, by_author)

    cols: dict[str, np.ndarray] = {}
    cols |= _change_size(entities, p)
    cols |= _toggle_features(by_svc, svc, p)
    cols |= _service_history(by_svc, svc, p)
    cols |= _author_features(by_author, auth, by_pair, entities, p)
    cols |= _failure_rates(by_svc, svc, by_author, auth, t, p)
    cols |= _timing(entities, p)
    cols |= _change_kind(entities)
    categorical = {c: _category(getattr(entities, c)) for c in CATEGORICAL_COLUMNS}
    return EntityFeatures({c: np.asarray(v, dtype=np.float64) for c, v in cols.items()}, categorical)


# --------------------------------------------------------------------------------------------
# Inputs: canonical or loosely typed frames -> arrays


@dataclass(frozen=True)
class _HistoryView:
    """The history rows that count, as arrays (times in UTC microseconds)."""

    deploy_t: IntArray
    deploy_service: pd.Series
    deploy_author: pd.Series
    incident_t: IntArray
    incident_service: pd.Series
    toggles: pd.DataFrame
    toggle_t: IntArray
    toggle_service: pd.Series
    label_row: IntArray  # position in the counted deploys of each usable label
    label_t: IntArray  # when the label became usable: max(matured_at, deploy created_at)
    label_failed: BoolArray


def _text(frame: pd.DataFrame, column: str) -> pd.Series:
    """A text column as nullable strings; absent columns are all missing."""
    if column not in frame.columns:
        return pd.Series(pd.NA, index=frame.index, dtype="string")
    return frame[column].astype("string")


def _opt_text(value: Any) -> str | None:
    """A request's text value as ``_text`` reads a column: str, or None when missing."""
    return None if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)) else str(value)


def _numbers(frame: pd.DataFrame, column: str) -> np.ndarray:
    """A numeric (or boolean) column as float64 with NaN for missing or non-finite values."""
    if column not in frame.columns:
        return np.full(len(frame), np.nan)
    col = frame[column]
    out: np.ndarray
    if pd.api.types.is_bool_dtype(col.dtype):
        out = col.astype("boolean").to_numpy(dtype=np.float64, na_value=np.nan)
    elif pd.api.types.is_numeric_dtype(col.dtype):
        out = pd.to_numeric(col, errors="coerce").astype("Float64").to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        text = col.astype("string").str.strip().str.lower()
        words = text.map(_WORDS, na_action="ignore")
        numeric = pd.to_numeric(text, errors="coerce").astype("Float64")
        out = numeric.fillna(words.astype("Float64")).to_numpy(dtype=np.float64, na_value=np.nan)
    return np.where(np.isfinite(out), out, np.nan)


def _number(value: Any) -> float:
    """One value as ``_numbers`` reads a column: float, NaN when missing, unparsable or not finite."""
    if value is None or value is pd.NA:
        return math.nan
    if isinstance(value, str):
        text = value.strip().lower()
        try:
            x = float(text)
        except ValueError:
            return _WORDS.get(text, math.nan)
    else:
        try:
            x = float(value)
        except (TypeError, ValueError):
            return math.nan
    return x if math.isfinite(x) else math.nan


def _is_missing(values: TextArray) -> BoolArray:
    """Which entries of a text column are missing (a None test is cheaper than ``pd.isna`` for one row)."""
    if isinstance(values, np.ndarray):
        return np.asarray(values == None, dtype=bool)  # noqa: E711 - elementwise on an object array
    return np.asarray(values.isna(), dtype=bool)


def _category(values: TextArray) -> ObjectArray:
    out = np.array(values, dtype=object)
    out[_is_missing(values)] = MISSING_CATEGORY
    return out


def counted_deploys(deploys: pd.DataFrame, config: FeatureConfig) -> tuple[BoolArray, IntArray]:
    """(which deploys count in history windows, every deploy's time in UTC microseconds).

    A deploy counts when it has a time and a service and its environment is one of
    ``history_environments``; the partitioned build applies the same rule per partition.
    """
    t, present = utc_micros_column(deploys["created_at"], "deploys.created_at")
    keep = present & _text(deploys, "environment").isin(list(config.history_environments)).fillna(False).to_numpy(
        dtype=bool
    )
    return keep & _text(deploys, "service").notna().to_numpy(), t


def smoothed_rate(fails: np.ndarray, total: np.ndarray, prior: np.ndarray | float, weight: float) -> np.ndarray:
    """The one shrinkage of a failure rate: (failures + w * prior) / (matured + w)."""
    return (fails + weight * prior) / (total + weight)


def failure_prior(fails: np.ndarray, total: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """The organisation's smoothed failure rate as of each deploy: the prior of every other rate."""
    return smoothed_rate(fails, total, config.base_failure_rate, config.smoothing_prior_weight)


#: Window of ``author_deploys_7d``.
AUTHOR_RECENT_WINDOW = 7 * DAY


def author_activity(prior: np.ndarray, before_recent: np.ndarray) -> dict[str, np.ndarray]:
    """``author_prior_deploys`` and ``author_deploys_7d`` from the author's counted deploys strictly before
    the deploy and strictly before ``AUTHOR_RECENT_WINDOW`` earlier."""
    return {"author_prior_deploys": prior, "author_deploys_7d": prior - before_recent}


def _history_view(history: History, deploy_labels: pd.DataFrame, config: FeatureConfig) -> _HistoryView:
    envs = list(config.history_environments)
    dep = history.deploys
    keep, dep_t = counted_deploys(dep, config)
    dep = dep.loc[keep, [c for c in ("deploy_id", "service", "author") if c in dep.columns]]
    dep_t = dep_t[keep]

    inc = history.incidents
    inc_t, present = utc_micros_column(inc["created_at"], "incidents.created_at")
    inc_env = _text(inc, "environment")
    keep_inc = present & (inc_env.isna() | inc_env.isin(envs)).to_numpy(dtype=bool)
    keep_inc &= _text(inc, "service").notna().to_numpy()
    inc, inc_t = inc.loc[keep_inc, ["service"]], inc_t[keep_inc]

    tog = history.toggle_events
    tog_t, present = utc_micros_column(tog["occurred_at"], "toggle_events.occurred_at")
    tog_env = _text(tog, "environment")
    keep_tog = present & (tog_env.isna() | tog_env.isin(envs)).to_numpy(dtype=bool)
    keep_tog &= _text(tog, "service").notna().to_numpy()
    needed = ("service", "project", "flag_key", "environment", "action", "actor", "new_enabled")
    tog, tog_t = tog.loc[keep_tog, [c for c in needed if c in tog.columns]], tog_t[keep_tog]

    label_row, label_t, label_failed = usable_labels(deploy_labels, _text(dep, "deploy_id"), dep_t)
    return _HistoryView(
        deploy_t=dep_t,
        deploy_service=_text(dep, "service"),
        deploy_author=_text(dep, "author"),
        incident_t=inc_t,
        incident_service=_text(inc, "service"),
        toggles=tog,
        toggle_t=tog_t,
        toggle_service=_text(tog, "service"),
        label_row=label_row,
        label_t=label_t,
        label_failed=label_failed,
    )


def usable_labels(
    labels: pd.DataFrame, deploy_ids: pd.Series, deploy_t: IntArray
) -> tuple[IntArray, IntArray, BoolArray]:
    """Labels of counted deploys that have matured, stamped max(matured_at, created_at).

    A label is knowledge about a deploy, so it cannot be usable before the deploy exists even if
    a source stamps it earlier; this also keeps a deploy's features independent of later deploys.
    """
    empty = np.zeros(0, dtype=np.int64)
    if len(labels) == 0:
        return empty, empty, np.zeros(0, dtype=bool)
    missing = [c for c in ("deploy_id", "failed", "matured_at") if c not in labels.columns]
    if missing:
        raise ValueError(f"deploy_labels lacks columns {missing}")
    hist_codes, label_codes = _shared_codes(deploy_ids, _text(labels, "deploy_id"))
    n = len(hist_codes)
    # codes follow first appearance and the history comes first: unique ids are exactly 0..n-1
    if not np.array_equal(hist_codes, np.arange(n)):
        raise ValueError("history.deploys has duplicate (or missing) deploy_id values")
    row = np.where(label_codes < n, label_codes, -1)
    matured, present = utc_micros_column(labels["matured_at"], "deploy_labels.matured_at")
    failed = _numbers(labels, "failed")
    keep = (row >= 0) & present & ~np.isnan(failed)
    row = row[keep].astype(np.int64)
    return row, np.maximum(matured[keep], deploy_t[row]), failed[keep] > 0


def _shared_codes(*columns: pd.Series) -> list[IntArray]:
    """Integer codes per column, equal values getting equal codes across columns; missing -> -1."""
    joined = pd.concat([c.reset_index(drop=True) for c in columns], ignore_index=True)
    codes, _ = pd.factorize(joined)
    return np.split(codes.astype(np.int64), np.cumsum([len(c) for c in columns])[:-1])


def _vocabulary(*columns: pd.Series) -> tuple[list[IntArray], Vocabulary]:
    """``_shared_codes`` of history columns, and the vocabulary that codes entities the same way."""
    joined = pd.concat([c.reset_index(drop=True) for c in columns], ignore_index=True)
    codes, names = pd.factorize(joined)
    parts = np.split(codes.astype(np.int64), np.cumsum([len(c) for c in columns])[:-1])
    return parts, Vocabulary.of([str(name) for name in np.asarray(names, dtype=object)])


def _pair_codes(pair_keys: IntArray, n_services: int, author: IntArray, service: IntArray) -> IntArray:
    """Code of each (author, service) among the history's deployed pairs; -1 when unknown or missing."""
    keys = author * n_services + service
    pos = np.searchsorted(pair_keys, keys)
    hit = pair_keys[np.minimum(pos, len(pair_keys) - 1)] == keys if len(pair_keys) else np.zeros(len(keys), bool)
    return np.where((author >= 0) & (service >= 0) & hit, pos, -1).astype(np.int64)


def _choice_codes(values: pd.Series, choices: tuple[str, ...]) -> IntArray:
    """Position of each value in ``choices`` (case-insensitive); -1 for missing or unknown values.

    Factorizes first, so the string work is done once per distinct value, not once per row.
    """
    codes, uniques = pd.factorize(values)
    lookup = pd.Index(choices).get_indexer(pd.Index(uniques).str.lower()) if len(uniques) else np.zeros(0, int)
    lookup = np.append(np.asarray(lookup, dtype=np.int64), -1)  # code -1 (missing) -> -1
    return lookup[codes]


def _combine(*codes: IntArray) -> IntArray:
    """Dense codes for tuples of codes; -1 where any part is missing."""
    out = codes[0].astype(np.int64)
    for part in codes[1:]:
        out = out * (int(part.max(initial=0)) + 1) + part
        out = pd.factorize(out)[0].astype(np.int64)
    missing = np.zeros(len(out), dtype=bool)
    for part in codes:
        missing |= part < 0
    return np.where(missing, -1, out)


def _actor_intervals(svc: IntArray, times: IntArray, actor: pd.Series) -> tuple[IntArray, IntArray, IntArray]:
    """(service, start, end] in which each actor's flip makes them a recent flipper (distinct actors in [t - 24 h, t)).

    An actor's flip at e counts for queries in (e, e + w] unless the same actor already flipped at
    p with p + w >= query; so each flip covers (max(e, p + w), e + w] and distinct actors at t is
    the number of those intervals containing t.
    """
    has_actor = actor.notna().to_numpy()
    svc, times = svc[has_actor], times[has_actor]
    actor_codes = pd.factorize(actor[has_actor])[0].astype(np.int64)
    prev, found = previous_in_group(_combine(svc, actor_codes), times)
    starts = np.where(found, np.maximum(times, prev + DAY), times)
    return svc, starts, times + DAY


def _enabled_intervals(
    tog: pd.DataFrame, tog_svc: IntArray, times: IntArray, action: IntArray
) -> tuple[IntArray, IntArray, IntArray]:
    """(service, last touch, next touch) of every stretch in which a flag stayed enabled.

    A flag is (service, project, flag_key, environment). Its state after an event: enabled after
    ``enabled``; off after ``disabled``, ``archived``, ``deleted``; otherwise ``new_enabled`` when
    given, else unchanged (a flag first seen without a state, or created without one, is off).
    Ties at one timestamp are ordered by action then new_enabled, so input order never matters.
    """
    parts = [pd.factorize(_text(tog, c), use_na_sentinel=False)[0] for c in ("project", "flag_key", "environment")]
    flag = _combine(tog_svc, *(p.astype(np.int64) for p in parts))
    new_enabled = _numbers(tog, "new_enabled")
    tie = action * 3 + np.where(np.isnan(new_enabled), 0, 1 + (new_enabled > 0))
    order = group_time_order(flag, times, tie)
    flag, times, svc, act, ne = flag[order], times[order], tog_svc[order], action[order], new_enabled[order]

    code = TOGGLE_ACTIONS.index
    state = np.where(np.isnan(ne), np.nan, (ne > 0).astype(np.float64))
    state[act == code("enabled")] = 1.0
    state[np.isin(act, [code("disabled"), code("archived"), code("deleted")])] = 0.0
    first = np.ones(len(flag), dtype=bool)
    first[1:] = flag[1:] != flag[:-1]
    state[np.isnan(state) & (first | (act == code("created")))] = 0.0
    last_known = np.maximum.accumulate(np.where(np.isnan(state), 0, np.arange(len(state))))
    state = state[last_known]

    last = np.ones(len(flag), dtype=bool)
    last[:-1] = flag[1:] != flag[:-1]
    nxt = np.full(len(flag), OPEN_END, dtype=np.int64)
    nxt[:-1] = np.where(last[:-1], OPEN_END, times[1:])
    on = state > 0
    return svc[on], times[on], nxt[on]


# --------------------------------------------------------------------------------------------
# Feature groups: each returns named float-able columns aligned with the entities


def _change_size(ent: EntityArrays, p: PreparedHistory) -> dict[str, np.ndarray]:
    """Size of the change itself; missing counts become 0 with a missing indicator."""
    raw = {c: ent.number(c) for c in _SIZE_COLUMNS}
    out: dict[str, np.ndarray] = {c: np.where(np.isnan(v), 0.0, np.maximum(v, 0)) for c, v in raw.items()}
    out["churn"] = out["lines_added"] + out["lines_deleted"]
    for c in (*_SIZE_COLUMNS, "churn"):
        out[f"log_{c}"] = np.log1p(out[c])
    out["lines_missing"] = np.isnan(raw["lines_added"]) | np.isnan(raw["lines_deleted"])
    out["files_changed_missing"] = np.isnan(raw["files_changed"])
    out["commit_count_missing"] = np.isnan(raw["commit_count"])
    extras = p.config.extra_columns
    if extras is None:
        extras = tuple(sorted({*ent.extra_names, *p.history_extras}))
    for name in extras:
        values = ent.number(name)
        out[name] = np.where(np.isnan(values), 0.0, values)
        out[f"{name}_missing"] = np.isnan(values)
    return out


#: (stream, lag) searches per service: events of the stream before t - lag; [t - w, t) is lag 0 minus lag w.
_SERVICE_WINDOWS: tuple[tuple[str, int], ...] = (
    *(("flip", lag) for lag in (0, HOUR, DAY, 7 * DAY)),
    *((name, 0) for name in ("toggle", "actor_start", "actor_end", "enabled_start", "enabled_end")),
    *((name, 0) for name in ("stale_start", "stale_end", "label", "failure")),
    *(("deploy", lag) for lag in (0, DAY, 7 * DAY)),
    *(("incident", lag) for lag in (0, 7 * DAY, 30 * DAY)),
)
_AUTHOR_WINDOWS: tuple[tuple[str, int], ...] = (
    ("deploy", 0),
    ("deploy", AUTHOR_RECENT_WINDOW),
    ("label", 0),
    ("failure", 0),
)

_Counts = Mapping[tuple[str, int], IntArray]


def _counts(streams: EventStreams, windows: StreamWindows, q: Queries) -> _Counts:
    """Every (stream, lag) count of the sorted queries, from one search."""
    return dict(zip(windows.windows, streams.count_before(windows, q.groups, q.times), strict=True))


def _toggle_features(by_svc: Queries, c: _Counts, p: PreparedHistory) -> dict[str, np.ndarray]:
    """Flag activity of the deploy's service: recent flips, flippers, enabled and stale flags."""
    g, t = by_svc.groups, by_svc.times
    flips = c["flip", 0]
    out: dict[str, np.ndarray] = {
        "toggle_flips_1h": flips - c["flip", HOUR],
        "toggle_flips_24h": flips - c["flip", DAY],
        "toggle_flips_7d": flips - c["flip", 7 * DAY],
        "toggle_flips_recent": flips - c["flip", p.config.flip_window_minutes * MINUTE],
        "toggle_actors_24h": c["actor_start", 0] - c["actor_end", 0],  # intervals (start, end] holding t
        "no_toggle_history": c["toggle", 0] == 0,
        "toggles_enabled": c["enabled_start", 0] - c["enabled_end", 0],
        "toggles_stale": c["stale_start", 0] - c["stale_end", 0],
    }
    stale_after = p.config.stale_after_days * DAY
    oldest, found = min_start_covering(p.enabled, g, t)
    untouched = t - oldest
    out["toggle_oldest_stale_days"] = np.where(found & (untouched > stale_after), untouched / DAY, 0.0)
    return by_svc.restore(out)


def _gap(t: IntArray, prev: IntArray, found: BoolArray, unit: int, config: FeatureConfig) -> np.ndarray:
    cap = config.max_gap_days * DAY / unit
    return np.where(found, np.minimum((t - prev) / unit, cap), cap)


def _service_history(by_svc: Queries, c: _Counts, p: PreparedHistory) -> dict[str, np.ndarray]:
    """How busy and how troubled the service has been lately."""
    t = by_svc.times
    (prev, last_inc), (has_prev, has_inc) = p.by_service.last_before(p.service_last, by_svc.groups, t)
    out = {
        "service_deploys_24h": c["deploy", 0] - c["deploy", DAY],
        "service_deploys_7d": c["deploy", 0] - c["deploy", 7 * DAY],
        "service_prior_deploys": c["deploy", 0],
        "hours_since_prev_deploy": _gap(t, prev, has_prev, HOUR, p.config),
        "no_prev_deploy": ~has_prev,
        "service_incidents_7d": c["incident", 0] - c["incident", 7 * DAY],
        "service_incidents_30d": c["incident", 0] - c["incident", 30 * DAY],
        "days_since_last_incident": _gap(t, last_inc, has_inc, DAY, p.config),
        "no_prev_incident": ~has_inc,
    }
    return by_svc.restore(out)


def _author_features(
    qa: Queries, c: _Counts, qp: Queries, ent: EntityArrays, p: PreparedHistory
) -> dict[str, np.ndarray]:
    """The author's experience overall and with this service, and recent activity."""
    out: dict[str, np.ndarray] = qa.restore(author_activity(c["deploy", 0], c["deploy", AUTHOR_RECENT_WINDOW]))
    out |= qp.restore({"author_service_prior_deploys": count_before(p.by_pair, qp.groups, qp.times)})
    out["author_missing"] = _is_missing(ent.author)
    return out


def _failure_rates(
    by_svc: Queries, svc: _Counts, by_author: Queries, auth: _Counts, t: IntArray, p: PreparedHistory
) -> dict[str, np.ndarray]:
    """Smoothed past failure rates of the service and the author, from matured labels only.

    rate = (failures + w * prior) / (matured + w); the prior is itself the smoothed rate over all
    services as of t, which falls back to ``base_failure_rate`` before any label has matured.
    """
    w = p.config.smoothing_prior_weight

    def restored(q: Queries, c: _Counts) -> tuple[np.ndarray, np.ndarray]:
        out = q.restore({"total": c["label", 0], "fails": c["failure", 0]})
        return out["total"], out["fails"]

    everyone = Queries.of(np.zeros(len(t), dtype=np.int64), t)
    n_all, f_all = restored(everyone, _counts(p.everyone, p.everyone_windows, everyone))
    prior = failure_prior(f_all, n_all, p.config)
    n_svc, f_svc = restored(by_svc, svc)
    n_auth, f_auth = restored(by_author, auth)
    return {
        "service_failure_rate": smoothed_rate(f_svc, n_svc, prior, w),
        "service_matured_labels": n_svc,
        "author_failure_rate": smoothed_rate(f_auth, n_auth, prior, w),
        "author_matured_labels": n_auth,
    }


def _timing(ent: EntityArrays, p: PreparedHistory) -> dict[str, np.ndarray]:
    """Local wall-clock position of the deploy (UTC unless the service has a configured zone)."""
    # UTC by integer arithmetic (1970-01-01 was a Thursday, Monday = 0); zones only where configured
    hour = (ent.t // HOUR) % 24
    dow = (ent.t // DAY + 3) % 7
    config = p.config
    if p.zone_names:
        zoned = p.zoned.encode(ent.service)
        codes = np.where(zoned >= 0, p.service_zone[np.maximum(zoned, 0)], -1)
        for i, zone in enumerate(p.zone_names):  # one pass per distinct configured zone
            mask = codes == i
            if mask.any():
                hour[mask], dow[mask] = _local_clock(ent.t[mask], zone)
    start, end = config.business_hours
    weekend = dow >= 5
    return {
        "hour_of_day": hour,
        "day_of_week": dow,
        "is_weekend": weekend,
        "is_friday_afternoon": (dow == 4) & (hour >= config.friday_afternoon_hour),
        "is_outside_business_hours": weekend | (hour < start) | (hour >= end),
    }


def _local_clock(t: IntArray, zone: str) -> tuple[IntArray, IntArray]:
    """(hour, day of week) of UTC microseconds in ``zone``: zoneinfo for a request's few rows
    (pandas' tz conversion costs ~0.1 ms even for one), pandas for a table."""
    if len(t) <= _FEW_ROWS:
        tz = ZoneInfo(zone)
        local = [(_EPOCH + timedelta(microseconds=int(x))).astimezone(tz) for x in t]
        return np.array([d.hour for d in local], dtype=np.int64), np.array([d.weekday() for d in local], dtype=np.int64)
    stamps = pd.DatetimeIndex(pd.to_datetime(t, unit="us", utc=True)).tz_convert(zone)
    return np.asarray(stamps.hour, dtype=np.int64), np.asarray(stamps.dayofweek, dtype=np.int64)


def _change_kind(ent: EntityArrays) -> dict[str, np.ndarray]:
    """Infrastructure changes and rollbacks behave differently from ordinary code changes."""
    out: dict[str, np.ndarray] = {}
    for name in _KIND_COLUMNS:
        values = ent.number(name)
        out[name] = values > 0
        out[f"{name}_missing"] = np.isnan(values)
    return out
