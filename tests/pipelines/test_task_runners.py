"""Scale-out: training's candidate search on Dask (prefect-dask) gives the sequential run's results."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from models.training.config import CandidateGrid, TrainConfig
from pipelines.flows.runners import RunnerConfig, make_task_runner
from pipelines.settings import prepare_runtime, resolve_settings

SMALL = TrainConfig(
    candidates=(CandidateGrid("logreg", (("C", (0.1, 1.0)),)), CandidateGrid("hgb", (("max_iter", (40,)),))),
    n_splits=3,
    permutation_repeats=1,
)


def test_runner_config_checks_and_builds_the_requested_runner(monkeypatch: pytest.MonkeyPatch):
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    assert make_task_runner(RunnerConfig()) is None
    assert isinstance(make_task_runner(RunnerConfig("threads", workers=3)), ThreadPoolTaskRunner)
    local = make_task_runner(RunnerConfig("dask", workers=2, processes=False))
    assert isinstance(local, DaskTaskRunner) and local.cluster_kwargs["n_workers"] == 2
    remote = make_task_runner(RunnerConfig("dask", dask_address="tcp://10.0.0.5:8786"))
    assert isinstance(remote, DaskTaskRunner) and remote.address == "tcp://10.0.0.5:8786"
    monkeypatch.setenv("INCIDENT_RISK_DASK_ADDRESS", "tcp://sched:8786")
    assert RunnerConfig.from_env("dask").dask_address == "tcp://sched:8786"
    assert RunnerConfig.from_env("threads").dask_address is None
    with pytest.raises(ValueError, match="one of"):
        RunnerConfig("gpu")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs the dask"):
        RunnerConfig("threads", dask_address="tcp://x:1")


def _store(home: Path) -> None:
    from features.history.store import HistoryStore
    from features.simulation.simulator import SimulationConfig, simulate

    h = simulate(SimulationConfig(days=60, services=12, seed=2)).history
    store = HistoryStore(home / "store")
    with store.lock():
        store.commit({"deploys": h.deploys, "toggle_events": h.toggle_events, "incidents": h.incidents}, None, 0)


@pytest.mark.flow
@pytest.mark.slow
def test_training_on_a_dask_cluster_equals_the_sequential_run(home: Path, prefect_harness: None):
    from distributed import LocalCluster
    from mlflow import MlflowClient

    from pipelines.flows.train import TrainOptions, run_training

    _store(home)
    settings = resolve_settings(home)
    prepare_runtime(settings)
    quiet = lambda _m: None  # noqa: E731
    sequential = run_training(settings, TrainOptions(train=SMALL), progress=quiet, orchestrate=False)
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None, silence_logs=logging.ERROR
    ) as cluster:
        runner = RunnerConfig("dask", dask_address=cluster.scheduler_address)
        parallel = run_training(settings, TrainOptions(train=SMALL), progress=quiet, runner=runner)
        # the candidates really ran on the cluster, one task each, and their compute time was reported
        # (``max_exec_time`` is not evidence: it only moves on a worker heartbeat during a task)
        prefix = cluster.scheduler.task_prefixes["candidate_task"]
        assert prefix.state_counts["memory"] == 3 and prefix.all_durations["compute"] > 0
    for key in ("split", "n_train", "n_test", "test", "baselines"):
        assert parallel.metrics[key] == sequential.metrics[key], key
    client = MlflowClient()
    a, b = client.get_run(sequential.run_id).data, client.get_run(parallel.run_id).data
    assert a.tags["chosen_candidate"] == b.tags["chosen_candidate"]
    val = {k: v for k, v in a.metrics.items() if k.startswith("val_")}
    assert val and val == {k: v for k, v in b.metrics.items() if k.startswith("val_")}
