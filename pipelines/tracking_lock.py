"""One writer at a time on a home's SQLite tracking database, a bounded wait, and a one-line failure.

The embedded tracking store is one SQLite file. SQLite lets one process write at a time; MLflow waits
20 s for a busy database (its per-session ``PRAGMA busy_timeout``) and then raises ``database is
locked``, which used to throw away a finished training. Here:

* commands of one home take an exclusive ``fcntl`` lock next to the database (``.mlflow.db.lock``)
  around their MLflow writes, so a training and a ``score-batch`` never write at once; the second
  waits, saying for what;
* every SQLite connection MLflow opens waits for the bound instead of 20 s: SQLite's busy handler
  retries the locked statement with backoff (1 ms growing to 100 ms) until then, so nothing is
  re-run and nothing is written twice;
* after the bound, the failure is one line naming the database and the fix: a tracking server for
  concurrent writers (docs/deploy.md, "Concurrent writers").

The bound is ``INCIDENT_RISK_TRACKING_WAIT`` seconds (default 300). Tracking servers (http URIs)
handle concurrency themselves: nothing here applies to them.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

WAIT_ENV = "INCIDENT_RISK_TRACKING_WAIT"
DEFAULT_WAIT_SECONDS = 300.0
FIX = "for concurrent writers use an MLflow tracking server (docs/deploy.md, 'Concurrent writers')"

_PRAGMA = re.compile(r"^\s*PRAGMA\s+busy_timeout\s*=\s*\d+\s*;?\s*$", re.IGNORECASE)


class TrackingBusyError(RuntimeError):
    """The tracking database stayed locked past the bound; the message is one line naming it and the fix."""


@dataclass(frozen=True)
class TrackingWait:
    """How long MLflow writes wait for a busy SQLite tracking database, in seconds."""

    seconds: float = DEFAULT_WAIT_SECONDS

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> TrackingWait:
        raw = environ.get(WAIT_ENV, "").strip()
        if not raw:
            return cls()
        try:
            seconds = float(raw)
        except ValueError:
            raise ValueError(f"{WAIT_ENV}={raw!r}: expected a number of seconds") from None
        if not 0 <= seconds < 86400:
            raise ValueError(f"{WAIT_ENV}={raw!r}: expected seconds between 0 and 86400")
        return cls(seconds)


def sqlite_database(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` tracking URI; None for servers and in-memory databases."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri.removeprefix("sqlite:///").split("?", 1)[0]
    return Path(path).resolve() if path and path != ":memory:" else None


def is_locked_error(exc: BaseException) -> bool:
    """True when ``exc`` or anything it was raised from says the SQLite database is locked or busy."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if "database is locked" in str(current) or "database is busy" in str(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def install_busy_timeout() -> None:
    """Make every SQLite connection wait ``INCIDENT_RISK_TRACKING_WAIT`` seconds for a lock (once per process).

    MLflow sets ``PRAGMA busy_timeout = 20000`` on each session and offers no setting for it, so the
    statement is rewritten on its way to SQLite; new connections get the same timeout.
    """
    from sqlalchemy import event
    from sqlalchemy.engine import Engine
    from sqlalchemy.pool import Pool

    if not event.contains(Engine, "before_cursor_execute", _rewrite_busy_timeout):
        event.listen(Engine, "before_cursor_execute", _rewrite_busy_timeout, retval=True)
    if not event.contains(Pool, "connect", _on_connect):
        event.listen(Pool, "connect", _on_connect)


def _busy_ms() -> int:
    return int(TrackingWait.from_env().seconds * 1000)


def _rewrite_busy_timeout(
    conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool
) -> tuple[str, Any]:
    if conn.dialect.name == "sqlite" and _PRAGMA.match(statement):
        return f"PRAGMA busy_timeout = {_busy_ms()}", parameters
    return statement, parameters


def _on_connect(dbapi_connection: Any, connection_record: Any) -> None:
    if isinstance(dbapi_connection, sqlite3.Connection):
        dbapi_connection.execute(f"PRAGMA busy_timeout = {_busy_ms()}")


@contextlib.contextmanager
def tracking_writes(uri: str, what: str, say: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the home's tracking-write lock around MLflow writes; locked failures become ``TrackingBusyError``.

    ``what`` says who writes (shown to a command that has to wait); ``say`` prints the waiting line
    (default: stderr). Outside SQLite this does nothing.
    """
    db = sqlite_database(uri)
    if db is None:
        yield
        return
    wait = TrackingWait.from_env()
    install_busy_timeout()
    db.parent.mkdir(parents=True, exist_ok=True)
    lock_path = db.parent / f".{db.name}.lock"
    with open(lock_path, "a+", encoding="utf-8") as handle:
        _acquire(handle, db, what, wait, say or (lambda line: print(line, file=sys.stderr, flush=True)))
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"{what} (pid {os.getpid()}, since {datetime.now(UTC):%H:%M:%S} UTC)")
            handle.flush()
            try:
                with _quiet_locked_tracebacks():
                    yield
            except Exception as exc:
                if is_locked_error(exc):
                    raise TrackingBusyError(
                        f"the MLflow database {db} stayed locked by another process for over {wait.seconds:g} s "
                        f"({WAIT_ENV}); nothing was logged by this step; {FIX}"
                    ) from exc
                raise
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _quiet_locked_tracebacks() -> Iterator[None]:
    """MLflow logs each locked statement with its traceback; the wait is ours and its failure one line."""

    def keep(record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not ((exc is not None and is_locked_error(exc)) or "database is locked" in record.getMessage())

    logger = logging.getLogger("mlflow.store.db.utils")
    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)


def _acquire(handle: Any, db: Path, what: str, wait: TrackingWait, say: Callable[[str], None]) -> None:
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        pass
    handle.seek(0)
    holder = handle.read().strip() or "another command of this home"
    say(f"{what}: waiting for {holder} to finish writing the MLflow database {db} (at most {wait.seconds:g} s)")
    deadline = time.monotonic() + wait.seconds
    delay = 0.05
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise TrackingBusyError(
                    f"the MLflow database {db} was still being written by {holder} after {wait.seconds:g} s "
                    f"({WAIT_ENV}); {FIX}"
                ) from None
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 1.0)
