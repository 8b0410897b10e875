"""Logged predictions joined with what happened: labels once matured, by the same attribution as training.

Pure functions of frames. A prediction is judged only once its deploy's label is final
(``features.labels.attribution``: ``mature`` at ``as_of``); until then it is pending, so a recent
window never looks safer than it is (the same rule that keeps immature deploys out of training).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from models.training.evaluation import expected_calibration_error, gating_recall, metrics_by_group, rank_auc

#: Outcome of a prediction: its label is final, not yet final, or no deploy in the history matches it.
MATURED, PENDING, UNMATCHED, NOT_ELIGIBLE = "matured", "pending", "unmatched", "not_eligible"


def latest_per_deploy(predictions: pd.DataFrame) -> pd.DataFrame:
    """One prediction per deploy: the last one logged (a deploy scored by the gate then by the service)."""
    ordered = predictions.sort_values("logged_at", kind="stable")
    keyed = ordered[ordered["has_deploy_id"].fillna(False).astype(bool)]
    return keyed.drop_duplicates("deploy_id", keep="last").reset_index(drop=True)


def match_deploys(predictions: pd.DataFrame, deploys: pd.DataFrame) -> pd.Series:
    """The history's deploy id of each prediction: the id itself, else its service and commit sha."""
    ids = predictions["deploy_id"].astype("string")
    known = ids.where(ids.isin(deploys["deploy_id"].astype("string")))
    prod = deploys[deploys["environment"].astype("string") == "production"]
    by_sha = (
        prod.dropna(subset=["commit_sha"])
        .sort_values("created_at", kind="stable")
        .drop_duplicates(["service", "commit_sha"], keep="last")
    )
    key = by_sha["service"].astype("string") + "\x00" + by_sha["commit_sha"].astype("string")
    lookup = pd.Series(by_sha["deploy_id"].astype("string").to_numpy(), index=key.to_numpy())
    pkey = predictions["service"].astype("string") + "\x00" + predictions["commit_sha"].astype("string")
    via_sha = pd.Series(pkey.map(lookup).to_numpy(), index=predictions.index, dtype="string")
    return known.fillna(via_sha)


def join_outcomes(predictions: pd.DataFrame, deploy_labels: pd.DataFrame, deploys: pd.DataFrame) -> pd.DataFrame:
    """Each deploy's latest prediction with its label: columns ``label`` (0/1, NA until final) and ``outcome``.

    ``deploy_labels`` come from ``attribute(history, config, as_of)`` with the model's attribution
    config, so "failed" means what it meant in training.
    """
    latest = latest_per_deploy(predictions)
    latest["matched_id"] = match_deploys(latest, deploys).to_numpy()
    labels = deploy_labels[["deploy_id", "eligible", "failed", "mature", "matured_at"]].copy()
    labels["deploy_id"] = labels["deploy_id"].astype("string")
    out = latest.merge(labels, left_on="matched_id", right_on="deploy_id", how="left", suffixes=("", "_label"))
    out = out.drop(columns=["deploy_id_label"])
    eligible = out["eligible"].fillna(False).astype(bool)
    mature = out["mature"].fillna(False).astype(bool)
    outcome = np.where(
        out["matched_id"].isna(), UNMATCHED, np.where(~eligible, NOT_ELIGIBLE, np.where(mature, MATURED, PENDING))
    )
    out["outcome"] = outcome
    failed = out["failed"].fillna(False).astype(bool).to_numpy()
    out["label"] = pd.array(np.where(outcome == MATURED, failed.astype(np.int64), 0), dtype="Int64")
    out.loc[outcome != MATURED, "label"] = pd.NA
    return out


def matured(joined: pd.DataFrame) -> pd.DataFrame:
    """The predictions whose label is final, with ``label`` as int."""
    out = joined[joined["outcome"] == MATURED].copy()
    out["label"] = out["label"].astype(np.int64)
    return out.reset_index(drop=True)


def outcome_counts(joined: pd.DataFrame) -> dict[str, int]:
    counts = joined["outcome"].value_counts()
    return {k: int(counts.get(k, 0)) for k in (MATURED, PENDING, UNMATCHED, NOT_ELIGIBLE)}


def realised_vs_predicted(frame: pd.DataFrame, by: str, min_size: int = 1) -> pd.DataFrame:
    """Per value of ``by`` (squad, tribe, service, band): n, failures, realised and mean predicted rate, AUC,
    and whether the realised rate is outside the 95% binomial range of the prediction (``miscalibrated``)."""
    y = frame["label"].to_numpy(dtype=np.int64)
    p = frame["probability"].to_numpy(dtype=np.float64)
    table = metrics_by_group(frame, by, y, p, min_size)
    variance = frame.groupby(frame[by].astype(object).where(frame[by].notna(), "(missing)"))["probability"].apply(
        lambda s: float((s * (1 - s)).sum())
    )
    sd = np.sqrt(table[by].map(variance).to_numpy(dtype=np.float64)) / table["n"].to_numpy(dtype=np.float64)
    table["gap"] = table["observed_rate"] - table["mean_p"]
    table["z"] = np.where(sd > 0, table["gap"] / np.where(sd > 0, sd, 1.0), np.nan)
    table["miscalibrated"] = np.abs(table["z"]) > 1.96
    return table


def expected_auc(p: np.ndarray) -> float:
    """The ROC-AUC to expect if each deploy failed with its predicted probability (NaN when undefined).

    Confidence-based performance estimation (NannyML's CBPE): a (failure, success) pair is
    (i, j) with probability p_i (1 - p_j), concordant when p_i > p_j (ties count half), so the
    expected AUC is the concordant weight over all pairs' weight (i != j). It needs no labels: a
    window whose deploys are alike in risk is harder to rank for any model, and a calibrated
    model's probabilities say so there, where a baseline from other months cannot
    (``alarms.AlarmConfig.expected_auc_check``).
    """
    p = np.asarray(p, dtype=np.float64)
    if len(p) < 2:
        return math.nan
    values, group = np.unique(p, return_inverse=True)
    fail = np.bincount(group, weights=p, minlength=len(values))
    succeed = np.bincount(group, weights=1.0 - p, minlength=len(values))
    both = float(np.sum(p * (1.0 - p)))  # a deploy is not paired with itself
    below = np.cumsum(succeed) - succeed
    concordant = float(np.sum(fail * below)) + 0.5 * (float(np.sum(fail * succeed)) - both)
    pairs = float(p.sum() * (1.0 - p).sum()) - both
    return concordant / pairs if pairs > 0 else math.nan


def _auc_and_gap(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """ROC-AUC and realised minus expected ROC-AUC of the same deploys (``expected_auc``)."""
    auc = rank_auc(y, p)
    return auc, auc - expected_auc(p)


def bootstrap_values(
    y: np.ndarray, p: np.ndarray, metric: Callable[[np.ndarray, np.ndarray], Any], n_boot: int, seed: int = 0
) -> np.ndarray:
    """``metric`` on ``n_boot`` resamples of the deploys (the finite ones); empty when undefined too often.

    A metric of several values (a tuple) gives one row per resample, all from the same draw.
    """
    if len(y) == 0 or n_boot <= 0:
        return np.zeros(0)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        v = metric(y[idx], p[idx])
        if np.all(np.isfinite(v)):
            values.append(v)
    return np.asarray(values if len(values) >= n_boot // 2 else [], dtype=np.float64)


def bootstrap_interval(
    y: np.ndarray, p: np.ndarray, metric: Callable[[np.ndarray, np.ndarray], float], n_boot: int, seed: int = 0,
    level: float = 0.9,
) -> tuple[float, float]:  # fmt: skip
    """A percentile bootstrap interval of ``metric`` (resampling deploys); NaN when undefined."""
    return _percentiles(bootstrap_values(y, p, metric, n_boot, seed), level)


def _percentiles(values: np.ndarray, level: float) -> tuple[float, float]:
    if len(values) == 0:
        return math.nan, math.nan
    tail = (1 - level) / 2
    return float(np.quantile(values, tail)), float(np.quantile(values, 1 - tail))


def _brier(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean((p - y) ** 2)) if len(y) else math.nan


@dataclass(frozen=True)
class WindowConfig:
    """Rolling windows: ``days`` long, ending every ``step_days``; ``n_boot`` bootstrap resamples for intervals."""

    days: int = 28
    step_days: int = 7
    n_boot: int = 200
    level: float = 0.9
    seed: int = 0
    max_windows: int | None = None  # None: back to the first prediction; 1: only the latest


def window_metrics(frame: pd.DataFrame, config: WindowConfig, seed: int = 0) -> dict[str, float]:
    """ROC-AUC (with a bootstrap interval), Brier, ECE (with interval), gating recall at 10%, rates."""
    y = frame["label"].to_numpy(dtype=np.int64)
    p = frame["probability"].to_numpy(dtype=np.float64)
    both = bootstrap_values(y, p, _auc_and_gap, config.n_boot, seed)  # one rank_auc per resample for both
    aucs, gaps = (both[:, 0], both[:, 1]) if both.ndim == 2 else (both, both)
    auc_lo, auc_hi = _percentiles(aucs, config.level)
    ece_lo, ece_hi = bootstrap_interval(y, p, expected_calibration_error, config.n_boot, seed + 1, config.level)
    return {
        "n": float(len(y)),
        "failures": float(y.sum()),
        "realised_rate": float(y.mean()) if len(y) else math.nan,
        "predicted_rate": float(p.mean()) if len(p) else math.nan,
        "roc_auc": rank_auc(y, p),
        "roc_auc_lo": auc_lo,
        "roc_auc_hi": auc_hi,
        # the bootstrap standard error: the alarm's repeated-looks test needs a level far in the tail,
        # which 200 percentile resamples cannot place (models/monitoring/alarms.py)
        "roc_auc_se": float(np.std(aucs, ddof=1)) if len(aucs) > 1 else math.nan,
        # what the window's own probabilities promise, and the noise of falling short of it (same resamples)
        "expected_roc_auc": expected_auc(p),
        "roc_auc_gap_se": float(np.std(gaps, ddof=1)) if len(gaps) > 1 else math.nan,
        "brier": _brier(y, p),
        "ece": expected_calibration_error(y, p) if len(y) else math.nan,
        "ece_lo": ece_lo,
        "ece_hi": ece_hi,
        "recall_at_10pct": gating_recall(y, p, 0.10),
    }


def rolling_metrics(frame: pd.DataFrame, config: WindowConfig, end: pd.Timestamp | None = None) -> pd.DataFrame:
    """Metrics of matured predictions over windows of ``config.days`` (by planned time) ending every step.

    The last window ends at ``end`` (default: the latest planned time); windows go back while any
    prediction is left. One row per window: ``window_end`` then ``window_metrics``.
    """
    if frame.empty:
        return pd.DataFrame(columns=["window_end", *window_metrics(frame, config)])
    t = pd.to_datetime(frame["planned_at"], utc=True)
    last = pd.Timestamp(end) if end is not None else t.max()
    first = t.min()
    rows = []
    stop = last
    i = 0
    # at least the latest window, also when every matured prediction shares one planned time
    while (stop > first or i == 0) and (config.max_windows is None or i < config.max_windows):
        inside = (t > stop - pd.Timedelta(days=config.days)) & (t <= stop)
        rows.append({"window_end": stop, **window_metrics(frame[inside.to_numpy()], config, config.seed + 7 * i)})
        stop = stop - pd.Timedelta(days=config.step_days)
        i += 1
    return pd.DataFrame(rows[::-1]).reset_index(drop=True)


GROUPS = ("squad", "tribe", "service", "band")


def per_group(frame: pd.DataFrame, groups: Sequence[str] = GROUPS) -> dict[str, pd.DataFrame]:
    """``realised_vs_predicted`` for each grouping the frame has."""
    return {g: realised_vs_predicted(frame, g) for g in groups if g in frame}
