"""CLI commands of the training stage: ``train``, ``promote`` and ``runs``.

``register(app)`` adds them to the ``incident-risk`` app; heavy imports (MLflow, Prefect,
scikit-learn) happen inside the commands so ``--help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path

import typer

from pipelines.console import make_console
from pipelines.settings import HomeOption, prepare_runtime, resolve_settings

DEFAULT_EXPERIMENT = "incident-risk"


def train(
    home: Path | None = HomeOption,
    test_fraction: float = typer.Option(
        0.2, "--test-fraction", help="The latest share of matured production deploys (by created_at) used as test."
    ),
    test_start: str | None = typer.Option(
        None,
        "--test-start",
        help="Test period start (ISO date/time, UTC unless an offset is given); overrides --test-fraction.",
    ),
    experiment: str = typer.Option(DEFAULT_EXPERIMENT, "--experiment", help="MLflow experiment name."),
    metrics_out: Path | None = typer.Option(None, "--metrics-out", help="Write the run's metrics as JSON here."),
    seed: int = typer.Option(
        0,
        "--seed",
        help="Seeds the permutation-importance sample and shuffles, and the boosted trees' random_state, "
        "which only subsamples rows for binning when a fit has over 200,000 rows. Split, search and "
        "calibration are deterministic: below that size the seed changes the importances, not the model.",
    ),
    min_train_rows: int = typer.Option(
        50,
        "--min-train-rows",
        min=2,
        help="Fewest matured production deploys the training period must hold (checked before anything runs).",
    ),
    no_prefect: bool = typer.Option(False, "--no-prefect", help="Run the same steps without Prefect orchestration."),
    task_runner: str = typer.Option(
        "sequential", "--task-runner", help="How candidates are evaluated: sequential, threads or dask."
    ),
    workers: int = typer.Option(2, "--workers", min=1, help="Threads, or workers of the local Dask cluster."),
    dask_address: str | None = typer.Option(
        None,
        "--dask-address",
        help="Scheduler of an existing Dask cluster (default $INCIDENT_RISK_DASK_ADDRESS); implies --task-runner dask.",
    ),
) -> None:
    """Train, calibrate and evaluate candidates on the store's history; log to MLflow; gate the champion."""
    from features.history.timestamps import utc_timestamp
    from models.training.config import TrainConfig
    from pipelines.cli.checks import CheckError, check_training_rows, refuse
    from pipelines.flows.runners import RunnerConfig

    settings = resolve_settings(home)
    console = make_console()
    start = None
    if test_start is not None:
        try:
            start = utc_timestamp(test_start, "--test-start", naive_is_utc=True)
        except ValueError as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(code=2) from None
    if start is None and not 0 < test_fraction < 1:
        console.print(f"[red]error:[/red] --test-fraction must be between 0 and 1, got {test_fraction}")
        raise typer.Exit(code=2)
    try:
        runner = RunnerConfig.from_env("dask" if dask_address else task_runner, workers, dask_address)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(code=2) from None
    if runner.parallel and no_prefect:
        console.print(
            f"[red]error:[/red] the {runner.kind} task runner needs Prefect orchestration (drop --no-prefect)"
        )
        raise typer.Exit(code=2)
    try:  # before Prefect, MLflow and feature building: too little data is one line, at once
        check_training_rows(settings.store_dir, min_train_rows, test_fraction, start)
    except CheckError as exc:
        refuse(exc, code=1)
    prepare_runtime(settings)
    from pipelines.flows.train import TrainingError, TrainOptions, run_training

    options = TrainOptions(
        test_fraction=test_fraction,
        test_start=start,
        experiment=experiment,
        metrics_out=metrics_out,
        train=TrainConfig(seed=seed, min_train_rows=min_train_rows),
    )
    try:
        outcome = run_training(settings, options, progress=console.print, orchestrate=not no_prefect, runner=runner)
    except TrainingError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(code=1) from None
    test = outcome.metrics["test"]
    console.print(
        f"run {outcome.run_id}: incident-risk v{outcome.model_version} "
        f"roc_auc={_fmt(test['roc_auc'])} pr_auc={_fmt(test['pr_auc'])} ece={_fmt(test['ece'])} "
        f"recall@10%={_fmt(test['recall_at_10pct'])}"
    )
    verdict = "promoted to champion" if outcome.promoted else "kept as challenger"
    console.print(f"gate: {verdict} ({outcome.reason})")
    console.print(
        f"report: mlflow ui --backend-store-uri {settings.mlflow_tracking_uri}  (run {outcome.run_id}, report/)"
    )


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def promote(
    version: str | None = typer.Argument(None, help="Model version to make champion."),
    revert: bool = typer.Option(False, "--revert", help="Put the previous champion back."),
    reason: str = typer.Option("", "--reason", help="Why; recorded on the model version."),
    home: Path | None = HomeOption,
) -> None:
    """Force a version to champion, or revert to the previous champion; the change is recorded."""
    from mlflow import MlflowClient

    from models.registry.artifacts import MODEL_NAME, RegistryError
    from models.registry.gate import promote as do_promote

    settings = resolve_settings(home)
    prepare_runtime(settings)
    console = make_console()
    if (version is None) == (not revert):
        console.print("[red]error:[/red] give a VERSION or --revert")
        raise typer.Exit(code=2)
    from pipelines.tracking_lock import TrackingBusyError, tracking_writes

    try:
        with tracking_writes(settings.mlflow_tracking_uri, "promote"):
            target = do_promote(MlflowClient(), version, revert, reason)
    except (RegistryError, TrackingBusyError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(code=1) from None
    console.print(f"{MODEL_NAME} champion is now v{target}" + (" (reverted)" if revert else ""))


def runs(
    experiment: str = typer.Option(DEFAULT_EXPERIMENT, "--experiment", help="MLflow experiment name."),
    limit: int = typer.Option(8, "--limit", help="How many of the latest runs to show."),
    home: Path | None = HomeOption,
) -> None:
    """Print the experiment's latest training runs side by side."""
    from rich.table import Table

    from models.training.tracking import runs_table

    settings = resolve_settings(home)
    prepare_runtime(settings)
    console = make_console()
    frame = runs_table(experiment, limit)
    if frame.empty:
        console.print(f"no training runs in experiment {experiment!r}")
        return
    table = Table(title=f"training runs of {experiment} (latest first)")
    table.add_column("run")
    for run_id in frame.columns:
        table.add_column(str(run_id), justify="right")
    for field, row in frame.iterrows():
        table.add_row(str(field), *[str(v) for v in row])
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add ``train``, ``promote`` and ``runs`` to the CLI."""
    app.command()(train)
    app.command()(promote)
    app.command()(runs)
