"""The simulator: determinism, documented invariants, the exact hazard, and exports that ingest reads."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from features.history.schema import DEPLOYS, RECORD_COLUMN, conform, table_spec
from features.simulation.export import UPCOMING_COLUMNS, write_exports
from features.simulation.simulator import (
    CATALOG_SOURCE,
    DEPLOY_SOURCE,
    HAZARD_FLIP_ACTIONS,
    INCIDENT_SOURCE,
    TOGGLE_SOURCE,
    DeployHazard,
    SimulatedHistory,
    SimulationConfig,
    hazard_logit,
    simulate,
)
from features.sources.config import load_sources_config
from features.sources.generic import parse_generic
from features.sources.kinds import source_kinds
from pipelines.cli.simulate import register
from tests.helpers.paths import FIXTURES

SMALL = SimulationConfig(days=40, services=15, seed=7)


@pytest.fixture(scope="module")
def sample() -> SimulatedHistory:
    """The committed sample's configuration (about 15k deploys; under a second)."""
    return simulate(SimulationConfig())


@pytest.fixture(scope="module")
def small() -> SimulatedHistory:
    return simulate(SMALL)


def _frames(sim: SimulatedHistory) -> list[pd.DataFrame]:
    h = sim.history
    return [h.deploys, h.toggle_events, h.incidents, sim.deploy_truth, sim.toggle_truth, sim.incident_truth,
            sim.upcoming, sim.upcoming_truth]  # fmt: skip


def _loose(frame: pd.DataFrame) -> pd.DataFrame:
    """A frame as a connector hands it to conform: plain objects, None for missing."""
    obj = frame.astype(object)
    return obj.where(frame.notna(), None)


# --------------------------------------------------------------------------------------------
# Determinism and schema


def test_same_seed_gives_identical_frames_and_other_seed_differs(small: SimulatedHistory) -> None:
    again = simulate(SMALL)
    for a, b in zip(_frames(small), _frames(again), strict=True):
        pd.testing.assert_frame_equal(a, b)
    other = simulate(SimulationConfig(days=40, services=15, seed=8))
    assert not other.history.deploys["created_at"].equals(small.history.deploys["created_at"])
    assert not other.deploy_truth["p_incident"].equals(small.deploy_truth["p_incident"])


@pytest.mark.parametrize("table", ["deploys", "toggle_events", "incidents", "catalog"])
def test_tables_pass_conform_with_no_rejects(sample: SimulatedHistory, table: str) -> None:
    frame = getattr(sample.history, table)
    spec = table_spec(table)
    assert list(frame.columns) == spec.column_names
    result = conform(spec, _loose(frame), source="sim", file="sim")
    assert result.rejects.empty
    pd.testing.assert_frame_equal(result.valid, frame)
    assert frame[spec.key].is_unique and frame[spec.key].is_monotonic_increasing


def test_catalog_owns_every_service_by_the_squad_its_deploys_name(sample: SimulatedHistory) -> None:
    from features.history.ownership import service_teams

    teams = service_teams(sample.history.catalog).set_index("service")
    deploys = sample.history.deploys.drop_duplicates("service").set_index("service")
    assert set(teams.index) >= set(deploys.index)
    pd.testing.assert_frame_equal(
        teams.loc[deploys.index, ["squad", "tribe"]], deploys[["squad", "tribe"]].astype("string"), check_names=False
    )
    assert teams.loc[deploys.index, "slack_channel"].str.startswith("squad-").all()


def test_upcoming_is_planned_after_history_and_conforms(sample: SimulatedHistory) -> None:
    up = sample.upcoming
    assert len(up) > 100
    assert (up["created_at"] > sample.history.deploys["created_at"].max()).all()
    assert (up["status"] == "running").all() and up["finished_at"].isna().all()
    assert set(up["deploy_id"]).isdisjoint(set(sample.history.deploys["deploy_id"]))
    assert conform(DEPLOYS, _loose(up), source="sim", file="sim").rejects.empty
    assert set(sample.upcoming_truth["deploy_id"]) == set(up["deploy_id"])
    assert sample.upcoming_truth["p_incident"].between(0, 1).all()


def test_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="days"):
        SimulationConfig(days=0)
    with pytest.raises(ValueError, match="staging_share"):
        SimulationConfig(staging_share=1.5)


# --------------------------------------------------------------------------------------------
# Ground truth


def test_truth_ids_match_history(sample: SimulatedHistory) -> None:
    h = sample.history
    assert list(sample.deploy_truth["deploy_id"]) == list(h.deploys["deploy_id"])
    assert list(sample.toggle_truth["event_id"]) == list(h.toggle_events["event_id"])
    assert list(sample.incident_truth["incident_id"]) == list(h.incidents["incident_id"])
    assert h.deploys["deploy_id"].str.startswith(f"{DEPLOY_SOURCE}:").all()
    assert h.toggle_events["event_id"].str.startswith(f"{TOGGLE_SOURCE}:").all()
    assert h.incidents["incident_id"].str.startswith(f"{INCIDENT_SOURCE}:").all()
    it = sample.incident_truth
    dep = it[it["cause_kind"] == "deploy"]["cause_id"]
    tog = it[it["cause_kind"] == "toggle"]["cause_id"]
    assert dep.isin(h.deploys["deploy_id"]).all() and tog.isin(h.toggle_events["event_id"]).all()
    assert it[it["cause_kind"] == "background"]["cause_id"].isna().all()
    # every cause really was marked as causing an incident, and its incident came after it
    dt = sample.deploy_truth.set_index("deploy_id")
    assert dt.loc[dep, "caused_incident"].all()
    assert sample.toggle_truth.set_index("event_id").loc[tog, "caused_incident"].all()


def test_outcome_rates(sample: SimulatedHistory) -> None:
    d = sample.history.deploys
    truth = sample.deploy_truth.set_index("deploy_id").loc[d["deploy_id"]]
    prod = (d["environment"] == "production").to_numpy()
    live = prod & (d["status"] != "canceled").to_numpy()
    assert 0.10 <= truth["caused_incident"].to_numpy()[prod].mean() <= 0.15
    assert (truth["p_incident"].to_numpy()[~live] == 0).all()  # staging and canceled deploys ship no risk
    assert 0.75 < prod.mean() < 0.95
    shares = d["status"].value_counts(normalize=True)
    assert shares["success"] > 0.85 and shares["failure"] > 0.01 and shares["canceled"] > 0.01
    kinds = sample.incident_truth["cause_kind"].value_counts(normalize=True)
    assert kinds["background"] >= 0.25 and kinds["toggle"] > 0.03


def test_explicit_links_are_partial_and_correct(sample: SimulatedHistory) -> None:
    inc = sample.history.incidents.set_index("incident_id")
    it = sample.incident_truth.set_index("incident_id").loc[inc.index]
    change = (it["cause_kind"] != "background").to_numpy()
    linked = (inc["caused_by_deploy_id"].notna() | inc["caused_by_flag_key"].notna()
              | inc["title"].str.contains("root cause: ", regex=False)).to_numpy()  # fmt: skip
    assert 0.3 <= linked[change].mean() <= 0.5
    assert not linked[~change].any()
    by_id = inc["caused_by_deploy_id"].notna()
    assert (inc.loc[by_id, "caused_by_deploy_id"] == it.loc[by_id, "cause_id"]).all()
    shas = sample.history.deploys.set_index("deploy_id")["commit_sha"]
    by_sha = inc["caused_by_commit_sha"].notna()
    assert (shas.loc[it.loc[by_sha, "cause_id"]].to_numpy() == inc.loc[by_sha, "caused_by_commit_sha"].to_numpy()).all()
    pairs = zip(inc.loc[by_sha, "caused_by_commit_sha"], inc.loc[by_sha, "title"], strict=True)
    assert all(f"root cause: {sha}" in title for sha, title in pairs)
    marked = inc["not_change_related"].fillna(False).to_numpy()
    assert marked.any() and not marked[change].any()


def test_incident_lag_from_minutes_to_hours(sample: SimulatedHistory) -> None:
    inc = sample.history.incidents.merge(sample.incident_truth, on="incident_id")
    dep = inc[inc["cause_kind"] == "deploy"].merge(
        sample.history.deploys[["deploy_id", "created_at"]], left_on="cause_id", right_on="deploy_id",
        suffixes=("", "_deploy"))  # fmt: skip
    lag = (dep["created_at"] - dep["created_at_deploy"]).dt.total_seconds() / 60
    assert lag.min() >= 3 and lag.max() <= 18 * 60
    assert (lag < 60).mean() > 0.3 and (lag > 120).mean() > 0.1


def test_deploys_follow_business_hours(sample: SimulatedHistory) -> None:
    t = sample.history.deploys["created_at"]
    weekday, hour = t.dt.dayofweek, t.dt.hour
    in_hours = (weekday < 5) & hour.between(9, 17)
    assert in_hours.mean() > 0.75
    assert (weekday >= 5).mean() < 0.05
    by_hour = hour.value_counts()
    assert by_hour.get(3, 0) * 10 < by_hour[10]
    # Friday afternoons are quieter than other weekday afternoons
    afternoon = hour >= 13
    assert ((weekday == 4) & afternoon).sum() < 0.8 * ((weekday == 2) & afternoon).sum()


def test_change_sizes_are_heavy_tailed(sample: SimulatedHistory) -> None:
    d = sample.history.deploys
    size = (d["lines_added"] + d["lines_deleted"]).to_numpy(dtype=float)
    assert size.max() > 100 * np.median(size)
    top = np.sort(size)[::-1][: len(size) // 100]
    assert top.sum() > 0.25 * size.sum()  # the largest 1% of changes hold over a quarter of the lines
    assert (d["files_changed"] >= 1).all() and (d["commit_count"] >= 1).all()
    assert 0.05 < d["touches_infra"].mean() < 0.25


def test_rollbacks_revert_incident_causing_deploys(sample: SimulatedHistory) -> None:
    d = sample.history.deploys.set_index("deploy_id")
    rb = d[d["is_rollback"]]
    assert len(rb) > 100
    assert d.loc[~d["is_rollback"], "reverts_deploy_id"].isna().all()
    reverted = rb["reverts_deploy_id"]
    assert reverted.isin(d.index).all()
    assert (rb["created_at"].to_numpy() > d.loc[reverted, "created_at"].to_numpy()).all()
    assert sample.deploy_truth.set_index("deploy_id").loc[reverted, "caused_incident"].all()
    assert (rb["service"].to_numpy() == d.loc[reverted, "service"].to_numpy()).all()


def test_toggles_roll_out_gradually_and_are_often_left_stale(sample: SimulatedHistory) -> None:
    te = sample.history.toggle_events
    prod = te[te["environment"] == "production"]
    rollouts = prod[prod["action"] == "rollout_changed"].groupby("flag_key").size()
    assert (rollouts >= 2).sum() > 50
    pct = prod[prod["action"] == "rollout_changed"]["comment"].str.extract(r"(\d+)%")[0].astype(int)
    assert set(pct) <= {25, 50, 100}
    end = sample.history.deploys["created_at"].max()
    live = prod[prod["action"].isin(["enabled", "rollout_changed"])].groupby("flag_key")["occurred_at"].max()
    old = live[live < end - pd.Timedelta(days=30)].index
    archived = set(te.loc[te["action"] == "archived", "flag_key"])
    stale = np.mean([k not in archived for k in old])
    assert len(old) > 100 and stale > 0.4


# --------------------------------------------------------------------------------------------
# The hazard


def test_hazard_moves_with_each_input() -> None:
    h = DeployHazard()
    t_tue_11 = np.array([int(pd.Timestamp("2026-01-06T11:00Z").timestamp())])
    base = dict(log_size=np.array([3.0]), flips_1h=np.array([0]), incidents_7d=np.array([0]),
                author_prior=np.array([10]), t=t_tue_11, touches_infra=np.array([False]),
                is_rollback=np.array([False]), base_risk=np.array([0.0]))  # fmt: skip
    ref = hazard_logit(h, **base)[0]

    def logit(**change: object) -> float:
        return float(hazard_logit(h, **{**base, **change})[0])  # type: ignore[arg-type]

    assert logit(log_size=np.array([6.0])) > ref
    assert logit(flips_1h=np.array([2])) > ref
    assert logit(incidents_7d=np.array([3])) > ref
    assert logit(author_prior=np.array([300])) < ref
    assert logit(t=t_tue_11 + 3 * 86_400 + 4 * 3_600) > ref  # Friday 15:00
    assert logit(t=t_tue_11 + 11 * 3_600) > ref  # Tuesday 22:00
    assert logit(touches_infra=np.array([True])) > ref
    assert logit(is_rollback=np.array([True])) < ref
    # interaction: size matters more when the change touches infrastructure
    infra = np.array([True])
    assert (logit(log_size=np.array([6.0]), touches_infra=infra) - logit(touches_infra=infra)) > (
        logit(log_size=np.array([6.0])) - ref
    )


def test_true_probability_is_the_documented_hazard_of_point_in_time_features(small: SimulatedHistory) -> None:
    """Recompute every hazard input from the history alone (strictly before each deploy): the
    remaining logit is one constant per service (its base risk), to rounding."""
    h, hz = small.history, DeployHazard()
    d = h.deploys.merge(small.deploy_truth, on="deploy_id")
    d = d[(d["environment"] == "production") & (d["status"] != "canceled")].reset_index(drop=True)
    t = d["created_at"].dt.tz_convert(None).to_numpy().astype("datetime64[s]").astype(np.int64)[:, None]

    def count(events: pd.DataFrame, time_col: str, key: str, window: int | None) -> np.ndarray:
        et = events[time_col].dt.tz_convert(None).to_numpy().astype("datetime64[s]").astype(np.int64)[None, :]
        same = d[key].to_numpy(dtype=object)[:, None] == events[key].to_numpy(dtype=object)[None, :]
        inside = (et < t) & ((et >= t - window) if window else True)
        return (same & inside).sum(axis=1)

    te = h.toggle_events
    flips = te[(te["environment"] == "production") & te["action"].isin(HAZARD_FLIP_ACTIONS)]
    all_deploys = h.deploys
    x = {
        "log_size": np.log1p((d["lines_added"] + d["lines_deleted"]).to_numpy(dtype=float)),
        "flips_1h": count(flips, "occurred_at", "service", 3_600),
        "incidents_7d": count(h.incidents, "created_at", "service", 7 * 86_400),
        "author_prior": count(all_deploys, "created_at", "author", None),
    }
    logit = hazard_logit(hz, **x, t=t[:, 0], touches_infra=d["touches_infra"].to_numpy(dtype=bool),
                         is_rollback=d["is_rollback"].to_numpy(dtype=bool), base_risk=np.zeros(len(d)))  # fmt: skip
    p = d["p_incident"].to_numpy()
    residual = pd.Series(np.log(p / (1 - p)) - logit)
    spread = residual.groupby(d["service"].to_numpy()).agg(lambda r: r.max() - r.min())
    assert len(d) > 500 and x["flips_1h"].max() > 0 and x["incidents_7d"].max() > 2
    assert spread.max() < 1e-6


def test_larger_changes_have_higher_true_probability(sample: SimulatedHistory) -> None:
    d = sample.history.deploys.merge(sample.deploy_truth, on="deploy_id")
    d = d[(d["environment"] == "production") & (d["status"] != "canceled")]
    size = d["lines_added"] + d["lines_deleted"]
    small_p = d.loc[size <= size.quantile(0.1), "p_incident"].mean()
    large_p = d.loc[size >= size.quantile(0.9), "p_incident"].mean()
    assert large_p > 2 * small_p
    assert d.loc[size >= size.quantile(0.9), "caused_incident"].mean() > d.loc[
        size <= size.quantile(0.1), "caused_incident"].mean()  # fmt: skip


# --------------------------------------------------------------------------------------------
# Exports


def _prefixed(frame: pd.DataFrame, key: str, source: str) -> pd.DataFrame:
    """What ingest does before conform: the key gets the source name as prefix, rows their source."""
    out = frame.copy()
    out["source"] = source
    out[key] = f"{source}:" + out[key].astype(str)
    return out


def test_generic_exports_load_parse_and_conform(small: SimulatedHistory, tmp_path: Path) -> None:
    path = write_exports(small, tmp_path / "out", "generic")
    config = load_sources_config(path, source_kinds())
    assert not any("ground_truth" in str(p) for s in config.sources for p in s.paths)
    assert {s.name for s in config.sources} == {DEPLOY_SOURCE, TOGGLE_SOURCE, INCIDENT_SOURCE, CATALOG_SOURCE}
    for src in config.sources:
        if src.table == "catalog":  # read by its own connector (test_tools_exports_ingest_through_their_connectors)
            continue
        (file,) = src.paths
        parsed = parse_generic(file, src.display(file), src.options)  # type: ignore[arg-type]
        spec = table_spec(parsed.table)
        frame = _prefixed(parsed.frame, spec.key, src.name).drop(columns=["raw"])
        result = conform(spec, frame, source=src.name, file=str(file), timestamps=parsed.timestamps)
        assert result.rejects.empty
        want = getattr(small.history, parsed.table)
        got = result.valid.sort_values(spec.key).reset_index(drop=True)
        same = [c for c in spec.column_names if c in frame.columns and c != RECORD_COLUMN]
        pd.testing.assert_frame_equal(got[same], want[same], check_dtype=True)
    for name in ("deploy_truth", "toggle_truth", "incident_truth", "upcoming_truth"):
        assert (tmp_path / "out" / "ground_truth" / f"{name}.parquet").exists()
    truth = pd.read_parquet(tmp_path / "out" / "ground_truth" / "deploy_truth.parquet")
    assert list(truth.columns) == ["deploy_id", "p_incident", "caused_incident"]
    upcoming = pd.read_csv(tmp_path / "out" / "upcoming.csv", dtype=str)
    assert list(upcoming.columns) == list(UPCOMING_COLUMNS)
    assert len(upcoming) == len(small.upcoming)


def test_exports_are_byte_identical_for_a_seed(small: SimulatedHistory, tmp_path: Path) -> None:
    for style in ("generic", "tools"):
        a = write_exports(small, tmp_path / f"a-{style}", style).parent  # type: ignore[arg-type]
        b = write_exports(simulate(SMALL), tmp_path / f"b-{style}", style).parent  # type: ignore[arg-type]
        files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
        assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
        for f in files:
            if f.suffix != ".parquet":
                assert (a / f).read_bytes() == (b / f).read_bytes(), f


def _keys(records: list[dict]) -> set[str]:
    return set().union(*(r.keys() for r in records))


def test_tools_records_have_the_real_payload_shapes(small: SimulatedHistory, tmp_path: Path) -> None:
    out = tmp_path / "tools"
    write_exports(small, out, "tools")
    gh = json.loads(gzip.decompress((out / "github" / "deployments.json.gz").read_bytes()))
    ld = json.loads(gzip.decompress((out / "launchdarkly" / "auditlog.json.gz").read_bytes()))
    pd_inc = json.loads(gzip.decompress((out / "pagerduty" / "incidents.json.gz").read_bytes()))

    hook = json.loads((FIXTURES / "github" / "deployment_webhook.json").read_text())
    status_hook = json.loads((FIXTURES / "github" / "deployment_status_webhook.json").read_text())
    # REST list objects add production/transient_environment; `statuses` is our agreed export convention
    assert _keys(gh) - set(hook["deployment"]) <= {"statuses", "production_environment", "transient_environment"}
    assert {"id", "sha", "ref", "environment", "creator", "created_at", "payload", "repository_url"} <= _keys(gh)
    assert _keys([s for r in gh for s in r["statuses"]]) <= set(status_hook["deployment_status"])
    assert _keys([r["creator"] for r in gh]) <= set(hook["deployment"]["creator"])
    assert {s["state"] for r in gh for s in r["statuses"]} <= {"success", "failure", "error", "in_progress"}

    ld_fixture = json.loads((FIXTURES / "launchdarkly" / "auditlog.json").read_text())
    ld_webhook = json.loads((FIXTURES / "launchdarkly" / "webhook_payload.json").read_text())
    assert set(ld) == set(ld_fixture)
    real = set(ld_fixture["items"][0]) | set(ld_webhook)
    assert _keys(ld["items"]) - real <= {"currentVersion"}  # the flag as it is after the change (its tags)
    assert all(a["resource"].startswith("proj/") and ":flag/" in a["resource"] for e in ld["items"]
               for a in e["accesses"])  # fmt: skip
    assert all(isinstance(e["date"], int) for e in ld["items"])

    pd_fixture = json.loads((FIXTURES / "pagerduty" / "incidents.json").read_text())
    real_pd = set(pd_fixture[0]) | {"priority", "resolved_at", "custom_fields"}  # REST fields absent from the sample
    assert _keys(pd_inc) <= real_pd
    assert _keys([r["service"] for r in pd_inc]) <= set(pd_fixture[0]["service"])
    assert {r["status"] for r in pd_inc} <= {"triggered", "acknowledged", "resolved"}


def test_tools_exports_ingest_through_their_connectors(small: SimulatedHistory, tmp_path: Path) -> None:
    from features.history.ingest import prepare_source_file

    path = write_exports(small, tmp_path / "tools", "tools")
    config = load_sources_config(path, source_kinds())
    for src in config.sources:
        (file,) = src.paths
        prep = prepare_source_file(src, file, src.parse(file))
        assert prep.rejects.empty and not prep.other
        spec = table_spec(prep.table)
        want = getattr(small.history, prep.table)
        got = prep.rows.sort_values(spec.key).reset_index(drop=True)
        assert list(got[spec.key]) == list(want[spec.key])
        common = {"deploys": ["service", "environment", "created_at", "lines_added", "is_rollback", "reverts_deploy_id",
                              "touches_infra", "author", "squad", "tribe", "commit_sha"],
                  "toggle_events": ["flag_key", "service", "environment", "action", "occurred_at", "new_enabled"],
                  "incidents": ["service", "title", "severity", "status", "created_at", "resolved_at",
                                "caused_by_deploy_id", "caused_by_commit_sha",
                                "caused_by_flag_key"],
                  "catalog": ["entity_ref", "kind", "name", "type", "owner", "parent", "system", "depends_on",
                              "slack_channel", "lifecycle", "ownership"]}[prep.table]  # fmt: skip
        pd.testing.assert_frame_equal(got[common], want[common])


# --------------------------------------------------------------------------------------------
# CLI


def test_cli_writes_a_loadable_sample(tmp_path: Path) -> None:
    app = typer.Typer()
    register(app)

    @app.command("noop")
    def _noop() -> None:  # a second command keeps "simulate" a named subcommand
        pass

    out = tmp_path / "cli"
    result = CliRunner().invoke(app, ["simulate", "--out", str(out), "--days", "20", "--services", "6",
                                      "--seed", "3", "--style", "generic"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "deploys" in result.output and "sources.yaml" in result.output
    assert load_sources_config(out / "sources.yaml", source_kinds()).sources
    help_text = CliRunner().invoke(app, ["simulate", "--help"]).output
    for option in ("--out", "--days", "--services", "--seed", "--style"):
        assert option in help_text
    bad = CliRunner().invoke(app, ["simulate", "--out", str(out), "--style", "csv"])
    assert bad.exit_code != 0
