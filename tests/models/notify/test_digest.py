"""The weekly digest as pure functions: per squad and tribe numbers that add up, and messages within limits."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest
from slack_sdk.models.blocks import Block

from features.history.ownership import squad_channels
from features.labels.attribution import AttributionConfig, attribute
from features.simulation.simulator import SimulationConfig, simulate
from models.notify.blocks import check_message
from models.notify.config import Links, Routing
from models.notify.digest import (
    NO_RANKING,
    WEEK,
    DigestConfig,
    build_digests,
    digest_messages,
    incident_causes,
    last_full_week,
    rank_incidents,
    toggle_debt,
)
from models.scoring.context import ModelInfo, build_feature_index, make_bundle
from models.scoring.suspects import build_suspect_context
from tests.helpers.scoring import FEATURES, fitted


@pytest.fixture(scope="module")
def world() -> Any:
    sim = simulate(SimulationConfig(days=60, services=16, seed=2))
    attribution = attribute(sim.history, AttributionConfig())
    week = last_full_week(sim.history.deploys["created_at"].max())
    scores = sim.deploy_truth.rename(columns={"p_incident": "probability"}).assign(band="high")
    return sim, attribution, week, scores, build_digests(sim.history, attribution, scores, DigestConfig(week))


def test_last_full_week_and_config_checks() -> None:
    assert last_full_week(pd.Timestamp("2026-03-04 12:00", tz="UTC")) == pd.Timestamp("2026-02-23", tz="UTC")
    assert last_full_week(pd.Timestamp("2026-03-02 00:00", tz="UTC")) == pd.Timestamp("2026-02-23", tz="UTC")
    with pytest.raises(ValueError, match="Monday"):
        DigestConfig(pd.Timestamp("2026-03-04", tz="UTC"))


def test_squads_add_up_to_their_tribe_and_predictions_are_the_week_scores(world: Any) -> None:
    sim, attribution, week, scores, digests = world
    squads = [d for d in digests if d.level == "squad"]
    tribes = {d.team: d for d in digests if d.level == "tribe"}
    assert squads and tribes
    for tribe, d in tribes.items():
        mine = [s for s in squads if s.tribe == tribe]
        assert d.metrics["deployments"] == sum(s.metrics["deployments"] or 0 for s in mine)
        assert d.realised == sum(s.realised for s in mine)
        assert d.predicted == pytest.approx(sum(s.predicted or 0 for s in mine))
        assert [r["squad"] for r in d.squads] == sorted(s.team for s in mine)
    # predicted = the sum of the week's production deploys' probabilities, per squad
    labels = attribution.deploy_labels
    in_week = labels[
        labels["eligible"] & (labels["change_time"] >= week) & (labels["change_time"] < week + pd.Timedelta(days=7))
    ]
    squad_of = sim.history.deploys.set_index("deploy_id")["squad"]
    one = squads[0]
    ids = in_week[in_week["deploy_id"].map(squad_of) == one.team]["deploy_id"]
    truth = scores.set_index("deploy_id")["probability"]
    assert one.predicted == pytest.approx(truth.loc[ids].sum())
    assert one.realised == int(in_week.set_index("deploy_id").loc[ids, "failed"].astype(bool).sum())
    assert (one.riskiest["probability"].diff().dropna() <= 0).all()


def test_incidents_of_the_week_carry_suspects(world: Any) -> None:
    _, _, week, _, digests = world
    rows = pd.concat([d.incidents for d in digests if d.level == "squad"])
    assert len(rows) and rows["suspects"].map(len).gt(0).any()
    # no champion: a named cause still shows, the rest say they were not ranked (no second ordering here)
    lines = [x for xs in rows["suspects"] for x in xs]
    assert set(lines) - {NO_RANKING, "marked not change-related"} <= {x for x in lines if "named by the incident" in x}


def test_the_digest_orders_suspects_as_the_suspects_model_does(world: Any) -> None:
    sim, attribution, week, scores, _ = world
    h = sim.history
    bundle = make_bundle(fitted("logreg"), ModelInfo("t", "1"), {"feature_config": None})
    ctx = build_suspect_context(
        h, build_feature_index(h, attribution.deploy_labels, FEATURES), bundle.scorer, attribution
    )
    inc = h.incidents[(h.incidents["created_at"] >= week) & (h.incidents["created_at"] < week + WEEK)]
    answers = rank_incidents(ctx, inc["incident_id"], week + WEEK, 3)
    assert set(answers) == set(inc["incident_id"])
    causes = incident_causes(attribution, h, inc["incident_id"], answers, 3)
    named = set(attribution.links.loc[attribution.links["method"].eq("explicit"), "incident_id"])
    marked = set(h.incidents.loc[h.incidents["not_change_related"].fillna(False).astype(bool), "incident_id"])
    ranked = [i for i in inc["incident_id"] if i not in named and i not in marked]
    assert ranked and any(i in named for i in inc["incident_id"])
    for incident_id in inc["incident_id"]:
        lines = causes[incident_id]
        if incident_id in named:
            assert len(lines) == 1 and lines[0].endswith("(named by the incident)")
            continue
        if incident_id in marked:
            assert lines == ["marked not change-related"]
            continue
        answer = answers[incident_id]
        flag_key = h.toggle_events.set_index("event_id")["flag_key"]
        expected = [
            (x["share"], x["change_id"] if x["change_kind"] == "deploy" else flag_key[x["change_id"]])
            for x in answer["suspects"][:3]
        ]
        expected.append((answer["background_share"], "recent"))  # "no recent change"
        expected.sort(key=lambda e: -e[0])  # the answer's own order, the background placed by its share
        assert [line.split(" ")[1] for line in lines] == [name for _, name in expected]
    digests = build_digests(h, attribution, scores, DigestConfig(week), answers)
    rows = pd.concat([d.incidents for d in digests if d.level == "squad"])
    assert {i: list(v) for i, v in zip(rows["incident_id"], rows["suspects"], strict=True)} == {
        i: causes[i] for i in rows["incident_id"]
    }


def test_toggle_debt_counts_stale_enabled_flags_and_flips() -> None:
    t = lambda s: pd.Timestamp(s, tz="UTC")  # noqa: E731
    tog = pd.DataFrame(
        {
            "flag_key": ["old", "old", "fresh", "fresh", "off", "off", "busy", "busy", "busy"],
            "action": [
                "created",
                "enabled",
                "created",
                "enabled",
                "enabled",
                "disabled",
                "enabled",
                "disabled",
                "enabled",
            ],  # fmt: skip
            "occurred_at": [
                t("2025-10-01"),
                t("2025-10-02"),
                t("2026-02-20"),
                t("2026-02-24"),
                t("2025-10-01"),
                t("2025-10-05"),
                t("2025-12-01"),
                t("2026-02-24"),
                t("2026-02-25"),
            ],  # fmt: skip
        }
    )
    debt = toggle_debt(tog, t("2026-03-02"), t("2026-02-23"), 30, 2)
    assert debt["stale_enabled"] == 1 and debt["oldest"] == ("old", t("2025-10-01"))
    assert debt["most_flipped"] == [("busy", 2), ("fresh", 1)]


def test_messages_go_to_squad_and_tribe_channels_within_block_kit_limits(world: Any) -> None:
    sim, _, _, _, digests = world
    links = Links("https://github.com/acme/{service}/deployments/{deploy_id}", "http://mlflow:5000")
    messages = digest_messages(digests, Routing(), squad_channels(sim.history.catalog), links.run("r1"), links)
    assert len(messages) == len(digests)
    for d, m in zip(digests, messages, strict=True):
        assert m.channel == f"#{d.level}-{d.team}"
        assert check_message(m.as_dict()) == []
        for block in m.blocks:
            Block.parse(block).to_dict()
        assert "http://mlflow:5000/#/runs/r1" in str(m.blocks)
    text = str(messages[0].blocks)
    for part in ("Change failure rate", "Time to restore", "Predicted vs realised", "Riskiest deploys",
                 "Incidents and top suspects", "Toggle debt"):  # fmt: skip
        assert part in text
