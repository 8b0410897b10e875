"""``incident-risk digest``: the weekly risk digest per squad and tribe, sent to Slack (or printed)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from pipelines.settings import HomeOption, resolve_settings


def register(app: typer.Typer) -> None:
    """Add the ``digest`` command to ``app``."""

    @app.command("digest")
    def digest(
        home: Path | None = HomeOption,
        week: str | None = typer.Option(
            None, "--week", help="Monday starting the week (YYYY-MM-DD, UTC); default the last complete week."
        ),
        dry_run: bool = typer.Option(False, "--dry-run", help="Print the Block Kit JSON instead of sending."),
        out: Path | None = typer.Option(None, "--out", help="Also write each message as JSON, and the chart, here."),
        notify_config: Path | None = typer.Option(
            None, "--notify-config", exists=True, dir_okay=False, help="Slack routing file (YAML, docs/notify.md)."
        ),
        model: str = typer.Option("incident-risk", "--model", help="Registered model whose champion scores the week."),
        alias: str = typer.Option("champion", "--alias", help="Registry alias of the model."),
    ) -> None:
        """Weekly risk digest: per squad and tribe, deploys, failures predicted vs realised, incidents, toggle debt."""
        from models.notify.config import NotifyConfigError, load_notify_config
        from models.notify.sender import SendError
        from pipelines.flows.digest import DigestError, run_digest

        settings = resolve_settings(home)
        try:
            notify = load_notify_config(notify_config)
            report = run_digest(
                settings, notify, week_start=week, dry_run=dry_run, out_dir=out, model_name=model, alias=alias
            )
        except (NotifyConfigError, DigestError, SendError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise typer.Exit(code=2) from None
        if dry_run:
            print(json.dumps(report.messages, indent=1, ensure_ascii=False))
        summary = report.as_dict()
        print(
            f"digest of the week of {summary['week_start']}: {summary['messages']} messages to "
            f"{len(summary['channels'])} channels; sent {summary['sent']}, failed {len(summary['failed'])}; "
            f"MLflow run {summary['run_id']}" + ("" if summary["scored"] else " (no champion: no predictions)"),
            file=sys.stderr,
        )
        for failure in report.failed:
            print(f"error: {failure}", file=sys.stderr)
        if report.failed:
            raise typer.Exit(code=1)
