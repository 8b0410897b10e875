"""The ingest flow: every declared source -> canonical tables -> one atomic store commit.

All sources are read and checked before anything is written, so a file that cannot be read
at all (missing, truncated, wrong encoding, wrong kind) fails the whole ingest with one clear
line and leaves the store exactly as it was.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed, Failed, State
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from features.history.ingest import SourceCounts, merge_rows, prepare_source_file
from features.history.quarantine import reason_counts, replace_sources
from features.history.schema import QUARANTINE_COLUMNS, QUARANTINE_KEY, TABLES, table_spec
from features.history.store import HistoryStore, StoreError
from features.sources.base import ParsedFile, SourceError
from features.sources.config import SourceConfig, load_sources_config
from features.sources.kinds import source_kinds
from pipelines.console import make_console
from pipelines.flows.artifacts import publish_ingest
from pipelines.flows.runners import RunnerConfig, make_task_runner


@dataclass
class IngestReport:
    """What an ingest did, per source; ``read = inserted + updated + unchanged + quarantined``."""

    config: str
    sources: list[SourceCounts] = field(default_factory=list)
    store_version: int = 0
    committed: bool = False
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def empty_sources(self) -> list[str]:
        """Sources of which nothing is in the store after this ingest (every record refused, or none)."""
        return [s.source for s in self.sources if s.rows == 0]

    def empty_sources_line(self) -> str:
        """One line for the exit-3 case: which sources stored nothing, why, and where to look."""
        parts = []
        for s in self.sources:
            if s.rows == 0:
                why = f"top reason {s.top_reasons[0].line()}" if s.top_reasons else "no records in its files"
                parts.append(f"{s.source} ({s.read} read, {s.quarantined} quarantined; {why})")
        first = self.empty_sources[0]
        return (
            f"no rows from source {'; '.join(parts)}: fix the export or the source's mapping, "
            f"then re-ingest; details: incident-risk quarantine --source {first}"
        )

    def totals(self) -> dict[str, int]:
        keys = ("read", "inserted", "updated", "unchanged", "quarantined")
        return {k: sum(getattr(s, k) for s in self.sources) for k in keys}

    def as_dict(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "ok": self.ok,
            "error": self.error,
            "committed": self.committed,
            "store_version": self.store_version,
            "sources": [s.as_dict() for s in self.sources],
            "empty_sources": self.empty_sources,
            "totals": self.totals(),
        }

    def render(self, console: Console) -> None:
        table = Table(title=f"ingest of {self.config}", show_lines=False)
        for col in ("source", "table", "files", "read", "inserted", "updated", "unchanged", "quarantined", "other"):
            table.add_column(col, justify="right" if col not in ("source", "table", "other") else "left")
        for s in self.sources:
            other = ", ".join(f"{k}={v}" for k, v in sorted(s.other.items())) or ""
            table.add_row(
                s.source,
                s.table,
                str(s.files),
                str(s.read),
                str(s.inserted),
                str(s.updated),
                str(s.unchanged),
                str(s.quarantined),
                other,
            )
        console.print(table)
        for s in self.sources:
            if s.zero_times:
                fields = ", ".join(f"{k} {v}" for k, v in sorted(s.zero_times.items()))
                console.print(f"{s.source}: zero-time placeholders (0001-01-01 ...) stored as missing: {fields}")
            if s.top_reasons:
                reasons = "; ".join(r.line() for r in s.top_reasons)
                console.print(f"{s.source}: {s.quarantined} of {s.read} quarantined, top reasons: {reasons}")
        state = f"committed store version {self.store_version}" if self.committed else "store unchanged"
        console.print(f"{state}; counts reconcile: read = inserted + updated + unchanged + quarantined")


@dataclass(frozen=True)
class _ReadOutcome:
    parsed: ParsedFile | None
    error: str | None


@task(name="read-export", retries=2, retry_delay_seconds=[1, 5], cache_policy=NO_CACHE)
def read_export(source: SourceConfig, path: Path) -> _ReadOutcome:
    """Parse one export file. Transient I/O errors are retried; a bad file is a final answer."""
    try:
        return _ReadOutcome(source.parse(path), None)
    except SourceError as exc:
        return _ReadOutcome(None, str(exc))


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), console=console, transient=True
    )


@flow(name="ingest", validate_parameters=False)
def ingest_flow(config_path: str, store_dir: str, quiet: bool = False) -> State:
    """Read every source of ``config_path`` and commit the result to the store at ``store_dir``."""
    console = make_console(stderr=True, quiet=quiet)
    report = IngestReport(config=config_path)
    store = HistoryStore(Path(store_dir))
    try:
        config = load_sources_config(Path(config_path), source_kinds())
        ingest_time = pd.Timestamp.now(tz="UTC")  # one reference time for every file's plausible range
        with store.lock():
            manifest = store.manifest()
            tables = {name: store.read(name, manifest) for name in TABLES}
            quarantine = store.read_quarantine(manifest)
            changed: set[str] = set()
            new_rejects: list[pd.DataFrame] = []
            n_files = sum(len(s.paths) for s in config.sources)
            # Every file is parsed concurrently on the flow's task runner (threads by default, a
            # Dask cluster when asked); results are merged in config order, so the outcome is the same.
            reads = {(s.name, p): read_export.submit(s, p) for s in config.sources for p in s.paths}
            with _progress(console) as progress:
                bar = progress.add_task("reading exports", total=n_files)
                for source in config.sources:
                    counts = SourceCounts(source=source.name, table=source.table)
                    spec = table_spec(source.table)
                    source_rejects: list[pd.DataFrame] = []
                    for path in source.paths:
                        outcome = reads[(source.name, path)].result()
                        if outcome.parsed is None:
                            raise SourceError(outcome.error or f"{path}: unreadable")
                        try:
                            prepared = prepare_source_file(source, path, outcome.parsed, ingest_time)
                        except ValueError as exc:
                            raise SourceError(f"{config_path}: source {source.name!r}: {exc}") from None
                        merged, mc = merge_rows(spec, tables[spec.name], prepared.rows)
                        if mc.inserted or mc.updated:
                            tables[spec.name] = merged
                            changed.add(spec.name)
                        counts.files += 1
                        counts.read += prepared.read
                        counts.inserted += mc.inserted
                        counts.updated += mc.updated
                        counts.unchanged += mc.unchanged + prepared.duplicates
                        counts.quarantined += prepared.quarantined
                        for k, v in prepared.other.items():
                            counts.other[k] = counts.other.get(k, 0) + v
                        for k, v in prepared.zero_times.items():
                            counts.zero_times[k] = counts.zero_times.get(k, 0) + v
                        if len(prepared.rejects):
                            source_rejects.append(prepared.rejects)
                        progress.advance(bar)
                    if source_rejects:
                        rejects = pd.concat(source_rejects, ignore_index=True)
                        counts.top_reasons = reason_counts(rejects, limit=3, examples=1)
                        new_rejects.append(rejects)
                    if not counts.reconciles:  # an internal invariant: never commit a report that lies
                        raise RuntimeError(f"source {source.name}: counts do not reconcile: {counts.as_dict()}")
                    report.sources.append(counts)
            # each source ingested here replaces its quarantine: a fixed export leaves no stale entries
            merged_q = replace_sources(
                quarantine,
                pd.concat(new_rejects, ignore_index=True) if new_rejects else quarantine.iloc[:0],
                [s.name for s in config.sources],
            )
            q_changed = not _same_quarantine(quarantine, merged_q)
            if changed or q_changed:
                m = store.commit(
                    {name: tables[name] for name in changed},
                    merged_q if q_changed else None,
                    expected_version=manifest.version,
                )
                report.store_version = m.version
                report.committed = True
            else:
                report.store_version = manifest.version
    except (SourceError, StoreError) as exc:
        report.error = str(exc)
        report.sources = []
        report.store_version = store.manifest().version if (Path(store_dir) / "manifest.json").exists() else 0
        publish_ingest(report, Path(store_dir))
        return Failed(message=report.error, data=report)
    publish_ingest(report, Path(store_dir))
    return Completed(data=report)


def _same_quarantine(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    if len(a) != len(b):
        return False
    cols, key = list(QUARANTINE_COLUMNS), list(QUARANTINE_KEY)
    left = a[cols].astype(str).sort_values(key).reset_index(drop=True)
    right = b[cols].astype(str).sort_values(key).reset_index(drop=True)
    return bool(left.equals(right))


def run_ingest(
    config_path: Path, store_dir: Path, *, quiet: bool = False, runner: RunnerConfig | None = None
) -> IngestReport:
    """Run the ingest flow (files parsed on ``runner``'s task runner) and hand back its report."""
    task_runner = make_task_runner(runner) if runner is not None else None
    run = ingest_flow.with_options(task_runner=task_runner) if task_runner is not None else ingest_flow
    state = run(str(config_path), str(store_dir), quiet, return_state=True)
    result = state.result(raise_on_failure=False)
    if isinstance(result, IngestReport):
        return result
    if isinstance(result, BaseException):
        return IngestReport(config=str(config_path), error=f"{type(result).__name__}: {result}")
    raise RuntimeError(f"ingest flow ended in state {state.type}: {state.message}")  # pragma: no cover


def print_error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
