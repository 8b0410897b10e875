"""DORA trend outputs shared by the demo, the CLI and the scheduled DORA deployment: CSV, JSON, a plot,
and the MLflow run analysts open (``log_dora_trends``)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd

from features.labels.attribution import Attribution
from pipelines.settings import Settings

#: The MLflow experiment of the DORA trend runs (the demo's and the scheduled deployment's).
DORA_EXPERIMENT = "incident-risk-dora"

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


def log_dora_trends(metrics: pd.DataFrame, attribution: Attribution, settings: Settings, by: str, period: str) -> str:
    """DORA ``metrics`` (per ``by`` and ``period``) as a CSV and a trend plot in an MLflow run; its id.

    One function for the demo and the scheduled DORA deployment, so both leave the same run behind.
    """
    from mlflow.tracking import MlflowClient

    from models.training.tracking import ensure_experiment

    # the client API on the settings' URI: never MLflow's process-wide tracking URI, which would
    # redirect every later MLflow call of this process
    client = MlflowClient(settings.mlflow_tracking_uri)
    experiment = ensure_experiment(client, DORA_EXPERIMENT, str(settings.artifact_root))
    run = client.create_run(experiment.experiment_id, tags={"run_kind": "dora"}, run_name=f"dora-by-{by}-{period}")
    run_id = str(run.info.run_id)
    status = "FAILED"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            client.log_param(run_id, "by", by)
            client.log_param(run_id, "period", period)
            csv_path = Path(tmp) / "dora.csv"
            csv_path.write_text(to_csv(metrics))
            plot_path = Path(tmp) / "dora_trends.png"
            if len(metrics):
                plot_trends(metrics, plot_path, period)
                client.log_artifact(run_id, str(plot_path))
            client.log_artifact(run_id, str(csv_path))
        counted = attribution.deploy_labels.query("eligible & mature")["failed"]
        client.log_metric(run_id, "deployments", float(metrics["deployments"].sum()) if len(metrics) else 0.0)
        if len(counted):
            client.log_metric(run_id, "change_failure_rate", float(counted.mean()))
        status = "FINISHED"
    finally:
        client.set_terminated(run_id, status=status)
    return run_id
