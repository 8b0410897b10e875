"""The training flow: store -> labels -> features -> split -> candidates -> calibration ->
evaluation -> MLflow -> registry, as Prefect tasks around plain functions of models/.

``run_training`` is the one entry point (CLI, demo, benchmarks); ``orchestrate=False`` runs the
same steps without Prefect, which is how the benchmarks measure Prefect's overhead.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from features.history.schema import History
from features.history.store import HistoryStore
from features.labels.attribution import AttributionConfig
from features.pointintime.compute import FeatureConfig
from models.training.config import TrainConfig
from models.training.dataset import build_training_table, config_dict, fingerprint
from models.training.tracking import RunContext, TrackedRun, fail_training_run, log_training, open_training_run
from models.training.train import (
    CandidateResult,
    CandidateSpec,
    EvaluateAll,
    TrainingTable,
    TrainResult,
    evaluate_candidate,
    train,
)
from pipelines.flows.artifacts import record_training
from pipelines.flows.runners import RunnerConfig, make_task_runner
from pipelines.settings import Settings

Progress = Callable[[str], None]
DEFAULT_EXPERIMENT = "incident-risk"


@dataclass(frozen=True)
class TrainOptions:
    """Everything one training run takes besides the settings (which say where state lives)."""

    test_fraction: float = 0.2
    test_start: pd.Timestamp | None = None
    experiment: str = DEFAULT_EXPERIMENT
    metrics_out: Path | None = None
    as_of: pd.Timestamp | None = None
    train: TrainConfig = field(default_factory=TrainConfig)
    attribution: AttributionConfig = field(default_factory=AttributionConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    source: str = "store"


@dataclass(frozen=True)
class TrainOutcome:
    """The run's id, the registered version, the gate's decision, the metrics document and timings."""

    run_id: str
    model_version: str
    promoted: bool
    reason: str
    metrics: dict[str, Any]
    seconds: dict[str, float]


class TrainingError(RuntimeError):
    """Training cannot start or finish (empty store, too few labelled deploys...), said in one line."""


def load_history(store_dir: Path) -> History:
    history = HistoryStore(store_dir).read_history()
    if history.deploys.empty:
        raise TrainingError(f"the store at {store_dir} holds no deploys; run `incident-risk ingest` first")
    return history


def make_table(history: History, options: TrainOptions) -> TrainingTable:
    table = build_training_table(history, options.attribution, options.features, options.as_of)
    if table.frame.empty:
        raise TrainingError(f"no matured, labelled production deploys to train on (excluded: {table.excluded})")
    return table


def context_for(table: TrainingTable, options: TrainOptions, artifact_root: Path | None) -> RunContext:
    return RunContext(
        experiment=options.experiment,
        data_fingerprint=fingerprint(table),
        label_rule=table.label_rule,
        feature_set_version=table.feature_set_version,
        attribution_config=config_dict(options.attribution),
        feature_config=config_dict(options.features),
        source=options.source,
        artifact_root=None if artifact_root is None else str(artifact_root),
    )


def fit_models(
    table: TrainingTable, options: TrainOptions, progress: Progress, evaluate_all: EvaluateAll | None = None
) -> TrainResult:
    try:
        return train(table, options.train, options.test_fraction, options.test_start, progress, evaluate_all)
    except ValueError as exc:
        raise TrainingError(str(exc)) from exc


def _steps(
    table_source: Callable[[], TrainingTable],
    options: TrainOptions,
    artifact_root: Path | None,
    progress: Progress,
    wrap: Any,
    evaluate_all: EvaluateAll | None = None,
    store_dir: Path | None = None,
) -> TrainOutcome:
    """The shared sequence; ``wrap(fn, name)`` turns a step into a Prefect task or leaves it plain."""
    seconds: dict[str, float] = {}

    def timed(name: str, fn: Callable[..., Any], *args: Any) -> Any:
        started = time.perf_counter()
        out = wrap(fn, name)(*args)
        seconds[name] = time.perf_counter() - started
        return out

    timed("tracking", check_tracking)
    root = None if artifact_root is None else str(artifact_root)
    run_id = _tracked(lambda: open_training_run(options.experiment, root, options.source), progress)  # watchable
    progress(f"MLflow run {run_id} (experiment {options.experiment})")
    try:
        table: TrainingTable = timed("features", table_source)
        y = table.frame["label"]
        progress(
            f"training table: {len(table.frame)} deploys ({int(y.sum())} failed, rate {y.mean():.3f}), "
            f"{len(table.numeric)} numeric + {len(table.categorical)} categorical features; excluded "
            + (", ".join(f"{n} {reason}" for reason, n in table.excluded.items()) or "none")
        )
        result: TrainResult = timed("train", fit_models, table, options, progress, evaluate_all)
        context = context_for(table, options, artifact_root)
        tracked: TrackedRun = timed("mlflow", log_or_fail, result, context, progress, run_id)
        timed("publish", record_training, tracked, result, table, context, store_dir)  # MLflow story, Prefect artifacts
    except BaseException:
        # best effort: a locked or unreachable tracking store must not hide why the training stopped
        with contextlib.suppress(Exception):
            _tracked(lambda: fail_training_run(run_id), progress)
        raise
    doc = tracked.metrics_json(result)
    if options.metrics_out is not None:
        options.metrics_out.parent.mkdir(parents=True, exist_ok=True)
        options.metrics_out.write_text(json.dumps(doc, indent=2))
        progress(f"metrics written to {options.metrics_out}")
    return TrainOutcome(
        run_id=tracked.run_id,
        model_version=tracked.outcome.version,
        promoted=tracked.outcome.decision.promote,
        reason=tracked.outcome.decision.reason,
        metrics=doc,
        seconds={**seconds, **{f"train.{k}": v for k, v in result.seconds.items()}},
    )


def check_tracking(attempts: int = 4, first_delay: float = 1.0) -> str:
    """Fail fast, before the expensive steps, when the MLflow tracking server does not answer.

    Retries with exponential backoff (1, 2, 4 s by default), then raises ``TrainingError`` naming
    the server; a local database (sqlite) is checked once. Returns the tracking URI.
    """
    import httpx
    import mlflow

    uri = mlflow.get_tracking_uri()
    if not uri.startswith(("http://", "https://")):
        return uri
    delay, last = first_delay, ""
    for attempt in range(1, attempts + 1):
        try:
            response = httpx.get(uri.rstrip("/") + "/health", timeout=5.0)
            if response.status_code == 200:
                return uri
            last = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            last = f"{type(exc).__name__}: {exc}"
        if attempt < attempts:
            time.sleep(delay)
            delay *= 2
    raise TrainingError(f"MLflow tracking server {uri} unreachable after {attempts} attempts ({last})")


def _tracked(write: Callable[[], Any], progress: Progress) -> Any:
    """One short MLflow write under the home's single-writer lock (pipelines/tracking_lock.py)."""
    import mlflow

    from pipelines.tracking_lock import tracking_writes

    with tracking_writes(mlflow.get_tracking_uri(), "train (the parent run)", progress):
        return write()


def log_or_fail(result: TrainResult, context: RunContext, progress: Progress, run_id: str | None = None) -> TrackedRun:
    """Log, register and gate; a tracking failure half-way becomes one clear ``TrainingError``.

    The registry stays consistent whatever step fails: aliases are set only on versions that are
    READY and load back (models/registry/), so a dead server leaves at most a run without a
    model version, or a version without an alias, never an alias pointing at a missing model.
    On a SQLite tracking database, the writes wait for other commands of the home and for a
    locked database for a bounded time (pipelines/tracking_lock.py).
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    from pipelines.tracking_lock import TrackingBusyError, tracking_writes

    try:
        with tracking_writes(mlflow.get_tracking_uri(), "train (logging the run)", progress):
            return log_training(result, context, progress, run_id)
    except TrackingBusyError as exc:
        raise TrainingError(str(exc)) from None
    except (MlflowException, OSError) as exc:
        first = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        raise TrainingError(
            f"MLflow tracking at {mlflow.get_tracking_uri()} failed while logging the run ({first}); "
            "no alias was changed by this run"
        ) from exc


def _as_task(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
    return task(fn, name=name, cache_policy=NO_CACHE, persist_result=False)  # type: ignore[call-overload]


def _plain(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
    return fn


@task(name="candidate", cache_policy=NO_CACHE, persist_result=False)
def candidate_task(table: TrainingTable, config: TrainConfig, spec: CandidateSpec) -> CandidateResult:
    return evaluate_candidate(table, config, spec)


def _submit_candidates(table: TrainingTable, config: TrainConfig, specs: list[CandidateSpec]) -> list[CandidateResult]:
    """Every candidate as a task on the flow's task runner (threads or Dask), results in spec order."""
    futures = [candidate_task.submit(table, config, spec) for spec in specs]
    return [future.result() for future in futures]


@flow(name="train", persist_result=False, validate_parameters=False)
def train_flow(
    store_dir: Path | None,
    options: TrainOptions,
    artifact_root: Path | None = None,
    progress: Progress | None = None,
    table: TrainingTable | None = None,
    parallel: bool = False,
) -> TrainOutcome:
    """Prefect flow: each step is a task, so the UI shows where time goes.

    ``parallel`` submits the candidates to the flow's task runner (``run_training(runner=...)``).
    ``progress`` defaults to None, not ``print``: Prefect builds a JSON schema of the parameters
    and warns on a default it cannot serialise.
    """
    evaluate_all = _submit_candidates if parallel else None
    say = progress or print
    return _steps(_source(store_dir, options, table), options, artifact_root, say, _as_task, evaluate_all, store_dir)


def _source(store_dir: Path | None, options: TrainOptions, table: TrainingTable | None) -> Callable[[], TrainingTable]:
    if table is not None:
        return lambda: table
    assert store_dir is not None
    return lambda: make_table(load_history(store_dir), options)


def run_training(
    settings: Settings,
    options: TrainOptions | None = None,
    progress: Progress | None = None,
    orchestrate: bool = True,
    table: TrainingTable | None = None,
    runner: RunnerConfig | None = None,
) -> TrainOutcome:
    """Train from the store under ``settings`` (or from a ready ``table``), log, register and gate.

    The caller has run ``prepare_runtime(settings)``. ``progress`` receives one line per step
    (default: print). ``orchestrate=False`` skips Prefect; ``table`` skips store, labels and
    features (benchmarks on external data). ``runner`` (threads or Dask, pipelines/flows/runners.py)
    evaluates the candidates in parallel; the result equals the sequential one.
    """
    opts = options or TrainOptions()
    say = progress or (lambda msg: print(msg, flush=True))
    if runner is not None and runner.parallel:
        if not orchestrate:
            raise ValueError(f"the {runner.kind} task runner needs Prefect orchestration")
        parallel_flow = train_flow.with_options(task_runner=make_task_runner(runner))
        with _quiet_training_errors():
            return parallel_flow(settings.store_dir, opts, settings.artifact_root, say, table, parallel=True)
    if orchestrate:
        with _quiet_training_errors():
            return train_flow(settings.store_dir, opts, settings.artifact_root, say, table)
    source = _source(settings.store_dir, opts, table)
    return _steps(source, opts, settings.artifact_root, say, _plain, None, settings.store_dir)


@contextlib.contextmanager
def _quiet_training_errors() -> Iterator[None]:
    """Keep Prefect from logging a ``TrainingError`` with its traceback: the caller prints it as one line."""

    def keep(record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, TrainingError) and "TrainingError" not in record.getMessage()

    loggers = [logging.getLogger(name) for name in ("prefect.task_runs", "prefect.flow_runs")]
    for logger in loggers:
        logger.addFilter(keep)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(keep)
