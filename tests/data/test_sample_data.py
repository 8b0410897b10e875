"""Data tests: the committed sample is what the README promises and passes the canonical checks."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import pytest

from features.history.ingest import merge_rows, prepare_source_file
from features.history.schema import TABLES, History, empty_table
from features.sources.config import load_sources_config
from features.sources.kinds import source_kinds
from tests.helpers.paths import SAMPLE


@dataclass(frozen=True)
class IngestedSample:
    history: History
    read: int
    quarantined: int


@pytest.fixture(scope="module")
def sample() -> IngestedSample:
    """The sample through its declared sources, the same pure path the ingest flow takes."""
    config = load_sources_config(SAMPLE / "sources.yaml", source_kinds())
    tables = {name: empty_table(spec) for name, spec in TABLES.items()}
    read = quarantined = 0
    for source in config.sources:
        for path in source.paths:
            prepared = prepare_source_file(source, path, source.parse(path))
            tables[source.table], _ = merge_rows(TABLES[source.table], tables[source.table], prepared.rows)
            read += prepared.read
            quarantined += prepared.quarantined
    return IngestedSample(History(**tables), read, quarantined)


def test_sample_is_small_and_uses_the_tools_formats() -> None:
    size = sum(p.stat().st_size for p in SAMPLE.rglob("*") if p.is_file())
    assert size < 10 * 1024 * 1024
    kinds = {s.kind.name for s in load_sources_config(SAMPLE / "sources.yaml", source_kinds()).sources}
    assert kinds == {"github_deployments", "launchdarkly_auditlog", "pagerduty_incidents", "backstage_catalog"}
    assert "ground_truth" not in (SAMPLE / "sources.yaml").read_text().split("sources:", 1)[1]


def test_sample_ingests_without_quarantine(sample: IngestedSample) -> None:
    assert sample.quarantined == 0
    h = sample.history
    assert sample.read == sum(len(t) for t in (h.deploys, h.toggle_events, h.incidents, h.catalog))


def test_sample_has_the_promised_shape(sample: IngestedSample) -> None:
    deploys = sample.history.deploys
    days = (deploys["created_at"].max() - deploys["created_at"].min()) / pd.Timedelta(days=1)
    assert 170 <= days <= 181
    assert 50 <= deploys["service"].nunique() <= 70
    assert 12_000 <= len(deploys) <= 20_000
    assert deploys["squad"].notna().all() and deploys["tribe"].notna().all()
    assert deploys["environment"].isin(["production", "staging"]).all()
    assert (deploys["environment"] == "production").mean() > 0.7
    assert deploys["is_rollback"].fillna(False).mean() > 0.01
    assert deploys["touches_infra"].fillna(False).mean() > 0.02
    assert len(sample.history.toggle_events) > 1000 and sample.history.toggle_events["service"].notna().mean() > 0.9
    assert len(sample.history.incidents) > 1000


@pytest.mark.parametrize("table", sorted(TABLES))
def test_keys_unique_and_timestamps_utc(sample: IngestedSample, table: str) -> None:
    frame = getattr(sample.history, table)
    spec = TABLES[table]
    assert frame[spec.key].is_unique
    assert str(frame[spec.time_column].dtype) == "datetime64[us, UTC]"
    if table != "catalog":  # catalog entities carry no timestamp of their own
        assert frame[spec.time_column].notna().all()


def test_catalog_owns_every_sampled_service_as_its_deploys_say(sample: IngestedSample) -> None:
    from features.history.ownership import apply_ownership, service_teams

    teams = service_teams(sample.history.catalog).set_index("service")
    deploys = sample.history.deploys
    assert set(deploys["service"]) <= set(teams.index)
    assert teams.loc[sorted(set(deploys["service"])), "slack_channel"].notna().all()
    blanked = deploys.assign(squad=pd.NA, tribe=pd.NA).astype({"squad": "string", "tribe": "string"})
    filled = apply_ownership(blanked, sample.history.catalog)
    pd.testing.assert_frame_equal(filled[["squad", "tribe"]], deploys[["squad", "tribe"]])


def test_incidents_resolve_after_they_start(sample: IngestedSample) -> None:
    incidents = sample.history.incidents
    resolved = incidents.dropna(subset=["resolved_at"])
    assert (resolved["resolved_at"] >= resolved["created_at"]).all()
    assert (incidents["status"] == "resolved").mean() > 0.9


def test_ground_truth_matches_the_ingested_ids(sample: IngestedSample) -> None:
    truth = pd.read_parquet(SAMPLE / "ground_truth" / "deploy_truth.parquet")
    assert set(truth["deploy_id"]) == set(sample.history.deploys["deploy_id"])
    incidents = pd.read_parquet(SAMPLE / "ground_truth" / "incident_truth.parquet")
    assert set(incidents["incident_id"]) == set(sample.history.incidents["incident_id"])
    assert (incidents["cause_kind"] == "background").mean() >= 0.25


def test_upcoming_deploys_come_after_the_history(sample: IngestedSample) -> None:
    upcoming = pd.read_csv(SAMPLE / "upcoming.csv")
    planned = pd.to_datetime(upcoming["created_at"], utc=True)
    assert len(upcoming) > 0
    assert planned.min() > sample.history.deploys["created_at"].max()
    assert set(upcoming["service"]) <= set(sample.history.deploys["service"])
