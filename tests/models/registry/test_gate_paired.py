"""The retrain's gate: a paired DeLong test on the test and out-of-fold validation deploys after the champion."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from threadpoolctl import threadpool_limits

from models.registry.gate import ChampionInfo, decide, judge
from models.training.config import CandidateGrid, GateConfig, TrainConfig
from models.training.evaluation import evaluate, paired_auc_test, placements
from models.training.tracking import validation_rows
from models.training.train import LABEL, TIME, train
from tests.helpers.synthetic import synthetic_table

GOOD = {"roc_auc": 0.7, "pr_auc": 0.3, "ece": 0.02}
AFTER_ALARM = GateConfig(rule="not_worse", with_validation=True)
CONFIG = TrainConfig(candidates=(CandidateGrid("logreg", (("C", (1.0,)),)),), n_splits=3, permutation_repeats=1)
DAY = pd.Timestamp("2024-01-01", tz="UTC")


def test_placements_average_to_the_auc_and_the_paired_test_matches_a_bootstrap() -> None:
    rng = np.random.default_rng(0)
    y = rng.random(3000) < 0.15
    signal = rng.normal(size=3000) + 0.8 * y
    a, b = signal + rng.normal(scale=0.5, size=3000), signal + rng.normal(scale=1.5, size=3000)
    pl = placements(y, a)
    assert pl[y].mean() == pytest.approx(roc_auc_score(y, a)) and pl[~y].mean() == pytest.approx(roc_auc_score(y, a))
    diff, se, z = paired_auc_test(y, a, b)
    assert diff == pytest.approx(roc_auc_score(y, a) - roc_auc_score(y, b))
    boot = []
    for _ in range(300):
        i = rng.integers(0, len(y), len(y))
        boot.append(roc_auc_score(y[i], a[i]) - roc_auc_score(y[i], b[i]))
    assert se == pytest.approx(float(np.std(boot)), rel=0.2)  # DeLong's standard error, as resampling finds it
    assert z == pytest.approx(diff / se) and z > 3
    assert paired_auc_test(y, b, a)[2] == pytest.approx(-z)  # antisymmetric
    assert paired_auc_test(y, a, a) == (0.0, 0.0, 0.0)
    assert np.isnan(paired_auc_test(np.array([True, False, False]), a[:3], b[:3])[2])  # one failure: no test


def test_after_an_alarm_the_challenger_is_promoted_unless_it_ranks_significantly_worse() -> None:
    champion = {"roc_auc": 0.71}
    challenger = {**GOOD, "roc_auc": 0.70}
    # within the noise: not worse, promoted (the margin rule would keep the champion)
    assert decide(challenger, champion, 0.2, AFTER_ALARM, paired=(-0.01, 0.02, -0.5)).promote
    assert not decide(challenger, champion, 0.2, GateConfig(), paired=(-0.01, 0.02, -0.5)).promote
    worse = decide(challenger, champion, 0.2, AFTER_ALARM, paired=(-0.05, 0.02, -2.5))
    assert not worse.promote and "ranks worse" in worse.reason
    low = decide({**GOOD, "roc_auc": 0.55}, champion, 0.2, AFTER_ALARM, paired=(0.1, 0.02, 5.0))
    assert not low.promote and "minimum quality" in low.reason  # the minimum quality still holds
    with pytest.raises(ValueError, match="roc_auc"):
        GateConfig(rule="not_worse", metric="pr_auc")
    with pytest.raises(ValueError, match="alpha"):
        GateConfig(alpha=0.7)


def test_the_comparison_adds_the_challengers_validation_deploys_after_the_champions_training_end() -> None:
    table = synthetic_table(3000, seed=5)[0]
    with threadpool_limits(limits=1):
        old = train(table, CONFIG, test_start=DAY + pd.Timedelta(days=100))
        new = train(table, replace(CONFIG, gate=AFTER_ALARM), test_start=DAY + pd.Timedelta(days=160))
    champion_end = pd.Timestamp(old.split["train_end"])
    old.model.set_params(metadata={"training_period": {"start": old.split["train_start"], "end": str(champion_end)}})
    test, val = new.test_frame, validation_rows(new)
    assert val is not None and len(val.frame) == len(val.scores) > 0
    y = test[LABEL].to_numpy()
    verdict = judge(
        ChampionInfo("1", old.model, ""), new.test_metrics, test, y, None, AFTER_ALARM,
        new.test_scores, pd.Timestamp(new.split["train_end"]), val,
    )  # fmt: skip
    later = (pd.to_datetime(val.frame[TIME], utc=True) > champion_end).to_numpy()
    assert 0 < later.sum() < len(later)  # validation deploys on both sides of the champion's training end
    assert verdict.period is not None and verdict.period.n == len(test) and verdict.period.n_validation == later.sum()
    frame = pd.concat([test, val.frame[later]], ignore_index=True)
    yc = np.concatenate([y, val.y[later]])
    assert verdict.champion_metrics is not None and verdict.challenger_compared is not None
    assert verdict.champion_metrics["roc_auc"] == pytest.approx(
        evaluate(yc, old.model.predict_proba(frame)[:, 1])["roc_auc"]
    )
    mixed = np.concatenate([new.test_scores, val.scores[later]])
    assert verdict.challenger_compared["roc_auc"] == pytest.approx(evaluate(yc, mixed)["roc_auc"])
    assert "validation deploys" in verdict.decision.reason and "z " in verdict.decision.reason
    # without ``with_validation`` the same call compares on the test deploys alone
    plain = judge(
        ChampionInfo("1", old.model, ""), new.test_metrics, test, y, None, replace(AFTER_ALARM, with_validation=False),
        new.test_scores, pd.Timestamp(new.split["train_end"]), val,
    )  # fmt: skip
    assert plain.period is not None and plain.period.n_validation == 0
