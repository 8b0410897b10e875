"""The compiled model (``FastScorer``) gives sklearn's probabilities, and the batch path the fast path's scores."""

from __future__ import annotations

import logging
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from features.labels.attribution import attribute
from features.pointintime.compute import build_features
from models.scoring import compiled as compiled_module
from models.scoring.compiled import PARITY_TOLERANCE, check_sample, compile_fast_scorer
from models.scoring.context import ModelInfo, build_feature_index, make_bundle, make_scoring_context
from models.scoring.explain import score_deploy, score_frame
from models.scoring.upcoming import deploys_from_frame
from models.training.estimators import RiskModel
from tests.helpers.paths import REPO
from tests.helpers.scoring import (
    ATTRIBUTION,
    FEATURES,
    fitted,
    serving_metadata,
    simulated,
    training_table,
)

KINDS = ("logreg", "hgb")


def _rows(kind: str) -> tuple[pd.DataFrame, np.ndarray]:
    """Many deploys' features: the training table, the upcoming deploys, and a frame with gaps."""
    table = training_table()
    sim = simulated()
    labels = attribute(sim.history, ATTRIBUTION).deploy_labels
    upcoming = build_features(sim.upcoming, sim.history, labels, FEATURES)
    gaps = table.frame[table.features].head(60).copy()
    gaps.loc[gaps.index[::3], "service"] = "never-seen-svc"  # unknown category
    gaps.loc[gaps.index[1::3], "squad"] = None  # missing category
    gaps.loc[gaps.index[::2], "hours_since_prev_deploy"] = np.nan  # missing number
    gaps.loc[gaps.index[::5], "lines_added"] = 1e7  # far outside the training range
    frame = pd.concat([table.frame[table.features], upcoming[table.features], gaps], ignore_index=True)
    model = fitted(kind)
    return frame, model.predict_proba(frame)[:, 1]


def _arrays(scorer, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    num = frame[list(scorer.numeric)].to_numpy(dtype=np.float64)
    cats = frame[list(scorer.categorical)].astype(object).where(frame[list(scorer.categorical)].notna(), None)
    return num, scorer.encode(cats.to_numpy().tolist())


@pytest.mark.parametrize("kind", KINDS)
def test_fast_scorer_matches_predict_proba(kind: str) -> None:
    frame, expected = _rows(kind)
    scorer = compile_fast_scorer(fitted(kind))
    assert scorer.path == "compiled" and scorer.parity_error <= PARITY_TOLERANCE
    num, codes = _arrays(scorer, frame)
    assert len(frame) > 300
    np.testing.assert_allclose(scorer.probability(num, codes), expected, rtol=0, atol=1e-9)
    for i in range(0, len(frame), 37):  # one row at a time, as the service scores
        assert abs(scorer.probability(num[i : i + 1], codes[i : i + 1])[0] - expected[i]) <= 1e-9


def test_logistic_contributions_are_coefficient_times_value_and_add_up() -> None:
    model = fitted("logreg")
    frame, _ = _rows("logreg")
    scorer = compile_fast_scorer(model)
    num, codes = _arrays(scorer, frame)
    contrib = scorer.contributions(num, codes)
    design = model.classifier_.design(frame)
    decision = model.classifier_.estimator_.decision_function(design)
    np.testing.assert_allclose(contrib.sum(axis=1) + scorer.linear.intercept, decision, atol=1e-9)
    # one numeric feature by hand: coefficient x standardised signed-log value
    j = scorer.numeric.index("lines_added")
    z = (np.sign(num[:, j]) * np.log1p(np.abs(num[:, j])) - scorer.linear.mean[j]) / scorer.linear.scale[j]
    np.testing.assert_allclose(contrib[:, j], scorer.linear.coef_num[j] * z, atol=1e-12)


def test_tree_contributions_equal_rescoring_with_the_feature_at_its_median() -> None:
    model = fitted("hgb")
    table = training_table()
    X = table.frame[table.features].head(40).reset_index(drop=True)
    medians = {c: float(np.nanmedian(table.frame[c].to_numpy(dtype=np.float64))) for c in table.numeric}
    scorer = compile_fast_scorer(model, medians)
    num, codes = _arrays(scorer, X)
    contrib = scorer.contributions(num, codes)
    estimator = model.classifier_.estimator_
    raw = estimator._raw_predict(model.classifier_.design(X))[:, 0]
    for j, name in enumerate(scorer.features):
        changed = X.copy()
        changed[name] = medians.get(name)
        expected = raw - estimator._raw_predict(model.classifier_.design(changed))[:, 0]
        np.testing.assert_allclose(contrib[:, j], expected, atol=1e-9, err_msg=name)
    assert np.abs(contrib).sum() > 0


@pytest.mark.parametrize("kind", KINDS)
def test_batch_path_and_fast_path_agree(kind: str) -> None:
    sim = simulated()
    model = fitted(kind)
    bundle = make_bundle(model, ModelInfo("m", "1"), serving_metadata(model))
    context = make_scoring_context(bundle, sim.history, 1)
    index = context.index
    batch = score_frame(sim.upcoming, context)
    assert len(batch) == len(sim.upcoming) > 10
    for i, deploy in enumerate(deploys_from_frame(sim.upcoming)):
        fast = score_deploy(index, context.bundle.scorer, deploy)
        assert abs(fast.probability - batch["probability"].iloc[i]) <= 1e-9
        assert fast.band == batch["band"].iloc[i]
        slow = batch["top_factors"].iloc[i]
        assert [f.feature for f in fast.factors] == [f["feature"] for f in slow]
        assert [f.value for f in fast.factors] == [f["value"] for f in slow]
        np.testing.assert_allclose([f.contribution for f in fast.factors], [f["contribution"] for f in slow], atol=1e-9)
        assert fast.flags["filled_from_history"] == batch["filled_teams"].iloc[i]


@pytest.fixture
def tampered_hgb() -> Iterator[RiskModel]:
    """The fitted tree model with ``is_categorical_`` reversed: scikit-learn's own prediction ignores it
    after fitting, the compiled path reads it (as a new scikit-learn release might re-purpose a private
    attribute), so the two disagree."""
    model = fitted("hgb")
    est = model.classifier_.estimator_
    original = est.is_categorical_.copy()
    est.is_categorical_ = original[::-1].copy()
    yield model
    est.is_categorical_ = original


def test_a_tampered_estimator_attribute_makes_the_check_fall_back(
    tampered_hgb: RiskModel, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="incident_risk.scoring"):
        scorer = compile_fast_scorer(tampered_hgb)
    assert scorer.path == "predict_proba" and scorer.fallback is tampered_hgb
    assert scorer.parity_error > PARITY_TOLERANCE
    assert "compiled scorer refused" in caplog.text
    frame, _ = _rows("hgb")
    expected = tampered_hgb.predict_proba(frame)[:, 1]
    num, codes = _arrays(scorer, frame)
    np.testing.assert_array_equal(scorer.probability(num, codes), expected)
    probability, contributions = scorer.explain(num[:5], codes[:5])
    np.testing.assert_array_equal(probability, expected[:5])
    assert contributions.shape == (5, len(scorer.features))
    unchecked = replace(scorer, fallback=None)  # what serving would have returned without the check
    assert np.max(np.abs(unchecked.probability(num, codes) - expected)) > PARITY_TOLERANCE


def test_a_model_that_cannot_be_compiled_is_scored_by_predict_proba(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object) -> None:
        raise AttributeError("'HistGradientBoostingClassifier' object has no attribute '_predictors'")

    monkeypatch.setattr(compiled_module, "_tree_parts", broken)
    model = fitted("hgb")
    scorer = compile_fast_scorer(model)
    assert scorer.path == "predict_proba" and math.isnan(scorer.parity_error)
    frame, expected = _rows("hgb")
    num, codes = _arrays(scorer, frame)
    probability, contributions = scorer.explain(num, codes)
    np.testing.assert_array_equal(probability, expected)
    assert not contributions.any()


@pytest.mark.parametrize("kind", KINDS)
def test_the_check_sample_reaches_every_split_and_category(kind: str) -> None:
    scorer = compile_fast_scorer(fitted(kind))
    num, codes = check_sample(scorer)
    assert np.isnan(num).any(axis=0).all() and (codes == -1).any(axis=0).all()
    for j, lookup in enumerate(scorer.categories):
        assert set(codes[:, j]) >= {-1, *lookup.values()} or len(lookup) > 100
    if scorer.trees is not None:
        tree_input = scorer._tree_input(num, codes)
        numeric_nodes = ~scorer.trees.node_categorical
        hit = tree_input[:, scorer.trees.node_feature[numeric_nodes]] == scorer.trees.node_threshold[numeric_nodes]
        assert hit.any(axis=0).mean() > 0.9  # the <= edge of (nearly) every numeric split is scored
    again = check_sample(scorer)
    np.testing.assert_array_equal(num, again[0])
    np.testing.assert_array_equal(codes, again[1])


def test_the_service_counts_a_fallback_on_metrics(tampered_hgb: RiskModel) -> None:
    from prometheus_client import generate_latest

    from models.scoring.context import ScoringContext
    from models.serving.app import _Metrics

    sim = simulated()
    labels = attribute(sim.history, ATTRIBUTION).deploy_labels
    index = build_feature_index(sim.history, labels, FEATURES)
    info = ModelInfo("m", "1", "run", "champion", None, {})
    metrics = _Metrics.create()
    good = make_bundle(fitted("logreg"), info, serving_metadata(fitted("logreg")))
    metrics.on_swap(ScoringContext(good, index, sim.history, labels, 1, None, 0.0))
    text = generate_latest(metrics.registry).decode()
    assert "incident_risk_fast_scorer_compiled 1.0" in text and "incident_risk_fast_scorer_fallback_total 0.0" in text
    bad = make_bundle(tampered_hgb, info, serving_metadata(tampered_hgb))
    metrics.on_swap(ScoringContext(bad, index, sim.history, labels, 2, None, 0.0))
    text = generate_latest(metrics.registry).decode()
    assert "incident_risk_fast_scorer_compiled 0.0" in text and "incident_risk_fast_scorer_fallback_total 1.0" in text
    deploy = deploys_from_frame(sim.upcoming)[0]
    served = score_deploy(index, bad.scorer, deploy)
    reference = score_frame(sim.upcoming.iloc[:1], ScoringContext(bad, index, sim.history, labels, 2, None, 0.0))
    assert served.probability == pytest.approx(float(reference["probability"].iloc[0]), abs=1e-12)


def test_importing_the_serving_app_does_not_import_mlflow() -> None:
    code = "import sys, models.serving.app; print(sorted(m for m in sys.modules if m.split('.')[0] == 'mlflow'))"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]"
