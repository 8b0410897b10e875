"""Point-in-time features: window edges, toggle state, labels, timing, missing inputs, scoring = training."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pytest

from features.history.schema import DEPLOYS, INCIDENTS, TOGGLE_EVENTS, History, empty_table
from features.pointintime.catalog import FEATURE_SET_VERSION
from features.pointintime.compute import (
    CATEGORICAL_COLUMNS,
    MISSING_CATEGORY,
    FeatureConfig,
    build_features,
    feature_columns,
)

BASE = pd.Timestamp("2025-03-03T12:00:00Z")  # a Monday, noon UTC
H = pd.Timedelta(hours=1)
D = pd.Timedelta(days=1)
US = pd.Timedelta(microseconds=1)


def _table(spec: Any, rows: Sequence[dict[str, Any]], defaults: dict[str, Any]) -> pd.DataFrame:
    """Rows in the canonical dtypes of ``spec`` (what the store hands out), ``extra_*`` as Float64."""
    empty = empty_table(spec)
    if not rows:
        return empty
    records = [{**defaults, **r} for r in rows]
    names = list(empty.columns) + sorted({k for r in records for k in r if k.startswith("extra_")})
    columns: dict[str, Any] = {}
    for c in names:
        dtype: Any = empty[c].dtype if c in empty.columns else "Float64"
        columns[c] = pd.array([r.get(c) for r in records], dtype=dtype)
    return pd.DataFrame(columns)


def deploy(i: int | str, at: pd.Timestamp, **fields: Any) -> dict[str, Any]:
    return {"deploy_id": f"d:{i}", "created_at": at, **fields}


def toggle(i: int | str, at: pd.Timestamp, action: str, **fields: Any) -> dict[str, Any]:
    return {"event_id": f"t:{i}", "occurred_at": at, "action": action, **fields}


def incident(i: int | str, at: pd.Timestamp, **fields: Any) -> dict[str, Any]:
    return {"incident_id": f"i:{i}", "created_at": at, **fields}


def make_history(
    deploys: Sequence[dict[str, Any]] = (),
    toggles: Sequence[dict[str, Any]] = (),
    incidents: Sequence[dict[str, Any]] = (),
) -> History:
    """A canonical History from a few hand-written rows."""
    return History(
        _table(
            DEPLOYS, deploys, {"source": "test", "service": "svc", "environment": "production", "status": "success"}
        ),
        _table(TOGGLE_EVENTS, toggles, {"source": "test", "flag_key": "flag", "service": "svc"}),
        _table(INCIDENTS, incidents, {"source": "test", "service": "svc", "status": "resolved"}),
    )


def labels(rows: Sequence[tuple[str, bool, pd.Timestamp]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "deploy_id": pd.Series([r[0] for r in rows], dtype="string"),
            "failed": pd.Series([r[1] for r in rows], dtype="boolean"),
            "matured_at": pd.Series([r[2] for r in rows], dtype="datetime64[us, UTC]"),
        }
    )


NO_LABELS = labels([])


def features_of(history: History, deploy_labels: pd.DataFrame = NO_LABELS, **config: Any) -> pd.DataFrame:
    return build_features(history.deploys, history, deploy_labels, FeatureConfig(**config)).set_index("deploy_id")


def score(row: dict[str, Any], history: History, deploy_labels: pd.DataFrame = NO_LABELS, **config: Any) -> pd.Series:
    out = build_features(pd.DataFrame([row]), history, deploy_labels, FeatureConfig(**config))
    assert len(out) == 1
    return out.iloc[0]


# --------------------------------------------------------------------------------------------
# Strictly before: window edges


def test_window_edges_are_inclusive_below_and_strict_at_the_deploy_time() -> None:
    t = BASE
    history = make_history(
        deploys=[
            deploy(0, t - 24 * H - US),  # just outside 24 h
            deploy(1, t - 24 * H),  # exactly 24 h before: inside [t - 24 h, t)
            deploy(2, t - US),
            deploy(3, t),  # the entity
            deploy(4, t, service="svc"),  # same instant: must not see each other
        ],
        toggles=[
            toggle(0, t - H - US, "enabled"),
            toggle(1, t - H, "disabled"),
            toggle(2, t - 30 * pd.Timedelta(minutes=1), "rollout_changed"),
            toggle(3, t, "enabled"),  # at the deploy time: not seen
        ],
        incidents=[incident(0, t - 7 * D), incident(1, t - 7 * D - US), incident(2, t)],
    )
    f = features_of(history)
    for d in ("d:3", "d:4"):
        row = f.loc[d]
        assert row["service_deploys_24h"] == 2  # d:1 and d:2
        assert row["service_deploys_7d"] == 3
        assert row["service_prior_deploys"] == 3
        assert row["hours_since_prev_deploy"] == pytest.approx(1e-6 / 3600)
        assert row["toggle_flips_1h"] == 2  # t-1h and t-30min; t-1h-1us is outside
        assert row["toggle_flips_recent"] == 1  # 30-minute window: only t-30min
        assert row["toggle_flips_24h"] == 3
        assert row["service_incidents_7d"] == 1
        assert row["service_incidents_30d"] == 2
        assert row["days_since_last_incident"] == 7
    first = f.loc["d:0"]
    assert first["service_prior_deploys"] == 0 and first["no_prev_deploy"] == 1
    assert first["hours_since_prev_deploy"] == 365 * 24
    assert first["no_prev_incident"] == 0 and first["service_incidents_7d"] == 2


def test_only_production_deploys_of_the_same_service_count() -> None:
    t = BASE
    history = make_history(
        deploys=[
            deploy(0, t - H, environment="staging"),
            deploy(1, t - H, service="other"),
            deploy(2, t - 2 * H, status="failure"),
            deploy(3, t),
        ]
    )
    row = features_of(history).loc["d:3"]
    assert row["service_deploys_24h"] == 1
    assert row["hours_since_prev_deploy"] == 2


def test_incidents_of_named_non_production_environments_and_other_services_do_not_count() -> None:
    t = BASE
    history = make_history(
        deploys=[deploy(0, t)],
        incidents=[
            incident(0, t - H, environment="staging"),
            incident(1, t - H, service="other"),
            incident(2, t - H, service=None),
            incident(3, t - 2 * H),  # no environment: counts
            incident(4, t - 3 * H, environment="production"),
        ],
    )
    row = features_of(history).loc["d:0"]
    assert row["service_incidents_7d"] == 2
    assert row["days_since_last_incident"] == pytest.approx(2 / 24)


# --------------------------------------------------------------------------------------------
# Toggles


def test_flips_exclude_non_flip_actions_unmapped_services_and_other_environments() -> None:
    t = BASE
    history = make_history(
        deploys=[deploy(0, t)],
        toggles=[
            toggle(0, t - H / 2, "created"),
            toggle(1, t - H / 2, "archived"),
            toggle(2, t - H / 2, "other"),
            toggle(3, t - H / 2, "enabled", service=None),  # unmapped: counts for no service
            toggle(4, t - H / 2, "enabled", environment="staging"),
            toggle(5, t - H / 2, "variants_changed", environment="production"),
            toggle(6, t - H / 2, "targeting_changed"),  # no environment: counts
        ],
    )
    row = features_of(history).loc["d:0"]
    assert row["toggle_flips_1h"] == 2
    assert row["no_toggle_history"] == 0


def test_enabled_and_stale_toggles_follow_the_last_event_before_the_deploy() -> None:
    t = BASE
    history = make_history(
        deploys=[deploy(0, t), deploy(1, t + 10 * D)],
        toggles=[
            toggle(0, t - 40 * D, "enabled", flag_key="old"),  # enabled, untouched 40 days: stale
            toggle(1, t - 50 * D, "created", flag_key="touched", new_enabled=True),
            toggle(2, t - 5 * D, "targeting_changed", flag_key="touched"),  # still on, touched 5 days ago
            toggle(3, t - 60 * D, "enabled", flag_key="off"),
            toggle(4, t - 45 * D, "disabled", flag_key="off"),
            toggle(5, t - 90 * D, "enabled", flag_key="gone"),
            toggle(6, t - 80 * D, "archived", flag_key="gone"),
            toggle(7, t - 70 * D, "enabled", flag_key="late"),
            toggle(8, t, "disabled", flag_key="late"),  # at the deploy time: not yet seen
            toggle(9, t + D, "disabled", flag_key="old"),
        ],
    )
    f = features_of(history)
    row = f.loc["d:0"]
    assert row["toggles_enabled"] == 3  # old, touched, late
    assert row["toggles_stale"] == 2  # old (40 d), late (70 d)
    assert row["toggle_oldest_stale_days"] == 70
    later = f.loc["d:1"]
    assert later["toggles_enabled"] == 1  # touched only
    assert later["toggles_stale"] == 0 and later["toggle_oldest_stale_days"] == 0
    shorter = features_of(history, stale_after_days=3).loc["d:0"]
    assert shorter["toggles_stale"] == 3 and shorter["toggle_oldest_stale_days"] == 70


def test_stale_boundary_is_strictly_over_n_days() -> None:
    t = BASE
    history = make_history(
        deploys=[deploy(0, t), deploy(1, t + US)],
        toggles=[toggle(0, t - 30 * D, "enabled")],
    )
    f = features_of(history)
    assert f.loc["d:0", "toggles_stale"] == 0  # exactly 30 days untouched: not over
    assert f.loc["d:1", "toggles_stale"] == 1


def test_simultaneous_events_of_one_flag_resolve_the_same_whatever_the_row_order() -> None:
    t = BASE
    # ties are ordered by action (enabled < disabled < targeting_changed), then new_enabled
    cases = [
        ([toggle("a", t - 2 * H, "enabled"), toggle("b", t - 2 * H, "disabled")], 0),
        ([toggle("c", t - 3 * H, "disabled"), toggle("d", t - 3 * H, "targeting_changed", new_enabled=True)], 1),
    ]
    for rows, expected in cases:
        for ordered in (rows, rows[::-1]):
            history = make_history(deploys=[deploy(0, t)], toggles=ordered)
            assert features_of(history).loc["d:0", "toggles_enabled"] == expected


def test_distinct_actors_count_each_actor_once_per_24h() -> None:
    t = BASE
    history = make_history(
        deploys=[deploy(0, t)],
        toggles=[
            toggle(0, t - 30 * H, "enabled", actor="ann"),  # outside 24 h
            toggle(1, t - 20 * H, "disabled", actor="ann"),
            toggle(2, t - 2 * H, "enabled", actor="ann"),
            toggle(3, t - 24 * H, "enabled", actor="bob"),  # exactly 24 h: inside
            toggle(4, t - 25 * H, "enabled", actor="cy"),
            toggle(5, t - H, "created", actor="dee"),  # not a flip
            toggle(6, t - H, "enabled", actor=None),  # unknown actor: not counted
        ],
    )
    assert features_of(history).loc["d:0", "toggle_actors_24h"] == 2


def test_a_service_without_toggles_gets_zeros_and_the_indicator() -> None:
    history = make_history(deploys=[deploy(0, BASE)], toggles=[toggle(0, BASE - H, "enabled", service="other")])
    row = features_of(history).loc["d:0"]
    assert row["no_toggle_history"] == 1
    assert row[["toggle_flips_1h", "toggles_enabled", "toggles_stale", "toggle_actors_24h"]].sum() == 0


# --------------------------------------------------------------------------------------------
# Labels and authors


def test_failure_rates_use_only_labels_matured_strictly_before() -> None:
    t = BASE
    history = make_history(
        deploys=[
            deploy(0, t - 10 * D, author="ann"),
            deploy(1, t - 9 * D, author="ann", service="other"),
            deploy(2, t - 8 * D, author="bob"),
            deploy(3, t, author="ann"),
        ]
    )
    lab = labels(
        [
            ("d:0", True, t - D),  # matured: counts
            ("d:1", True, t - D),  # other service, same author
            ("d:2", False, t),  # matures exactly at t: not yet usable
            ("d:3", True, t + D),
        ]
    )
    w, p0 = 10.0, 0.1
    row = features_of(history, lab).loc["d:3"]
    prior = (2 + w * p0) / (2 + w)
    assert row["service_matured_labels"] == 1 and row["author_matured_labels"] == 2
    assert row["service_failure_rate"] == pytest.approx((1 + w * prior) / (1 + w))
    assert row["author_failure_rate"] == pytest.approx((2 + w * prior) / (2 + w))
    first = features_of(history, lab).loc["d:0"]
    assert first["service_failure_rate"] == pytest.approx(p0) and first["author_failure_rate"] == pytest.approx(p0)


def test_a_label_is_not_usable_before_its_deploy_exists() -> None:
    t = BASE
    history = make_history(deploys=[deploy(0, t + H), deploy(1, t)])
    lab = labels([("d:0", True, t - D)])  # a source stamping maturity before the deploy itself
    f = features_of(history, lab)
    assert f.loc["d:1", "service_matured_labels"] == 0
    assert (
        features_of(make_history(deploys=[deploy(0, t - H), deploy(1, t)]), lab).loc["d:1", "service_matured_labels"]
        == 1
    )


def test_labels_of_unknown_deploys_or_without_maturity_are_ignored() -> None:
    t = BASE
    history = make_history(deploys=[deploy(0, t - D), deploy(1, t)])
    lab = labels([("d:0", True, None), ("missing", True, t - H)])  # type: ignore[list-item]
    row = features_of(history, lab).loc["d:1"]
    assert row["service_matured_labels"] == 0
    assert row["service_failure_rate"] == pytest.approx(0.1)


def test_author_experience_counts_prior_production_deploys() -> None:
    t = BASE
    history = make_history(
        deploys=[
            deploy(0, t - 30 * D, author="ann", service="a"),
            deploy(1, t - 3 * D, author="ann", service="b"),
            deploy(2, t - 2 * D, author="ann", service="b", environment="staging"),
            deploy(3, t - D, author=None, service="b"),
            deploy(4, t, author="ann", service="b"),
            deploy(5, t, author=None, service="b"),
        ]
    )
    f = features_of(history)
    row = f.loc["d:4"]
    assert (row["author_prior_deploys"], row["author_service_prior_deploys"], row["author_deploys_7d"]) == (2, 1, 1)
    assert row["author_missing"] == 0
    anonymous = f.loc["d:5"]
    assert anonymous["author_missing"] == 1 and anonymous["author_prior_deploys"] == 0


# --------------------------------------------------------------------------------------------
# Timing and change


def test_timing_uses_the_service_timezone() -> None:
    friday = pd.Timestamp("2025-03-07T18:30:00Z")  # Friday 18:30 UTC = 13:30 in New York (EST)
    history = make_history(deploys=[deploy(0, friday, service="nyc"), deploy(1, friday, service="utc")])
    f = features_of(history, service_timezones={"nyc": "America/New_York"})
    nyc, utc = f.loc["d:0"], f.loc["d:1"]
    assert (nyc["hour_of_day"], nyc["day_of_week"]) == (13, 4)
    assert nyc["is_friday_afternoon"] == 1 and nyc["is_outside_business_hours"] == 0
    assert utc["hour_of_day"] == 18 and utc["is_outside_business_hours"] == 1
    sunday = features_of(make_history(deploys=[deploy(0, pd.Timestamp("2025-03-09T10:00Z"))])).loc["d:0"]
    assert sunday["is_weekend"] == 1 and sunday["is_outside_business_hours"] == 1


def test_change_size_extras_and_missing_indicators() -> None:
    history = make_history(
        deploys=[
            deploy(0, BASE, lines_added=100, lines_deleted=20, files_changed=3, commit_count=2, extra_tests=4.5),
            deploy(1, BASE, touches_infra=True, is_rollback=False),
        ]
    )
    f = features_of(history)
    full, bare = f.loc["d:0"], f.loc["d:1"]
    assert full["churn"] == 120 and full["log_churn"] == pytest.approx(np.log1p(120))
    assert full["lines_missing"] == 0 and full["extra_tests"] == 4.5 and full["extra_tests_missing"] == 0
    assert bare["lines_missing"] == 1 and bare["churn"] == 0 and bare["files_changed_missing"] == 1
    assert bare["extra_tests"] == 0 and bare["extra_tests_missing"] == 1
    assert bare["touches_infra"] == 1 and bare["touches_infra_missing"] == 0
    assert bare["is_rollback"] == 0 and bare["is_rollback_missing"] == 0
    assert full["touches_infra_missing"] == 1


def test_output_shape_order_and_columns() -> None:
    history = make_history(deploys=[deploy(i, BASE + i * H, squad="core") for i in range(4)])
    entities = history.deploys.iloc[[2, 0, 3]]
    out = build_features(entities, history, NO_LABELS, FeatureConfig())
    assert list(out.columns[:2]) == ["deploy_id", "created_at"]
    assert out["deploy_id"].tolist() == ["d:2", "d:0", "d:3"]
    assert out.index.tolist() == entities.index.tolist()
    assert str(out["created_at"].dtype) == "datetime64[us, UTC]"
    numeric, categorical = feature_columns(out)
    assert categorical == list(CATEGORICAL_COLUMNS)
    assert set(numeric) | set(categorical) | {"deploy_id", "created_at"} == set(out.columns)
    assert all(out[c].dtype == np.float64 for c in numeric)
    assert out["squad"].tolist() == ["core"] * 3 and out["tribe"].tolist() == [MISSING_CATEGORY] * 3
    assert FEATURE_SET_VERSION


# --------------------------------------------------------------------------------------------
# Missing inputs


def test_empty_history_and_no_labels_give_defined_values() -> None:
    entity = {"deploy_id": "new:1", "service": "svc", "created_at": BASE}
    row = score(entity, History.empty(), pd.DataFrame())
    numeric = row.drop(["deploy_id", "created_at", *CATEGORICAL_COLUMNS]).astype(float)
    assert np.isfinite(numeric).all()
    assert row["no_toggle_history"] == 1 and row["no_prev_deploy"] == 1 and row["author_missing"] == 1
    assert row["service_failure_rate"] == pytest.approx(0.1)


def test_scoring_frame_with_loose_types_and_missing_columns() -> None:
    history = make_history(deploys=[deploy(0, BASE - H, author="ann", extra_x=1.0)])
    entity = {
        "created_at": "2025-03-03T12:00:00+00:00",  # text, as a request would carry it
        "service": "svc",
        "author": "ann",
        "lines_added": "12",
        "touches_infra": "true",
        "is_rollback": None,
    }
    row = score(entity, history)
    assert pd.isna(row["deploy_id"])
    assert row["author_prior_deploys"] == 1 and row["service_deploys_24h"] == 1
    assert row["lines_added"] == 12 and row["lines_missing"] == 1  # deletions unknown
    assert row["touches_infra"] == 1 and row["is_rollback_missing"] == 1
    assert row["extra_x"] == 0 and row["extra_x_missing"] == 1  # history declares it, the request does not
    assert row["service"] == "svc" and row["squad"] == MISSING_CATEGORY


def test_new_service_and_new_author() -> None:
    history = make_history(deploys=[deploy(0, BASE - H, author="ann")], toggles=[toggle(0, BASE - H, "enabled")])
    row = score({"service": "brand-new", "author": "newbie", "created_at": BASE}, history)
    assert row["service_prior_deploys"] == 0 and row["author_prior_deploys"] == 0
    assert row["no_toggle_history"] == 1 and row["toggles_enabled"] == 0 and row["no_prev_deploy"] == 1


def test_invalid_inputs_fail_clearly() -> None:
    history = make_history(deploys=[deploy(0, BASE)])
    with pytest.raises(ValueError, match="created_at"):
        build_features(pd.DataFrame({"service": ["svc"]}), history, NO_LABELS, FeatureConfig())
    with pytest.raises(ValueError, match="missing"):
        build_features(
            pd.DataFrame({"created_at": [pd.NaT]}, dtype="datetime64[us, UTC]"), history, NO_LABELS, FeatureConfig()
        )
    with pytest.raises(ValueError, match="naive"):
        build_features(pd.DataFrame({"created_at": [pd.Timestamp("2025-01-01")]}), history, NO_LABELS, FeatureConfig())
    with pytest.raises(ValueError, match="deploy_labels"):
        build_features(history.deploys, history, pd.DataFrame({"deploy_id": ["d:0"]}), FeatureConfig())


@pytest.mark.parametrize(
    "kwargs",
    [
        {"flip_window_minutes": 0},
        {"stale_after_days": -1},
        {"smoothing_prior_weight": 0.0},
        {"base_failure_rate": 1.0},
        {"history_environments": ("prod",)},
        {"business_hours": (18, 9)},
        {"service_timezones": {"svc": "Mars/Olympus"}},
        {"extra_columns": ("tests",)},
    ],
)
def test_config_is_validated(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        FeatureConfig(**kwargs)


# --------------------------------------------------------------------------------------------
# One code path: scoring an upcoming deploy equals the training row


def test_scoring_one_deploy_equals_its_training_row() -> None:
    rng = np.random.default_rng(7)
    n = 60
    times = [BASE + pd.Timedelta(minutes=int(m)) for m in rng.integers(0, 60 * 24 * 20, n)]
    deploys = [
        deploy(
            i,
            times[i],
            service=f"s{rng.integers(3)}",
            author=[None, "ann", "bob"][rng.integers(3)],
            environment=["production", "staging"][int(rng.random() < 0.2)],
            lines_added=int(rng.integers(0, 500)),
            lines_deleted=None if rng.random() < 0.2 else int(rng.integers(0, 100)),
            squad="core",
        )
        for i in range(n)
    ]
    toggles = [
        toggle(
            i,
            BASE + pd.Timedelta(minutes=int(rng.integers(-60 * 24 * 40, 60 * 24 * 20))),
            ["enabled", "disabled", "targeting_changed", "created", "archived"][rng.integers(5)],
            service=[None, "s0", "s1", "s2"][rng.integers(4)],
            flag_key=f"f{rng.integers(4)}",
            actor=f"u{rng.integers(3)}",
        )
        for i in range(150)
    ]
    incidents = [incident(i, times[rng.integers(n)] + H, service=f"s{rng.integers(3)}") for i in range(15)]
    history = make_history(deploys, toggles, incidents)
    lab = labels([(f"d:{i}", bool(rng.random() < 0.3), times[i] + 2 * D) for i in range(n)])
    config = FeatureConfig(stale_after_days=5, service_timezones={"s1": "Europe/Berlin"})
    training = build_features(history.deploys, history, lab, config).set_index("deploy_id")

    upcoming = history.deploys.sample(8, random_state=1)
    for _, entity in upcoming.iterrows():
        one = entity.to_frame().T  # one row, object dtypes: how a request arrives
        without_self = History(
            history.deploys[history.deploys["deploy_id"] != entity["deploy_id"]],
            history.toggle_events,
            history.incidents,
        )
        for hist in (history, without_self):
            scored = build_features(one, hist, lab, config).set_index("deploy_id")
            pd.testing.assert_frame_equal(
                scored, training.loc[[entity["deploy_id"]]], check_dtype=False, check_index_type=False
            )
