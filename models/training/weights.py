"""Recency weights: a training row's weight halves every ``half_life_days`` of its age.

After a change in how deploys fail, the rows since the change teach the new ranking and the older
ones still teach whatever did not change (how risky a service or an author is, the hour, the
day). Cutting the history to a short window keeps only the former; weighting every row by
``0.5 ** (age / half_life)`` keeps both, the older rows counting less the older they are. A
half-life ``h`` gives the history the weight of ``h / ln 2`` days of fresh rows (the integral of
the decay), so ``h = 30 ln 2 ~ 20.8`` days weighs as much as the 30-day window it replaces
(``pipelines.flows.monitor.RetrainConfig``).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

DAY = pd.Timedelta(days=1)


def recency_weights(times: pd.Series, half_life_days: float, latest: pd.Timestamp | None = None) -> np.ndarray:
    """``0.5 ** (age / half_life_days)``, the age in days counted back from ``latest`` (default: the latest time).

    Rows at ``latest`` weigh 1; a row later than ``latest`` is not expected and weighs 1 too.
    """
    if not (half_life_days > 0 and math.isfinite(half_life_days)):
        raise ValueError(f"the half-life must be a positive number of days, got {half_life_days}")
    t = pd.to_datetime(pd.Series(times), utc=True)
    if t.isna().any():
        raise ValueError("recency weights need a time for every row")
    if len(t) == 0:
        return np.zeros(0)
    end = t.max() if latest is None else pd.Timestamp(latest)
    age = np.clip(((end - t) / DAY).to_numpy(dtype=np.float64), 0.0, None)
    return np.asarray(0.5 ** (age / half_life_days), dtype=np.float64)


def effective_days(half_life_days: float) -> float:
    """The days of fresh rows the decayed history weighs as much as: ``half_life_days / ln 2``."""
    return half_life_days / math.log(2.0)


def recent_count(times: pd.Series, days: float) -> int:
    """How many of the (time-sorted) rows lie within ``days`` of the latest one."""
    t = pd.to_datetime(pd.Series(times), utc=True)
    if len(t) == 0:
        return 0
    return int((t > t.max() - pd.Timedelta(days=days)).sum())
