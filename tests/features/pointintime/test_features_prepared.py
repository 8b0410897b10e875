"""The two feature stages: ``prepare_history`` once, ``compute_features`` per table or per request."""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import pytest

from features.labels.attribution import attribute
from features.pointintime.compute import (
    EntityArrays,
    FeatureConfig,
    build_features,
    compute_features,
    feature_columns,
    prepare_history,
)
from features.pointintime.windows import EventStreams, count_before, count_window, last_before, sort_events
from models.scoring.context import build_feature_index, entity_features
from models.scoring.upcoming import UpcomingDeploy, deploys_frame
from tests.helpers.scoring import ATTRIBUTION, FEATURES, simulated


def _request(record: Mapping[Hashable, Any]) -> dict[str, Any]:
    """A frame row as a request would send it: no pandas missing markers."""
    return {str(k): (None if v is pd.NA else v) for k, v in record.items()}


def _assert_row(features: Any, reference: pd.Series) -> None:
    numeric, categorical = feature_columns(reference.to_frame().T)
    assert list(features.numeric) == numeric
    wrong = {c: (features.numeric[c][0], reference[c]) for c in numeric if features.numeric[c][0] != reference[c]}
    assert not wrong
    assert {c: features.categorical[c][0] for c in categorical} == {c: reference[c] for c in categorical}


@pytest.mark.parametrize("config", [FEATURES, FeatureConfig(flip_window_minutes=60, stale_after_days=2)])
def test_one_request_equals_its_row_of_the_training_table(config: FeatureConfig) -> None:
    sim = simulated()
    labels = attribute(sim.history, ATTRIBUTION).deploy_labels
    entities = pd.concat([sim.history.deploys.iloc[::7], sim.upcoming], ignore_index=True)
    table = build_features(entities, sim.history, labels, config)
    prepared = prepare_history(sim.history, labels, config)
    for i, record in enumerate(entities.to_dict("records")):
        _assert_row(compute_features(prepared, EntityArrays.from_mapping(_request(record))), table.iloc[i])


def test_features_of_an_entity_do_not_depend_on_the_other_entities() -> None:
    sim = simulated()
    labels = attribute(sim.history, ATTRIBUTION).deploy_labels
    entities = pd.concat([sim.history.deploys, sim.upcoming], ignore_index=True)
    entities.loc[3, "service"] = "never-seen-svc"
    entities.loc[5, "author"] = "new.person"
    full = build_features(entities, sim.history, labels, FEATURES)
    subset = entities.sample(frac=0.3, random_state=0)
    part = build_features(subset, sim.history, labels, FEATURES)
    pd.testing.assert_frame_equal(part, full.loc[subset.index])


def test_a_request_reads_loose_values_as_a_frame_does() -> None:
    sim = simulated()
    labels = attribute(sim.history, ATTRIBUTION).deploy_labels
    at = pd.Timestamp(sim.history.deploys["created_at"].iloc[-1]) + pd.Timedelta(minutes=5)
    row = {
        "created_at": at,
        "service": str(sim.history.deploys["service"].iloc[-1]),
        "author": None,
        "lines_added": " 12 ",
        "lines_deleted": math.inf,
        "files_changed": None,
        "commit_count": 3,
        "touches_infra": "yes",
        "is_rollback": False,
        "extra_tests": "4.5",
    }
    reference = build_features(pd.DataFrame([row]), sim.history, labels, FEATURES).iloc[0]
    _assert_row(
        compute_features(prepare_history(sim.history, labels, FEATURES), EntityArrays.from_mapping(row)), reference
    )
    assert reference["lines_added"] == 12 and reference["lines_missing"] == 1 and reference["touches_infra"] == 1


def test_request_times_are_utc_micros_or_aware_timestamps() -> None:
    micros = EntityArrays.from_mapping({"created_at": 1_700_000_000_000_000})
    aware = EntityArrays.from_mapping(
        {"created_at": pd.Timestamp(1_700_000_000_000_000, unit="us", tz="Europe/Berlin")}
    )
    assert micros.t.tolist() == aware.t.tolist() == [1_700_000_000_000_000]
    with pytest.raises(ValueError, match="naive"):
        EntityArrays.from_mapping({"created_at": datetime(2026, 1, 1)})


def test_a_model_extra_the_request_lacks_is_missing_as_in_the_batch_path() -> None:
    sim = simulated()
    labels = attribute(sim.history, ATTRIBUTION).deploy_labels
    deploy = UpcomingDeploy(service="reviews-svc", created_at=pd.Timestamp("2026-03-06T15:00:00Z"), author="x")
    num, _ = entity_features(build_feature_index(sim.history, labels, FEATURES), deploy, ["extra_a"])
    batch = build_features(deploys_frame([deploy], ["extra_a"]), sim.history, labels, FEATURES).iloc[0]
    assert num["extra_a"] == batch["extra_a"] == 0.0
    assert num["extra_a_missing"] == batch["extra_a_missing"] == 1.0


@pytest.mark.parametrize("n_queries", [1, 5, 3000])
def test_event_streams_count_as_separate_indexes(n_queries: int) -> None:
    rng = np.random.default_rng(n_queries)
    n_groups = 7
    streams = {
        name: (rng.integers(0, n_groups, size), np.sort(rng.integers(0, 10_000, size)))
        for name, size in (("a", 400), ("b", 0), ("c", 50))
    }
    index = EventStreams.of(n_groups, streams)
    windows = index.windows((("a", 0), ("c", 0), ("a", 300), ("b", 0), ("c", 1000)))
    groups = rng.integers(-1, n_groups + 2, n_queries)
    times = rng.integers(-500, 10_500, n_queries)
    got = index.count_before(windows, groups, times)
    last, found = index.last_before(windows, groups, times)
    for row, (name, lag) in enumerate(windows.windows):
        separate = sort_events(*streams[name])
        valid = np.where(groups < n_groups, groups, -1)
        np.testing.assert_array_equal(got[row], count_before(separate, valid, times - lag))
        want_last, want_found = last_before(separate, valid, times - lag)
        np.testing.assert_array_equal(found[row], want_found)
        np.testing.assert_array_equal(last[row][found[row]], want_last[want_found])


def test_query_kernels_take_stacked_query_times() -> None:
    rng = np.random.default_rng(0)
    events = sort_events(rng.integers(0, 5, 300), rng.integers(0, 5_000, 300))
    groups, times = rng.integers(-1, 6, 40), rng.integers(0, 5_000, 40)
    lags = np.array([0, 10, 700])
    stacked = count_before(events, groups, times - lags[:, None])
    for row, lag in enumerate(lags):
        np.testing.assert_array_equal(stacked[row], count_before(events, groups, times - lag))
        np.testing.assert_array_equal(stacked[0] - stacked[row], count_window(events, groups, times, int(lag)))
