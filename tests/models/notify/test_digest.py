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
from models.notify.digest import DigestConfig, build_digests, digest_messages, last_full_week, toggle_debt


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
