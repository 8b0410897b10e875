"""The canonical history store: Parquet tables under ``<home>/store``, committed atomically.

Layout::

    store/manifest.json            which file holds each table now (the only thing readers trust)
    store/<table>/<version>.parquet
    store/.lock                    held by one writer at a time

A commit writes every changed table to a new file (written aside, fsynced, renamed), then
replaces ``manifest.json`` in one ``os.replace``. A crash at any point leaves the previous
manifest, so readers see the store either as before or as after a commit, across all tables.
Files neither the new nor the previous manifest refers to are removed by each commit.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from features.history.ownership import apply_ownership
from features.history.schema import (
    QUARANTINE_COLUMNS,
    QUARANTINE_KEY,
    TABLES,
    History,
    TableSpec,
    canonical_order,
    empty_quarantine,
    empty_table,
    table_spec,
)

MANIFEST = "manifest.json"
QUARANTINE = "quarantine"
FORMAT_VERSION = 1


class StoreError(Exception):
    """The store is unreadable or was written by an incompatible version."""


@dataclass(frozen=True)
class Manifest:
    version: int
    files: dict[str, str]  # table name (or "quarantine") -> path relative to the store root
    committed_at: str | None = None


def coerce_table(spec: TableSpec, frame: pd.DataFrame) -> pd.DataFrame:
    """Canonical dtypes for a stored frame (Parquet may hand strings back as another dtype)."""
    base = empty_table(spec)
    out = frame.copy()
    for name in base.columns:
        if name not in out.columns:
            out[name] = pd.Series(index=out.index, dtype=base[name].dtype)
        elif out[name].dtype != base[name].dtype:
            out[name] = out[name].astype(base[name].dtype)
    for name in spec.extra_columns(out):
        out[name] = out[name].astype("Float64")
    return canonical_order(spec, out)


def coerce_quarantine(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.reindex(columns=list(QUARANTINE_COLUMNS)).copy()
    for c in QUARANTINE_COLUMNS:
        out[c] = out[c].astype("Int64" if c == "record" else "string")
    return out.sort_values(list(QUARANTINE_KEY), kind="stable").reset_index(drop=True)


class HistoryStore:
    """Reads and atomically commits the canonical tables and the quarantine."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # -- reading -------------------------------------------------------------------------
    def manifest(self) -> Manifest:
        path = self.root / MANIFEST
        if not path.exists():
            return Manifest(version=0, files={})
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise StoreError(f"{path}: unreadable store manifest ({exc})") from None
        if data.get("format") != FORMAT_VERSION:
            raise StoreError(f"{path}: store format {data.get('format')!r}, expected {FORMAT_VERSION}")
        return Manifest(version=int(data["version"]), files=dict(data["files"]), committed_at=data.get("committed_at"))

    def read(self, table: str, manifest: Manifest | None = None) -> pd.DataFrame:
        """One canonical table in canonical dtypes (empty when never written)."""
        spec = table_spec(table)
        m = manifest or self.manifest()
        rel = m.files.get(table)
        if rel is None:
            return empty_table(spec)
        return coerce_table(spec, self._read_parquet(rel))

    def read_quarantine(self, manifest: Manifest | None = None) -> pd.DataFrame:
        m = manifest or self.manifest()
        rel = m.files.get(QUARANTINE)
        return coerce_quarantine(self._read_parquet(rel) if rel else empty_quarantine())

    def read_history(self, manifest: Manifest | None = None) -> History:
        """Every table from one manifest, so they are mutually consistent.

        The deploys' squad and tribe come out with the catalog's ownership applied
        (``features.history.ownership``): every reader sees the same teams.
        """
        m = manifest or self.manifest()
        catalog = self.read("catalog", m)
        return History(
            deploys=apply_ownership(self.read("deploys", m), catalog),
            toggle_events=self.read("toggle_events", m),
            incidents=self.read("incidents", m),
            catalog=catalog,
        )

    def _read_parquet(self, rel: str) -> pd.DataFrame:
        path = self.root / rel
        try:
            return pd.read_parquet(path)
        except Exception as exc:
            raise StoreError(f"{path}: unreadable table file ({exc})") from None

    # -- writing -------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Serialise writers (readers never need it: they follow the manifest)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def commit(
        self,
        tables: Mapping[str, pd.DataFrame],
        quarantine: pd.DataFrame | None,
        expected_version: int,
    ) -> Manifest:
        """Replace the given tables (and the quarantine) in one atomic step.

        ``expected_version`` is the manifest version the changes were computed from; a commit
        on top of a newer store is refused rather than silently losing the other writer's work.
        Call under ``lock()``.
        """
        current = self.manifest()
        if current.version != expected_version:
            raise StoreError(
                f"{self.root}: store changed during the ingest (version {current.version}, "
                f"expected {expected_version}); run it again"
            )
        version = current.version + 1
        files = dict(current.files)
        try:
            for name, frame in tables.items():
                spec = TABLES[name]
                files[name] = self._write_table(name, version, coerce_table(spec, frame))
            if quarantine is not None:
                files[QUARANTINE] = self._write_table(QUARANTINE, version, coerce_quarantine(quarantine))
            manifest = Manifest(version=version, files=files, committed_at=datetime.now(UTC).isoformat())
            body = {"format": FORMAT_VERSION, "version": version, "files": files, "committed_at": manifest.committed_at}
            _atomic_write(self.root / MANIFEST, json.dumps(body, indent=2, sort_keys=True).encode())
        except OSError as exc:  # disk full, quota, read-only: the old manifest still stands
            for folder in [*TABLES, QUARANTINE]:
                for file in (self.root / folder).glob(f"v{version:06d}-*"):
                    file.unlink(missing_ok=True)
            raise StoreError(
                f"{self.root}: could not write store version {version} ({_os_reason(exc)}); "
                f"nothing was committed, the store is still at version {current.version}"
            ) from None
        # Keep the previous version's files too: a reader that read the old manifest a moment
        # ago may still be opening them.
        self._remove_unreferenced(set(files.values()) | set(current.files.values()))
        return manifest

    def _write_table(self, name: str, version: int, frame: pd.DataFrame) -> str:
        rel = f"{name}/v{version:06d}-{uuid.uuid4().hex[:8]}.parquet"
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".parquet.tmp")
        try:
            frame.to_parquet(tmp, index=False)
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, path)
        return rel

    def _remove_unreferenced(self, keep: set[str]) -> None:
        for sub in [*TABLES, QUARANTINE]:
            folder = self.root / sub
            if not folder.is_dir():
                continue
            for file in folder.iterdir():
                rel = f"{sub}/{file.name}"
                if rel not in keep:
                    with contextlib.suppress(OSError):
                        file.unlink()


def _os_reason(exc: OSError) -> str:
    """An OS error in a few words (pyarrow's carry the errno only inside their text)."""
    text = " ".join(str(exc).split())
    if exc.errno == errno.ENOSPC or "[errno 28]" in text.lower():
        return "No space left on device"
    return exc.strerror or text


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
