"""``incident-risk dora``: DORA metrics of the stored history, as a table, CSV or JSON, and a trend plot."""

from __future__ import annotations

import enum
import io
import math
from pathlib import Path
from typing import cast

import pandas as pd
import typer
from rich.console import Console
from rich.table import Table

from features.history.store import HistoryStore
from features.labels.attribution import Attribution, AttributionConfig, attribute, max_lag_from
from features.labels.dora import DoraConfig, Grouping, Period, dora_metrics
from pipelines.console import LOG_WIDTH, make_console
from pipelines.flows.dora import plot_trends, to_csv, to_json
from pipelines.settings import HomeOption, resolve_settings


class By(enum.StrEnum):
    service = "service"
    squad = "squad"
    tribe = "tribe"
    all = "all"


class PeriodChoice(enum.StrEnum):
    week = "week"
    month = "month"


class Format(enum.StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


def render_table(metrics: pd.DataFrame, attribution: Attribution, config: AttributionConfig) -> Table:
    """The metrics as a rich table, with what was left out of the rates in the caption."""
    lag = "none (DevLake)" if config.max_lag is None else f"{config.max_lag.total_seconds() / 3600:g} h"
    s = attribution.summary
    table = Table(
        title="DORA metrics",
        caption=(
            f"max lag {lag}; {s.get('deploys_immature', 0)} immature deploys left out of the change failure rate; "
            f"{s.get('incidents_unlinked', 0)} of {s.get('incidents', 0)} incidents linked to no change"
        ),
    )
    headers = [
        ("group", "left"),
        ("period", "left"),
        ("deploys", "right"),
        ("per day", "right"),
        ("CFR", "right"),
        ("failed/mature", "right"),
        ("failed/flips", "right"),
        ("incidents", "right"),
        ("restore h (median)", "right"),
        ("recovery h (median)", "right"),
    ]
    for name, justify in headers:
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for row in metrics.to_dict("records"):
        table.add_row(
            str(row["group"]),
            row["period_start"].strftime("%Y-%m-%d"),
            str(row["deployments"]),
            _num(row["deploys_per_day"], "{:.2f}"),
            _num(row["change_failure_rate"], "{:.1%}"),
            f"{row['failed_deployments']}/{row['mature_deployments']}",
            f"{row['failed_flips']}/{row['flips']}",
            str(row["incidents"]),
            _num(row["time_to_restore_hours"], "{:.1f}"),
            _num(row["failed_deployment_recovery_hours"], "{:.1f}"),
        )
    return table


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None or math.isnan(value) else fmt.format(value)


def register(app: typer.Typer) -> None:
    """Add the ``dora`` command to ``app``."""

    @app.command("dora")
    def dora(
        home: Path | None = HomeOption,
        by: By = typer.Option(By.service, "--by", help="Group by service, squad, tribe, or all together."),
        period: PeriodChoice = typer.Option(PeriodChoice.week, "--period", help="Bucket by week or month."),
        fmt: Format = typer.Option(Format.table, "--format", help="Output as a table, CSV or JSON."),
        out: Path | None = typer.Option(None, "--out", help="Write the output to FILE instead of the terminal."),
        max_lag: str = typer.Option(
            "24", "--max-lag", help="Attribution window in hours, or 'none' for DevLake's rule (no window)."
        ),
        plot: Path | None = typer.Option(None, "--plot", help="Also draw a DORA trend plot to FILE.png."),
    ) -> None:
        """DORA metrics (deployment frequency, change failure rate, time to restore, recovery time)."""
        settings = resolve_settings(home)
        try:
            lag = max_lag_from(max_lag)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--max-lag") from None
        config = AttributionConfig(max_lag=lag)
        history = HistoryStore(settings.store_dir).read_history()
        attribution = attribute(history, config)
        dora_config = DoraConfig(by=cast(Grouping, by.value), period=cast(Period, period.value))
        metrics = dora_metrics(history, attribution, dora_config)

        text = ""
        if fmt is Format.table:
            table = render_table(metrics, attribution, config)
            if out:
                buffer = io.StringIO()
                Console(file=buffer, width=LOG_WIDTH).print(table)
                text = buffer.getvalue()
            else:
                make_console().print(table)
        else:
            text = to_csv(metrics) if fmt is Format.csv else to_json(metrics)
            if not out:
                typer.echo(text, nl=False)
        if out:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(text, encoding="utf-8")
        if plot:
            plot_trends(metrics, plot, period.value)
        if out or plot:
            written = ", ".join(str(p) for p in (out, plot) if p)
            typer.echo(f"wrote {written}", err=True)
