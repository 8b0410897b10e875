"""Code tests of the array transformers and the risk estimators (sklearn estimator rules, fast path)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.utils.estimator_checks import parametrize_with_checks
from threadpoolctl import threadpool_limits

from models.training.estimators import (
    RiskClassifier,
    RiskModel,
    ScoreCalibrator,
    assign_bands,
    band_thresholds,
    choose_calibration,
    out_of_fold_scores,
    rolling_origin_splits,
)
from models.training.transformers import LogStandardizer, OneHotArray, OrdinalArray


@pytest.fixture(autouse=True)
def _one_thread():
    """OpenMP boosting on busy shared cores spins; one thread is ~30x faster there."""
    with threadpool_limits(limits=1):
        yield


#: ``sample_weight`` weights the estimator's loss only: scaling and kept categories (and, for RiskModel, the
#: calibrator and bands) describe the rows seen, not their weights, so integer weights are not the same
#: as repeated rows there. Documented in ``RiskClassifier.fit``; the weighted fits are tested below.
_UNWEIGHTED_PREPROCESSING = {
    "check_sample_weight_equivalence_on_dense_data": "preprocessing is fitted unweighted by design",
}


@parametrize_with_checks(
    [
        LogStandardizer(),
        OneHotArray(),
        OrdinalArray(),
        RiskClassifier(),
        RiskClassifier(HistGradientBoostingClassifier(max_iter=5)),
        RiskModel(n_splits=2),
    ],
    expected_failed_checks=lambda est: (
        _UNWEIGHTED_PREPROCESSING
        if isinstance(est, RiskModel) or (isinstance(est, RiskClassifier) and est.estimator is None)
        else {}
    ),
)
def test_sklearn_estimator_rules(estimator, check):
    check(estimator)


def test_log_standardizer_learns_arrays_and_indicators_for_training_missingness_only():
    X = np.array([[1.0, 10.0], [np.nan, 100.0], [3.0, 1000.0], [7.0, np.nan]])
    step = LogStandardizer().fit(X[:3])  # only column 0 has a missing value in the fitted rows
    assert step.indicator_features_.tolist() == [0]
    out = step.transform(X)
    assert out.shape == (4, 3)
    assert out[3, 1] == pytest.approx((step.median_[1] - step.mean_[1]) / step.scale_[1])
    assert out[:, 2].tolist() == [0.0, 1.0, 0.0, 0.0]
    for attr in ("median_", "mean_", "scale_"):
        assert isinstance(getattr(step, attr), np.ndarray)


def test_one_hot_unknown_and_rare_categories_encode_as_zeros():
    X = np.array([["a"], ["a"], ["b"], ["c"], [None]], dtype=object)
    enc = OneHotArray(min_frequency=2).fit(X)
    assert [c.tolist() for c in enc.categories_] == [["a"]]
    out = enc.transform(np.array([["a"], ["b"], ["zzz"], [None]], dtype=object))
    assert out.tolist() == [[1.0], [0.0], [0.0], [0.0]]


def test_ordinal_unknown_is_nan():
    enc = OrdinalArray().fit(np.array([["x"], ["y"]], dtype=object))
    out = enc.transform(np.array([["y"], ["new"]], dtype=object))
    assert out[0, 0] == 1.0 and np.isnan(out[1, 0])


def _frame(n: int = 400, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    size = rng.lognormal(3, 1, n)
    svc = rng.choice(["a", "b", "c"], n)
    logit = -2 + 0.8 * (np.log(size) - 3) + (svc == "c") * 1.0
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    frame = pd.DataFrame({"size": size, "svc": pd.array(svc, dtype="string"), "other": rng.normal(size=n)})
    frame.loc[::17, "size"] = np.nan
    return frame, y


@pytest.mark.parametrize("estimator", [None, HistGradientBoostingClassifier(max_iter=20, random_state=0)])
def test_fast_array_path_equals_frame_path(estimator):
    frame, y = _frame()
    clf = RiskClassifier(estimator, numeric=("size", "other"), categorical=("svc",), min_frequency=1)
    model = RiskModel(clf, n_splits=3).fit(frame, y)
    num, cat = model.classifier_.to_arrays(frame)
    np.testing.assert_allclose(model.score_arrays(num, cat), model.predict_proba(frame)[:, 1], rtol=0, atol=1e-12)
    one = model.score_arrays(np.array([120.0, 0.1]), np.array(["never-seen"], dtype=object))
    assert one.shape == (1,) and 0 < one[0] < 1


def test_frame_with_extra_columns_is_scored_on_feature_columns_only():
    frame, y = _frame()
    clf = RiskClassifier(numeric=("size", "other"), categorical=("svc",)).fit(frame, y)
    wider = frame.assign(label=y, created_at=pd.Timestamp("2024-01-01", tz="UTC"))
    np.testing.assert_array_equal(clf.predict_proba(wider), clf.predict_proba(frame))
    with pytest.raises(ValueError, match="lacks feature columns"):
        clf.predict_proba(frame.drop(columns="svc"))


def test_rolling_origin_validation_never_trains_on_later_rows():
    splits = rolling_origin_splits(100, 4)
    for train, valid in splits:
        assert train.max() < valid.min()
    assert [len(v) for _, v in splits] == [20, 20, 20, 20]


def test_out_of_fold_scores_come_from_models_fitted_on_earlier_rows():
    # The label flips meaning halfway: a model that saw later rows would score the first block
    # validation rows well; one fitted only on earlier rows cannot.
    frame, y = _frame(400)
    clf = RiskClassifier(numeric=("size", "other"), categorical=("svc",))
    scores, folds = out_of_fold_scores(clf, frame, y, 4)
    assert np.isnan(scores[folds < 0]).all() and (folds >= 0).sum() == 320
    first_valid = np.flatnonzero(folds == 0)
    expected = RiskClassifier(numeric=("size", "other"), categorical=("svc",)).fit(frame.iloc[:80], y[:80])
    np.testing.assert_allclose(scores[first_valid], expected.predict_proba(frame.iloc[first_valid])[:, 1])


def test_calibrators_map_scores_monotonically_into_probabilities():
    rng = np.random.default_rng(1)
    s = rng.random(2000)
    y = (rng.random(2000) < s**2).astype(int)  # true probability is s squared: miscalibrated scores
    for method in ("isotonic", "sigmoid"):
        cal = ScoreCalibrator(method).fit(s, y)
        p = cal.predict(np.linspace(0, 1, 11))
        assert np.all(np.diff(p) >= -1e-12) and p.min() > 0 and p.max() < 1
        assert abs(cal.predict(np.array([0.5]))[0] - 0.25) < 0.08


def test_choose_calibration_prefers_sigmoid_with_few_positives():
    rng = np.random.default_rng(2)
    s = rng.random(400)
    y = (rng.random(400) < s * 0.1).astype(int)
    folds = np.repeat([0, 1, 2, 3], 100)
    method, losses, reason = choose_calibration(s, y, folds, "auto", min_isotonic_positives=1000)
    assert method == "sigmoid" and set(losses) <= {"sigmoid", "isotonic"}
    # the rule decided, not the loss: the reason says so even when isotonic's loss is lower
    assert reason.startswith("sigmoid: only") and "needs at least 1000" in reason


def test_calibration_reason_names_the_loss_when_the_loss_decides():
    rng = np.random.default_rng(3)
    s = rng.random(4000)
    y = (rng.random(4000) < s**3).astype(int)
    folds = np.repeat([0, 1, 2, 3], 1000)
    method, losses, reason = choose_calibration(s, y, folds, "auto", min_isotonic_positives=10)
    assert reason.startswith(f"{method}: the lower held-out log loss") and losses[method] == min(losses.values())
    assert f"{losses['isotonic']:.4f}" in reason and "{" not in reason


def test_bands_follow_the_shares_chosen_on_validation():
    scores = np.linspace(0, 1, 1001)
    thresholds = band_thresholds(scores, high_share=0.1, medium_share=0.2)
    bands = assign_bands(scores, thresholds)
    assert (bands == "high").mean() == pytest.approx(0.1, abs=0.002)
    assert (bands == "medium").mean() == pytest.approx(0.2, abs=0.002)
