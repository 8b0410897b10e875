"""A locked SQLite tracking database: training's logging waits for a bounded time, then fails in one line.

A second process holds the database with ``BEGIN EXCLUSIVE`` (what another writer, a backup or the
MLflow UI does for a moment). Held for longer than MLflow's own 20 s wait but within the bound, the
logging waits and succeeds; held past the bound, it fails with one line naming the database and the
fix. Two commands of one home never write at once: the second waits, saying for what.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.paths import REPO

pytestmark = pytest.mark.slow

HOLD = textwrap.dedent(
    """
    import sqlite3, sys, time
    db = sqlite3.connect(sys.argv[1], isolation_level=None)
    db.execute("BEGIN EXCLUSIVE")
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
    db.execute("COMMIT")
    """
)

HOLD_HOME_LOCK = textwrap.dedent(
    """
    import sys, time
    from pipelines.tracking_lock import tracking_writes
    with tracking_writes(sys.argv[1], "train (logging the run)"):
        print("held", flush=True)
        time.sleep(float(sys.argv[2]))
    """
)


@dataclass(frozen=True)
class Trained:
    result: object
    table: object
    options: object


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """One small training result (two candidates), logged afresh by each test."""
    from features.simulation.simulator import SimulationConfig, simulate
    from models.training.config import CandidateGrid, TrainConfig
    from pipelines.flows.train import TrainOptions, fit_models, make_table

    history = simulate(SimulationConfig(days=45, services=8, seed=3)).history
    grid = (CandidateGrid("logreg", (("C", (0.1,)),)), CandidateGrid("hgb", (("max_iter", (40,)),)))
    options = TrainOptions(train=TrainConfig(candidates=grid, n_splits=3, permutation_repeats=1))
    table = make_table(history, options)
    return Trained(fit_models(table, options, lambda _m: None), table, options)


@pytest.fixture
def tracking(home: Path) -> Iterator[str]:
    """A home's SQLite tracking URI with its schema created (as after any earlier command)."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{home / 'mlflow.db'}"
    MlflowClient(uri).search_experiments()
    yield uri


def _hold(script: str, *args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", script, *args], stdout=subprocess.PIPE, text=True, cwd=REPO, env=_env()
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def _env() -> dict[str, str]:
    import os

    return os.environ | {"PYTHONPATH": str(REPO)}


def _log(trained: Trained, home: Path, lines: list[str]):  # type: ignore[no-untyped-def]
    from pipelines.flows.train import context_for, log_or_fail

    context = context_for(trained.table, trained.options, home / "mlartifacts")  # type: ignore[arg-type]
    return log_or_fail(trained.result, context, lines.append)  # type: ignore[arg-type]


def test_training_waits_for_a_locked_database_past_mlflows_20s_and_logs(
    trained: Trained, home: Path, tracking: str, monkeypatch: pytest.MonkeyPatch
):
    from mlflow import MlflowClient

    from models.registry.artifacts import MODEL_NAME

    monkeypatch.setenv("INCIDENT_RISK_TRACKING_WAIT", "60")
    holder = _hold(HOLD, str(home / "mlflow.db"), "23")  # longer than MLflow's fixed 20 s busy timeout
    try:
        started = time.monotonic()
        tracked = _log(trained, home, [])
        waited = time.monotonic() - started
    finally:
        holder.kill()
        holder.wait()
    assert waited > 15, waited  # it really waited for the lock
    versions = MlflowClient(tracking).search_model_versions(f"name='{MODEL_NAME}'")
    assert [str(mv.version) for mv in versions] == [str(tracked.outcome.version)]
    assert MlflowClient(tracking).get_run(tracked.run_id).info.status == "FINISHED"


def test_database_locked_past_the_bound_fails_with_one_line_naming_it_and_the_fix(
    trained: Trained, home: Path, tracking: str, monkeypatch: pytest.MonkeyPatch
):
    from pipelines.flows.train import TrainingError

    monkeypatch.setenv("INCIDENT_RISK_TRACKING_WAIT", "3")
    holder = _hold(HOLD, str(home / "mlflow.db"), "40")
    try:
        started = time.monotonic()
        with pytest.raises(TrainingError) as caught:
            _log(trained, home, [])
        elapsed = time.monotonic() - started
    finally:
        holder.kill()
        holder.wait()
    message = str(caught.value)
    assert "\n" not in message
    assert f"the MLflow database {home / 'mlflow.db'} stayed locked" in message, message
    assert "over 3 s (INCIDENT_RISK_TRACKING_WAIT)" in message
    assert "use an MLflow tracking server (docs/deploy.md, 'Concurrent writers')" in message
    assert elapsed < 15, elapsed  # the bound, not MLflow's 20 s


@pytest.mark.flow
def test_under_prefect_the_locked_failure_is_one_line_without_a_traceback(
    prefect_harness: None,
    trained: Trained,
    home: Path,
    tracking: str,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
):
    import pipelines.flows.train as flows
    from pipelines.settings import resolve_settings

    monkeypatch.setenv("INCIDENT_RISK_TRACKING_WAIT", "2")
    holders: list[subprocess.Popen[str]] = []
    real = flows.log_training

    def locked_then_log(*args, **kwargs):  # type: ignore[no-untyped-def]
        holders.append(_hold(HOLD, str(home / "mlflow.db"), "30"))  # another process takes the database
        return real(*args, **kwargs)

    monkeypatch.setattr(flows, "log_training", locked_then_log)
    try:
        with pytest.raises(flows.TrainingError, match="stayed locked by another process for over 2 s"):
            flows.run_training(resolve_settings(home), trained.options, lambda _m: None, table=trained.table)  # type: ignore[arg-type]
    finally:
        for holder in holders:
            holder.kill()
            holder.wait()
    captured = capfd.readouterr()
    assert holders and "Traceback" not in captured.err + captured.out, captured.err[-3000:]


def test_a_second_command_of_the_home_waits_for_the_first_saying_for_what(
    home: Path, tracking: str, monkeypatch: pytest.MonkeyPatch
):
    from pipelines.tracking_lock import TrackingBusyError, tracking_writes

    holder = _hold(HOLD_HOME_LOCK, tracking, "3")
    lines: list[str] = []
    try:
        started = time.monotonic()
        with tracking_writes(tracking, "score-batch (logging its summary)", lines.append):
            waited = time.monotonic() - started
    finally:
        holder.wait(timeout=30)
    assert waited > 2, waited
    assert len(lines) == 1
    assert lines[0].startswith(
        f"score-batch (logging its summary): waiting for train (logging the run) (pid {holder.pid}, since "
    )
    assert f"to finish writing the MLflow database {home / 'mlflow.db'} (at most 300 s)" in lines[0]

    monkeypatch.setenv("INCIDENT_RISK_TRACKING_WAIT", "1")
    holder = _hold(HOLD_HOME_LOCK, tracking, "20")
    try:
        with (
            pytest.raises(TrackingBusyError, match=r"was still being written by train \(logging the run\)"),
            tracking_writes(tracking, "score-batch", lambda _line: None),
        ):
            pass
    finally:
        holder.kill()
        holder.wait()


def _run(home: Path, tmp: Path, script: str, *args: str) -> subprocess.Popen[str]:
    """``python -c script args`` against the home's own SQLite database and the session's Prefect server."""
    from prefect.settings import PREFECT_API_URL

    from tests.integration.test_servers_e2e import base_env

    env = base_env(tmp) | {
        "INCIDENT_RISK_HOME": str(home),  # MLFLOW_* stripped: the home's own SQLite database
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        "PYTHONPATH": str(REPO),
    }
    command = [sys.executable, "-c", script, *args]
    return subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


CLI = "from pipelines.cli.main import main; main()"


def _done(proc: subprocess.Popen[str]) -> str:
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, (out + err)[-3000:]
    return out + err


@pytest.mark.flow
def test_concurrent_train_and_score_batch_on_one_home_finish_with_a_consistent_registry(
    prefect_harness: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from mlflow import MlflowClient

    from features.history.store import HistoryStore
    from features.simulation.simulator import SimulationConfig, simulate
    from models.registry.artifacts import MODEL_NAME, load_model
    from tests.integration.test_faults import SMALL_TRAIN

    home = tmp_path / "home"
    sim = simulate(SimulationConfig(days=45, services=8, seed=3))
    store = HistoryStore(home / "store")
    with store.lock():
        h = sim.history
        store.commit({"deploys": h.deploys, "toggle_events": h.toggle_events, "incidents": h.incidents}, None, 0)
    _done(_run(home, tmp_path, SMALL_TRAIN))
    _done(_run(home, tmp_path, CLI, "promote", "1", "--reason", "champion for the concurrency test"))
    upcoming = sim.upcoming.head(20)[["deploy_id", "service", "lines_added", "author"]].astype(str)
    upcoming["created_at"] = sim.upcoming.head(20)["created_at"].map(lambda t: t.isoformat())
    upcoming.to_csv(tmp_path / "upcoming.csv", index=False)

    procs = [_run(home, tmp_path, SMALL_TRAIN)]
    for i in range(2):
        out = str(tmp_path / f"scores-{i}.parquet")
        procs.append(_run(home, tmp_path, CLI, "score-batch", "--input", str(tmp_path / "upcoming.csv"), "--out", out))
    for proc in procs:
        _done(proc)

    uri = f"sqlite:///{home / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # load_model resolves models:/ URIs through the environment
    client = MlflowClient(uri)
    versions = client.search_model_versions(f"name='{MODEL_NAME}'")
    assert sorted(int(mv.version) for mv in versions) == [1, 2]
    assert all(mv.status == "READY" for mv in versions)
    champion = client.get_model_version_by_alias(MODEL_NAME, "champion")
    load_model(f"models:/{MODEL_NAME}/{champion.version}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=100)
    kinds = sorted(r.data.tags["run_kind"] for r in runs if "run_kind" in r.data.tags)
    assert kinds == ["batch_scoring", "batch_scoring", "training", "training"], kinds
    assert all(r.info.status == "FINISHED" for r in runs)
