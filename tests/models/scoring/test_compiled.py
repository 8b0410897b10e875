"""The compiled model (``FastScorer``) gives sklearn's probabilities, and the batch path the fast path's scores."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.labels.attribution import attribute
from features.pointintime.compute import build_features
from models.scoring.compiled import compile_fast_scorer
from models.scoring.context import ModelInfo, make_bundle, make_scoring_context
from models.scoring.explain import score_deploy, score_frame
from models.scoring.upcoming import deploys_from_frame
from tests.models.scoring.test_scoring_helpers import (
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
