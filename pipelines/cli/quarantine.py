"""``incident-risk quarantine``: the records ingest refused, per source and reason, with examples.

Reads the store only (no Prefect, no MLflow), so it answers at once after an ingest said that
records were quarantined or that a source yielded no rows.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from pipelines.settings import HomeOption, resolve_settings


def quarantine(
    source: str | None = typer.Option(None, "--source", "-s", help="Only this source (its name in sources.yaml)."),
    examples: int = typer.Option(3, "--examples", min=0, help="Entries shown per reason."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    home: Path | None = HomeOption,
) -> None:
    """Show the stored quarantine: entries per source and reason, and examples naming file, record and field."""
    from features.history.quarantine import summarise
    from features.history.store import HistoryStore, StoreError
    from pipelines.cli.checks import CheckError, refuse

    settings = resolve_settings(home)
    store = HistoryStore(settings.store_dir)
    try:
        stored = store.read_quarantine()
    except StoreError as exc:
        refuse(CheckError(f"{exc} (point --home at the store ingest wrote)"), code=1)
    summary = summarise(stored, source=source, examples=examples)
    if json_out:
        print(json.dumps([s.as_dict() for s in summary], indent=2))
        return
    if not summary:
        where = f"source {source!r}" if source else f"the store at {settings.store_dir}"
        known = sorted(set(stored["source"].astype(str)))
        others = f" (sources with entries: {', '.join(known)})" if source and known else ""
        print(f"no quarantine entries for {where}{others}")
        return
    for s in summary:
        print(f"{s.source} ({s.table}): {s.entries} entries for {s.records} records")
        for reason in s.reasons:
            print(f"  {reason.count:>6}  {reason.field}: {reason.reason}")
            for ex in reason.examples:
                value = "" if ex["value"] is None else f" = {ex['value']!r}"
                print(f"          {ex['file']} record {ex['record']}, field {ex['field']}{value}")


def register(app: typer.Typer) -> None:
    """Add ``quarantine`` to the CLI."""
    app.command()(quarantine)
