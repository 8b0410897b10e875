"""DORA trend outputs shared by the demo, the CLI and the scheduled DORA deployment: CSV, JSON and a plot."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

#: Most groups drawn in the trend plot (the busiest by deployments); more is unreadable.
PLOT_MAX_GROUPS = 8


def to_csv(metrics: pd.DataFrame) -> str:
    out = metrics.assign(period_start=metrics["period_start"].dt.strftime("%Y-%m-%d"))
    return out.to_csv(index=False)


def to_json(metrics: pd.DataFrame) -> str:
    out = metrics.assign(period_start=metrics["period_start"].dt.strftime("%Y-%m-%d"))
    return out.to_json(orient="records", indent=2) + "\n"


def plot_trends(metrics: pd.DataFrame, path: Path, period: str) -> None:
    """Four panels (deploys/day, change failure rate, restore and recovery medians) over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    busiest = metrics.groupby("group")["deployments"].sum().sort_values(ascending=False).index[:PLOT_MAX_GROUPS]
    panels = [
        ("deploys_per_day", "deploys per day"),
        ("change_failure_rate", "change failure rate"),
        ("time_to_restore_hours", "time to restore (h, median)"),
        ("failed_deployment_recovery_hours", "failed deployment recovery (h, median)"),
    ]
    fig, axes = plt.subplots(2, 2, figsize=(13, 8), sharex=True)
    try:
        for ax, (column, title) in zip(axes.flat, panels, strict=True):
            for group in busiest:
                rows = metrics[metrics["group"].eq(group)]
                ax.plot(rows["period_start"].dt.tz_localize(None), rows[column], marker=".", label=str(group))
            ax.set_title(title)
            ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize="small", loc="best")
        fig.suptitle(f"DORA metrics per {period}")
        fig.autofmt_xdate()
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
