"""Properties of the point-in-time features, checked on random small histories (hypothesis).

- every window feature equals a brute-force per-deploy reference written independently;
- nothing at or after a deploy's time (any table, labels matured at or after it) changes it;
- permuting the input rows changes nothing;
- the sorted-array kernels equal brute force, in both time encodings.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.history.schema import FLIP_ACTIONS, TOGGLE_ACTIONS, History
from features.pointintime.compute import FeatureConfig, build_features
from features.pointintime.windows import (
    OPEN_END,
    Queries,
    count_before,
    count_covering,
    count_window,
    group_time_order,
    last_before,
    min_start_covering,
    sort_events,
    sort_intervals,
)
from tests.features.pointintime.test_features import BASE, deploy, incident, labels, make_history, toggle

STEP = pd.Timedelta(minutes=30)  # coarse grid: ties and exact window edges are common
SPAN_STEPS = 48 * 6  # six days
CONFIG = FeatureConfig(stale_after_days=2, flip_window_minutes=30)
SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _at(step: int) -> pd.Timestamp:
    return BASE + step * STEP


deploy_rows = st.lists(
    st.fixed_dictionaries(
        {
            "step": st.integers(0, SPAN_STEPS),
            "service": st.sampled_from(["s0", "s1", "s2"]),
            "environment": st.sampled_from(["production", "production", "staging"]),
            "author": st.sampled_from(["a0", "a1", None]),
            "lines_added": st.one_of(st.none(), st.integers(0, 1000)),
            "failed": st.booleans(),
            "maturity": st.integers(1, 60),
        }
    ),
    min_size=1,
    max_size=25,
)
toggle_rows = st.lists(
    st.fixed_dictionaries(
        {
            "step": st.one_of(st.integers(-150, SPAN_STEPS), st.sampled_from([-100, 0, 40])),  # ties per flag
            "service": st.sampled_from(["s0", "s1", None]),
            "flag_key": st.sampled_from(["f0", "f1", "f2"]),
            "environment": st.sampled_from(["production", "staging", None]),
            "action": st.sampled_from(TOGGLE_ACTIONS),
            "new_enabled": st.sampled_from([True, False, None]),
            "actor": st.sampled_from(["u0", "u1", "u2", None]),
        }
    ),
    max_size=30,
)
incident_rows = st.lists(
    st.fixed_dictionaries(
        {
            "step": st.integers(-100, SPAN_STEPS),
            "service": st.sampled_from(["s0", "s1", None]),
            "environment": st.sampled_from(["production", "staging", None]),
        }
    ),
    max_size=10,
)


def _build(
    deps: list[dict[str, Any]], togs: list[dict[str, Any]], incs: list[dict[str, Any]]
) -> tuple[History, pd.DataFrame]:
    history = make_history(
        [
            deploy(i, _at(d["step"]), **{k: d[k] for k in ("service", "environment", "author", "lines_added")})
            for i, d in enumerate(deps)
        ],
        [
            toggle(
                i,
                _at(t["step"]),
                t["action"],
                **{k: t[k] for k in ("service", "flag_key", "environment", "new_enabled", "actor")},
            )
            for i, t in enumerate(togs)
        ],
        [incident(i, _at(x["step"]), service=x["service"], environment=x["environment"]) for i, x in enumerate(incs)],
    )
    lab = labels([(f"d:{i}", d["failed"], _at(d["step"] + d["maturity"])) for i, d in enumerate(deps)])
    return history, lab


# --------------------------------------------------------------------------------------------
# A brute-force reference: one deploy at a time, plain Python over rows


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [
        {str(k): v for k, v in r.items()} for r in frame.astype(object).where(frame.notna(), None).to_dict("records")
    ]


def _reference(history: History, lab: pd.DataFrame, config: FeatureConfig) -> pd.DataFrame:
    deps, togs = _records(history.deploys), _records(history.toggle_events)
    incs, labs = _records(history.incidents), _records(lab)
    prod = [d for d in deps if d["environment"] == "production"]
    by_id = {d["deploy_id"]: d for d in prod}
    envs_ok = {None, "production"}
    w, p0 = config.smoothing_prior_weight, config.base_failure_rate
    stale = pd.Timedelta(days=config.stale_after_days)
    tie_order = {a: i for i, a in enumerate(TOGGLE_ACTIONS)}
    rows = []
    for e in deps:
        t, svc, author = e["created_at"], e["service"], e["author"]
        past = [d for d in prod if d["created_at"] < t]
        mine = [d for d in past if d["service"] == svc]
        flips = [
            x
            for x in togs
            if x["service"] == svc
            and x["environment"] in envs_ok
            and x["action"] in FLIP_ACTIONS
            and x["occurred_at"] < t
        ]
        svc_incs = [i for i in incs if i["service"] == svc and i["environment"] in envs_ok and i["created_at"] < t]

        def within(times: list[pd.Timestamp], width: pd.Timedelta, t: pd.Timestamp = t) -> int:
            return sum(t - width <= x < t for x in times)

        # flag state, replaying each flag's events before t in (time, action, new_enabled) order
        flags: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
        for x in togs:
            if x["service"] == svc and x["environment"] in envs_ok and x["occurred_at"] < t:
                flags.setdefault((x["project"], x["flag_key"], x["environment"]), []).append(x)
        enabled_touch = []
        for events in flags.values():
            events.sort(
                key=lambda x: (x["occurred_at"], tie_order[x["action"]], {None: 0, False: 1, True: 2}[x["new_enabled"]])
            )
            on = False
            for x in events:
                if x["action"] == "enabled":
                    on = True
                elif x["action"] in ("disabled", "archived", "deleted"):
                    on = False
                elif x["new_enabled"] is not None:
                    on = bool(x["new_enabled"])
                elif x["action"] == "created":
                    on = False
            if on:
                enabled_touch.append(events[-1]["occurred_at"])
        stale_ages = [t - x for x in enabled_touch if t - x > stale]

        usable = []
        for lbl in labs:
            d = by_id.get(lbl["deploy_id"])
            if d is not None and lbl["matured_at"] is not None and max(lbl["matured_at"], d["created_at"]) < t:
                usable.append((d, bool(lbl["failed"])))
        prior = (sum(f for _, f in usable) + w * p0) / (len(usable) + w)
        svc_l = [f for d, f in usable if d["service"] == svc]
        auth_l = [f for d, f in usable if author is not None and d["author"] == author]
        by_author = [d for d in past if author is not None and d["author"] == author]
        prev = max((d["created_at"] for d in mine), default=None)
        last_inc = max((i["created_at"] for i in svc_incs), default=None)
        rows.append(
            {
                "toggle_flips_1h": within([x["occurred_at"] for x in flips], pd.Timedelta(hours=1)),
                "toggle_flips_24h": within([x["occurred_at"] for x in flips], pd.Timedelta(days=1)),
                "toggle_flips_7d": within([x["occurred_at"] for x in flips], pd.Timedelta(days=7)),
                "toggle_flips_recent": within(
                    [x["occurred_at"] for x in flips], pd.Timedelta(minutes=config.flip_window_minutes)
                ),
                "toggle_actors_24h": len(
                    {
                        x["actor"]
                        for x in flips
                        if x["actor"] is not None and x["occurred_at"] >= t - pd.Timedelta(days=1)
                    }
                ),
                "no_toggle_history": float(
                    not any(x["service"] == svc and x["environment"] in envs_ok and x["occurred_at"] < t for x in togs)
                ),
                "toggles_enabled": len(enabled_touch),
                "toggles_stale": len(stale_ages),
                "toggle_oldest_stale_days": max(stale_ages) / pd.Timedelta(days=1) if stale_ages else 0.0,
                "service_deploys_24h": within([d["created_at"] for d in mine], pd.Timedelta(days=1)),
                "service_deploys_7d": within([d["created_at"] for d in mine], pd.Timedelta(days=7)),
                "service_prior_deploys": len(mine),
                "hours_since_prev_deploy": (t - prev) / pd.Timedelta(hours=1) if prev is not None else 365 * 24.0,
                "service_incidents_7d": within([i["created_at"] for i in svc_incs], pd.Timedelta(days=7)),
                "service_incidents_30d": within([i["created_at"] for i in svc_incs], pd.Timedelta(days=30)),
                "days_since_last_incident": (t - last_inc) / pd.Timedelta(days=1) if last_inc is not None else 365.0,
                "author_prior_deploys": len(by_author),
                "author_service_prior_deploys": sum(d["service"] == svc for d in by_author),
                "author_deploys_7d": within([d["created_at"] for d in by_author], pd.Timedelta(days=7)),
                "service_failure_rate": (sum(svc_l) + w * prior) / (len(svc_l) + w),
                "service_matured_labels": len(svc_l),
                "author_failure_rate": (sum(auth_l) + w * prior) / (len(auth_l) + w),
                "author_matured_labels": len(auth_l),
            }
        )
    return pd.DataFrame(rows, dtype=np.float64)


@SETTINGS
@given(deploy_rows, toggle_rows, incident_rows)
def test_features_equal_a_brute_force_reference(
    deps: list[dict[str, Any]], togs: list[dict[str, Any]], incs: list[dict[str, Any]]
) -> None:
    history, lab = _build(deps, togs, incs)
    ours = build_features(history.deploys, history, lab, CONFIG).reset_index(drop=True)
    expected = _reference(history, lab, CONFIG)
    pd.testing.assert_frame_equal(ours[expected.columns], expected, check_exact=False, rtol=1e-12)


# --------------------------------------------------------------------------------------------
# Nothing at or after t matters; row order does not matter


@SETTINGS
@given(deploy_rows, toggle_rows, incident_rows, st.data())
def test_events_at_or_after_the_deploy_do_not_change_its_features(
    deps: list[dict[str, Any]], togs: list[dict[str, Any]], incs: list[dict[str, Any]], data: st.DataObject
) -> None:
    k = data.draw(st.integers(0, len(deps) - 1), label="entity")
    t_step = deps[k]["step"]
    future = st.integers(t_step, SPAN_STEPS + 10)

    # Perturb the future: drop, shift within the future, or add rows, in every table.
    def perturb(
        rows: list[dict[str, Any]], extra: list[dict[str, Any]], protect: int | None = None
    ) -> list[dict[str, Any]]:
        out = []
        for i, r in enumerate(rows):
            if i == protect or r["step"] < t_step:
                out.append(r)
            elif data.draw(st.booleans()):
                out.append({**r, "step": data.draw(future)})
        return out + [{**r, "step": data.draw(future)} for r in extra]

    new_deps = perturb(deps, data.draw(st.lists(deploy_rows.map(lambda x: x[0]), max_size=3)), protect=k)
    # Labels: a past deploy's label that matures at/after t may move to any later time.
    new_deps = [
        {
            **d,
            "maturity": d["maturity"]
            if d["step"] + d["maturity"] < t_step
            else data.draw(st.integers(t_step - d["step"], 400)),
        }
        if d["step"] < t_step
        else d
        for d in new_deps
    ]
    new_togs = perturb(togs, data.draw(toggle_rows.map(lambda x: x[:3])))
    new_incs = perturb(incs, data.draw(incident_rows.map(lambda x: x[:2])))
    before, lab_before = _build(deps, togs, incs)
    after, lab_after = _build(new_deps, new_togs, new_incs)
    entity = before.deploys.iloc[[k]]
    a = build_features(entity, before, lab_before, CONFIG)
    b = build_features(entity, after, lab_after, CONFIG)
    pd.testing.assert_frame_equal(a, b)


@SETTINGS
@given(deploy_rows, toggle_rows, incident_rows, st.randoms(use_true_random=False))
def test_permuting_input_rows_changes_nothing(
    deps: list[dict[str, Any]], togs: list[dict[str, Any]], incs: list[dict[str, Any]], rnd: Any
) -> None:
    history, lab = _build(deps, togs, incs)

    def shuffled(frame: pd.DataFrame) -> pd.DataFrame:
        order = list(range(len(frame)))
        rnd.shuffle(order)
        return frame.iloc[order].reset_index(drop=True)

    perm = History(shuffled(history.deploys), shuffled(history.toggle_events), shuffled(history.incidents))
    base = build_features(history.deploys, history, lab, CONFIG).set_index("deploy_id")
    moved = build_features(shuffled(history.deploys), perm, shuffled(lab), CONFIG).set_index("deploy_id")
    pd.testing.assert_frame_equal(moved.loc[base.index], base)


# --------------------------------------------------------------------------------------------
# Kernels against brute force, in both time encodings

times = st.integers(-50, 50)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 3), times), max_size=30),
    st.lists(st.tuples(st.integers(-1, 5), times), min_size=1, max_size=20),
    st.integers(1, 40),
    st.booleans(),
)
def test_event_kernels_match_brute_force(
    events: list[tuple[int, int]], queries: list[tuple[int, int]], width: int, ranks: bool
) -> None:
    g = np.array([e[0] for e in events], dtype=np.int64)
    t = np.array([e[1] for e in events], dtype=np.int64)
    qg = np.array([q[0] for q in queries], dtype=np.int64)
    qt = np.array([q[1] for q in queries], dtype=np.int64)
    idx = sort_events(g, t, force_ranks=ranks)
    before = [sum(1 for e in events if e[0] == a and e[1] < b) for a, b in queries]
    window = [sum(1 for e in events if e[0] == a and b - width <= e[1] < b) for a, b in queries]
    last = [max((e[1] for e in events if e[0] == a and e[1] < b), default=None) for a, b in queries]
    assert count_before(idx, qg, qt).tolist() == before
    assert count_window(idx, qg, qt, width).tolist() == window
    values, found = last_before(idx, qg, qt)
    assert [int(v) if f else None for v, f in zip(values, found, strict=True)] == last
    q = Queries.of(qg, qt)
    assert q.restore({"c": count_before(idx, q.groups, q.times)})["c"].tolist() == before


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 3), times, st.one_of(times, st.just(OPEN_END))), max_size=30),
    st.lists(st.tuples(st.integers(-1, 5), times), min_size=1, max_size=20),
    st.booleans(),
)
def test_interval_kernels_match_brute_force(
    intervals: list[tuple[int, int, int]], queries: list[tuple[int, int]], ranks: bool
) -> None:
    g = np.array([i[0] for i in intervals], dtype=np.int64)
    a = np.array([i[1] for i in intervals], dtype=np.int64)
    b = np.array([i[2] for i in intervals], dtype=np.int64)
    qg = np.array([q[0] for q in queries], dtype=np.int64)
    qt = np.array([q[1] for q in queries], dtype=np.int64)
    idx = sort_intervals(g, a, b, force_ranks=ranks)
    covering = [[s for (h, s, e) in intervals if h == x and s < y <= e] for x, y in queries]
    assert count_covering(idx, qg, qt).tolist() == [len(c) for c in covering]
    values, found = min_start_covering(idx, qg, qt)
    assert [int(v) if f else None for v, f in zip(values, found, strict=True)] == [
        min(c, default=None) for c in covering
    ]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(-1, 4), st.one_of(times, st.integers(-(2**61), 2**61)), st.integers(0, 30)),
        max_size=40,
    ),
)
def test_group_time_order_sorts_by_group_time_tie_in_every_key_regime(rows: list[tuple[int, int, int]]) -> None:
    g = np.array([r[0] for r in rows], dtype=np.int64)
    t = np.array([r[1] for r in rows], dtype=np.int64)
    tie = np.array([r[2] for r in rows], dtype=np.int64)
    order = group_time_order(g, t, tie)
    assert sorted(order.tolist()) == list(range(len(rows)))
    assert [rows[i] for i in order] == sorted(rows)
