"""Report artifacts analysts read in the MLflow UI: PNG charts and one self-contained HTML page.

Figures are plain ``matplotlib.figure.Figure`` objects rendered by Agg (no pyplot, no global
backend switch, no display needed); the HTML embeds every image
as base64, so the single file can be downloaded, mailed or archived and still show everything.
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import precision_recall_curve, roc_curve

from models.training.config import METRIC_KEYS
from models.training.evaluation import gain_curve, reliability
from models.training.train import EFFORT, LABEL, TrainResult

FIGURES = ("roc", "pr", "calibration", "gain", "importance", "groups", "baselines")


def _curves(result: TrainResult) -> dict[str, np.ndarray]:
    return {"model": result.test_scores, **result.baseline_scores}


def roc_figure(result: TrainResult) -> Figure:
    y = result.test_frame[LABEL].to_numpy()
    fig = Figure(figsize=(5, 4.5))
    ax = fig.subplots()
    for name, s in _curves(result).items():
        if len(np.unique(y)) == 2:
            fpr, tpr, _ = roc_curve(y, s)
            ax.plot(fpr, tpr, label=name, lw=2 if name == "model" else 1)
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC, test period")
    ax.legend(loc="lower right", fontsize=8)
    return fig


def pr_figure(result: TrainResult) -> Figure:
    y = result.test_frame[LABEL].to_numpy()
    fig = Figure(figsize=(5, 4.5))
    ax = fig.subplots()
    for name, s in _curves(result).items():
        if len(np.unique(y)) == 2:
            precision, recall, _ = precision_recall_curve(y, s, drop_intermediate=True)  # same line, fewer points
            ax.plot(recall, precision, label=name, lw=2 if name == "model" else 1)
    ax.axhline(y.mean(), color="k", ls=":", lw=0.8, label=f"failure rate {y.mean():.2f}")
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall, test period", ylim=(0, 1.02))
    ax.legend(loc="upper right", fontsize=8)
    return fig


def calibration_figure(result: TrainResult) -> Figure:
    y = result.test_frame[LABEL].to_numpy()
    table = reliability(y, result.test_scores)
    fig = Figure(figsize=(5, 5.5))
    ax, hist = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], "k:", lw=0.8, label="perfect")
    ax.plot(table["mean_p"], table["rate"], "o-", label=f"model ({result.calibration})")
    ax.set(ylabel="observed failure rate", title=f"Calibration, test period (ECE {result.test_metrics['ece']:.3f})")
    ax.legend(loc="upper left", fontsize=8)
    hist.hist(result.test_scores, bins=20, range=(0, 1), color="grey")
    hist.set(xlabel="predicted probability", ylabel="deploys")
    return fig


def _thinned(x: np.ndarray, y: np.ndarray, points: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """At most ``points`` + 1 points of a curve over every test deploy (170k at 1M): the same line
    at report size, drawn in a fraction of the time."""
    if len(x) <= points + 1:
        return x, y
    keep = np.unique(np.linspace(0, len(x) - 1, points + 1).round().astype(int))
    return x[keep], y[keep]


def gain_figure(result: TrainResult) -> Figure:
    y = result.test_frame[LABEL].to_numpy()
    fig = Figure(figsize=(5, 4.5))
    ax = fig.subplots()
    for name, s in _curves(result).items():
        gated, caught = _thinned(*gain_curve(y, s))
        ax.plot(gated, caught, label=name, lw=2 if name == "model" else 1)
    ax.plot([0, 1], [0, 1], "k:", lw=0.8, label="random")
    for share in (0.05, 0.1, 0.2):
        ax.axvline(share, color="grey", lw=0.5)
        ax.annotate(
            f"gate {share:.0%}",
            (share, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(2, -4),
            textcoords="offset points",
            rotation=90,
            va="top",
            fontsize=7,
            color="grey",
        )
    ax.set(
        xlabel="share of deploys gated (riskiest first)",
        ylabel="share of incident-causing deploys caught",
        title="Gain chart, test period",
    )
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def importance_figure(result: TrainResult, top: int = 20) -> Figure:
    imp = result.importance.head(top).iloc[::-1]
    fig = Figure(figsize=(6, max(2.5, 0.3 * len(imp) + 1)))
    ax = fig.subplots()
    ax.barh(imp["feature"], imp["importance"], xerr=imp["std"], color="tab:blue")
    ax.set(xlabel="drop in test ROC-AUC when shuffled", title=f"Permutation importance\n{importance_sample(result)}")
    fig.tight_layout()
    return fig


def importance_sample(result: TrainResult) -> str:
    """How many test deploys the importance was computed on: a sample on large test periods."""
    n, total = result.importance_rows, result.n_test
    repeats = result.config.permutation_repeats
    if n and n < total:
        return f"a seeded sample of {n:,} of {total:,} test deploys, {repeats} shuffles"
    return f"all {total:,} test deploys, {repeats} shuffles"


def groups_figure(result: TrainResult) -> Figure:
    groups = [(g, t) for g, t in result.group_metrics.items() if len(t)]
    fig = Figure(figsize=(7, 3 * max(1, len(groups))))
    axes = fig.subplots(len(groups) or 1, 1, squeeze=False)
    for ax, (name, table) in zip(axes[:, 0], groups, strict=False):
        table = table.sort_values("n", ascending=False).head(15)
        x = np.arange(len(table))
        ax.bar(x - 0.2, table["observed_rate"], 0.4, label="observed failure rate")
        ax.bar(x + 0.2, table["mean_p"], 0.4, label="mean predicted")
        ax.set_xticks(x, table[name], rotation=30, ha="right", fontsize=7)
        ax.set_ylabel("rate")
        ax.set_title(f"By {name} (test period)", loc="left")
        # above the axes, right of the title: never over the bars
        ax.legend(fontsize=7, ncols=2, loc="lower right", bbox_to_anchor=(1.0, 1.0), frameon=False)
    fig.tight_layout()
    return fig


def baselines_figure(result: TrainResult) -> Figure:
    keys = ("roc_auc", "pr_auc", "recall_at_10pct", "recall_at_20pct_effort", "popt")
    names = ["model", *result.baseline_metrics]
    rows = [result.test_metrics, *result.baseline_metrics.values()]
    labels = ("ROC-AUC", "PR-AUC", "recall at\n10% gated", "recall at\n20% effort", "Popt")
    fig = Figure(figsize=(8.5, 4))
    ax = fig.subplots()
    width = 0.8 / len(names)
    x = np.arange(len(keys))
    for i, (name, row) in enumerate(zip(names, rows, strict=True)):
        ax.bar(x + i * width - 0.4 + width / 2, [row[k] for k in keys], width, label=name)
    ax.set_xticks(x, labels, fontsize=8)
    ax.set(ylim=(0, 1), title="Model vs baselines, same test period")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    return fig


def figures(result: TrainResult) -> dict[str, Figure]:
    """Every report chart, by name (see ``FIGURES``)."""
    return {
        "roc": roc_figure(result),
        "pr": pr_figure(result),
        "calibration": calibration_figure(result),
        "gain": gain_figure(result),
        "importance": importance_figure(result),
        "groups": groups_figure(result),
        "baselines": baselines_figure(result),
    }


def png_bytes(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return buffer.getvalue()


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4f}"
    return html.escape(str(value))


def _table(frame: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = frame.itertuples(index=False)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def metrics_table(result: TrainResult) -> pd.DataFrame:
    rows = {"model": result.test_metrics, **result.baseline_metrics}
    return pd.DataFrame([{"scorer": name, **{k: row[k] for k in METRIC_KEYS}} for name, row in rows.items()])


def html_report(
    result: TrainResult,
    images: dict[str, bytes],
    meta: dict[str, Any],
    gate: pd.DataFrame | None = None,
    champion_comparison: pd.DataFrame | None = None,
) -> str:
    """One HTML page: data summary, the gate's decision, metrics, search, and every chart as base64 PNG.

    ``gate`` (rows of field, value) and ``champion_comparison`` (metric, challenger, champion on the
    comparison period) come from the promotion gate: the report is written after it decided.
    """
    s = result.data_summary
    excluded = ", ".join(f"{k}: {v}" for k, v in s.get("excluded", {}).items()) or "none"
    effort = "yes" if EFFORT in result.test_frame else "no (every change counts one line)"
    summary = pd.DataFrame(
        [
            ("training period", f"{s['train_start']} .. {s['train_end']}"),
            ("test period", f"{s['test_start']} .. {s['test_end']} ({s['rule']})"),
            ("deploys (train / test)", f"{s['n_train']} / {s['n_test']}"),
            ("failures (train / test)", f"{s['failures_train']} / {s['failures_test']}"),
            ("failure rate (train / test)", f"{s['failure_rate_train']:.3f} / {s['failure_rate_test']:.3f}"),
            ("excluded before training", excluded),
            ("label rule", s.get("label_rule", "")),
            (
                "feature set",
                f"{s.get('feature_set_version', '')}: {s['n_numeric_features']} numeric, "
                f"{s['n_categorical_features']} categorical",
            ),
            ("effort known", effort),
            ("chosen model", result.chosen.name),
            ("calibration", result.calibration_reason),
            (
                "risk bands",
                f"medium >= {result.model.band_thresholds_[0]:.3f}, high >= {result.model.band_thresholds_[1]:.3f}",
            ),
            *[(k, v) for k, v in meta.items()],
        ],
        columns=["", "value"],
    )
    search = pd.DataFrame(
        [
            {
                "candidate": c.name,
                **{k: c.mean_metrics[k] for k in ("roc_auc", "pr_auc", "log_loss")},
                "seconds": c.seconds,
            }
            for c in result.candidates
        ]
    )
    imgs = "".join(
        f'<figure><img alt="{name}" src="data:image/png;base64,{base64.b64encode(data).decode()}"/>'
        f"<figcaption>{name}</figcaption></figure>"
        for name, data in images.items()
    )
    groups = "".join(f"<h3>By {html.escape(g)}</h3>{_table(t)}" for g, t in result.group_metrics.items())
    gate_html = "" if gate is None else f"<h2>Promotion gate</h2>{_table(gate)}"
    if champion_comparison is not None and len(champion_comparison):
        gate_html += f"<h3>Challenger vs champion, same deploys</h3>{_table(champion_comparison)}"
    style = (
        "body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}figure{display:inline-block;margin:8px}"
    )
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>incident-risk training report</title>"
        f"<style>{style}</style></head><body><h1>incident-risk training report</h1>"
        f"<h2>Data</h2>{_table(summary)}{gate_html}<h2>Test metrics (model and baselines, same test period)</h2>"
        f"{_table(metrics_table(result))}<h2>Charts</h2>{imgs}<h2>Metrics by group</h2>{groups}"
        f"<h2>Candidates (rolling-origin validation means)</h2>{_table(search)}"
        f"<h2>Permutation importance</h2><p>Computed on {html.escape(importance_sample(result))} per feature.</p>"
        f"{_table(result.importance)}</body></html>"
    )


def write_report(
    result: TrainResult,
    out_dir: Path,
    meta: dict[str, Any],
    gate: pd.DataFrame | None = None,
    champion_comparison: pd.DataFrame | None = None,
) -> list[Path]:
    """Write every PNG, the group/importance CSVs and ``report.html`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    images = {name: png_bytes(fig) for name, fig in figures(result).items()}
    paths = []
    for name, data in images.items():
        path = out_dir / f"{name}.png"
        path.write_bytes(data)
        paths.append(path)
    for group, table in result.group_metrics.items():
        path = out_dir / f"metrics_by_{group}.csv"
        table.to_csv(path, index=False)
        paths.append(path)
    result.importance.to_csv(out_dir / "permutation_importance.csv", index=False)
    metrics_table(result).to_csv(out_dir / "baseline_comparison.csv", index=False)
    report = out_dir / "report.html"
    report.write_text(html_report(result, images, meta, gate, champion_comparison), encoding="utf-8")
    return [*paths, out_dir / "permutation_importance.csv", out_dir / "baseline_comparison.csv", report]
