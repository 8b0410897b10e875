"""CLI commands ``serve`` (the HTTP service) and ``score-batch`` (a file of upcoming deploys)."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import replace
from pathlib import Path

import typer

from pipelines.settings import HomeOption, prepare_runtime, resolve_settings


def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
    port: int = typer.Option(8080, "--port", min=1, max=65535),
    home: Path | None = HomeOption,
    refresh_seconds: float = typer.Option(
        30.0, "--refresh-seconds", min=0.5, help="How often to look for a new champion or store version."
    ),
    tokens_file: Path | None = typer.Option(
        None,
        "--tokens-file",
        exists=True,
        dir_okay=False,
        help="Bearer tokens, one per line (also $INCIDENT_RISK_TOKENS).",
    ),
    model: str = typer.Option("incident-risk", "--model", help="Registered model name."),
    alias: str = typer.Option("champion", "--alias", help="Registry alias to serve and follow."),
    access_log: bool = typer.Option(False, "--access-log/--no-access-log", help="Log every request line."),
    max_data_age_hours: float | None = typer.Option(
        None,
        "--max-data-age-hours",
        min=0.0,
        help="Past this age of the store's newest event, scores say stale_history and /readyz says degraded "
        "(default 72).",
    ),
    notify_config: Path | None = typer.Option(
        None,
        "--notify-config",
        exists=True,
        dir_okay=False,
        help="Slack routing and alert rule (YAML, docs/notify.md); alerts are on when $SLACK_BOT_TOKEN or "
        "$SLACK_WEBHOOK_URL is set.",
    ),
    dependencies: Path | None = typer.Option(
        None,
        "--dependencies",
        exists=True,
        dir_okay=False,
        help="dependencies.yaml or a Backstage catalog-info.yaml for incident suspects (docs/incidents.md).",
    ),
    log_flush_seconds: float = typer.Option(
        5.0, "--log-flush-seconds", min=0.05, help="Prediction log flush interval: the most a crash loses."
    ),
    log_predictions: bool = typer.Option(
        True,
        "--log-predictions/--no-log-predictions",
        help="Record every score in the prediction log (docs/monitoring.md); off, the monitor has nothing to judge.",
    ),
) -> None:
    """Serve risk scores over HTTP (FastAPI on uvicorn); follows the champion and the store without restarts."""
    import uvicorn

    from models.serving.app import ServiceConfig, create_app, use_system_allocator
    from models.serving.auth import load_tokens

    settings = resolve_settings(home)
    prepare_runtime(settings)
    tokens = load_tokens(tokens_file)
    from models.notify.config import NotifyConfigError, load_notify_config

    try:
        notify = load_notify_config(notify_config)
    except NotifyConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(code=2) from None
    tracking = os.environ.get("MLFLOW_TRACKING_URI", "")
    if notify.links.mlflow_url is None and tracking.startswith(("http://", "https://")):
        # a shared MLflow server: alerts link to the model's run there
        notify = replace(notify, links=replace(notify.links, mlflow_url=tracking))
    config = ServiceConfig(
        store_dir=settings.store_dir,
        model_name=model,
        alias=alias,
        refresh_seconds=refresh_seconds,
        tokens=tokens,
        dependencies=dependencies,
        prediction_flush_seconds=log_flush_seconds,
        log_predictions=log_predictions,
    )
    if max_data_age_hours is not None:
        config = replace(config, max_data_age_hours=max_data_age_hours)
    print(
        f"incident-risk serving {model}@{alias} on http://{host}:{port} (auth {'on' if tokens else 'off'}, "
        f"Slack alerts {'on, ' + notify.slack.mode if notify.slack.enabled else 'off'})",
        file=sys.stderr,
    )
    use_system_allocator()  # freed memory goes back: no RSS growth from the prediction log's flushes
    uvicorn.run(
        create_app(config, notify=notify),
        host=host,
        port=port,
        log_level="warning",
        access_log=access_log,
        http="httptools",
        loop="uvloop",
        timeout_graceful_shutdown=5,
    )


def score_batch(
    input_path: Path = typer.Option(
        ...,
        "--input",
        exists=True,
        dir_okay=False,
        help="CSV/Parquet/JSON(L) of upcoming deploys with canonical column names.",
    ),
    out: Path = typer.Option(..., "--out", help="Where to write the scores (Parquet, or CSV by extension)."),
    home: Path | None = HomeOption,
    model: str = typer.Option("incident-risk", "--model", help="Registered model name."),
    json_summary: Path | None = typer.Option(None, "--json", help="Also write the summary as JSON here."),
    horizon_days: float = typer.Option(
        30.0, "--horizon-days", min=0, help="Days ahead a planned deploy may be dated; later ones are rejected."
    ),
) -> None:
    """Score a file of upcoming deploys with the champion (a Prefect flow; summary logged to MLflow)."""
    from pipelines.flows.score_batch import BatchScoringError, run_batch_scoring

    settings = resolve_settings(home)
    prepare_runtime(settings)
    try:
        summary = run_batch_scoring(input_path, out, settings, model_name=model, horizon_days=horizon_days)
    except BatchScoringError as exc:
        print(f"incident-risk score-batch: {exc}", file=sys.stderr)
        raise typer.Exit(1) from None
    if json_summary is not None:
        json_summary.write_text(json.dumps(summary.as_dict(), indent=2))
    print(summary.render())


def register(app: typer.Typer) -> None:
    """Add ``serve`` and ``score-batch`` to the CLI."""
    app.command()(serve)
    app.command("score-batch")(score_batch)
