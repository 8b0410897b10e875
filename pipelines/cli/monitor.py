"""``incident-risk monitor``: judge the served model on matured outcomes; exit 3 on a decay alarm.

Exit codes: 0 healthy, 3 decay alarm, 4 nothing to judge yet (no predictions, no matured labels,
the model gone from the registry), 2 bad arguments. docs/monitoring.md explains the alarm.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import typer

from pipelines.settings import HomeOption, prepare_runtime, resolve_settings


def monitor(
    home: Path | None = HomeOption,
    as_of: str | None = typer.Option(None, "--as-of", help="Judge as of this time (ISO 8601; default now)."),
    window_days: int = typer.Option(28, "--window-days", min=1, help="Rolling window of matured predictions."),
    lookback_days: float = typer.Option(180.0, "--lookback-days", min=1, help="Days of the prediction log read."),
    min_labels: int = typer.Option(300, "--min-labels", min=1, help="Matured predictions a window needs."),
    auc_margin: float = typer.Option(0.03, "--auc-margin", min=0.0, help="Below the champion's test AUC by this."),
    ece_max: float = typer.Option(0.05, "--ece-max", min=0.0, help="Calibration error bound."),
    psi_max: float = typer.Option(0.25, "--psi-max", min=0.0, help="PSI bound on top features and the score."),
    false_alarm_rate: float = typer.Option(
        0.05,
        "--false-alarm-rate",
        min=0.0001,
        max=0.9999,
        help="The drift check's chance of any false fire over 180 days of daily runs (corrects for repeated looks).",
    ),
    retrain: bool = typer.Option(
        False,
        "--retrain",
        help="On an alarm, and while a champion retrained from a change is young, run the training flow "
        "(the gate decides).",
    ),
    retrain_window_days: float = typer.Option(
        30.0, "--retrain-window-days", min=1, help="Days the retrain learns at least."
    ),
    retrain_from_onset: bool = typer.Option(
        True, "--retrain-from-onset/--retrain-fixed-window", help="Learn back to the degradation's onset."
    ),
    retrain_follow: bool = typer.Option(
        True,
        "--retrain-follow/--no-retrain-follow",
        help="Retrain a champion retrained from a change's onset again from it while the onset is under 180 days old.",
    ),
    retrain_gate: str = typer.Option(
        "paired", "--retrain-gate", help="The retrain's gate: paired (a paired DeLong test) or margin (nightly's)."
    ),
    model: str = typer.Option("incident-risk", "--model", help="Registered model name."),
    json_out: bool = typer.Option(False, "--json", help="Print the assessment as JSON."),
) -> None:
    """Compare logged predictions with matured outcomes, measure drift, raise the decay alarm (exit 3)."""
    import pandas as pd

    settings = resolve_settings(home)
    prepare_runtime(settings)
    try:
        when = pd.Timestamp(as_of) if as_of else None
        if when is not None and when.tzinfo is None:
            when = when.tz_localize("UTC")
    except ValueError as exc:
        print(f"incident-risk monitor: bad --as-of: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None
    from models.monitoring.alarms import AlarmConfig
    from models.monitoring.outcomes import WindowConfig
    from pipelines.flows.monitor import EXIT_CANNOT, MonitorError, MonitorOptions, RetrainConfig, run_monitor

    if retrain_gate not in ("paired", "margin"):
        print(f"incident-risk monitor: --retrain-gate must be paired or margin, got {retrain_gate!r}", file=sys.stderr)
        raise typer.Exit(2)
    gate_rule: Any = retrain_gate  # checked above

    alarm = AlarmConfig(
        window=replace(WindowConfig(), days=window_days),
        min_labels=min_labels,
        auc_margin=auc_margin,
        ece_max=ece_max,
        psi_max=psi_max,
        false_alarm_rate=false_alarm_rate,
    )
    options = MonitorOptions(
        as_of=when,
        lookback_days=lookback_days,
        alarm=alarm,
        retrain=retrain,
        retraining=RetrainConfig(
            window_days=retrain_window_days,
            from_onset=retrain_from_onset,
            gate_rule=gate_rule,
            follow_change=retrain_follow,
        ),
        model_name=model,
    )
    try:
        outcome = run_monitor(settings, options)
    except MonitorError as exc:
        print(f"incident-risk monitor: {exc}", file=sys.stderr)
        raise typer.Exit(EXIT_CANNOT) from None
    print(json.dumps(outcome.as_dict(), indent=2, default=str) if json_out else outcome.render())
    raise typer.Exit(outcome.exit_code)


def register(app: typer.Typer) -> None:
    """Add ``monitor`` to the CLI."""
    app.command()(monitor)
