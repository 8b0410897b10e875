"""The partitioned feature path (per-service Parquet partitions + an author pass) equals the monolithic build."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.history.schema import History
from features.history.store import HistoryStore
from features.labels.attribution import AttributionConfig, attribute
from features.pointintime.catalog import catalog_names
from features.pointintime.compute import FeatureConfig, build_features
from features.pointintime.partitioned import (
    CROSS_SERVICE_COLUMNS,
    build_partitioned,
    partition_history,
    partition_store,
    read_partition_history,
)
from features.simulation.simulator import SimulationConfig, simulate


@pytest.fixture(scope="module")
def org() -> tuple[History, pd.DataFrame]:
    history = simulate(SimulationConfig(days=75, services=14, seed=11)).history
    return history, attribute(history, AttributionConfig()).deploy_labels


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values("deploy_id", kind="stable").reset_index(drop=True)


def _collect(parts, work: Path, config: FeatureConfig, **kw) -> pd.DataFrame:
    frames = [f for _, f in build_partitioned(parts, work, config, **kw) if len(f)]
    return _sorted(pd.concat(frames, ignore_index=True))


@pytest.mark.parametrize("buckets", [1, 5])
def test_partitioned_features_equal_the_monolithic_build(org, tmp_path: Path, buckets: int):
    history, labels = org
    config = FeatureConfig()
    expected = _sorted(build_features(history.deploys, history, labels, config))
    parts = partition_history(history, labels, tmp_path / "parts")
    assert len(parts.services) == history.deploys["service"].nunique()
    got = _collect(parts, tmp_path / "work", config, buckets=buckets, out=tmp_path / "features")
    pd.testing.assert_frame_equal(got, expected, check_exact=True)
    assert len(list((tmp_path / "features").glob("service=*/features.parquet"))) == len(parts.services)


def test_cross_service_columns_really_need_the_author_pass(org, tmp_path: Path):
    """Built naively per partition, the author columns and the prior come out wrong: the test has teeth."""
    history, labels = org
    config = FeatureConfig()
    parts = partition_history(history, labels, tmp_path / "parts")
    naive = []
    for service in parts.services:
        h, lab = read_partition_history(parts, service)
        naive.append(build_features(h.deploys, h, lab, config))
    naive_frame = _sorted(pd.concat(naive, ignore_index=True))
    expected = _sorted(build_features(history.deploys, history, labels, config))
    for column in CROSS_SERVICE_COLUMNS:
        assert not np.array_equal(naive_frame[column].to_numpy(), expected[column].to_numpy()), column
    local = [c for c in expected.columns if c not in CROSS_SERVICE_COLUMNS]
    pd.testing.assert_frame_equal(naive_frame[local], expected[local], check_exact=True)


def test_partitioning_the_store_streams_the_committed_tables_and_selects_training_entities(org, tmp_path: Path):
    history, labels = org
    store = HistoryStore(tmp_path / "store")
    with store.lock():
        store.commit({"deploys": history.deploys, "toggle_events": history.toggle_events,
                      "incidents": history.incidents}, None, 0)  # fmt: skip
    stored = store.read_history()
    config = FeatureConfig(flip_window_minutes=45, smoothing_prior_weight=4.0)
    keep = set(labels.loc[labels["eligible"].fillna(False) & labels["mature"].fillna(False), "deploy_id"])
    entities = stored.deploys[stored.deploys["deploy_id"].isin(keep)].reset_index(drop=True)
    expected = _sorted(build_features(entities, stored, labels, config))
    parts = partition_store(store.root, labels, tmp_path / "parts")
    got = _collect(parts, tmp_path / "work", config, buckets=3, select=lambda d: d["deploy_id"].isin(keep))
    assert 0 < len(got) < len(stored.deploys)
    pd.testing.assert_frame_equal(got, expected, check_exact=True)


def test_partitioned_and_single_build_agree_under_every_shared_definition(org, tmp_path: Path):
    """Counted environments, the prior, the smoothing and the recent window all come from ``compute``'s
    definitions, so changing any of them moves both builds together (and the columns follow the catalog)."""
    history, labels = org
    config = FeatureConfig(history_environments=("production", "staging"), base_failure_rate=0.25,
                           smoothing_prior_weight=2.5)  # fmt: skip
    expected = _sorted(build_features(history.deploys, history, labels, config))
    parts = partition_history(history, labels, tmp_path / "parts")
    got = _collect(parts, tmp_path / "work", config, buckets=2)
    pd.testing.assert_frame_equal(got, expected, check_exact=True)
    assert tuple(c for c in got.columns if c not in ("deploy_id", "created_at")) == catalog_names()
    default = _sorted(build_features(history.deploys, history, labels, FeatureConfig()))
    for column in CROSS_SERVICE_COLUMNS:  # the config really reaches the cross-service columns
        assert not np.array_equal(got[column].to_numpy(), default[column].to_numpy()), column


def test_partitions_of_the_store_carry_the_catalogs_ownership(org, tmp_path: Path):
    history, labels = org
    blank = history.deploys.assign(squad=pd.NA, tribe=pd.NA).astype({"squad": "string", "tribe": "string"})
    catalog = simulate(SimulationConfig(days=75, services=14, seed=11)).history.catalog
    store = HistoryStore(tmp_path / "store")
    with store.lock():
        store.commit({"deploys": blank, "toggle_events": history.toggle_events, "incidents": history.incidents,
                      "catalog": catalog}, None, 0)  # fmt: skip
    parts = partition_store(store.root, labels, tmp_path / "parts")
    service = str(history.deploys["service"].iloc[0])
    got = read_partition_history(parts, service)[0].deploys
    want = history.deploys[history.deploys["service"] == service]
    assert set(got["squad"]) == set(want["squad"]) and got["squad"].notna().all()  # as read_history gives them
    assert set(store.read_history().deploys["tribe"]) == set(history.deploys["tribe"])
