"""Small array transformers whose fitted state is plain numpy arrays.

A pandas ``ColumnTransformer`` costs ~8 ms per single-row prediction; these transformers work on
numpy arrays and keep every fitted parameter as an array or a tuple of arrays, so serving can
apply the same preprocessing with a handful of vector operations (see ``RiskClassifier.export``).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data


def signed_log1p(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """log1p that keeps the sign: change sizes and counts are heavy-tailed, a few are negative.

    ``out``: where to write it (may be a slice of a larger matrix), so a design is built in place.
    """
    x = np.asarray(x, dtype=np.float64)
    out = np.abs(x, out=out)
    np.log1p(out, out=out)
    return np.copysign(out, x, out=out)


class LogStandardizer(TransformerMixin, BaseEstimator):
    """Numeric columns -> signed log1p, median imputation, standardisation, missing indicators.

    Indicators are added for the columns that had missing values in the training data only, as
    ``SimpleImputer(add_indicator=True)`` does, so the output width is fixed at fit time.
    """

    def __init__(self, log: bool = True, add_indicator: bool = True) -> None:
        self.log = log
        self.add_indicator = add_indicator

    def fit(self, X: Any, y: Any = None) -> LogStandardizer:
        X = validate_data(self, X, dtype=np.float64, ensure_all_finite="allow-nan")
        Z = signed_log1p(X) if self.log else X
        missing = np.isnan(Z)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-missing column has no median
            median = np.nanmedian(Z, axis=0)
        median = np.where(np.isnan(median), 0.0, median)
        filled = np.where(missing, median, Z)
        mean = filled.mean(axis=0)
        scale = filled.std(axis=0)
        self.median_ = median
        self.mean_ = mean
        self.scale_ = np.where(scale > 1e-12, scale, 1.0)
        self.indicator_features_ = (
            np.flatnonzero(missing.any(axis=0)) if self.add_indicator else np.zeros(0, dtype=np.intp)
        )
        return self

    @property
    def n_features_out_(self) -> int:
        """Output width: one column per input column, plus the missing indicators."""
        check_is_fitted(self, "median_")
        return len(self.median_) + len(self.indicator_features_)

    def transform(self, X: Any) -> np.ndarray:
        X = validate_data(self, X, dtype=np.float64, ensure_all_finite="allow-nan", reset=False)
        return self.transform_into(X, np.empty((len(X), self.n_features_out_)))

    def transform_into(self, X: np.ndarray, out: np.ndarray) -> np.ndarray:
        """``transform`` of a checked float array, written into ``out`` (e.g. a slice of a design matrix).

        At 1M deploys building the linear design cost as much as fitting it; writing each step's
        columns in place saves the temporaries and the copies of stacking them.
        """
        check_is_fitted(self, "median_")
        k = X.shape[1]
        Z = out[:, :k]
        if self.log:
            signed_log1p(X, out=Z)
        else:
            Z[...] = X
        missing = np.isnan(Z)
        np.copyto(Z, np.broadcast_to(self.median_, Z.shape), where=missing)
        Z -= self.mean_
        Z /= self.scale_
        out[:, k:] = missing[:, self.indicator_features_]
        return out

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags


def _as_2d(X: Any) -> np.ndarray:
    arr = np.asarray(X, dtype=object)
    return arr.reshape(-1, 1) if arr.ndim == 1 else arr


def _text_column(col: np.ndarray) -> np.ndarray:
    """One categorical column as str, with None for missing (NaN, None, pd.NA).

    A column of strings (the usual case) is used as it is: converting every cell with ``str``
    cost more than the fits it fed at 1M deploys; only mixed columns (numbers, booleans) convert.
    """
    if pd.api.types.infer_dtype(col, skipna=True) in ("string", "empty"):
        missing = pd.isna(col)
        if not missing.any():
            return col
        out = col.copy()
        out[missing] = None
        return out
    out = col.astype(str).astype(object)
    out[pd.isna(col)] = None
    return out


class _CategoryLearner(TransformerMixin, BaseEstimator):
    """Shared fit for the categorical encoders: the frequent categories of each column.

    Categories seen fewer than ``min_frequency`` times, beyond ``max_categories`` per column, or
    unseen at fit time all encode as "unknown", so a new squad or service never breaks scoring.
    """

    def __init__(self, min_frequency: int = 1, max_categories: int | None = 30) -> None:
        self.min_frequency = min_frequency
        self.max_categories = max_categories

    def fit(self, X: Any, y: Any = None) -> _CategoryLearner:
        validate_data(self, X, dtype=None, ensure_all_finite=False, skip_check_array=False)
        arr = _as_2d(X)
        cats: list[np.ndarray] = []
        for j in range(arr.shape[1]):
            counted = pd.Series(_text_column(arr[:, j]), dtype=object).value_counts(dropna=True)
            values = counted.index.to_numpy(dtype=object).astype(str)
            counts = counted.to_numpy()
            keep = counts >= self.min_frequency
            values, counts = values[keep], counts[keep]
            order = np.lexsort((values, -counts))  # most frequent first, ties by name: deterministic
            if self.max_categories is not None:
                order = order[: self.max_categories]
            cats.append(np.sort(values[order]).astype(object))
        self.categories_ = cats
        return self

    def _codes(self, X: Any) -> np.ndarray:
        """Integer code per cell (-1 = unknown or missing), by hashing: no Python loop over rows."""
        check_is_fitted(self, "categories_")
        validate_data(self, X, dtype=None, ensure_all_finite=False, reset=False)
        arr = _as_2d(X)
        codes = np.full(arr.shape, -1, dtype=np.int64)
        for j, cats in enumerate(self.categories_):
            if len(cats):
                codes[:, j] = pd.Index(cats, dtype=object).get_indexer(_text_column(arr[:, j]))
        return codes

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.input_tags.string = True
        tags.input_tags.categorical = True
        return tags


class OneHotArray(_CategoryLearner):
    """One-hot encoding fitted on the training fold only; unknown/missing -> all zeros."""

    @property
    def n_features_out_(self) -> int:
        check_is_fitted(self, "categories_")
        return sum(len(c) for c in self.categories_)

    def transform(self, X: Any) -> np.ndarray:
        return self.transform_into(X, np.empty((len(_as_2d(X)), self.n_features_out_)))

    def transform_into(self, X: Any, out: np.ndarray) -> np.ndarray:
        """``transform`` written into ``out`` (e.g. a slice of a design matrix)."""
        codes = self._codes(X)
        out[...] = 0.0
        offset = 0
        for j, cats in enumerate(self.categories_):
            rows = np.flatnonzero(codes[:, j] >= 0)
            out[rows, offset + codes[rows, j]] = 1.0
            offset += len(cats)
        return out


class OrdinalArray(_CategoryLearner):
    """Category codes for HistGradientBoosting's native categorical support; unknown -> NaN."""

    @property
    def n_features_out_(self) -> int:
        check_is_fitted(self, "categories_")
        return len(self.categories_)

    def transform(self, X: Any) -> np.ndarray:
        return self.transform_into(X, np.empty((len(_as_2d(X)), self.n_features_out_)))

    def transform_into(self, X: Any, out: np.ndarray) -> np.ndarray:
        """``transform`` written into ``out`` (e.g. a slice of a design matrix)."""
        codes = self._codes(X)
        out[...] = codes
        out[codes < 0] = np.nan
        return out
