"""Which Prefect task runner a flow's independent work (candidates, export files) runs on.

``sequential`` (the default) keeps today's behaviour: each step runs in the flow's process, one
after another. ``threads`` uses a thread pool in that process. ``dask`` fans the work out through
prefect-dask: to an existing Dask cluster when ``dask_address`` is given (a team's scheduler,
``tcp://host:8786``), else to a temporary local cluster of ``workers`` workers. Results must not
depend on the choice; tests/pipelines/test_task_runners.py checks that training metrics do not.

Prefect's task runners are imported inside ``make_task_runner``: Prefect reads its settings at
import, after ``prepare_runtime`` has run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from features.history.choices import check_choice, choices_of

if TYPE_CHECKING:
    from prefect.task_runners import TaskRunner

RunnerKind = Literal["sequential", "threads", "dask"]
RUNNER_KINDS: tuple[RunnerKind, ...] = choices_of(RunnerKind)  # type: ignore[assignment]
#: A team's Dask scheduler, read by ``RunnerConfig.from_env`` (the CLI's and deployments' fallback).
DASK_ADDRESS_ENV = "INCIDENT_RISK_DASK_ADDRESS"


@dataclass(frozen=True)
class RunnerConfig:
    """How to run a flow's independent tasks.

    - ``kind``: sequential, threads or dask.
    - ``workers``: threads, or local Dask workers (ignored with ``dask_address``).
    - ``dask_address``: scheduler of an existing Dask cluster; implies ``kind="dask"``.
    - ``processes``: local Dask workers as processes (true parallelism for Python code) or threads
      of this process (cheaper to start, no pickling; fine when the work releases the GIL).
    - ``threads_per_worker``: threads of each local Dask worker.
    """

    kind: RunnerKind = "sequential"
    workers: int = 2
    dask_address: str | None = None
    processes: bool = True
    threads_per_worker: int = 1

    def __post_init__(self) -> None:
        check_choice("task runner", self.kind, RunnerKind)
        if self.workers < 1 or self.threads_per_worker < 1:
            raise ValueError("workers and threads_per_worker must be at least 1")
        if self.dask_address is not None and self.kind != "dask":
            raise ValueError(f"a Dask address needs the dask task runner, not {self.kind!r}")

    @property
    def parallel(self) -> bool:
        return self.kind != "sequential"

    @classmethod
    def from_env(cls, kind: str = "sequential", workers: int = 2, dask_address: str | None = None) -> RunnerConfig:
        """The runner a command asked for, with the Dask address defaulting to ``$INCIDENT_RISK_DASK_ADDRESS``."""
        address = dask_address or (os.environ.get(DASK_ADDRESS_ENV) or None if kind == "dask" else None)
        return cls(kind=kind, workers=workers, dask_address=address)  # type: ignore[arg-type]

    def describe(self) -> str:
        if self.kind == "dask":
            kind = "process" if self.processes else "thread"
            return f"dask ({self.dask_address or f'local cluster of {self.workers} {kind} workers'})"
        return f"threads ({self.workers} workers)" if self.kind == "threads" else "sequential"


def make_task_runner(config: RunnerConfig) -> TaskRunner[Any] | None:
    """The Prefect task runner for ``config``; None for sequential (the flow's own steps, in order)."""
    if config.kind == "sequential":
        return None
    if config.kind == "threads":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=config.workers)
    from prefect_dask import DaskTaskRunner

    if config.dask_address is not None:
        return DaskTaskRunner(address=config.dask_address)
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={
            "n_workers": config.workers,
            "threads_per_worker": config.threads_per_worker,
            "processes": config.processes,
            "dashboard_address": None,  # no web dashboard: no port to collide with, nothing to serve
        },
    )
