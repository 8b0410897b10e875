"""Ownership from the catalog: squad/tribe filled (or overridden) on the deploys when the history is read."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from features.history.ownership import apply_ownership, group_tribes, service_teams, squad_channels
from features.history.schema import CATALOG, DEPLOYS, conform
from features.history.store import HistoryStore


def _catalog(ownership: str = "fill") -> pd.DataFrame:
    rows = [
        ("group:default/pay", "group", "pay", "tribe", None, None, None, "pay-tribe"),
        ("group:default/pay-falcon", "group", "pay-falcon", "squad", None, None, "pay", "falcon"),
        ("group:default/pay-otter", "group", "pay-otter", "squad", None, None, "pay", None),
        ("system:default/ledger", "system", "ledger", None, "pay-otter", None, None, None),
        ("component:default/checkout", "component", "checkout", "service", "pay-falcon", None, None, None),
        ("component:default/writer", "component", "writer", "service", None, "ledger", None, "writer-alerts"),
        ("component:default/tool", "component", "tool", "service", "pay", None, None, None),
    ]
    cols = ["entity_ref", "kind", "name", "type", "owner", "system", "parent", "slack_channel"]
    frame = pd.DataFrame(rows, columns=cols).assign(source="cat", ownership=ownership)
    return conform(CATALOG, frame, source="cat", file="t").valid


def _deploys() -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "deploy_id": ["d1", "d2", "d3", "d4"],
            "source": "gh",
            "service": ["checkout", "writer", "unknown", "tool"],
            "environment": "production",
            "status": "success",
            "created_at": "2026-01-01T00:00:00Z",
            "squad": [None, "old-squad", "keep", None],
            "tribe": [None, "old-tribe", "keep", None],
        }
    )
    return conform(DEPLOYS, frame, source="gh", file="t").valid


def test_teams_walk_the_group_tree_and_inherit_from_systems() -> None:
    teams = service_teams(_catalog()).set_index("service")
    assert teams.loc["checkout", ["squad", "tribe", "slack_channel"]].tolist() == ["pay-falcon", "pay", "falcon"]
    assert teams.loc["writer", ["squad", "tribe", "slack_channel"]].tolist() == ["pay-otter", "pay", "writer-alerts"]
    assert pd.isna(teams.loc["tool", "squad"]) and teams.loc["tool", "tribe"] == "pay"  # a tribe owns it
    assert squad_channels(_catalog()) == {"pay": "pay-tribe", "pay-falcon": "falcon"}
    assert group_tribes(_catalog()) == {"pay": "pay", "pay-falcon": "pay", "pay-otter": "pay"}


def test_fill_only_fills_blanks_and_leaves_the_input_alone() -> None:
    deploys = _deploys()
    before = deploys.copy()
    out = apply_ownership(deploys, _catalog("fill")).set_index("deploy_id")
    pd.testing.assert_frame_equal(deploys, before)
    assert out.loc["d1", ["squad", "tribe"]].tolist() == ["pay-falcon", "pay"]
    assert out.loc["d2", ["squad", "tribe"]].tolist() == ["old-squad", "old-tribe"]
    assert out.loc["d3", ["squad", "tribe"]].tolist() == ["keep", "keep"]
    assert pd.isna(out.loc["d4", "squad"]) and out.loc["d4", "tribe"] == "pay"
    assert out["squad"].dtype == deploys["squad"].dtype


def test_override_wins_where_the_catalog_knows() -> None:
    out = apply_ownership(_deploys(), _catalog("override")).set_index("deploy_id")
    assert out.loc["d2", ["squad", "tribe"]].tolist() == ["pay-otter", "pay"]
    assert out.loc["d3", ["squad", "tribe"]].tolist() == ["keep", "keep"]


def test_no_catalog_is_a_no_op() -> None:
    deploys = _deploys()
    assert apply_ownership(deploys, CATALOG_EMPTY()) is deploys


def CATALOG_EMPTY() -> pd.DataFrame:  # noqa: N802
    return _catalog().iloc[0:0]


def test_read_history_applies_ownership(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path)
    with store.lock():
        store.commit({"deploys": _deploys(), "catalog": _catalog()}, None, expected_version=0)
    history = store.read_history()
    assert history.deploys.set_index("deploy_id").loc["d1", "squad"] == "pay-falcon"
    assert len(history.catalog) == 7
    raw = store.read("deploys")
    assert raw["squad"].isna().sum() == 2  # stored as ingested; ownership is applied on read
