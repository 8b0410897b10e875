"""Population stability of features and of the score: the recent window against the champion's training window.

PSI = sum over bins of (current share - reference share) x ln(current share / reference share).
Numeric features are binned at the reference's deciles (ties merged; missing values get a bin of
their own); categorical features by value. Shares are floored at ``EPS`` so an empty bin gives a
large but finite PSI. The usual reading: < 0.1 stable, 0.1-0.25 moderate, > 0.25 a real shift.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

EPS = 1e-4


def _psi(ref_share: np.ndarray, cur_share: np.ndarray) -> float:
    r = np.maximum(ref_share, EPS)
    c = np.maximum(cur_share, EPS)
    return float(np.sum((c - r) * np.log(c / r)))


def psi_numeric(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    """PSI of a numeric column, bins at the reference's quantiles; NaN when either side is empty."""
    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(current, dtype=np.float64)
    if len(ref) == 0 or len(cur) == 0:
        return math.nan
    finite = ref[np.isfinite(ref)]
    edges = np.unique(np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1])) if len(finite) else np.array([])

    def shares(x: np.ndarray) -> np.ndarray:
        ok = np.isfinite(x)
        counts = np.bincount(np.searchsorted(edges, x[ok], side="right"), minlength=len(edges) + 1)
        return np.append(counts, (~ok).sum()) / len(x)

    return _psi(shares(ref), shares(cur))


def psi_categorical(reference: pd.Series | Sequence[Any], current: pd.Series | Sequence[Any]) -> float:
    """PSI of a categorical column over the union of its values."""
    ref = pd.Series(list(reference), dtype=object).fillna("(missing)").astype(str)
    cur = pd.Series(list(current), dtype=object).fillna("(missing)").astype(str)
    if len(ref) == 0 or len(cur) == 0:
        return math.nan
    values = sorted(set(ref) | set(cur))
    r = ref.value_counts(normalize=True).reindex(values, fill_value=0.0).to_numpy()
    c = cur.value_counts(normalize=True).reindex(values, fill_value=0.0).to_numpy()
    return _psi(r, c)


def feature_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numeric: Sequence[str],
    categorical: Sequence[str],
    importance: Mapping[str, float] | None = None,
) -> pd.DataFrame:
    """PSI of every feature both frames have, with its importance rank (1 = most important), largest PSI first."""
    rows = []
    imp = dict(importance or {})
    ranked = sorted(imp, key=lambda k: -imp[k])
    for name in numeric:
        if name in reference and name in current:
            ref = pd.to_numeric(reference[name], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
            cur = pd.to_numeric(current[name], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
            rows.append({"feature": name, "kind": "numeric", "psi": psi_numeric(ref, cur)})
    for name in categorical:
        if name in reference and name in current:
            psi = psi_categorical(reference[name], current[name])
            rows.append({"feature": name, "kind": "categorical", "psi": psi})
    out = pd.DataFrame(rows, columns=["feature", "kind", "psi"])
    out["importance"] = out["feature"].map(imp).astype(float)
    out["rank"] = out["feature"].map({f: i + 1 for i, f in enumerate(ranked)}).astype("Int64")
    return out.sort_values("psi", ascending=False, kind="stable").reset_index(drop=True)


def newcomer_share(reference: pd.Series | Sequence[Any], current: pd.Series | Sequence[Any]) -> float:
    """Share of the current rows whose value (a service, an author) never appears in the reference."""
    cur = pd.Series(list(current), dtype=object)
    if len(cur) == 0:
        return math.nan
    known = set(pd.Series(list(reference), dtype=object).dropna())
    return float((~cur.isin(known) & cur.notna()).mean())
