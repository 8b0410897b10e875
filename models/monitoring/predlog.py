"""The prediction log: every score given, appended durably without slowing the serving path.

Layout (next to the history store, under the same home)::

    predictions/day=YYYY-MM-DD/<first logged micros>-<pid>-<uuid>.parquet

A ``PredictionLog`` keeps records in memory (``add`` is a list append under a lock) and a
background thread writes them every ``flush_seconds``, and once more at ``stop``. Each flush
writes one file per day aside (``.tmp``), fsyncs it and renames it into place, so a reader sees
a whole file or none: killing the process mid-flush never corrupts the log, and a crash loses at
most what was buffered since the last flush (one interval). Readers skip dot-files.

Why records are primitives and the flush is column-wise: the flush runs in the server process, and
whatever it does while holding the GIL delays the requests around it (docs/benchmarks.md,
"Serving"). A record (``prediction_record``) holds times as int microseconds since the epoch and
the feature row as a (names, values) pair of tuples; the flush turns a whole buffer into Arrow
arrays with explicit types (no pandas, no per-record JSON) and Arrow writes the file without the GIL.

The feature row is stored as two map columns, ``numeric_features`` (name -> double, NaN kept) and
``categorical_features`` (name -> text): typed, compact once Parquet dictionary-encodes the names,
and readable by any Parquet reader (duckdb: ``numeric_features['lines_added']``). Files written
before (the feature row as JSON text in ``features``) are converted when read.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from itertools import chain
from operator import itemgetter
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

log = logging.getLogger("incident_risk.predlog")

#: Directory of the log under the home (beside ``store/``).
PREDICTIONS_DIR = "predictions"
#: Default seconds between flushes: the most a crash can lose.
FLUSH_SECONDS = 5.0

NUMERIC_FEATURES = pa.map_(pa.string(), pa.float64())
CATEGORICAL_FEATURES = pa.map_(pa.string(), pa.string())
SCHEMA = pa.schema(
    [
        ("prediction_id", pa.string()),
        ("logged_at", pa.timestamp("us", tz="UTC")),
        ("deploy_id", pa.string()),  # the deploy's id, else a request id ("request:<uuid>")
        ("has_deploy_id", pa.bool_()),
        ("commit_sha", pa.string()),
        ("service", pa.string()),
        ("squad", pa.string()),
        ("tribe", pa.string()),
        ("author", pa.string()),
        ("planned_at", pa.timestamp("us", tz="UTC")),
        ("probability", pa.float64()),
        ("band", pa.string()),
        ("model_name", pa.string()),
        ("model_version", pa.string()),
        ("feature_set_version", pa.string()),
        ("store_version", pa.int64()),
        ("caller", pa.string()),  # "/v1/score", "/v1/score/batch", "gate", "score-batch", ...
        ("numeric_features", NUMERIC_FEATURES),  # the feature row's numbers, name -> value (NaN kept)
        ("categorical_features", CATEGORICAL_FEATURES),  # the feature row's categories, name -> value
    ],
    metadata={b"incident_risk.predlog.format": b"2"},
)
COLUMNS = tuple(SCHEMA.names)
#: A feature row: the names and the values, in the model's order (numbers and text).
FeatureRow = tuple[tuple[str, ...], tuple[Any, ...]]


class PredictionRecord(NamedTuple):
    """One log row as the serving path holds it until the flush: primitives only (times as int
    microseconds since the epoch, the feature row as a pair of tuples); a tuple, so a flush turns a
    buffer into columns with one ``zip``."""

    prediction_id: str
    logged_at: int
    deploy_id: str
    has_deploy_id: bool
    commit_sha: str | None
    service: str | None
    squad: str | None
    tribe: str | None
    author: str | None
    planned_at: int | None
    probability: float
    band: str
    model_name: str | None
    model_version: str | None
    feature_set_version: str | None
    store_version: int | None
    caller: str
    features: FeatureRow


#: What ``write_records`` takes: records, or mappings with the same fields (or the log's columns).
Record = PredictionRecord | Mapping[str, Any]
RECORD_FIELDS = PredictionRecord._fields

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_DAY_MICROS = 86_400_000_000
_SCALARS = tuple((f.name, f.type) for f in SCHEMA if f.name not in ("numeric_features", "categorical_features"))


def predictions_dir(home: Path) -> Path:
    """Where the prediction log of a home lives."""
    return home / PREDICTIONS_DIR


def now_micros() -> int:
    """Now as int microseconds since the epoch: what a record holds (no datetime object per request)."""
    return time.time_ns() // 1000


def to_micros(value: Any) -> int | None:
    """Microseconds since the epoch of a time: int microseconds as they are, a datetime (naive means UTC),
    a ``pd.Timestamp`` or ISO 8601 text; None, NaT and NaN are no time."""
    if type(value) is int:  # the common cases first: this runs on the serving path
        return value
    if isinstance(value, str):
        value = _parse_iso(value)
    elif isinstance(value, np.datetime64):
        value = pd.Timestamp(value)
    if isinstance(value, datetime):  # pd.Timestamp and pd.NaT too
        if value != value:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return int((value - _EPOCH) // _MICROSECOND)
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return int(value)
    raise TypeError(
        f"not a time: {value!r} ({type(value).__name__}); give a datetime, ISO 8601 text or int microseconds"
    )


def _parse_iso(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        pass
    try:  # forms the standard library does not read; never on the serving path (it gives isoformat text)
        stamp = pd.Timestamp(text)
    except ValueError:
        stamp = None
    if not isinstance(stamp, pd.Timestamp) or pd.isna(stamp):
        raise ValueError(f"not an ISO 8601 time: {text!r}")
    return stamp


def _text(value: Any) -> str | None:
    if type(value) is str:
        return value
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return str(value)


def feature_row(value: Any) -> FeatureRow:
    """A feature row as (names, values): from a mapping {name: value}, (name, value) pairs, JSON text of a
    mapping, or a row already."""
    if type(value) is dict or isinstance(value, Mapping):
        return tuple(value), tuple(value.values())
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], tuple) and isinstance(value[1], tuple):
        if len(value[0]) != len(value[1]):
            raise ValueError(f"feature row with {len(value[0])} names and {len(value[1])} values")
        return value
    if isinstance(value, (list, tuple)):
        pairs = [_pair(p) for p in value]
        return tuple(k for k, _ in pairs), tuple(v for _, v in pairs)
    if value is None:
        return (), ()
    if isinstance(value, str):  # JSON text {name: value}: the first format's column, still accepted
        return feature_row(json.loads(value))
    raise TypeError(f"a feature row is a mapping of feature name to value, not {type(value).__name__}")


def _pair(item: Any) -> tuple[str, Any]:
    if not (isinstance(item, (list, tuple)) and len(item) == 2):
        raise TypeError(f"a feature row's entries are (name, value) pairs, not {item!r}")
    return str(item[0]), item[1]


def prediction_record(
    payload: Mapping[str, Any],
    *,
    caller: str,
    deploy: Mapping[str, Any] | None = None,
    teams: tuple[str | None, str | None] | None = None,
    feature_set_version: str | None = None,
    logged_at: datetime | int | None = None,
) -> PredictionRecord:
    """One log row from a score payload (``models.serving.app.score_payload``) and the request's fields.

    A score without a deploy id gets a request id, so every row has a key; ``has_deploy_id`` says
    which it is (only deploy ids can be joined with outcomes). Cheap on purpose (the serving path
    calls it): primitives only, times as int microseconds, the feature row as two tuples.
    """
    deploy = deploy or {}
    deploy_id = _text(payload.get("deploy_id")) or _text(deploy.get("deploy_id"))
    squad = _text(deploy.get("squad")) or (teams[0] if teams else None)
    tribe = _text(deploy.get("tribe")) or (teams[1] if teams else None)
    model = payload.get("model") or {}
    store_version = payload.get("store_version")
    return PredictionRecord(
        prediction_id=os.urandom(16).hex(),
        logged_at=now_micros() if logged_at is None else _required_micros(logged_at, "logged_at"),
        deploy_id=deploy_id or f"request:{os.urandom(16).hex()}",
        has_deploy_id=deploy_id is not None,
        commit_sha=_text(deploy.get("commit_sha")),
        service=_text(payload.get("service")) or _text(deploy.get("service")),
        squad=squad,
        tribe=tribe,
        author=_text(deploy.get("author")),
        planned_at=to_micros(payload["scored_for"]),
        probability=float(payload["probability"]),
        band=str(payload["band"]),
        model_name=_text(model.get("name")),
        model_version=_text(model.get("version")),
        feature_set_version=feature_set_version,
        store_version=None if store_version is None else int(store_version),
        caller=caller,
        features=feature_row(payload.get("features")),
    )


def _required_micros(value: Any, name: str) -> int:
    micros = to_micros(value)
    if micros is None:
        raise ValueError(f"{name} is required, got {value!r}")
    return micros


def record_of(row: Mapping[str, Any]) -> PredictionRecord:
    """A record from a mapping of its fields, or of the log's columns (a row read back from the log)."""
    values: dict[str, Any] = {name: row.get(name) for name in RECORD_FIELDS[:-1]}
    values["logged_at"] = _required_micros(values["logged_at"], "logged_at")
    values["planned_at"] = to_micros(values["planned_at"])
    return PredictionRecord(**values, features=_record_row(row))


def records_table(records: Sequence[Record]) -> pa.Table:
    """Records as an Arrow table of the log's schema, built column by column (see the module docstring).

    Takes ``prediction_record``'s records, and mappings (``record_of``): rows read back from the log
    (``read_predictions(...).to_dict("records")``) write again. Bad values raise ``ValueError``
    naming the column.
    """
    rows = [r if isinstance(r, PredictionRecord) else record_of(r) for r in records]
    columns: list[tuple[Any, ...]] = list(zip(*rows, strict=True)) if rows else [()] * len(RECORD_FIELDS)
    arrays = [_scalar_column(values, name, kind) for (name, kind), values in zip(_SCALARS, columns, strict=False)]
    if arrays[RECORD_FIELDS.index("logged_at")].null_count:
        raise ValueError("prediction log column 'logged_at': every record needs the time it was logged")
    numeric, categorical = feature_maps([feature_row(f) for f in columns[-1]])
    return pa.Table.from_arrays([*arrays, numeric, categorical], schema=SCHEMA)


def _scalar_column(values: tuple[Any, ...], name: str, kind: pa.DataType) -> pa.Array:
    try:
        if pa.types.is_timestamp(kind):
            if not all(type(v) is int or v is None for v in values):
                values = tuple(to_micros(v) for v in values)
            return pa.array(values, pa.int64()).cast(kind)
        # NaN and pd.NA are missing in text, flag and integer columns; a NaN probability stays NaN
        return pa.array(values, kind, from_pandas=not pa.types.is_floating(kind))
    except (TypeError, ValueError, pa.ArrowException) as exc:
        raise ValueError(f"prediction log column {name!r}: {exc}") from exc


def _record_row(record: Mapping[str, Any]) -> FeatureRow:
    if record.get("features") is not None:
        return feature_row(record["features"])
    numeric = _entries(record.get("numeric_features"))
    categorical = _entries(record.get("categorical_features"))
    return feature_row([*numeric, *categorical])


def _entries(value: Any) -> list[Any]:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return []
    return list(value.items()) if isinstance(value, Mapping) else list(value)


def feature_maps(rows: Sequence[FeatureRow]) -> tuple[pa.Array, pa.Array]:
    """The ``numeric_features`` and ``categorical_features`` columns of feature rows, in their order.

    Rows are grouped by their names (one group per model, usually one per flush); each group is one
    numpy matrix and two map arrays, so the cost is a few Arrow calls per group, not per value.
    """
    first = rows[0][0] if rows else ()
    if all(names == first for names, _ in rows):  # one model in the buffer: the usual case
        return _group_maps(first, [values for _, values in rows])
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, (names, _) in enumerate(rows):
        groups.setdefault(names, []).append(i)
    parts = [_group_maps(names, [rows[i][1] for i in members]) for names, members in groups.items()]
    order = np.concatenate([np.asarray(m, dtype=np.int64) for m in groups.values()])
    back = pa.array(np.argsort(order, kind="stable"))
    numeric = pa.concat_arrays([p[0] for p in parts]).take(back)
    categorical = pa.concat_arrays([p[1] for p in parts]).take(back)
    return numeric, categorical


def _group_maps(names: tuple[str, ...], values: list[tuple[Any, ...]]) -> tuple[pa.Array, pa.Array]:
    """Map arrays of rows sharing ``names``. A position is categorical when its first row's value is
    text, or, if that split fails on a later row, when any row's value there is text."""
    for j, row in enumerate(values):
        if len(row) != len(names):
            raise ValueError(f"feature row {j} has {len(row)} values for {len(names)} names")
    text = [j for j, v in enumerate(values[0] if values else ()) if isinstance(v, str)]
    try:
        return _split_maps(names, values, text)
    except ValueError:
        text = [j for j in range(len(names)) if any(isinstance(row[j], str) for row in values)]
    return _split_maps(names, values, text)


def _split_maps(names: tuple[str, ...], values: list[tuple[Any, ...]], text: list[int]) -> tuple[pa.Array, pa.Array]:
    is_text = set(text)
    numbers = [j for j in range(len(names)) if j not in is_text]
    n = len(values)
    try:
        matrix = np.array(_at(values, numbers), dtype=np.float64).reshape(n, len(numbers))
    except (TypeError, ValueError):
        raise ValueError(_not_a_number(names, values, numbers)) from None
    try:
        labels = pa.array(list(chain.from_iterable(_at(values, text))), pa.string(), from_pandas=True)
    except (TypeError, ValueError, pa.ArrowException) as exc:
        raise ValueError(f"categorical features {[names[j] for j in text]} must be text: {exc}") from None
    numeric = _map([names[j] for j in numbers], n, pa.array(matrix.ravel(), pa.float64()), NUMERIC_FEATURES)
    categorical = _map([names[j] for j in text], n, labels, CATEGORICAL_FEATURES)
    return numeric, categorical


def _not_a_number(names: tuple[str, ...], values: list[tuple[Any, ...]], numbers: list[int]) -> str:
    """Which feature value is neither a number nor text (only looked for once the fast path failed)."""
    for j in numbers:
        for row in values:
            try:
                float(row[j]) if row[j] is not None else None
            except (TypeError, ValueError):
                return f"feature {names[j]!r}: {row[j]!r} is neither a number nor text"
    return f"numeric features {[names[j] for j in numbers]} do not form a table of numbers"


def _at(values: list[tuple[Any, ...]], positions: list[int]) -> list[tuple[Any, ...]]:
    """The values at ``positions`` of every row, as tuples (C-level getters, no Python loop per value)."""
    if not positions:
        return [()] * len(values)
    if positions == list(range(positions[0], positions[-1] + 1)):  # a run (the model's numbers come first)
        if values and len(positions) == len(values[0]):
            return values
        run = slice(positions[0], positions[-1] + 1)
        return [v[run] for v in values]
    if len(positions) == 1:
        return [(v,) for v in map(itemgetter(positions[0]), values)]
    return list(map(itemgetter(*positions), values))


def _map(keys: list[str], rows: int, items: pa.Array, kind: pa.DataType) -> pa.Array:
    """``rows`` maps, each with ``keys`` in order, their values laid out row by row in ``items``."""
    width = len(keys)
    offsets = pa.array(np.arange(rows + 1, dtype=np.int32) * np.int32(width))
    names = pa.array([str(k) for k in keys], pa.string()).take(
        pa.array(np.tile(np.arange(width, dtype=np.int32), rows))
    )
    return pa.MapArray.from_arrays(offsets, names, items, type=kind)


def write_records(root: Path, records: Sequence[Record]) -> list[Path]:
    """Append ``records`` to the log durably: one new file per logged day, written aside and renamed."""
    if not records:
        return []
    return write_table(root, records_table(records))


def write_table(root: Path, table: pa.Table) -> list[Path]:
    """Write a table of the log's schema as one new file per logged day (UTC), each written aside,
    fsynced, renamed into place and its directory fsynced.

    Days come from integer division of the microseconds, and Arrow encodes and writes the file
    without holding the GIL.
    """
    logged = table.column("logged_at").cast(pa.int64()).to_numpy()
    days = logged // _DAY_MICROS
    written = []
    for day in np.unique(days):
        mask = days == day
        part = table if mask.all() else table.filter(pa.array(mask))
        first = int(logged[mask][0])
        folder = root / f"day={(date(1970, 1, 1) + timedelta(days=int(day))).isoformat()}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{first}-{os.getpid()}-{uuid.uuid4().hex[:12]}.parquet"
        tmp = folder / f".{path.name}.tmp"
        with pa.OSFile(str(tmp), "wb") as sink:  # a native file: encoding and writing release the GIL
            pq.write_table(part, sink)
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync(folder)
        written.append(path)
    return written


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pandas_type(kind: pa.DataType) -> Any:
    """Text as pandas strings; the feature maps stay Arrow-backed (no Python object per value)."""
    if kind == pa.string():
        return pd.StringDtype()
    if pa.types.is_map(kind):
        return pd.ArrowDtype(kind)
    return None


def _frame(table: pa.Table) -> pd.DataFrame:
    return table.to_pandas(types_mapper=_pandas_type)


def records_frame(records: Sequence[Record]) -> pd.DataFrame:
    """Records as a frame in the log's column order and types (as ``read_predictions`` gives them)."""
    return _frame(records_table(records))


def read_file(path: Path) -> pa.Table:
    """One log file as a table of the current schema (a file of the first format converted)."""
    try:
        table = pq.read_table(path)
        if "features" in table.column_names and "numeric_features" not in table.column_names:
            table = _from_json_features(table)
        return table.select(list(COLUMNS)).cast(SCHEMA)
    except (KeyError, ValueError, TypeError, pa.ArrowException) as exc:
        raise ValueError(f"{path} is not a prediction-log file: {exc}") from exc


def _from_json_features(table: pa.Table) -> pa.Table:
    """A first-format table (the feature row as JSON text in ``features``) with the two feature maps."""
    texts = table.column("features").to_pylist()
    rows = [feature_row(json.loads(t)) if t else ((), ()) for t in texts]
    numeric, categorical = feature_maps(rows)
    table = table.drop_columns(["features"])
    return table.append_column("numeric_features", numeric).append_column("categorical_features", categorical)


def read_predictions(root: Path, start: pd.Timestamp | None = None, end: pd.Timestamp | None = None) -> pd.DataFrame:
    """The logged predictions with ``start <= logged_at < end`` (whole day partitions are skipped)."""
    files = []
    for folder in sorted(root.glob("day=*")) if root.is_dir() else []:
        day = pd.Timestamp(folder.name.split("=", 1)[1], tz="UTC")
        if (start is not None and day + pd.Timedelta(days=1) <= start) or (end is not None and day >= end):
            continue
        files += sorted(p for p in folder.glob("*.parquet") if not p.name.startswith("."))
    if not files:
        return records_frame([])
    frame = _frame(pa.concat_tables([read_file(f) for f in files]))
    keep = pd.Series(True, index=frame.index)
    if start is not None:
        keep &= frame["logged_at"] >= start
    if end is not None:
        keep &= frame["logged_at"] < end
    return frame[keep].sort_values("logged_at", kind="stable").reset_index(drop=True)


def feature_rows(predictions: pd.DataFrame) -> pd.DataFrame:
    """The logged feature rows as columns (one row per prediction, same index): numbers as floats,
    categories as text, missing (NaN) where a row has no such feature (another model's row)."""
    columns: dict[str, np.ndarray] = {}
    for name, kind in (("numeric_features", NUMERIC_FEATURES), ("categorical_features", CATEGORICAL_FEATURES)):
        if name in predictions:
            columns.update(_map_columns(_arrow(predictions[name], kind), kind))
    return pd.DataFrame(columns, index=predictions.index)


def _arrow(series: pd.Series, kind: pa.DataType) -> pa.MapArray:
    if isinstance(series.dtype, pd.ArrowDtype):
        out = pa.array(series.array)
    else:  # a frame built by hand: dicts or (name, value) pairs per row
        out = pa.array([None if not _entries(v) else _entries(v) for v in series], kind, from_pandas=True)
    if isinstance(out, pa.ChunkedArray):
        out = out.combine_chunks()
    return out.cast(kind)


def _map_columns(maps: pa.MapArray, kind: pa.DataType) -> dict[str, np.ndarray]:
    """One array per key of ``maps`` (first-seen order), the value of each row or the missing value."""
    n = len(maps)
    offsets = maps.offsets.to_numpy()
    lengths = np.diff(offsets)
    rows = np.repeat(np.arange(n), lengths)
    valid = np.repeat(maps.is_valid().to_numpy(zero_copy_only=False), lengths)
    span = (int(offsets[0]), int(offsets[-1] - offsets[0])) if n else (0, 0)
    keys = pc.dictionary_encode(maps.keys.slice(*span))
    items = maps.items.slice(*span).to_numpy(zero_copy_only=False)
    names = keys.dictionary.to_pylist()
    numeric = kind == NUMERIC_FEATURES
    out = np.full((n, len(names)), np.nan if numeric else None, dtype=np.float64 if numeric else object)
    out[rows[valid], keys.indices.to_numpy(zero_copy_only=False)[valid]] = items[valid]
    return {str(name): out[:, j] for j, name in enumerate(names)}


@dataclass
class PredictionLog:
    """A buffered, interval-flushed prediction log (see the module docstring for the guarantees)."""

    root: Path
    flush_seconds: float = FLUSH_SECONDS

    def __post_init__(self) -> None:
        self._buffer: list[Record] = []
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors = 0
        self.dropped = 0

    def add(self, record: Record) -> None:
        """Queue one record (the serving path: an append, no I/O)."""
        with self._lock:
            self._buffer.append(record)

    def extend(self, records: Iterable[Record]) -> None:
        with self._lock:
            self._buffer.extend(records)

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def flush(self) -> int:
        """Write what is buffered; returns how many records were written.

        A failed write (full disk) keeps the records for the next flush; a record that can never be
        written (a bad value) is dropped and counted (``dropped``), so it cannot block the log.
        """
        with self._flush_lock:
            with self._lock:
                batch, self._buffer = self._buffer, []
            if not batch:
                return 0
            table, batch = self._table(batch)
            if table is None:
                return 0
            try:
                write_table(self.root, table)
            except Exception:
                self.errors += 1
                log.exception("prediction log flush failed; %d records kept for the next flush", len(batch))
                with self._lock:
                    self._buffer[:0] = batch
                return 0
            return len(batch)

    def _table(self, batch: list[Record]) -> tuple[pa.Table | None, list[Record]]:
        try:
            return records_table(batch), batch
        except ValueError:
            pass
        good = []
        for record in batch:  # rare: find the bad records one by one
            try:
                records_table([record])
            except ValueError as exc:
                self.dropped += 1
                log.error("prediction log: dropped a record that cannot be written (%s)", exc)
            else:
                good.append(record)
        return (records_table(good) if good else None), good

    def start(self) -> None:
        """Flush every ``flush_seconds`` in a daemon thread until ``stop``."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="incident-risk-predlog", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            self.flush()

    def stop(self) -> None:
        """Stop the thread and flush what is left (the shutdown flush)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(5.0, 2 * self.flush_seconds))
            self._thread = None
        self.flush()


def batch_records(
    scores: pd.DataFrame,
    deploys: pd.DataFrame,
    *,
    caller: str,
    model_name: str,
    model_version: str,
    feature_set_version: str | None,
    store_version: int | None,
) -> list[PredictionRecord]:
    """Log rows of a scored frame (``score_frame(..., with_features=True)``) and its input deploys.

    Ids made up for rows that had none (``upcoming:<row>``) are request ids, not deploy ids.
    """
    now = now_micros()
    out = []
    inputs = deploys.reindex(scores.index)
    for pos in range(len(scores)):
        row, src = scores.iloc[pos], inputs.iloc[pos]
        deploy_id = _text(row.get("deploy_id"))
        real = deploy_id is not None and not deploy_id.startswith("upcoming:")
        payload = {
            "deploy_id": deploy_id if real else None,
            "service": row.get("service"),
            "scored_for": row["created_at"],
            "probability": row["probability"],
            "band": row["band"],
            "model": {"name": model_name, "version": model_version},
            "features": row.get("features") or {},
            "store_version": store_version,
        }
        fields = {c: (None if pd.isna(src.get(c)) else src.get(c)) for c in ("squad", "tribe", "author", "commit_sha")}
        out.append(
            prediction_record(
                payload, caller=caller, deploy=fields, feature_set_version=feature_set_version, logged_at=now
            )
        )
    return out


def append_now(root: Path, records: Sequence[Record]) -> bool:
    """Write records at once (short-lived callers: the CI gate, batch scoring); a failure is logged, not raised.

    Logging must never change a score's outcome, so a full disk costs the log entry, not the gate.
    """
    try:
        write_records(root, records)
    except Exception:
        log.exception("could not write %d records to the prediction log at %s", len(records), root)
        return False
    return True
