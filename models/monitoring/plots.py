"""The monitor's figures, for an analyst in the MLflow UI: plain ``Figure`` objects rendered by Agg (no pyplot).

- ``realised_vs_predicted``: each squad's realised failure rate against its mean predicted
  probability (point size: deploys); points far from the diagonal are miscalibrated squads.
- ``drift_by_feature``: PSI of the most drifted features, the alarm's bound drawn.
- ``auc_over_time``: the rolling ROC-AUC with its bootstrap interval, the champion's test AUC and
  the alarm's floor.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure


def realised_vs_predicted(table: pd.DataFrame, group: str) -> Figure:
    fig = Figure(figsize=(6, 5))
    ax = fig.subplots()
    if len(table):
        top = max(float(table["mean_p"].max()), float(table["observed_rate"].max()), 0.01) * 1.1
        ax.plot([0, top], [0, top], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
        colors = np.where(table["miscalibrated"].to_numpy(dtype=bool), "tab:red", "tab:blue")
        sizes = 10 + 190 * table["n"].to_numpy(dtype=float) / max(float(table["n"].max()), 1.0)
        ax.scatter(table["mean_p"], table["observed_rate"], s=sizes, c=colors, alpha=0.7)
        for r in table[table["miscalibrated"].to_numpy(dtype=bool)].itertuples():
            ax.annotate(str(getattr(r, group)), (r.mean_p, r.observed_rate), fontsize=7)
        ax.set_xlim(0, top)
        ax.set_ylim(0, top)
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("realised failure rate")
    ax.set_title(f"Realised vs predicted by {group} (red: outside the 95% range)")
    ax.legend(loc="upper left", fontsize=8)
    return fig


def drift_by_feature(feature_psi: pd.DataFrame, score_psi: float, bound: float, top: int = 15) -> Figure:
    rows = feature_psi.dropna(subset=["psi"]).head(top)
    names = [*rows["feature"].astype(str), "(score)"]
    values = [*rows["psi"].astype(float), score_psi if np.isfinite(score_psi) else 0.0]
    fig = Figure(figsize=(7, 0.35 * len(names) + 1.5))
    ax = fig.subplots()
    y = np.arange(len(names))[::-1]
    ax.barh(y, values, color=["tab:red" if v > bound else "tab:blue" for v in values])
    ax.set_yticks(y, names, fontsize=8)
    ax.axvline(bound, color="tab:red", linestyle="--", linewidth=1, label=f"alarm bound {bound}")
    ax.set_xlabel("population stability index (recent window vs training window)")
    ax.set_title("Drift by feature")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def auc_over_time(rolling: pd.DataFrame, champion_auc: float, floor: float) -> Figure:
    fig = Figure(figsize=(8, 4))
    ax = fig.subplots()
    if len(rolling):
        t = pd.to_datetime(rolling["window_end"], utc=True).dt.tz_localize(None)
        ax.plot(t, rolling["roc_auc"], marker="o", label="rolling ROC-AUC (matured labels)")
        ax.fill_between(t, rolling["roc_auc_lo"], rolling["roc_auc_hi"], alpha=0.2, label="bootstrap interval")
        if "expected_roc_auc" in rolling:  # what the window's own probabilities expect (the drift check's promise)
            ax.plot(t, rolling["expected_roc_auc"], color="tab:purple", linestyle="-.", linewidth=1,
                    label="expected from its own probabilities")  # fmt: skip
    if np.isfinite(champion_auc):
        ax.axhline(champion_auc, color="tab:green", linestyle="--", linewidth=1, label="champion's test AUC")
    if np.isfinite(floor):
        ax.axhline(floor, color="tab:red", linestyle=":", linewidth=1, label="alarm floor")
    ax.set_ylabel("ROC-AUC")
    ax.set_title("AUC over time")
    ax.legend(loc="lower left", fontsize=8)
    fig.autofmt_xdate()
    return fig


def save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
