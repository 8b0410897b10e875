"""The pure suspects logic: dependency maps, what is learned from the history, and how candidates are weighed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.labels.attribution import AttributionConfig, attribute
from features.labels.dependencies import parse_dependencies_yaml
from features.labels.links import export_links
from features.labels.suspects import (
    ChangeIndex,
    LagDensity,
    SuspectConfig,
    SuspectModel,
    change_times,
    latest_change,
    learn_suspect_model,
    rank_suspects,
    rollbacks_of,
)
from features.simulation.simulator import SimulationConfig, simulate
from models.scoring.suspects import load_dependencies

T0 = pd.Timestamp("2026-03-02T12:00:00Z")
US = 1_000_000


# --------------------------------------------------------------------------------------------
# Dependency maps


def test_dependencies_yaml_both_shapes() -> None:
    assert parse_dependencies_yaml("checkout: [payments, cart]\ncart: []\n") == {
        "checkout": ("payments", "cart"),
        "cart": (),
    }
    assert parse_dependencies_yaml("services:\n  checkout:\n    - payments\n") == {"checkout": ("payments",)}


def test_backstage_catalog_reads_depends_on_of_components_only(tmp_path: Path) -> None:
    text = """
apiVersion: backstage.io/v1alpha1
kind: Component
metadata: {name: checkout}
spec:
  owner: team-a
  dependsOn: ['component:default/payments', 'component:cart', 'ledger']
---
apiVersion: backstage.io/v1alpha1
kind: API
metadata: {name: checkout-api}
spec: {dependsOn: ['component:nothing']}
---
apiVersion: backstage.io/v1alpha1
kind: Component
metadata: {name: payments}
spec: {owner: team-b}
"""
    path = tmp_path / "catalog-info.yaml"
    path.write_text(text)
    assert load_dependencies(path) == {"checkout": ("payments", "cart", "ledger"), "payments": ()}


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("checkout: payments\n", "service 'checkout': field 'depends_on'"),
        ("checkout: [payments, 3]\n", "dependency #2"),
        ("- a\n- b\n", "expected a mapping"),
        ("checkout: [\n", "not valid YAML"),
    ],
)
def test_bad_dependencies_yaml_names_file_record_and_field(text: str, named: str) -> None:
    with pytest.raises(ValueError, match="deps.yaml") as err:
        parse_dependencies_yaml(text, "deps.yaml")
    assert named in str(err.value)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata: {}\n", "document 1: metadata.name: missing"),
        (
            "apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata: {name: a}\n"
            "spec: {dependsOn: 'component:b'}\n",
            "document 1: spec.dependsOn: not a list",
        ),
    ],
)
def test_bad_backstage_catalog_names_document_and_field(tmp_path: Path, text: str, named: str) -> None:
    path = tmp_path / "catalog-info.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match="catalog-info.yaml") as err:
        load_dependencies(path)
    assert named in str(err.value)


def test_load_dependencies_tells_the_formats_apart(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog-info.yaml"
    catalog.write_text(
        "apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata: {name: a}\nspec: {dependsOn: [b]}\n"
    )
    plain = tmp_path / "dependencies.yaml"
    plain.write_text("a: [c]\n")
    assert load_dependencies(catalog) == {"a": ("b",)} and load_dependencies(plain) == {"a": ("c",)}
    with pytest.raises(ValueError, match="missing.yaml"):
        load_dependencies(tmp_path / "missing.yaml")


# --------------------------------------------------------------------------------------------
# Learning from a simulated history


@pytest.fixture(scope="module")
def sim():  # type: ignore[no-untyped-def]
    return simulate(SimulationConfig(days=90, services=20, seed=3))


def test_learned_lag_density_and_background_match_the_simulator(sim) -> None:  # type: ignore[no-untyped-def]
    att = attribute(sim.history, AttributionConfig())
    model = learn_suspect_model(sim.history, att)
    deploy = model.lags["deploy"]
    assert deploy.source == "explicit" and deploy.n >= 30
    # the simulator's lag: lognormal, median 45 min, clipped to 3 min .. 12 h
    assert 0.5 < deploy.quantile(0.5) < 1.1
    assert deploy(np.array([0.75]))[0] > 10 * deploy(np.array([10.0]))[0] > 0  # hours later is unlikely
    grid = np.linspace(1e-3, 72, 200_000)
    assert np.trapezoid(deploy(grid), grid) == pytest.approx(1.0, abs=0.03)  # a density per hour
    assert deploy(np.array([-1.0, 0.0]))[0] == 0.0
    # background: 0.09 incidents per service-day (times exp(0.5 * base risk)); sibling incidents add some
    assert 0.05 < model.background_rate * 24 < 0.25
    assert 0 < model.toggle_prior["enabled"] < 0.2 and model.rollback_ratio > 1


def test_links_export_default_and_devlake(sim) -> None:  # type: ignore[no-untyped-def]
    links, unlinked = export_links(sim.history, "default")
    assert set(links["method"]) == {"explicit", "time_window"}
    assert len(links["incident_id"].unique()) + len(unlinked) == len(sim.history.incidents)
    assert (links["incident_at"] - links["change_at"]).dt.total_seconds().div(3600).sub(
        links["lag_hours"]
    ).abs().max() < 1e-6
    dl, dl_unlinked = export_links(sim.history, "devlake")
    assert set(dl["method"]) == {"time_window"} and set(dl["change_kind"]) == {"deploy"}
    # DevLake: the latest production deploy before the incident anywhere in the project, so nearly all link
    assert len(dl_unlinked) < len(unlinked)
    with pytest.raises(ValueError, match="rules"):
        export_links(sim.history, "sleuth")


# --------------------------------------------------------------------------------------------
# Weighing candidates


def _model(**kw: object) -> SuspectModel:
    rng = np.random.default_rng(0)
    lag = LagDensity.fit(np.exp(rng.normal(np.log(0.75), 1.1, 3000)), "explicit")
    options: dict = {
        "lags": {"deploy": lag, "toggle": lag},
        "background_rate": 0.004,
        "toggle_prior": {"*": 0.02, "enabled": 0.05},
        "rollback_ratio": 10.0,
        **kw,
    }
    return SuspectModel(**options)


def _index(rows: list[tuple[str, str, str, pd.Timedelta]], rollbacks: pd.DataFrame | None = None) -> ChangeIndex:
    """Changes as (kind, id, service, time before T0)."""
    frame = pd.DataFrame(
        {
            "change_kind": [r[0] for r in rows],
            "change_id": pd.array([r[1] for r in rows], dtype="string"),
            "service": pd.array([r[2] for r in rows], dtype="string"),
            "time": pd.Series([T0 - r[3] for r in rows]).dt.as_unit("us"),
            "who": pd.array(["x"] * len(rows), dtype="string"),
            "url": pd.array([None] * len(rows), dtype="string"),
            "action": ["enabled" if r[0] == "toggle" else "deploy" for r in rows],
            "is_rollback": False,
        }
    )
    return ChangeIndex.build(frame, rollbacks)


def _at(delta: pd.Timedelta = pd.Timedelta(0)) -> int:
    return int((T0 + delta).value // 1000)


def test_lag_shape_beats_recency() -> None:
    ix = _index([("deploy", "d-old", "a", pd.Timedelta(minutes=50)), ("deploy", "d-new", "a", pd.Timedelta(minutes=1))])
    pos, own = ix.window("a", _at(), 72 * 3600 * US)
    r = rank_suspects(ix, pos, own, np.array([0.1, 0.1]), _model(), _at())
    assert [ix.change_id[p] for p in r.positions] == ["d-old", "d-new"]
    assert latest_change(ix, pos, own) == "d-new"
    assert r.share.sum() + r.background == pytest.approx(1.0)


def test_prior_risk_decides_at_equal_lag_and_flips_take_their_action_share() -> None:
    ix = _index(
        [
            ("deploy", "d-risky", "a", pd.Timedelta(minutes=40)),
            ("deploy", "d-safe", "a", pd.Timedelta(minutes=41)),
            ("toggle", "t-1", "a", pd.Timedelta(minutes=42)),
        ]
    )
    pos, own = ix.window("a", _at(), 72 * 3600 * US)
    priors = np.where(ix.change_id[pos] == "d-risky", 0.4, np.where(ix.change_id[pos] == "d-safe", 0.01, np.nan))
    r = rank_suspects(ix, pos, own, priors, _model(), _at())
    assert [ix.change_id[p] for p in r.positions] == ["d-risky", "t-1", "d-safe"]
    assert r.prior[1] == 0.05  # the 'enabled' share


def test_window_is_strictly_before_and_within_the_lookback() -> None:
    ix = _index(
        [
            ("deploy", "at-incident", "a", pd.Timedelta(0)),
            ("deploy", "too-old", "a", pd.Timedelta(hours=73)),
            ("deploy", "in", "a", pd.Timedelta(hours=5)),
            ("deploy", "other-service", "b", pd.Timedelta(hours=1)),
        ]
    )
    pos, own = ix.window("a", _at(), 72 * 3600 * US)
    assert list(ix.change_id[pos]) == ["in"] and own.all()
    pos, own = ix.window("a", _at(), 72 * 3600 * US, {"a": ("b",)})
    assert list(ix.change_id[pos]) == ["in", "other-service"] and list(own) == [True, False]


def test_dependency_changes_are_weighed_down() -> None:
    ix = _index(
        [("deploy", "mine", "a", pd.Timedelta(minutes=45)), ("deploy", "theirs", "b", pd.Timedelta(minutes=45))]
    )
    pos, own = ix.window("a", _at(), 72 * 3600 * US, {"a": ("b",)})
    r = rank_suspects(ix, pos, own, np.array([0.1, 0.1]), _model(config=SuspectConfig(dependency_weight=0.25)), _at())
    assert [ix.change_id[p] for p in r.positions] == ["mine", "theirs"]
    assert r.share[1] == pytest.approx(0.25 * r.share[0])


def test_rollback_after_the_incident_counts_only_once_seen() -> None:
    rollbacks = pd.DataFrame(
        {"rolled_back_by": ["rb-1"], "rolled_back_at": [T0 + pd.Timedelta(minutes=20)]},
        index=pd.Index(["d-b"], name="change_id"),
    )
    ix = _index(
        [("deploy", "d-a", "a", pd.Timedelta(minutes=45)), ("deploy", "d-b", "a", pd.Timedelta(minutes=90))], rollbacks
    )
    pos, own = ix.window("a", _at(), 72 * 3600 * US)
    live = rank_suspects(ix, pos, own, np.array([0.1, 0.1]), _model(), _at())
    assert ix.change_id[live.positions[0]] == "d-a" and not live.rolled_back.any()
    later = rank_suspects(ix, pos, own, np.array([0.1, 0.1]), _model(), _at(), _at(pd.Timedelta(hours=1)))
    assert ix.change_id[later.positions[0]] == "d-b" and later.rolled_back[0] and later.rollback_weight[0] == 10.0


def test_no_candidates_or_old_ones_leave_the_background() -> None:
    ix = _index([("deploy", "d", "a", pd.Timedelta(hours=60))])
    pos, own = ix.window("a", _at(), 72 * 3600 * US)
    r = rank_suspects(ix, pos, own, np.array([0.1]), _model(), _at())
    assert r.top_is_background and r.background > 0.9
    empty = rank_suspects(ix, *ix.window("zzz", _at(), 72 * 3600 * US), np.zeros(0), _model(), _at())
    assert empty.background == 1.0 and empty.top_is_background


def test_change_times_and_rollbacks_from_history(sim) -> None:  # type: ignore[no-untyped-def]
    changes = change_times(sim.history)
    assert set(changes["change_kind"]) == {"deploy", "toggle"}
    assert changes["time"].notna().all()
    rb = rollbacks_of(attribute(sim.history, AttributionConfig()), sim.history)
    assert len(rb) and rb["rolled_back_at"].notna().all()
    ix = ChangeIndex.build(changes, rb)
    rolled = ix.rolled_back_at < np.iinfo(np.int64).max
    assert rolled.sum() == len(set(rb.index) & set(changes.loc[changes["change_kind"].eq("deploy"), "change_id"]))
    assert (ix.rolled_back_at[rolled] >= ix.time[rolled]).all()


# --------------------------------------------------------------------------------------------
# When a deploy becomes a candidate, and whose lags teach the density


def test_a_deploy_still_rolling_out_is_a_suspect_from_its_start(sim) -> None:  # type: ignore[no-untyped-def]
    h = sim.history
    started = change_times(h)
    finished = change_times(h, deploy_time="finished")
    d = h.deploys.set_index(h.deploys["deploy_id"].astype("string"))
    dep = started[started["change_kind"].eq("deploy")].set_index("change_id")["time"]
    assert dep.eq(d["started_at"].fillna(d["created_at"]).reindex(dep.index)).all()
    fin = finished[finished["change_kind"].eq("deploy")].set_index("change_id")["time"]
    assert fin.eq(d["finished_at"].fillna(d["created_at"]).reindex(fin.index)).all()
    assert (fin >= dep.reindex(fin.index)).all()
    # an incident between a deploy's start and its finish: a candidate only on the start clock
    row = d[d["finished_at"].notna() & d["status"].eq("success") & d["environment"].eq("production")].iloc[0]
    at = int((row["started_at"] + (row["finished_at"] - row["started_at"]) / 2).value // 1000)
    lookback = 72 * 3600 * US
    on_start = ChangeIndex.build(started)
    on_finish = ChangeIndex.build(finished)
    assert row["deploy_id"] in set(on_start.change_id[on_start.window(row["service"], at, lookback)[0]])
    assert row["deploy_id"] not in set(on_finish.change_id[on_finish.window(row["service"], at, lookback)[0]])
    with pytest.raises(ValueError, match="deploy_time"):
        SuspectConfig(deploy_time="merged")  # type: ignore[arg-type]


def test_lag_density_learns_from_own_service_causes_on_the_ranking_clock() -> None:
    changes = pd.DataFrame(
        {
            "change_kind": ["deploy", "deploy", "toggle"],
            "change_id": pd.array(["d-own", "d-other", "t-own"], dtype="string"),
            "service": pd.array(["a", "b", "a"], dtype="string"),
            "time": pd.Series([T0, T0, T0 + pd.Timedelta(minutes=10)]).dt.as_unit("us"),
        }
    )
    incidents = pd.DataFrame(
        {
            "incident_id": pd.array(["i-1", "i-2", "i-3", "i-4"], dtype="string"),
            "service": pd.array(["a", "a", "a", "a"], dtype="string"),
            "created_at": pd.Series(
                [T0 + pd.Timedelta(minutes=30), T0 + pd.Timedelta(hours=3), T0 + pd.Timedelta(minutes=40), T0]
            ).dt.as_unit("us"),
        }
    )
    links = pd.DataFrame(
        {
            "incident_id": pd.array(["i-1", "i-2", "i-3", "i-4", None], dtype="string"),
            "change_kind": ["deploy", "deploy", "toggle", "deploy", "deploy"],
            "change_id": pd.array(["d-own", "d-other", "t-own", "d-own", "d-own"], dtype="string"),
            "method": ["explicit", "explicit", "explicit", "explicit", "rollback"],
            # the attribution's lag (from the deploy's finish) is not the one used
            "lag": pd.to_timedelta(["25min", "175min", "30min", "-5min", "20min"]),
        }
    )
    from features.labels.suspects import own_service_lags

    own = own_service_lags(links, changes, incidents)
    # i-2 names a change of another service (it reached 'a' through a dependency), i-4 has no positive lag
    assert list(own["change_kind"]) == ["deploy", "toggle"]
    assert own["lag"].tolist() == pytest.approx([0.5, 0.5])
    assert own_service_lags(links.iloc[0:0], changes, incidents).empty
