"""The risk model: preprocessing + classifier, calibrated on held-out training time, with bands.

``RiskClassifier`` turns a feature frame (or numeric/categorical arrays) into a probability with
either a regularised logistic regression (log/scale numerics, one-hot categoricals, missing
indicators) or HistGradientBoosting (raw numerics, native categoricals). ``RiskModel`` wraps it
with rolling-origin out-of-fold calibration (isotonic or sigmoid, chosen on later folds) and
risk-band thresholds. Both follow scikit-learn's estimator rules, and every fitted part is a
numpy array or a plain sklearn estimator, so ``score_arrays`` skips pandas entirely at serving.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.model_selection import TimeSeriesSplit
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_array, check_consistent_length, check_is_fitted, column_or_1d, validate_data

from features.history.choices import check_choice, choices_of
from models.training.config import Band, CalibrationMethod
from models.training.transformers import LogStandardizer, OneHotArray, OrdinalArray

#: Probabilities are kept inside (EPS, 1 - EPS) so that log loss stays finite after isotonic steps.
EPS = 1e-4
BANDS: tuple[Band, ...] = choices_of(Band)  # type: ignore[assignment]


#: What ``RiskClassifier.fit_preprocessing`` learns, shared by ``with_preprocessing_of``.
_PREPROCESSING_ATTRIBUTES = ("numeric_", "categorical_", "classes_", "tree_", "numeric_step_", "categorical_step_")
#: What scikit-learn's ``validate_data`` records about the input, when it does.
_INPUT_ATTRIBUTES = ("n_features_in_", "feature_names_in_")


def is_tree(model: Any) -> bool:
    """Whether a model is boosting (a bare estimator, or a ``RiskClassifier`` by its estimator).

    The family decides the preprocessing: raw numerics and native categoricals for boosting, log,
    scaling and one-hot for everything else.
    """
    if isinstance(model, RiskClassifier):
        return is_tree(model._base())
    return isinstance(model, HistGradientBoostingClassifier)


def _split_input(X: Any, numeric: Sequence[str], categorical: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(numeric float array, categorical object array) from a frame or a numeric-then-categorical array."""
    if isinstance(X, pd.DataFrame):
        missing = [c for c in (*numeric, *categorical) if c not in X.columns]
        if missing:
            raise ValueError(f"input lacks feature columns {missing}")
        num = np.empty((len(X), len(numeric)), dtype=np.float64)
        for j, c in enumerate(numeric):
            col = X[c]
            if not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
                col = pd.to_numeric(col.astype(object), errors="coerce")
            num[:, j] = col.to_numpy(dtype=np.float64, na_value=np.nan)
        cat = X[list(categorical)].astype(object).to_numpy() if categorical else np.zeros((len(X), 0), dtype=object)
        return num, cat
    arr = np.asarray(X, dtype=object)
    if arr.ndim != 2:
        raise ValueError(f"expected 2-D input, got shape {arr.shape}")
    k = len(numeric)
    if arr.shape[1] != k + len(categorical):
        raise ValueError(f"X has {arr.shape[1]} features, but model expects {k + len(categorical)}")
    return arr[:, :k].astype(np.float64), arr[:, k:]


class RiskClassifier(ClassifierMixin, BaseEstimator):
    """Preprocessing fitted on the training data only, then ``estimator``.

    ``numeric``/``categorical`` name the frame's feature columns; left empty, every column of an
    array (or every numeric column of a frame) is numeric. A HistGradientBoosting estimator gets
    raw numerics and native categoricals; anything else gets ``LogStandardizer`` + ``OneHotArray``.
    """

    numeric_: list[Any]
    categorical_: list[Any]

    def __init__(
        self,
        estimator: Any = None,
        numeric: Sequence[str] = (),
        categorical: Sequence[str] = (),
        min_frequency: int = 5,
        max_categories: int = 30,
    ) -> None:
        self.estimator = estimator
        self.numeric = numeric
        self.categorical = categorical
        self.min_frequency = min_frequency
        self.max_categories = max_categories

    def _columns(self, X: Any) -> tuple[list[Any], list[Any]]:
        if self.numeric or self.categorical:
            return list(self.numeric), list(self.categorical)
        if isinstance(X, pd.DataFrame):
            num = [c for c in X.columns if pd.api.types.is_numeric_dtype(X[c]) and not pd.api.types.is_bool_dtype(X[c])]
            return num, [c for c in X.columns if c not in num]
        return list(range(np.asarray(X).shape[1])), []

    def _validated(self, X: Any, reset: bool) -> tuple[np.ndarray, np.ndarray]:
        """Check X (shape, sparsity, width, names) and split it into numeric and categorical arrays."""
        if isinstance(X, pd.DataFrame):
            numeric, categorical = self._columns(X) if reset else (self.numeric_, self.categorical_)
            missing = [c for c in (*numeric, *categorical) if c not in X.columns]
            if missing:
                raise ValueError(f"input lacks feature columns {missing}")
            X = X[[*numeric, *categorical]]
            validate_data(self, X, reset=reset, skip_check_array=True)
            if X.shape[1] == 0 or len(X) == 0:
                check_array(np.zeros(X.shape))  # raises sklearn's standard empty-data message
            num, cat = _split_input(X, numeric, categorical)
        else:
            arr = validate_data(self, X, reset=reset, dtype=None, ensure_all_finite=False)
            numeric, categorical = self._columns(arr) if reset else (self.numeric_, self.categorical_)
            num, cat = _split_input(arr, numeric, categorical)
        if np.isinf(num).any():
            raise ValueError("Input X contains infinity or a value too large for dtype('float64').")
        if reset:
            self.numeric_, self.categorical_ = list(numeric), list(categorical)
        return num, cat

    def fit(self, X: Any, y: Any, X_val: Any = None, y_val: Any = None) -> RiskClassifier:
        """Fit preprocessing and estimator on (X, y).

        With ``X_val``/``y_val`` (a later, time-ordered validation period) a boosting estimator
        stops early on that period's loss, HistGradientBoosting's own ``early_stopping`` with
        ``n_iter_no_change``; other estimators ignore them.
        """
        design, y = self.fit_preprocessing(X, y)
        if self.tree_ and X_val is not None and y_val is not None:
            return self.fit_design(design, y, self.design(X_val), column_or_1d(y_val))
        return self.fit_design(design, y)

    def fit_preprocessing(self, X: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        """Fit everything but the estimator on (X, y); returns the design matrix and y for ``fit_design``.

        ``fit`` is this plus ``fit_design``. Split so that a search fits one fold's preprocessing
        once and shares its design matrices with every candidate of the same family
        (``with_preprocessing_of``): at 1M deploys the encoding cost as much as a linear fit.
        """
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None")
        num, cat = self._validated(X, reset=True)
        y = column_or_1d(y, warn=True)
        check_consistent_length(num, y)
        check_classification_targets(y)
        self.classes_ = np.unique(y)
        if len(self.classes_) < 2:
            raise ValueError(f"{type(self).__name__} needs 2 classes in y; got 1 class")
        self.tree_ = is_tree(self._base())
        if self.tree_:
            self.numeric_step_ = None
            ordinal = OrdinalArray(self.min_frequency, self.max_categories)
            self.categorical_step_ = ordinal.fit(cat) if cat.shape[1] else None
        else:
            self.numeric_step_ = LogStandardizer().fit(num) if num.shape[1] else None
            onehot = OneHotArray(self.min_frequency, self.max_categories)
            self.categorical_step_ = onehot.fit(cat) if cat.shape[1] else None
        return self._design(num, cat), y

    def fit_design(
        self, design: np.ndarray, y: np.ndarray, val_design: np.ndarray | None = None, y_val: np.ndarray | None = None
    ) -> RiskClassifier:
        """Fit the estimator on a design matrix made by this classifier's fitted preprocessing.

        With a validation design a boosting estimator stops early on it (see ``fit``).
        """
        self.estimator_ = clone(self._base())
        if self.tree_:
            mask = np.r_[np.zeros(len(self.numeric_), dtype=bool), np.ones(len(self.categorical_), dtype=bool)]
            self.estimator_.set_params(categorical_features=mask if mask.any() else None)
        if self.tree_ and val_design is not None and y_val is not None:
            self.estimator_.set_params(early_stopping=True)
            self.estimator_.fit(design, y, X_val=val_design, y_val=y_val)
        else:
            self.estimator_.fit(design, y)
        return self

    def with_preprocessing_of(self, prepared: RiskClassifier) -> RiskClassifier:
        """A clone of this classifier carrying ``prepared``'s fitted preprocessing, ready for ``fit_design``.

        Only for a classifier whose preprocessing would be fitted the same way: same columns, same
        category rules, same family (linear or boosting).
        """
        same = (
            list(self.numeric) == list(prepared.numeric)
            and list(self.categorical) == list(prepared.categorical)
            and (self.min_frequency, self.max_categories) == (prepared.min_frequency, prepared.max_categories)
            and is_tree(self._base()) == prepared.tree_
        )
        if not same:
            raise ValueError("the prepared classifier's preprocessing differs from this classifier's")
        out = clone(self)
        for name in (*_PREPROCESSING_ATTRIBUTES, *(a for a in _INPUT_ATTRIBUTES if hasattr(prepared, a))):
            setattr(out, name, getattr(prepared, name))
        return out

    def _base(self) -> Any:
        return self.estimator if self.estimator is not None else LogisticRegression(C=0.3, max_iter=2000)

    @property
    def n_iter_(self) -> int | None:
        """Boosting iterations of the fitted estimator (None for a linear model)."""
        check_is_fitted(self, "estimator_")
        return int(self.estimator_.n_iter_) if self.tree_ else None

    def _design(self, num: np.ndarray, cat: np.ndarray) -> np.ndarray:
        """The design matrix, each step writing its own columns of it (no per-step arrays to stack)."""
        num_step, cat_step = self.numeric_step_, self.categorical_step_
        k = num.shape[1] if num_step is None else num_step.n_features_out_
        out = np.empty((len(num), k + (0 if cat_step is None else cat_step.n_features_out_)))
        if num_step is None:
            out[:, :k] = num
        else:
            num_step.transform_into(num, out[:, :k])
        if cat_step is not None:
            cat_step.transform_into(cat, out[:, k:])
        return out

    def to_arrays(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        """(numeric float array, categorical object array) in the model's column order."""
        check_is_fitted(self, "estimator_")
        return self._validated(X, reset=False)

    def design(self, X: Any) -> np.ndarray:
        """The matrix the estimator sees (after preprocessing); a frame may carry extra columns.

        Needs only the fitted preprocessing (``fit_preprocessing``), not the estimator.
        """
        check_is_fitted(self, "tree_")
        return self._design(*self._validated(X, reset=False))

    def design_groups(self) -> list[np.ndarray]:
        """For each feature (``numeric_`` then ``categorical_``), the design-matrix columns it becomes.

        A numeric column is one column plus its missing indicator (linear model), a categorical one
        column (boosting) or its one-hot block (linear model, empty when no level was kept): shuffling
        a group shuffles the feature, so permutation importance can work on the matrix encoded once.
        """
        check_is_fitted(self, "estimator_")
        n_num = len(self.numeric_)
        groups = [[j] for j in range(n_num)]
        offset = n_num
        if self.numeric_step_ is not None:
            for i, j in enumerate(self.numeric_step_.indicator_features_):
                groups[int(j)].append(n_num + i)
            offset += len(self.numeric_step_.indicator_features_)
        step = self.categorical_step_
        widths = [1 if self.tree_ else len(c) for c in step.categories_] if step is not None else []
        for width in widths:
            groups.append(list(range(offset, offset + width)))
            offset += width
        return [np.asarray(g, dtype=np.intp) for g in groups]

    def predict_proba(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "estimator_")
        return np.asarray(self.estimator_.predict_proba(self.design(X)))

    def predict(self, X: Any) -> np.ndarray:
        proba = self.predict_proba(X)
        return np.asarray(self.classes_[np.argmax(proba, axis=1)])

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags


class ScoreCalibrator(BaseEstimator):
    """Maps a raw score to a calibrated probability: ``isotonic`` steps or ``sigmoid`` on the logit.

    Fitted state is arrays/floats only (``x_``/``y_`` knots for isotonic, ``a_``/``b_`` for sigmoid).
    """

    def __init__(self, method: str = "sigmoid") -> None:
        self.method = method

    def fit(self, scores: Any, y: Any) -> ScoreCalibrator:
        s = np.asarray(scores, dtype=np.float64).ravel()
        t = np.asarray(y, dtype=np.float64).ravel()
        if self.method == "isotonic":
            iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(s, t)
            self.x_ = np.asarray(iso.X_thresholds_, dtype=np.float64)
            self.y_ = np.asarray(iso.y_thresholds_, dtype=np.float64)
        elif self.method == "sigmoid":
            z = _logit(s).reshape(-1, 1)
            if len(np.unique(t)) < 2:
                self.a_, self.b_ = 0.0, float(_logit(np.array([t.mean() if len(t) else 0.5]))[0])
            else:
                lr = LogisticRegression(C=1e4, max_iter=1000).fit(z, t.astype(int))
                self.a_, self.b_ = float(lr.coef_[0, 0]), float(lr.intercept_[0])
        else:
            raise ValueError(f"unknown calibration method {self.method!r}; expected isotonic or sigmoid")
        return self

    def predict(self, scores: Any) -> np.ndarray:
        check_is_fitted(self)
        s = np.asarray(scores, dtype=np.float64).ravel()
        if self.method == "isotonic":
            p = np.interp(s, self.x_, self.y_)
        else:
            p = 1.0 / (1.0 + np.exp(-(self.a_ * _logit(s) + self.b_)))
        return np.clip(p, EPS, 1.0 - EPS)


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(q / (1.0 - q))


def rolling_origin_splits(n: int, n_splits: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Expanding-window (train, validation) positions over rows already sorted by time."""
    if n <= n_splits:
        raise ValueError(f"need more than {n_splits} rows for {n_splits} time-ordered folds, got {n}")
    return [(tr, va) for tr, va in TimeSeriesSplit(n_splits=n_splits).split(np.zeros(n))]


def fold_scores(
    classifier: RiskClassifier, X: Any, y: np.ndarray, tr: np.ndarray, va: np.ndarray, early_stopping: bool = False
) -> tuple[np.ndarray, int | None]:
    """Scores of the validation rows ``va`` from a clone fitted on the earlier rows ``tr``.

    With ``early_stopping`` a boosting model stops on the validation period's loss; its iteration
    count is returned (None otherwise) so the final fit can reuse it. A training part with one
    class scores its prior.
    """
    Xtr = X.iloc[tr] if isinstance(X, pd.DataFrame) else np.asarray(X)[tr]
    Xva = X.iloc[va] if isinstance(X, pd.DataFrame) else np.asarray(X)[va]
    if len(np.unique(y[tr])) < 2:
        return np.full(len(va), float(np.mean(y[tr]))), None
    validation = (Xva, y[va]) if early_stopping else (None, None)
    fitted = clone(classifier).fit(Xtr, y[tr], *validation)
    return fitted.predict_proba(Xva)[:, 1], fitted.n_iter_ if early_stopping else None


def out_of_fold_scores(
    classifier: RiskClassifier, X: Any, y: np.ndarray, n_splits: int
) -> tuple[np.ndarray, np.ndarray]:
    """Scores of each validation block from a model fitted on all earlier rows (rolling origin).

    Returns (scores, fold number per row); rows before the first validation block get fold -1 and
    NaN scores. A fold whose training part has one class scores the training prior instead.
    """
    n = len(y)
    scores = np.full(n, np.nan)
    folds = np.full(n, -1, dtype=np.int64)
    for k, (tr, va) in enumerate(rolling_origin_splits(n, n_splits)):
        scores[va] = fold_scores(classifier, X, y, tr, va)[0]
        folds[va] = k
    return scores, folds


def choose_calibration(
    scores: np.ndarray, y: np.ndarray, folds: np.ndarray, method: CalibrationMethod, min_isotonic_positives: int
) -> tuple[str, dict[str, float], str]:
    """Pick isotonic or sigmoid by log loss on the last validation fold, fitted on the earlier ones.

    Isotonic needs many positives to avoid overfitting its steps; below ``min_isotonic_positives``
    in the calibration data it is not considered. Returns (method, {method: held-out log loss},
    the reason in words: the report must not credit the loss when the positives rule decided).
    """
    check_choice("calibration", method, CalibrationMethod)
    if method != "auto":
        return method, {}, f"{method}, as configured"
    have = folds >= 0
    last = folds.max()
    fit_rows, eval_rows = have & (folds < last), folds == last
    losses: dict[str, float] = {}
    t = y.astype(np.float64)
    if len(np.unique(t[fit_rows])) < 2 or len(np.unique(t[eval_rows])) < 2:
        return "sigmoid", losses, "sigmoid: a validation fold holds one outcome only, so the methods cannot be compared"
    for m in ("sigmoid", "isotonic"):
        cal = ScoreCalibrator(m).fit(scores[fit_rows], t[fit_rows])
        losses[m] = float(log_loss(t[eval_rows], cal.predict(scores[eval_rows]), labels=[0, 1]))
    measured = ", ".join(f"{m} {v:.4f}" for m, v in losses.items())
    positives = int(t[have].sum())
    if positives < min_isotonic_positives:
        return (
            "sigmoid",
            losses,
            f"sigmoid: only {positives} incident-causing deploys to calibrate on, isotonic needs at least "
            f"{min_isotonic_positives} to avoid overfitting its steps (held-out log loss {measured})",
        )
    chosen = min(losses, key=lambda m: (losses[m], m != "sigmoid"))
    return chosen, losses, f"{chosen}: the lower held-out log loss on the last validation fold ({measured})"


class RiskModel(ClassifierMixin, BaseEstimator):
    """A calibrated risk model with low/medium/high bands; ``fit`` expects rows sorted by time.

    Calibration follows ``CalibratedClassifierCV(ensemble=False)`` but with rolling-origin folds:
    out-of-fold scores (each from a model fitted on earlier data only) fit the calibrator, then the
    classifier is refitted on all rows. Band thresholds are the calibrated out-of-fold score
    quantiles that put ``high_share`` of deploys in "high" and the next ``medium_share`` in
    "medium". ``metadata`` carries what serving needs (feature lists, configs, versions).
    """

    def __init__(
        self,
        classifier: Any = None,
        calibration: CalibrationMethod = "auto",
        n_splits: int = 4,
        min_isotonic_positives: int = 50,
        high_share: float = 0.10,
        medium_share: float = 0.20,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        self.classifier = classifier
        self.calibration = calibration
        self.n_splits = n_splits
        self.min_isotonic_positives = min_isotonic_positives
        self.high_share = high_share
        self.medium_share = medium_share
        self.metadata = metadata

    def fit(self, X: Any, y: Any, oof_scores: Any = None, oof_folds: Any = None) -> RiskModel:
        """Calibrate on rolling-origin out-of-fold scores, then refit the classifier on all rows.

        ``oof_scores``/``oof_folds`` (as ``out_of_fold_scores`` returns them, e.g. kept from the
        search for this very classifier) skip recomputing the folds: the search already paid for them.
        """
        if y is None:
            raise ValueError("RiskModel requires y to be passed, but the target y is None")
        if not isinstance(X, pd.DataFrame):
            X = check_array(X, dtype=None, ensure_all_finite=False)
        y = column_or_1d(y, warn=True)
        check_consistent_length(X, y)
        check_classification_targets(y)
        classes = np.unique(y)
        if len(classes) != 2:
            raise ValueError(f"Only binary classification is supported; got {len(classes)} class(es)")
        if not 0 <= self.high_share <= 1 or not 0 <= self.medium_share <= 1 - self.high_share:
            raise ValueError("high_share and medium_share must be shares that sum to at most 1")
        t = (y == classes[1]).astype(np.int64)
        base = self.classifier if self.classifier is not None else RiskClassifier()
        if oof_scores is None or oof_folds is None:
            scores, folds = out_of_fold_scores(base, X, t, self.n_splits)
        else:
            scores, folds = np.asarray(oof_scores, dtype=np.float64), np.asarray(oof_folds, dtype=np.int64)
            check_consistent_length(scores, folds, t)
        method, losses, reason = choose_calibration(scores, t, folds, self.calibration, self.min_isotonic_positives)
        have = folds >= 0
        self.calibrator_ = ScoreCalibrator(method).fit(scores[have], t[have])
        self.calibration_losses_ = losses
        self.calibration_reason_ = reason
        self.oof_scores_ = self.calibrator_.predict(scores[have])
        self.oof_positions_ = np.flatnonzero(have)
        self.band_thresholds_ = band_thresholds(self.oof_scores_, self.high_share, self.medium_share)
        self.classifier_ = clone(base).fit(X, y)
        self.classes_ = classes
        self.n_features_in_ = self.classifier_.n_features_in_
        if hasattr(self.classifier_, "feature_names_in_"):
            self.feature_names_in_ = self.classifier_.feature_names_in_
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "classifier_")
        p = self.calibrator_.predict(self.classifier_.predict_proba(X)[:, 1])
        return np.column_stack([1.0 - p, p])

    def predict(self, X: Any) -> np.ndarray:
        proba = self.predict_proba(X)
        return np.asarray(self.classes_[(proba[:, 1] >= 0.5).astype(int)])

    def score_design(self, design: np.ndarray) -> np.ndarray:
        """Calibrated probabilities from the classifier's design matrix (``classifier_.design(X)``):
        the test period is encoded once for its scores and every shuffle of permutation importance."""
        check_is_fitted(self, "classifier_")
        return self.calibrator_.predict(self.classifier_.estimator_.predict_proba(design)[:, 1])

    def band(self, X: Any) -> np.ndarray:
        """'low'/'medium'/'high' per row, by the thresholds chosen on validation."""
        return assign_bands(self.predict_proba(X)[:, 1], self.band_thresholds_)

    def score_arrays(self, numeric: np.ndarray, categorical: np.ndarray | None = None) -> np.ndarray:
        """Calibrated probabilities from plain arrays (numeric columns, then categorical): no pandas.

        Columns follow ``classifier_.numeric_`` and ``classifier_.categorical_``; NaN/None mark
        missing values. This is the serving fast path.
        """
        check_is_fitted(self, "classifier_")
        clf = self.classifier_
        num = np.asarray(numeric, dtype=np.float64).reshape(-1, len(clf.numeric_))
        cat = (
            np.asarray(categorical, dtype=object).reshape(num.shape[0], len(clf.categorical_))
            if clf.categorical_
            else np.zeros((num.shape[0], 0), dtype=object)
        )
        raw = clf.estimator_.predict_proba(clf._design(num, cat))[:, 1]
        return self.calibrator_.predict(raw)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        if tags.classifier_tags is not None:
            tags.classifier_tags.multi_class = False
        return tags


def band_thresholds(scores: np.ndarray, high_share: float, medium_share: float) -> np.ndarray:
    """[medium threshold, high threshold]: score quantiles leaving the given shares above them."""
    if len(scores) == 0:
        return np.array([1.0, 1.0])
    high = float(np.quantile(scores, 1.0 - high_share)) if high_share > 0 else np.inf
    medium = float(np.quantile(scores, 1.0 - high_share - medium_share)) if medium_share > 0 else high
    return np.array([min(medium, high), high])


def assign_bands(p: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Band names for probabilities: >= high threshold is high, >= medium threshold is medium."""
    idx = (np.asarray(p) >= thresholds[0]).astype(int) + (np.asarray(p) >= thresholds[1]).astype(int)
    return np.asarray(BANDS, dtype=object)[idx]
