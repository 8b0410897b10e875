"""Metrics for a risk score: ranking, probability quality, gating recall and effort-aware recall.

Definitions follow /work/shared/REFERENCE.md: gating recall (Meta's Diff Risk Score: share of
incident-causing deploys among the riskiest k%), Recall@20%Effort and Popt (Kamei et al.: review
changes by predicted risk per changed line), and ECE over ten equal-width probability bins.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import pandas as pd
from scipy.stats import rankdata
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

#: Metrics where a lower value is better (the rest: higher is better).
LOWER_IS_BETTER = frozenset({"brier", "log_loss", "ece"})


def _order(scores: np.ndarray, tiebreak: np.ndarray) -> np.ndarray:
    """Positions by descending score; ties broken by ``tiebreak`` ascending, then position."""
    return np.lexsort((np.arange(len(scores)), tiebreak, -scores))


def gating_recall(y: np.ndarray, scores: np.ndarray, share: float) -> float:
    """Share of failures among the riskiest ``share`` of deploys (ceil of share * n are gated)."""
    y = np.asarray(y, dtype=np.float64)
    positives = y.sum()
    if positives == 0 or len(y) == 0:
        return math.nan
    k = math.ceil(share * len(y))
    top = _order(np.asarray(scores, dtype=np.float64), np.zeros(len(y)))[:k]
    return float(y[top].sum() / positives)


def _effort(effort: np.ndarray | None, n: int) -> np.ndarray:
    """Lines to review per change; at least one line so that empty changes still cost something."""
    if effort is None:
        return np.ones(n)
    e = np.asarray(effort, dtype=np.float64)
    return np.where(np.isfinite(e) & (e > 1.0), e, 1.0)


def recall_at_effort(y: np.ndarray, scores: np.ndarray, effort: np.ndarray | None, share: float = 0.2) -> float:
    """Share of failures found reviewing by predicted risk per line until ``share`` of lines are read.

    A change counts as found when it is read completely within the budget (cumulative lines
    including it <= ``share`` of all lines), as in Kamei et al. 2013 and Yang et al. 2016.
    """
    y = np.asarray(y, dtype=np.float64)
    if y.sum() == 0:
        return math.nan
    e = _effort(effort, len(y))
    order = _order(np.asarray(scores, dtype=np.float64) / e, e)
    found = np.cumsum(e[order]) <= share * e.sum() * (1 + 1e-12)
    return float(y[order][found].sum() / y.sum())


def _area(y: np.ndarray, e: np.ndarray, order: np.ndarray) -> float:
    x = np.r_[0.0, np.cumsum(e[order]) / e.sum()]
    f = np.r_[0.0, np.cumsum(y[order]) / y.sum()]
    return float(np.sum((x[1:] - x[:-1]) * (f[1:] + f[:-1]) / 2.0))


def popt(y: np.ndarray, scores: np.ndarray, effort: np.ndarray | None) -> float:
    """Popt = 1 - (area(optimal) - area(model)) / (area(optimal) - area(worst)) on the effort curve."""
    y = np.asarray(y, dtype=np.float64)
    if y.sum() == 0 or y.sum() == len(y):
        return math.nan
    e = _effort(effort, len(y))
    model = _area(y, e, _order(np.asarray(scores, dtype=np.float64) / e, e))
    density = y / e
    optimal = _area(y, e, _order(density, e))
    worst = _area(y, e, _order(-density, -e))
    if optimal - worst <= 0:
        return math.nan
    return float(1.0 - (optimal - model) / (optimal - worst))


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Weighted mean |observed rate - mean probability| over equal-width probability bins."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    if len(y) == 0:
        return math.nan
    idx = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        mask = idx == b
        if mask.any():
            total += mask.sum() * abs(y[mask].mean() - p[mask].mean())
    return float(total / len(y))


def evaluate(y: np.ndarray, p: np.ndarray, effort: np.ndarray | None = None) -> dict[str, float]:
    """Every metric of ``models.training.config.METRIC_KEYS``, in that order, for probabilities ``p``.

    NaN where a metric is undefined.
    """
    y = np.asarray(y, dtype=np.int64)
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
    both = len(np.unique(y)) == 2
    return {
        "roc_auc": float(roc_auc_score(y, p)) if both else math.nan,
        "pr_auc": float(average_precision_score(y, p)) if both else math.nan,
        "brier": float(brier_score_loss(y, p)) if len(y) else math.nan,
        "log_loss": float(log_loss(y, p, labels=[0, 1])) if len(y) else math.nan,
        "ece": expected_calibration_error(y, p),
        "recall_at_5pct": gating_recall(y, p, 0.05),
        "recall_at_10pct": gating_recall(y, p, 0.10),
        "recall_at_20pct": gating_recall(y, p, 0.20),
        "recall_at_20pct_effort": recall_at_effort(y, p, effort, 0.20),
        "popt": popt(y, p, effort),
    }


def gain_curve(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(share of deploys gated, share of failures caught) when gating the riskiest first."""
    y = np.asarray(y, dtype=np.float64)
    order = _order(np.asarray(scores, dtype=np.float64), np.zeros(len(y)))
    caught = np.r_[0.0, np.cumsum(y[order])] / max(y.sum(), 1.0)
    gated = np.arange(len(y) + 1) / max(len(y), 1)
    return gated, caught


def reliability(y: np.ndarray, p: np.ndarray, bins: int = 10) -> pd.DataFrame:
    """Per probability bin: count, mean predicted probability and observed failure rate."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    idx = np.minimum((p * bins).astype(int), bins - 1)
    rows = []
    for b in range(bins):
        mask = idx == b
        if mask.any():
            rows.append(
                {"bin": b, "n": int(mask.sum()), "mean_p": float(p[mask].mean()), "rate": float(y[mask].mean())}
            )
    return pd.DataFrame(rows, columns=["bin", "n", "mean_p", "rate"])


def metrics_by_group(frame: pd.DataFrame, group: str, y: np.ndarray, p: np.ndarray, min_size: int = 1) -> pd.DataFrame:
    """Count, failures, mean probability, observed rate and ROC-AUC per value of ``group``.

    One sort by group, then a slice per group (a mask per group cost 4 s at 1M deploys' hundreds
    of squads); the AUC is the Mann-Whitney statistic on average ranks, which is ROC-AUC with ties.
    """
    keys = frame[group].astype(object).where(frame[group].notna(), "(missing)").to_numpy()
    y, p = np.asarray(y), np.asarray(p, dtype=np.float64)
    codes, uniques = pd.factorize(keys)
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(uniques) + 1))
    rows = []
    for code in sorted(range(len(uniques)), key=lambda c: str(uniques[c])):
        members = order[bounds[code] : bounds[code + 1]]
        if len(members) < min_size:
            continue
        yk, pk = y[members], p[members]
        rows.append(
            {
                group: str(uniques[code]),
                "n": len(members),
                "failures": int(yk.sum()),
                "observed_rate": float(yk.mean()),
                "mean_p": float(pk.mean()),
                "roc_auc": rank_auc(yk, pk),
            }
        )
    return pd.DataFrame(rows, columns=[group, "n", "failures", "observed_rate", "mean_p", "roc_auc"])


def rank_auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC-AUC as the Mann-Whitney U over average ranks (what ``roc_auc_score`` gives, ties included,
    without its per-call checks: per group, per bootstrap resample); NaN with one outcome only."""
    positives = y == 1
    n1 = int(positives.sum())
    n0 = len(y) - n1
    if n1 == 0 or n0 == 0:
        return math.nan
    ranks = rankdata(p)
    return float((ranks[positives].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def permutation_importance(
    score: Callable[[np.ndarray], np.ndarray],
    design: np.ndarray,
    groups: Sequence[np.ndarray],
    names: Sequence[str],
    y: np.ndarray,
    repeats: int = 3,
    seed: int = 0,
    max_rows: int | None = None,
    map_each: Callable[..., Iterable[float]] = map,
) -> tuple[pd.DataFrame, int]:
    """Mean and std drop in ROC-AUC when one feature is shuffled; returns (table, rows scored).

    Works on the matrix the model's estimator reads (``design``, encoded once), shuffling each
    feature's columns together (``groups[j]``: a numeric column and its missing indicator, a
    categorical's one-hot block), which equals shuffling the raw column and re-encoding it, without
    re-encoding per shuffle. ``max_rows`` bounds the cost on large test periods: the importance is
    computed on a seeded random sample of that many rows (the row count is returned, for the
    report). scikit-learn's ``permutation_importance`` shuffles single columns, not such groups.
    The shuffles are drawn first, in a fixed order, so ``map_each`` (an executor's ``map``) may
    score them side by side with the same result.
    """
    y = np.asarray(y)
    if len(groups) != len(names):
        raise ValueError(f"{len(names)} feature names for {len(groups)} column groups")
    rng = np.random.default_rng(seed)
    if max_rows is not None and len(y) > max_rows:
        keep = np.sort(rng.choice(len(y), size=max_rows, replace=False))
        design, y = design[keep], y[keep]
    if len(np.unique(y)) < 2:
        return pd.DataFrame(columns=["feature", "importance", "std"]), len(y)
    base = roc_auc_score(y, score(design))
    shuffles = [(np.asarray(group, dtype=np.intp), rng.permutation(len(y))) for group in groups for _ in range(repeats)]

    def drop(shuffle: tuple[np.ndarray, np.ndarray]) -> float:
        columns, perm = shuffle
        shuffled = design.copy()
        shuffled[:, columns] = design[np.ix_(perm, columns)]
        return float(base - roc_auc_score(y, score(shuffled)))

    drops = np.asarray(list(map_each(drop, shuffles)), dtype=np.float64).reshape(len(groups), repeats)
    table = pd.DataFrame(
        {"feature": [str(n) for n in names], "importance": drops.mean(axis=1), "std": drops.std(axis=1)}
    )
    table = table.sort_values("importance", ascending=False, kind="stable").reset_index(drop=True)
    return table, len(y)
