"""Advice: changed copies of the deploy through the scoring path, each action's trigger, split maths, materiality."""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import pytest

from features.labels.attribution import attribute
from models.scoring.advice import (
    ACTIONS,
    DEFAULT_ACTIONS,
    AdviceConfig,
    AdviceIndex,
    advise,
    build_advice_index,
    candidates,
    evaluate,
    next_business_morning,
    rescore,
)
from models.scoring.context import FeatureIndex, ModelBundle, ModelInfo, build_feature_index, make_bundle
from models.scoring.explain import score_deploy
from models.scoring.upcoming import UpcomingDeploy, deploys_from_frame
from tests.helpers.scoring import ATTRIBUTION, FEATURES, fitted, serving_metadata, simulated

ALL = AdviceConfig(actions=ACTIONS, min_drop=0.0, min_relative_drop=0.0, name_authors=True)


@functools.cache
def _context(kind: str) -> tuple[FeatureIndex, ModelBundle, AdviceIndex]:
    sim = simulated()
    model = fitted(kind)
    labels = attribute(sim.history, ATTRIBUTION).deploy_labels
    bundle = make_bundle(model, ModelInfo("t", "1"), serving_metadata(model))
    return build_feature_index(sim.history, labels, FEATURES), bundle, build_advice_index(sim.history, FEATURES)


def _us(ts: str) -> int:
    return int(pd.Timestamp(ts).value // 1000)


@pytest.mark.parametrize("kind", ["logreg", "hgb"])
def test_rescoring_the_unchanged_deploy_gives_its_score(kind: str) -> None:
    index, bundle, _ = _context(kind)
    deploys = [d.with_teams(index.teams)[0] for d in deploys_from_frame(simulated().upcoming.head(10))]
    scores = [score_deploy(index, bundle.scorer, d).probability for d in deploys]
    assert rescore(index, bundle.scorer, deploys).tolist() == pytest.approx(scores, abs=1e-12)


def test_split_is_any_of_k_smaller_deploys_failing() -> None:
    index, bundle, events = _context("logreg")
    deploy = UpcomingDeploy("reviews-svc", pd.Timestamp("2026-02-04T10:00Z"), lines_added=900.0, lines_deleted=300.0,
                            files_changed=12.0, commit_count=6.0, author="guido.turing")  # fmt: skip
    current = score_deploy(index, bundle.scorer, deploy).probability
    splits = [(c, p) for c, p in evaluate(index, bundle.scorer, events, deploy, current, ALL) if c.action == "split"]
    assert [c.parts for c, _ in splits] == [2, 3, 4]
    for cand, p in splits:
        assert cand.variant.lines_added == 900.0 / cand.parts and cand.variant.files_changed == 12.0 / cand.parts
        single = rescore(index, bundle.scorer, [cand.variant])[0]
        assert p == pytest.approx(1 - (1 - single) ** cand.parts) and p > single


def test_next_business_morning_on_the_services_clock() -> None:
    berlin = "Europe/Berlin"
    friday_pm = _us("2026-02-06T15:00:00Z")  # 16:00 in Berlin
    assert next_business_morning(friday_pm, berlin, (9, 17)) == _us("2026-02-09T08:00:00Z")  # Monday 09:00 Berlin
    assert next_business_morning(_us("2026-02-09T07:00:00Z"), "UTC", (9, 17)) == _us("2026-02-09T09:00:00Z")
    assert next_business_morning(_us("2026-02-10T10:00:00Z"), "UTC", (8, 17)) == _us("2026-02-11T08:00:00Z")


def test_the_morning_is_advised_only_outside_the_working_day() -> None:
    def morning(at: str) -> pd.Timestamp | None:
        return _actions(UpcomingDeploy("tax-worker", pd.Timestamp(at), lines_added=10.0)).get("next_business_morning")

    assert morning("2026-02-10T11:00:00Z") is None  # Tuesday, inside 9-17 UTC
    assert morning("2026-02-10T20:00:00Z") == pd.Timestamp("2026-02-11T09:00:00Z")
    assert morning("2026-02-13T12:30:00Z") == pd.Timestamp("2026-02-16T09:00:00Z")  # Friday afternoon -> Monday
    assert morning("2026-02-13T11:30:00Z") is None  # Friday morning


def _actions(deploy: UpcomingDeploy) -> dict[str, pd.Timestamp | None]:
    index, bundle, events = _context("logreg")
    return {c.action: c.ship_at for c in candidates(index, bundle.scorer, events, deploy, ALL)}


def test_waits_trigger_only_on_their_event_and_ship_after_it() -> None:
    history = simulated().history
    tog = history.toggle_events
    flip = tog[(tog["environment"] == "production") & tog["action"].isin(["enabled", "disabled", "rollout_changed"])]
    f = flip.sort_values("occurred_at").iloc[len(flip) // 2]
    near = UpcomingDeploy(str(f["service"]), f["occurred_at"] + pd.Timedelta(minutes=10), lines_added=10.0)
    service_flips = flip.loc[flip["service"] == f["service"], "occurred_at"]
    last = service_flips[(service_flips < near.created_at) & (service_flips >= near.created_at - pd.Timedelta("1h"))]
    assert _actions(near)["after_flips_settle"] == last.max() + pd.Timedelta("1h")
    quiet = flip.loc[flip["service"] == f["service"], "occurred_at"].max() + pd.Timedelta("3h")
    assert "after_flips_settle" not in _actions(UpcomingDeploy(str(f["service"]), quiet, lines_added=10.0))

    inc = history.incidents.dropna(subset=["resolved_at", "service"]).iloc[5]
    during = UpcomingDeploy(str(inc["service"]), inc["created_at"] + pd.Timedelta(seconds=30), lines_added=10.0)
    assert _actions(during)["after_incident_resolved"] >= inc["resolved_at"] + pd.Timedelta(minutes=1)

    dep = history.deploys[(history.deploys["environment"] == "production") & history.deploys["finished_at"].notna()]
    d = dep.iloc[len(dep) // 2]
    stacked = UpcomingDeploy(str(d["service"]), d["created_at"] + pd.Timedelta(seconds=1), lines_added=10.0)
    assert _actions(stacked)["after_deploy_in_flight"] >= d["finished_at"] + pd.Timedelta(minutes=1)


def test_authors_toggle_and_names() -> None:
    index, bundle, events = _context("logreg")
    deploy = UpcomingDeploy("reviews-svc", pd.Timestamp("2026-02-04T10:00Z"), author="guido.turing", lines_added=50.0)
    authors = [c for c in candidates(index, bundle.scorer, events, deploy, ALL) if c.action == "different_author"]
    assert authors and all(c.author != "guido.turing" and c.variant.author == c.author for c in authors)
    assert not any(c.action == "behind_toggle" for c in candidates(index, bundle.scorer, events, deploy, ALL))
    hidden = AdviceConfig(actions=("different_author",), min_drop=0.0, min_relative_drop=0.0)
    for a in advise(index, bundle.scorer, events, deploy, 1.0, hidden):
        assert a.author is None and "a recent author of this service" in a.detail


def test_advice_is_material_best_first_one_per_kind_and_reads_the_score() -> None:
    index, bundle, events = _context("hgb")
    deploys = deploys_from_frame(simulated().upcoming)
    seen = 0
    for deploy in deploys:
        current = score_deploy(index, bundle.scorer, deploy).probability
        every = evaluate(index, bundle.scorer, events, deploy, current, ALL)
        strict = AdviceConfig(actions=ACTIONS, min_drop=0.01, min_relative_drop=0.05)
        advice = advise(index, bundle.scorer, events, deploy, current, strict)
        expected = {c.action for c, p in every if current - p >= max(0.01, 0.05 * current)}
        assert {a.action for a in advice} == expected
        assert [a.probability for a in advice] == sorted(a.probability for a in advice)
        for a in advice:
            assert a.change == pytest.approx(a.probability - current)
            assert a.probability == min(p for c, p in every if c.action == a.action)
        seen += len(advice)
    assert seen  # some deploy of the upcoming set has material advice
    # the score handed in is what advice compares against, nothing else
    deploy = deploys[0]
    assert advise(index, bundle.scorer, events, deploy, 0.0, ALL) == []
    assert np.isfinite([a.probability for a in advise(index, bundle.scorer, events, deploy, 1.0, ALL)]).all()


def test_config_defaults_and_validation() -> None:
    assert AdviceConfig().actions == DEFAULT_ACTIONS
    assert AdviceConfig().material(0.30, 0.25) and not AdviceConfig().material(0.30, 0.285)
    with pytest.raises(ValueError, match="unknown advice actions"):
        AdviceConfig(actions=("pray",))
    with pytest.raises(ValueError):
        AdviceConfig(split_parts=(1,))
    with pytest.raises(ValueError):
        AdviceConfig(toggle_column="guarded")
