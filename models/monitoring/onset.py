"""When a model's ranking got worse: the single change point of its per-deploy concordance.

The decay alarm says *that* the latest window ranks worse than the baseline; a retrain wants to
know *since when*, so it learns from the new regime and not from the rows before it. Each
matured prediction's share of the AUC (a failure: the share of non-failures scored below it; a
non-failure: the share of failures scored above it; both average to the AUC) is a time series
whose mean drops when the ranking degrades. The onset is where the cumulative sum of its
standardised values peaks (the at-most-one-change CUSUM estimate, Page 1954): before it the
values sit above their mean, after it below. Rank-based, so a change in the failure rate alone
does not move it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class OnsetConfig:
    """Each side of the change holds at least ``min_side`` matured predictions and ``min_side_failures`` failures
    (``assess`` passes the alarm's ``min_labels`` and ``min_failures``: as much as one judged window)."""

    min_side: int = 300
    min_side_failures: int = 20


def concordance(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Each prediction's share of the AUC: failures against all non-failures, non-failures against all failures."""
    y = np.asarray(y, dtype=bool)
    p = np.asarray(p, dtype=np.float64)
    neg, pos = np.sort(p[~y]), np.sort(p[y])
    out = np.full(len(p), np.nan)
    if len(neg) == 0 or len(pos) == 0:
        return out
    below = np.searchsorted(neg, p[y], side="left")
    tied = np.searchsorted(neg, p[y], side="right") - below
    out[y] = (below + 0.5 * tied) / len(neg)
    at_or_below = np.searchsorted(pos, p[~y], side="right")
    tied = at_or_below - np.searchsorted(pos, p[~y], side="left")
    out[~y] = (len(pos) - at_or_below + 0.5 * tied) / len(pos)
    return out


def degradation_onset(
    planned_at: pd.Series, y: np.ndarray, p: np.ndarray, config: OnsetConfig | None = None
) -> pd.Timestamp | None:
    """The time after which the ranking is worse (None: too few predictions to place a change).

    ``planned_at``, ``y`` (failed) and ``p`` (the logged probability) of the matured predictions
    of one model. Each class is standardised on its own (their spreads differ), then the onset is
    the argmax of the cumulative sum over time, kept ``config`` rows away from either end.
    """
    cfg = config or OnsetConfig()
    t = pd.to_datetime(pd.Series(planned_at).reset_index(drop=True), utc=True)
    order = np.argsort(t.to_numpy(), kind="stable")
    y = np.asarray(y, dtype=bool)[order]
    c = concordance(y, np.asarray(p, dtype=np.float64)[order])
    if np.isnan(c).any() or len(c) < 2 * cfg.min_side:
        return None
    z = np.empty_like(c)
    for cls in (True, False):
        part = c[y == cls]
        spread = part.std()
        z[y == cls] = (part - part.mean()) / (spread if spread > 0 else 1.0)
    cusum = np.cumsum(z)
    failures = np.cumsum(y)
    k = np.arange(1, len(c) + 1)
    allowed = (
        (k >= cfg.min_side)
        & (len(c) - k >= cfg.min_side)
        & (failures >= cfg.min_side_failures)
        & (failures[-1] - failures >= cfg.min_side_failures)
    )
    if not allowed.any():
        return None
    best = int(np.argmax(np.where(allowed, cusum, -np.inf)))
    return pd.Timestamp(t.iloc[order[best]])
