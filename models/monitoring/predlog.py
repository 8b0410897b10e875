"""The prediction log: every score given, appended durably without slowing the serving path.

Layout (next to the history store, under the same home)::

    predictions/day=YYYY-MM-DD/<first logged micros>-<pid>-<uuid>.parquet

A ``PredictionLog`` keeps records in memory (``add`` is a list append under a lock) and a
background thread writes them every ``flush_seconds``, and once more at ``stop``. Each flush
writes one file per day aside (``.tmp``), fsyncs it and renames it into place, so a reader sees
a whole file or none: killing the process mid-flush never corrupts the log, and a crash loses at
most what was buffered since the last flush (one interval). Readers skip dot-files.
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
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

log = logging.getLogger("incident_risk.predlog")

#: Directory of the log under the home (beside ``store/``).
PREDICTIONS_DIR = "predictions"
#: Default seconds between flushes: the most a crash can lose.
FLUSH_SECONDS = 5.0

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
        ("features", pa.string()),  # the feature row, JSON {name: value}
    ]
)
COLUMNS = tuple(SCHEMA.names)


def predictions_dir(home: Path) -> Path:
    """Where the prediction log of a home lives."""
    return home / PREDICTIONS_DIR


def _text(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return str(value)


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def prediction_record(
    payload: Mapping[str, Any],
    *,
    caller: str,
    deploy: Mapping[str, Any] | None = None,
    teams: tuple[str | None, str | None] | None = None,
    feature_set_version: str | None = None,
    logged_at: pd.Timestamp | None = None,
) -> dict[str, Any]:
    """One log row from a score payload (``models.serving.app.score_payload``) and the request's fields.

    A score without a deploy id gets a request id, so every row has a key; ``has_deploy_id`` says
    which it is (only deploy ids can be joined with outcomes). Cheap on purpose (the serving path
    calls it): times and the feature row are converted and encoded when the buffer is written.
    """
    deploy = deploy or {}
    deploy_id = _text(payload.get("deploy_id")) or _text(deploy.get("deploy_id"))
    squad = _text(deploy.get("squad")) or (teams[0] if teams else None)
    tribe = _text(deploy.get("tribe")) or (teams[1] if teams else None)
    model = payload.get("model") or {}
    return {
        "prediction_id": uuid.uuid4().hex,
        "logged_at": logged_at if logged_at is not None else time.time(),
        "deploy_id": deploy_id or f"request:{uuid.uuid4().hex}",
        "has_deploy_id": deploy_id is not None,
        "commit_sha": _text(deploy.get("commit_sha")),
        "service": _text(payload.get("service")) or _text(deploy.get("service")),
        "squad": squad,
        "tribe": tribe,
        "author": _text(deploy.get("author")),
        "planned_at": payload["scored_for"],
        "probability": float(payload["probability"]),
        "band": str(payload["band"]),
        "model_name": _text(model.get("name")),
        "model_version": _text(model.get("version")),
        "feature_set_version": feature_set_version,
        "store_version": payload.get("store_version"),
        "caller": caller,
        "features": payload.get("features") or {},  # encoded at flush time, off the request path
    }


def records_frame(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Records as a frame in the log's column order and types."""
    return _table(records).to_pandas(types_mapper={pa.string(): pd.StringDtype()}.get)


def _timestamps(values: list[Any]) -> list[Any]:
    """UTC timestamps from unix seconds, ISO text or timestamps (None stays None)."""
    out: list[Any] = []
    for v in values:
        if v is None:
            out.append(None)
        elif isinstance(v, (int, float)):
            out.append(pd.Timestamp(v, unit="s", tz="UTC"))
        else:
            ts = pd.Timestamp(v)
            out.append(ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC"))
    return out


def _features_json(value: Any) -> str:
    if isinstance(value, str):
        return value
    clean = {str(k): _json_value(v) for k, v in (value or {}).items()}
    return json.dumps(clean, separators=(",", ":"), default=str)


def _table(records: Sequence[Mapping[str, Any]]) -> pa.Table:
    columns = {name: [r.get(name) for r in records] for name in COLUMNS}
    for name in ("logged_at", "planned_at"):
        columns[name] = _timestamps(columns[name])
    columns["features"] = [_features_json(v) for v in columns["features"]]
    return pa.Table.from_pydict(columns, schema=SCHEMA)


def write_records(root: Path, records: Sequence[Mapping[str, Any]]) -> list[Path]:
    """Append ``records`` to the log durably: one new file per logged day, written aside and renamed."""
    if not records:
        return []
    table = _table(records)
    days = pd.DatetimeIndex(table.column("logged_at").to_pandas()).strftime("%Y-%m-%d").to_numpy()
    written = []
    for day in sorted(set(days)):
        part = table.filter(pa.array(days == day))
        first = int(part.column("logged_at")[0].value)
        folder = root / f"day={day}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{first}-{os.getpid()}-{uuid.uuid4().hex[:12]}.parquet"
        tmp = folder / f".{path.name}.tmp"
        with open(tmp, "wb") as handle:
            pq.write_table(part, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_dir(folder)
        written.append(path)
    return written


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
    table = pa.concat_tables([pq.read_table(f, schema=SCHEMA) for f in files])
    frame = table.to_pandas(types_mapper={pa.string(): pd.StringDtype()}.get)
    keep = pd.Series(True, index=frame.index)
    if start is not None:
        keep &= frame["logged_at"] >= start
    if end is not None:
        keep &= frame["logged_at"] < end
    return frame[keep].sort_values("logged_at", kind="stable").reset_index(drop=True)


def feature_rows(predictions: pd.DataFrame) -> pd.DataFrame:
    """The logged feature rows as columns (one row per prediction, same index)."""
    rows = [json.loads(text) if isinstance(text, str) else {} for text in predictions["features"]]
    return pd.DataFrame(rows, index=predictions.index)


@dataclass
class PredictionLog:
    """A buffered, interval-flushed prediction log (see the module docstring for the guarantees)."""

    root: Path
    flush_seconds: float = FLUSH_SECONDS

    def __post_init__(self) -> None:
        self._buffer: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors = 0

    def add(self, record: dict[str, Any]) -> None:
        """Queue one record (the serving path: an append, no I/O)."""
        with self._lock:
            self._buffer.append(record)

    def extend(self, records: Iterable[dict[str, Any]]) -> None:
        with self._lock:
            self._buffer.extend(records)

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def flush(self) -> int:
        """Write what is buffered; returns how many records were written. A failed write keeps them."""
        with self._flush_lock:
            with self._lock:
                batch, self._buffer = self._buffer, []
            if not batch:
                return 0
            try:
                write_records(self.root, batch)
            except Exception:
                self.errors += 1
                log.exception("prediction log flush failed; %d records kept for the next flush", len(batch))
                with self._lock:
                    self._buffer[:0] = batch
                return 0
            return len(batch)

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
) -> list[dict[str, Any]]:
    """Log rows of a scored frame (``score_frame(..., with_features=True)``) and its input deploys.

    Ids made up for rows that had none (``upcoming:<row>``) are request ids, not deploy ids.
    """
    now = pd.Timestamp.now(tz="UTC")
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


def append_now(root: Path, records: Sequence[Mapping[str, Any]]) -> bool:
    """Write records at once (short-lived callers: the CI gate, batch scoring); a failure is logged, not raised.

    Logging must never change a score's outcome, so a full disk costs the log entry, not the gate.
    """
    try:
        write_records(root, records)
    except Exception:
        log.exception("could not write %d records to the prediction log at %s", len(records), root)
        return False
    return True
