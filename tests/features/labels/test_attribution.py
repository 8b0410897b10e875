"""Attribution of incidents to changes: every rule, its priority, and label maturity."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from features.history.schema import (
    DEPLOYS,
    FLIP_ACTIONS,
    INCIDENTS,
    TOGGLE_EVENTS,
    History,
    TableSpec,
    conform,
    empty_table,
)
from features.labels.attribution import (
    AttributionConfig,
    attribute,
    data_end,
)

BASE = pd.Timestamp("2024-01-01T00:00:00Z")


def at(hours: float) -> str:
    """An ISO timestamp ``hours`` after BASE."""
    return (BASE + pd.Timedelta(hours=hours)).isoformat()


def _table(spec: TableSpec, rows: list[dict[str, Any]]) -> pd.DataFrame:
    if not rows:
        return empty_table(spec)
    conformed = conform(spec, pd.DataFrame(rows), source="test", file="test")
    assert conformed.rejects.empty, conformed.rejects
    return conformed.valid


def deploy(deploy_id: str, hours: float, service: str = "api", **kw: Any) -> dict[str, Any]:
    source, _, _ = deploy_id.partition(":")
    row = {
        "deploy_id": deploy_id,
        "source": source or "gh",
        "service": service,
        "environment": "production",
        "status": "success",
        "created_at": at(hours),
    }
    row.update(kw)
    return row


def flip(event_id: str, hours: float, flag_key: str = "flag", service: str | None = "api", **kw: Any) -> dict[str, Any]:
    row = {
        "event_id": event_id,
        "source": "ld",
        "flag_key": flag_key,
        "service": service,
        "environment": "production",
        "action": "enabled",
        "occurred_at": at(hours),
    }
    row.update(kw)
    return row


def incident(incident_id: str, hours: float, service: str | None = "api", **kw: Any) -> dict[str, Any]:
    row = {
        "incident_id": incident_id,
        "source": "pd",
        "service": service,
        "status": "resolved",
        "created_at": at(hours),
    }
    row.update(kw)
    return row


def make_history(
    deploys: list[dict[str, Any]] | None = None,
    toggles: list[dict[str, Any]] | None = None,
    incidents: list[dict[str, Any]] | None = None,
) -> History:
    """A canonical History built through the schema's boundary check (so dtypes are the stored ones)."""
    return History(
        _table(DEPLOYS, deploys or []), _table(TOGGLE_EVENTS, toggles or []), _table(INCIDENTS, incidents or [])
    )


def links_of(result: Any) -> dict[str, tuple[str, str, str]]:
    """incident_id -> (change_kind, change_id, matched_on), for incident links."""
    lk = result.links[result.links["incident_id"].notna()]
    assert not lk["incident_id"].duplicated().any(), "an incident got more than one cause"
    return {r.incident_id: (r.change_kind, r.change_id, r.matched_on) for r in lk.itertuples()}


def label(result: Any, deploy_id: str) -> pd.Series:
    dl = result.deploy_labels.set_index("deploy_id")
    return dl.loc[deploy_id]


CFG = AttributionConfig()


# --------------------------------------------------------------------------------------------
# 1. explicit


def test_explicit_deploy_id_full_and_native_beat_the_time_window() -> None:
    h = make_history(
        deploys=[deploy("gh:1", 0), deploy("gh:2", 10), deploy("gh:3", 11)],
        incidents=[
            incident("full", 12, caused_by_deploy_id="gh:1"),
            incident("native", 12, caused_by_deploy_id="2"),
        ],
    )
    r = attribute(h, CFG)
    assert links_of(r) == {"full": ("deploy", "gh:1", "deploy_id"), "native": ("deploy", "gh:2", "deploy_id")}
    assert label(r, "gh:1")["label_method"] == "explicit"
    assert bool(label(r, "gh:1")["failed"]) and bool(label(r, "gh:2")["failed"])
    assert not bool(label(r, "gh:3")["failed"])  # nearest, but the explicit cause wins
    lags = r.links.set_index("incident_id")["lag"]
    assert lags["full"] == pd.Timedelta(hours=12)


def test_native_id_shared_by_two_sources_prefers_incident_service() -> None:
    h = make_history(
        deploys=[deploy("gh:7", 0, service="api"), deploy("gl:7", 1, service="web")],
        incidents=[incident("i1", 2, service="api", caused_by_deploy_id="7")],
    )
    assert links_of(attribute(h, CFG)) == {"i1": ("deploy", "gh:7", "deploy_id")}


def test_explicit_commit_in_range_head_and_prefixes() -> None:
    full_a = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678"
    full_b = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
    h = make_history(
        deploys=[
            deploy("gh:1", 0, commit_sha="ccccccccc1", commit_shas=f"{full_a} ccccccccc1"),
            deploy("gh:2", 5, commit_sha=full_b[:9]),
            deploy("gh:3", 6),
        ],
        incidents=[
            incident("in_range", 7, caused_by_commit_sha=full_a[:7].upper()),  # short + upper case
            incident("head_short", 7, caused_by_commit_sha=full_b),  # deploy recorded a short sha
            incident("too_short", 7, caused_by_commit_sha=full_a[:6]),
            incident("unknown", 7, caused_by_commit_sha="deadbeefdeadbeef"),
        ],
    )
    r = attribute(h, CFG)
    got = links_of(r)
    assert got["in_range"] == ("deploy", "gh:1", "commit_sha")
    assert got["head_short"] == ("deploy", "gh:2", "commit_sha")
    assert "too_short" not in got and "unknown" not in got  # named a cause that matches nothing
    assert r.summary["incidents_explicit_unmatched"] == 2


def test_commit_shared_by_two_services_goes_to_the_incident_service() -> None:
    sha = "0123456789abcdef0123456789abcdef01234567"
    h = make_history(
        deploys=[deploy("gh:1", 0, service="api", commit_sha=sha), deploy("gh:2", 1, service="web", commit_sha=sha)],
        incidents=[
            incident("api_inc", 3, service="api", caused_by_commit_sha=sha),
            incident("web_inc", 3, service="web", caused_by_commit_sha=sha),
        ],
    )
    got = links_of(attribute(h, CFG))
    assert got == {"api_inc": ("deploy", "gh:1", "commit_sha"), "web_inc": ("deploy", "gh:2", "commit_sha")}


def test_commit_redeployed_goes_to_latest_deploy_before_incident() -> None:
    sha = "feedfacefeedface"
    h = make_history(
        deploys=[
            deploy("gh:1", 0, commit_sha=sha),
            deploy("gh:2", 5, commit_sha=sha),
            deploy("gh:3", 20, commit_sha=sha),
        ],
        incidents=[incident("i", 6, caused_by_commit_sha=sha)],
    )
    assert links_of(attribute(h, CFG)) == {"i": ("deploy", "gh:2", "commit_sha")}


def test_commit_sha_only_matches_shipped_production_deploys() -> None:
    sha = "abcabcabcabc"
    h = make_history(
        deploys=[
            deploy("gh:1", 0, commit_sha=sha, environment="staging"),
            deploy("gh:2", 1, commit_sha=sha, status="failure"),
            deploy("gh:3", 2, commit_sha=sha),
        ],
        incidents=[incident("i", 3, caused_by_commit_sha=sha)],
    )
    assert links_of(attribute(h, CFG)) == {"i": ("deploy", "gh:3", "commit_sha")}


def test_explicit_flag_key_latest_flip_before_incident() -> None:
    h = make_history(
        deploys=[deploy("gh:1", 9)],
        toggles=[
            flip("t1", 1, flag_key="checkout"),
            flip("t2", 2, flag_key="checkout", action="rollout_changed"),
            flip("t3", 3, flag_key="checkout", action="created"),  # not a flip
            flip("t4", 11, flag_key="checkout"),  # after the incident
            flip("t5", 4, flag_key="other"),
        ],
        incidents=[incident("i", 10, caused_by_flag_key="checkout")],
    )
    r = attribute(h, CFG)
    assert links_of(r) == {"i": ("toggle", "t2", "flag_key")}
    tl = r.toggle_labels.set_index("event_id")
    assert bool(tl.loc["t2", "failed"]) and not tl.loc[["t1", "t3", "t4", "t5"], "failed"].any()
    assert not bool(tl.loc["t3", "is_flip"])


def test_unmatched_explicit_cause_stays_unlinked_unless_fallback() -> None:
    h = make_history(deploys=[deploy("gh:1", 0)], incidents=[incident("i", 1, caused_by_deploy_id="gh:404")])
    assert links_of(attribute(h, CFG)) == {}
    fallback = attribute(h, AttributionConfig(fallback_on_unmatched_explicit=True))
    assert links_of(fallback) == {"i": ("deploy", "gh:1", "window")}


# --------------------------------------------------------------------------------------------
# 2. external labels


def test_external_labels_stand_as_given() -> None:
    h = make_history(
        deploys=[deploy("gh:1", 0, label=0), deploy("gh:2", 5, label=1), deploy("gh:3", 8, label=0)],
        incidents=[incident("i", 1), incident("j", 9, caused_by_deploy_id="gh:3")],
    )
    r = attribute(h, CFG)
    assert links_of(r)["i"] == ("deploy", "gh:1", "window")  # the link is kept for the record
    one, two, three = label(r, "gh:1"), label(r, "gh:2"), label(r, "gh:3")
    assert not bool(one["failed"]) and one["label_method"] == "external" and one["n_incidents"] == 1
    assert bool(two["failed"]) and two["label_method"] == "external" and two["n_incidents"] == 0
    assert bool(three["failed"]) and three["label_method"] == "explicit"  # explicit outranks external


# --------------------------------------------------------------------------------------------
# 3. time window


def test_time_window_nearest_change_of_same_service_within_lag() -> None:
    h = make_history(
        deploys=[deploy("gh:1", 0), deploy("gh:2", 3), deploy("gh:3", 4, service="web"), deploy("gh:4", 100)],
        incidents=[
            incident("near", 5),  # gh:2 (gh:3 is another service)
            incident("far", 40),  # 37 h after gh:2: outside 24 h
            incident("exact", 100),  # same instant as gh:4
            incident("before_any", -5),
            incident("no_service", 5, service=None),
        ],
    )
    r = attribute(h, CFG)
    assert links_of(r) == {"near": ("deploy", "gh:2", "window"), "exact": ("deploy", "gh:4", "window")}
    lag = r.links.set_index("incident_id")["lag"]
    assert lag["near"] == pd.Timedelta(hours=2) and lag["exact"] == pd.Timedelta(0)
    # DevLake: no window, any service
    dl = attribute(h, AttributionConfig.devlake())
    assert links_of(dl) == {
        "near": ("deploy", "gh:3", "window"),
        "far": ("deploy", "gh:3", "window"),
        "exact": ("deploy", "gh:4", "window"),
        "no_service": ("deploy", "gh:3", "window"),
    }


def test_lag_boundary_is_inclusive() -> None:
    h = make_history(deploys=[deploy("gh:1", 0)], incidents=[incident("edge", 24), incident("past", 24.01)])
    assert set(links_of(attribute(h, CFG))) == {"edge"}


def test_only_shipped_production_deploys_are_window_candidates() -> None:
    h = make_history(
        deploys=[
            deploy("gh:1", 0),
            deploy("gh:2", 1, environment="staging"),
            deploy("gh:3", 2, status="failure"),
            deploy("gh:4", 3, status="canceled"),
        ],
        incidents=[incident("i", 4)],
    )
    r = attribute(h, CFG)
    assert links_of(r) == {"i": ("deploy", "gh:1", "window")}
    assert not label(r, "gh:2")["eligible"] and not label(r, "gh:3")["eligible"]
    any_env = attribute(h, AttributionConfig(production_only=False))
    assert links_of(any_env) == {"i": ("deploy", "gh:2", "window")}


def test_incidents_of_other_environments_not_linked_by_window() -> None:
    h = make_history(
        deploys=[deploy("gh:1", 0)], incidents=[incident("stg", 1, environment="staging"), incident("p", 1)]
    )
    r = attribute(h, CFG)
    assert set(links_of(r)) == {"p"}
    assert r.summary["incidents_non_production"] == 1


def test_deploy_effective_time_is_finished_at() -> None:
    h = make_history(
        deploys=[deploy("gh:1", 0), deploy("gh:2", 2, finished_at=at(6))],
        incidents=[incident("i", 4)],
    )
    assert links_of(attribute(h, CFG)) == {"i": ("deploy", "gh:1", "window")}  # gh:2 not live yet
    assert links_of(attribute(h, AttributionConfig(change_time="created"))) == {"i": ("deploy", "gh:2", "window")}
    assert label(attribute(h, CFG), "gh:2")["change_time"] == pd.Timestamp(at(6))


def test_nearer_of_deploy_and_flip_wins_and_deploy_wins_ties() -> None:
    h = make_history(
        deploys=[deploy("gh:1", 0), deploy("gh:2", 10)],
        toggles=[flip("t1", 2), flip("t2", 10), flip("t3", 1, service="web"), flip("t4", 2.5, action="archived")],
        incidents=[incident("after_flip", 3), incident("tie", 11)],
    )
    r = attribute(h, CFG)
    assert links_of(r) == {"after_flip": ("toggle", "t1", "window"), "tie": ("deploy", "gh:2", "window")}
    no_toggles = attribute(h, AttributionConfig(include_toggles=False))
    assert links_of(no_toggles)["after_flip"] == ("deploy", "gh:1", "window")


def test_tie_between_two_deploys_is_deterministic() -> None:
    rows = [deploy("gh:b", 5), deploy("gh:a", 5), deploy("gh:c", 5, created_at=at(4), finished_at=at(5))]
    h = make_history(deploys=rows, incidents=[incident("i", 6)])
    first = links_of(attribute(h, CFG))
    again = links_of(attribute(make_history(deploys=rows[::-1], incidents=[incident("i", 6)]), CFG))
    assert first == again == {"i": ("deploy", "gh:b", "window")}  # latest created, then largest id


def test_multiple_incidents_for_one_deploy() -> None:
    h = make_history(deploys=[deploy("gh:1", 0)], incidents=[incident(f"i{k}", 1 + k) for k in range(3)])
    r = attribute(h, CFG)
    one = label(r, "gh:1")
    assert bool(one["failed"]) and one["n_incidents"] == 3 and one["label_method"] == "time_window"
    assert r.summary["incidents_linked"] == 3


def test_flip_without_service_is_only_matched_in_project_scope() -> None:
    h = make_history(toggles=[flip("t1", 0, service=None)], incidents=[incident("i", 1)])
    assert links_of(attribute(h, CFG)) == {}
    assert links_of(attribute(h, AttributionConfig(scope="project"))) == {"i": ("toggle", "t1", "window")}


# --------------------------------------------------------------------------------------------
# 4. not change related


def test_not_change_related_never_linked_even_when_explicit() -> None:
    h = make_history(
        deploys=[deploy("gh:1", 0)],
        incidents=[
            incident("ncr", 1, not_change_related=True),
            incident("ncr_explicit", 1, not_change_related=True, caused_by_deploy_id="gh:1"),
        ],
    )
    r = attribute(h, CFG)
    assert links_of(r) == {}
    assert not bool(label(r, "gh:1")["failed"])
    assert r.summary["incidents_not_change_related"] == 2


# --------------------------------------------------------------------------------------------
# Rollbacks


def test_rollbacks_mark_the_reverted_deploy() -> None:
    h = make_history(
        deploys=[
            deploy("gh:1", 0),
            deploy("gh:2", 5),
            deploy("gh:3", 6, is_rollback=True, reverts_deploy_id="1"),  # native id
            deploy("gh:4", 30),
            deploy("gh:5", 31, service="web"),
            deploy("gh:6", 32, status="rolled_back"),  # reverts the previous api deploy: gh:4
            deploy("gh:7", 40, environment="staging"),
            deploy("gh:8", 41, environment="staging", is_rollback=True),
        ],
    )
    r = attribute(h, CFG)
    rb = r.links[r.links["method"].eq("rollback")].set_index("change_id")
    assert sorted(rb.index) == ["gh:1", "gh:4"]
    assert rb.loc["gh:1", "evidence"] == "gh:3" and rb.loc["gh:1", "matched_on"] == "reverts_deploy_id"
    assert rb.loc["gh:4", "evidence"] == "gh:6" and rb.loc["gh:4", "matched_on"] == "previous_deploy"
    assert rb["incident_id"].isna().all()
    labels = r.deploy_labels.set_index("deploy_id")
    assert labels.loc[["gh:1", "gh:4"], "failed"].all()
    assert labels.loc[["gh:1", "gh:4"], "label_method"].eq("rollback").all()
    assert not labels.loc[["gh:2", "gh:3", "gh:5", "gh:6", "gh:7"], "failed"].any()
    off = attribute(h, AttributionConfig(rollback_marks_failed=False))
    assert not off.deploy_labels["failed"].any() and off.links.empty


def test_external_label_zero_outranks_rollback() -> None:
    h = make_history(deploys=[deploy("gh:1", 0, label=0), deploy("gh:2", 1, is_rollback=True)])
    assert not bool(label(attribute(h, CFG), "gh:1")["failed"])


# --------------------------------------------------------------------------------------------
# Maturity and as_of


def test_maturity_window_and_as_of() -> None:
    h = make_history(
        deploys=[deploy("gh:1", 0), deploy("gh:2", 30), deploy("gh:3", 50)],
        incidents=[incident("i", 31), incident("late", 51)],
    )
    r = attribute(h, CFG)
    assert r.as_of == pd.Timestamp(at(51)) == data_end(h)
    dl = r.deploy_labels.set_index("deploy_id")
    assert dl["matured_at"].to_dict() == {
        k: pd.Timestamp(at(t + 24)) for k, t in (("gh:1", 0), ("gh:2", 30), ("gh:3", 50))
    }
    assert dl["mature"].to_dict() == {"gh:1": True, "gh:2": False, "gh:3": False}
    assert r.summary["deploys_immature"] == 2

    earlier = attribute(h, CFG, as_of=pd.Timestamp(at(40)))
    assert set(links_of(earlier)) == {"i"}  # the later incident is not known yet
    assert not bool(label(earlier, "gh:3")["failed"]) and not bool(label(earlier, "gh:3")["mature"])

    devlake = attribute(h, AttributionConfig.devlake(), as_of=pd.Timestamp(at(24 * 7)))
    dv = devlake.deploy_labels.set_index("deploy_id")
    assert dv.loc["gh:1", "matured_at"] == pd.Timestamp(at(24 * 7))  # documented 7-day maturity window
    assert dv["mature"].to_dict() == {"gh:1": True, "gh:2": False, "gh:3": False}


def test_toggle_labels_mature_like_deploys() -> None:
    h = make_history(toggles=[flip("t1", 0), flip("t2", 20)], incidents=[incident("i", 30)])
    tl = attribute(h, CFG).toggle_labels.set_index("event_id")
    assert tl["mature"].to_dict() == {"t1": True, "t2": False}
    assert bool(tl.loc["t2", "failed"])


def test_empty_history_and_inputs_untouched() -> None:
    r = attribute(History.empty(), CFG)
    assert r.links.empty and r.deploy_labels.empty and r.summary["incidents"] == 0
    h = make_history(
        deploys=[deploy("gh:1", 0, commit_shas="abcdefabc"), deploy("gh:2", 1, is_rollback=True)],
        toggles=[flip("t", 0.5)],
        incidents=[incident("i", 2, caused_by_commit_sha="abcdefabc"), incident("j", 2)],
    )
    before = [t.copy() for t in (h.deploys, h.toggle_events, h.incidents)]
    attribute(h, CFG)
    for old, new in zip(before, (h.deploys, h.toggle_events, h.incidents), strict=True):
        pd.testing.assert_frame_equal(old, new)


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        AttributionConfig(max_lag=pd.Timedelta(0))
    with pytest.raises(ValueError):
        AttributionConfig(scope="team")  # type: ignore[arg-type]
    assert AttributionConfig(max_lag=None).window == pd.Timedelta(days=7)


# --------------------------------------------------------------------------------------------
# The time-window rule against a brute-force reading of it, on random histories


def random_history(seed: int, n_deploys: int = 300, n_flips: int = 120, n_incidents: int = 150) -> History:
    """A random history with heavy time collisions (hour grid), several services and environments."""
    rng = np.random.default_rng(seed)
    services = ["api", "web", "db"]
    span = 24 * 30
    deploys = [
        deploy(
            f"gh:{k}",
            float(rng.integers(0, span)),
            service=str(rng.choice(services)),
            environment=str(rng.choice(["production", "production", "staging"])),
            status=str(rng.choice(["success", "success", "success", "failure"])),
            squad=f"squad-{k % 2}",
            tribe="tribe",
        )
        for k in range(n_deploys)
    ]
    for d in deploys:  # finish 0-2 h after creation, sometimes unknown
        if rng.random() < 0.7:
            d["finished_at"] = (pd.Timestamp(d["created_at"]) + pd.Timedelta(hours=int(rng.integers(0, 3)))).isoformat()
    toggles = [
        flip(
            f"t{k}",
            float(rng.integers(0, span)),
            flag_key=f"f{k % 7}",
            service=str(rng.choice(services)),
            action=str(rng.choice([*FLIP_ACTIONS, "created", "archived"])),
        )
        for k in range(n_flips)
    ]
    incidents = []
    for k in range(n_incidents):
        t = float(rng.integers(0, span))
        created = pd.Timestamp(at(t))
        incidents.append(
            incident(
                f"i{k}",
                t,
                service=str(rng.choice(services)),
                not_change_related=bool(rng.random() < 0.1),
                resolved_at=(created + pd.Timedelta(minutes=int(rng.integers(5, 600)))).isoformat()
                if rng.random() < 0.9
                else None,
                status="resolved",
            )
        )
    return make_history(deploys, toggles, incidents)


def brute_force_window(h: History, max_lag: pd.Timedelta | None, project: bool) -> dict[str, tuple[str, str]]:
    """The time-window rule read literally, one incident at a time."""
    changes: list[tuple[Any, ...]] = []
    deploy_rows: Any = h.deploys.itertuples()
    toggle_rows: Any = h.toggle_events.itertuples()
    incident_rows: Any = h.incidents.itertuples()
    for d in deploy_rows:
        if d.environment == "production" and d.status in ("success", "rolled_back"):
            t = d.finished_at if not pd.isna(d.finished_at) else d.created_at
            changes.append((t, 1, d.created_at, d.deploy_id, d.service, "deploy"))
    for e in toggle_rows:
        if e.action in FLIP_ACTIONS:
            changes.append((e.occurred_at, 0, e.occurred_at, e.event_id, e.service, "toggle"))
    out = {}
    for i in incident_rows:
        if not pd.isna(i.not_change_related) and bool(i.not_change_related):
            continue
        best: tuple[Any, ...] | None = None
        for c in changes:
            if c[0] > i.created_at or (max_lag is not None and i.created_at - c[0] > max_lag):
                continue
            if not project and c[4] != i.service:
                continue
            if best is None or c[:4] > best[:4]:
                best = c
        if best is not None:
            out[i.incident_id] = (best[5], best[3])
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_time_window_matches_brute_force(seed: int) -> None:
    h = random_history(seed)
    for config in (CFG, AttributionConfig(max_lag=pd.Timedelta(hours=6)), AttributionConfig.devlake()):
        got = {k: v[:2] for k, v in links_of(attribute(h, config)).items()}
        expected = brute_force_window(h, config.max_lag, config.scope == "project")
        if not config.include_toggles:
            h_no = History(h.deploys, h.toggle_events.iloc[0:0], h.incidents)
            expected = brute_force_window(h_no, config.max_lag, config.scope == "project")
        assert got == expected
        assert len(got) > 20


def test_devlake_preset_ignores_cause_fields_flags_and_rollbacks() -> None:
    h = make_history(
        deploys=[deploy("gh:1", 0), deploy("gh:2", 5, service="web"), deploy("gh:3", 6, is_rollback=True)],
        toggles=[flip("t1", 5.5)],
        incidents=[incident("i", 7, caused_by_deploy_id="gh:1")],
    )
    r = attribute(h, AttributionConfig.devlake())
    assert links_of(r) == {"i": ("deploy", "gh:3", "window")}
    assert r.links["method"].eq("time_window").all()
