"""Scheduled deployments: the flows a Prefect worker runs, and the checks of ``prefect.yaml``.

Each deployable flow takes every setting as a plain typed parameter (strings, numbers, literals),
so Prefect derives a parameter schema from the signature and the server rejects a run whose
parameters do not fit it (``enforce_parameter_schema``). The flows build the typed config objects
and call the same flows the CLI runs, as subflows. Where state lives comes from the worker's
environment (``INCIDENT_RISK_HOME``, ``MLFLOW_TRACKING_URI``, ``PREFECT_API_URL``) unless ``home``
is given. Path parameters may use ``{home}``, ``{date}`` (the run's UTC date, YYYY-MM-DD) and ``{time}``
(its UTC time, HHMMSS).

``validate_prefect_yaml`` checks a ``prefect.yaml`` without a server: every deployment's entrypoint
imports, its parameters validate against the flow's schema, its schedules parse, and it names a
work pool. ``incident-risk deploy`` runs it before handing the file to ``prefect deploy``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import pandas as pd
import yaml
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from pipelines.flows.runners import RunnerConfig, RunnerKind
from pipelines.settings import Settings, prepare_runtime, resolve_settings

if TYPE_CHECKING:
    from features.history.schema import History
    from models.training.train import TrainingTable
    from pipelines.flows.train import TrainOptions

DEFAULT_PREFECT_FILE = Path(__file__).resolve().parents[2] / "prefect.yaml"


class DeploymentFlowError(RuntimeError):
    """A scheduled run that cannot do its job; raised so the flow run ends Failed with this message."""


def _settings(home: str | None) -> Settings:
    settings = resolve_settings(Path(home) if home else None)
    prepare_runtime(settings)  # in a worker Prefect is configured already; MLflow still needs it
    return settings


def expand_path(template: str, settings: Settings, now: datetime | None = None) -> Path:
    """``{home}``, ``{date}`` and ``{time}`` in a path parameter, so one deployment writes a file per day or run."""
    when = now or datetime.now(UTC)
    return Path(
        template.format(home=settings.home, date=when.strftime("%Y-%m-%d"), time=when.strftime("%H%M%S"))
    ).expanduser()


def unused_path(path: Path) -> Path:
    """``path``, or the first free ``<stem>-2<suffix>``, ``-3``... beside it: a run never overwrites earlier output."""
    candidate, n = path, 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
    return candidate


@flow(name="scheduled-ingest", persist_result=False)
def scheduled_ingest(config: str = "{home}/sources.yaml", home: str | None = None) -> dict[str, Any]:
    """Read every declared export into the store (the hourly deployment); fails when the ingest does."""
    from pipelines.flows.ingest import run_ingest

    settings = _settings(home)
    report = run_ingest(expand_path(config, settings), settings.store_dir, quiet=True)
    if not report.ok:
        raise DeploymentFlowError(report.error or "ingest failed")
    return report.as_dict()


def recent_rows(frame: pd.DataFrame, window_days: float, end: pd.Timestamp | None = None) -> pd.DataFrame:
    """Training rows created in the last ``window_days`` up to ``end`` (default: the latest row).

    Change-risk models decay as teams, services and practices change, so the nightly model learns
    from a rolling recent window. Features still see the full history (an author's experience
    began before the window); only which deploys are training rows is restricted.
    """
    created = pd.to_datetime(frame["created_at"], utc=True)
    stop = created.max() if end is None else pd.Timestamp(end)
    start = stop - pd.Timedelta(days=window_days)
    return frame[(created > start) & (created <= stop)].reset_index(drop=True)


def window_table(table: TrainingTable, window_days: float) -> TrainingTable:
    """``table`` cut to its last ``window_days`` of rows (``recent_rows``); an empty cut is a ``TrainingError``."""
    from models.training.train import TrainingTable
    from pipelines.flows.train import TrainingError

    frame = recent_rows(table.frame, window_days)
    if frame.empty:
        raise TrainingError(f"no training rows in the last {window_days:g} days")
    return TrainingTable(
        frame, table.numeric, table.categorical, table.excluded, table.label_rule, table.feature_set_version
    )


def recent_table(history: History, options: TrainOptions, window_days: float) -> TrainingTable:
    """The training table of ``history`` cut to its last ``window_days`` of rows (features use all history)."""
    from pipelines.flows.train import make_table

    return window_table(make_table(history, options), window_days)


@task(name="recent-training-table", cache_policy=NO_CACHE, persist_result=False)
def recent_training_table(settings: Settings, options: TrainOptions, window_days: float) -> TrainingTable:
    """The store's training table cut to the rolling window (rows only; features use all history)."""
    from pipelines.flows.train import load_history

    return recent_table(load_history(settings.store_dir), options, window_days)


def _max_lag(hours: float | None) -> pd.Timedelta | None:
    """``max_lag_hours`` by the one parser (``max_lag_from``), its error as the flow's."""
    from features.labels.attribution import max_lag_from

    try:
        return max_lag_from(hours)
    except ValueError as exc:
        raise DeploymentFlowError(f"max_lag_hours: {exc}") from None


@flow(name="scheduled-train", persist_result=False)
def scheduled_train(
    home: str | None = None,
    window_days: float = 180.0,
    test_fraction: float = 0.2,
    experiment: str = "incident-risk",
    seed: int = 0,
    max_lag_hours: float | None = 24.0,
    task_runner: RunnerKind = "sequential",
    workers: int = 2,
    dask_address: str | None = None,
) -> dict[str, Any]:
    """Train on the rolling recent window, log to MLflow, register and gate (the nightly deployment).

    ``task_runner`` dask with no ``dask_address`` (nor ``$INCIDENT_RISK_DASK_ADDRESS``) starts a
    local cluster of ``workers`` processes for the candidate search.
    """
    from features.labels.attribution import AttributionConfig
    from models.training.config import TrainConfig
    from pipelines.flows.train import TrainOptions, run_training

    if not 0 < test_fraction < 1:
        raise DeploymentFlowError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if not window_days > 0:
        raise DeploymentFlowError(f"window_days must be positive, got {window_days}")
    settings = _settings(home)
    runner = RunnerConfig.from_env(task_runner, workers, dask_address)
    options = TrainOptions(
        test_fraction=test_fraction,
        experiment=experiment,
        train=TrainConfig(seed=seed),
        attribution=AttributionConfig(max_lag=_max_lag(max_lag_hours)),
        source=f"scheduled-train window={window_days:g}d",
    )
    table = recent_training_table(settings, options, window_days)
    outcome = run_training(settings, options, progress=_log, table=table, runner=runner)
    return {
        "run_id": outcome.run_id,
        "model_version": outcome.model_version,
        "promoted": outcome.promoted,
        "reason": outcome.reason,
        "test": outcome.metrics.get("test", {}),
        "runner": runner.describe(),
    }


def _log(message: str) -> None:
    from prefect.logging import get_run_logger

    get_run_logger().info(message)


@flow(name="scheduled-score-batch", persist_result=False)
def scheduled_score_batch(
    input_path: str = "{home}/upcoming/upcoming.csv",
    out_path: str = "{home}/scores/{date}/{time}.parquet",
    home: str | None = None,
    model_name: str = "incident-risk",
    alias: str = "champion",
) -> dict[str, Any]:
    """Score the file of upcoming deploys with the champion (the batch-scoring deployment).

    Runs every 15 minutes: no upcoming file is the normal quiet case (skipped, one log line, the run
    Completed), and each run writes its own file (an existing one is never overwritten).
    """
    from pipelines.flows.score_batch import run_batch_scoring

    settings = _settings(home)
    source = expand_path(input_path, settings)
    if not source.is_file():
        _log(f"no upcoming deploys to score: {source} does not exist; skipped")
        return {"skipped": True, "reason": f"{source} does not exist", "input": str(source)}
    out = unused_path(expand_path(out_path, settings))
    summary = run_batch_scoring(source, out, settings, model_name=model_name, alias=alias)
    return {"skipped": False, **summary.as_dict()}


@flow(name="scheduled-dora", persist_result=False)
def scheduled_dora(
    home: str | None = None,
    by: Literal["service", "squad", "tribe", "all"] = "service",
    period: Literal["week", "month"] = "week",
    max_lag_hours: float | None = 24.0,
    out_path: str = "{home}/reports/dora-{date}.csv",
) -> dict[str, Any]:
    """DORA metrics of the stored history as CSV, and the same MLflow trend run as the demo (the weekly
    reporting deployment)."""
    from features.history.store import HistoryStore
    from features.labels.attribution import AttributionConfig, attribute
    from features.labels.dora import DoraConfig, Grouping, Period, dora_metrics
    from pipelines.flows.dora import log_dora_trends, to_csv

    settings = _settings(home)
    history = HistoryStore(settings.store_dir).read_history()
    if history.deploys.empty:
        raise DeploymentFlowError(f"the store at {settings.store_dir} holds no deploys")
    attribution = attribute(history, AttributionConfig(max_lag=_max_lag(max_lag_hours)))
    metrics = dora_metrics(history, attribution, DoraConfig(by=cast(Grouping, by), period=cast(Period, period)))
    out = expand_path(out_path, settings)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(to_csv(metrics), encoding="utf-8")
    tmp.replace(out)
    run_id = log_dora_trends(metrics, attribution, settings, by, period)
    groups = int(metrics["group"].nunique()) if len(metrics) else 0
    return {"out": str(out), "rows": len(metrics), "groups": groups, "run_id": run_id}


@flow(name="scheduled-digest", persist_result=False)
def scheduled_digest(
    home: str | None = None,
    notify_config: str | None = "{home}/notify.yaml",
    out_dir: str | None = "{home}/digests/{date}",
    dry_run: bool = False,
    model_name: str = "incident-risk",
    alias: str = "champion",
) -> dict[str, Any]:
    """The weekly risk digest of the last complete week, to every squad's and tribe's Slack channel.

    Slack credentials come from the worker's environment (SLACK_BOT_TOKEN or SLACK_WEBHOOK_URL);
    a routing file that does not exist means the defaults (catalog channels, #deploy-risk).
    """
    from models.notify.config import load_notify_config
    from pipelines.flows.digest import run_digest

    settings = _settings(home)
    routing = expand_path(notify_config, settings) if notify_config else None
    notify = load_notify_config(routing if routing is not None and routing.is_file() else None)
    out = expand_path(out_dir, settings) if out_dir else None
    report = run_digest(settings, notify, dry_run=dry_run, out_dir=out, model_name=model_name, alias=alias)
    if report.failed:
        raise DeploymentFlowError(f"{len(report.failed)} digest messages not sent: {report.failed[0]}")
    return report.as_dict()


@flow(name="scheduled-monitor", persist_result=False)
def scheduled_monitor(
    home: str | None = None,
    window_days: int = 28,
    lookback_days: float = 180.0,
    min_labels: int = 300,
    auc_margin: float = 0.03,
    ece_max: float = 0.05,
    psi_max: float = 0.25,
    false_alarm_rate: float = 0.05,
    retrain: bool = False,
    retrain_window_days: float = 30.0,
    retrain_from_onset: bool = True,
    retrain_gate: str = "paired",
    retrain_follow: bool = True,
    model_name: str = "incident-risk",
) -> dict[str, Any]:
    """Judge the served model on matured outcomes (the daily monitoring deployment); ``retrain`` on an alarm
    and, with ``retrain_follow``, again while a champion retrained from a change's onset is young.

    A firing alarm does not fail the run: it emits the ``incident-risk.monitor.decay-alarm`` event and,
    with ``retrain``, runs the training flow. Nothing to judge yet fails the run with the reason.
    """
    from dataclasses import replace

    from models.monitoring.alarms import AlarmConfig
    from models.monitoring.outcomes import WindowConfig
    from pipelines.flows.monitor import MonitorError, MonitorOptions, RetrainConfig, run_monitor

    if not retrain_window_days > 0:
        raise DeploymentFlowError(f"retrain_window_days must be positive, got {retrain_window_days}")
    settings = _settings(home)
    alarm = AlarmConfig(window=replace(WindowConfig(), days=window_days), min_labels=min_labels,
                        auc_margin=auc_margin, ece_max=ece_max, psi_max=psi_max,
                        false_alarm_rate=false_alarm_rate)  # fmt: skip
    if retrain_gate not in ("paired", "margin"):
        raise DeploymentFlowError(f"retrain_gate must be paired or margin, got {retrain_gate!r}")
    gate_rule: Any = retrain_gate  # checked above
    retraining = RetrainConfig(window_days=retrain_window_days, from_onset=retrain_from_onset, gate_rule=gate_rule,
                               follow_change=retrain_follow)  # fmt: skip
    options = MonitorOptions(lookback_days=lookback_days, alarm=alarm, retrain=retrain,
                             retraining=retraining, model_name=model_name)  # fmt: skip
    try:
        return run_monitor(settings, options).as_dict()
    except MonitorError as exc:
        raise DeploymentFlowError(str(exc)) from None


# --------------------------------------------------------------------------------------------
# prefect.yaml


@dataclass(frozen=True)
class DeploymentCheck:
    """One deployment of a prefect.yaml and what is wrong with it (nothing, when ``problems`` is empty)."""

    name: str
    flow_name: str
    entrypoint: str
    work_pool: str | None
    schedules: list[str]
    parameters: dict[str, Any]
    problems: list[str]


def load_prefect_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: cannot read ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("deployments"), list):
        raise ValueError(f"{path}: expected a mapping with a 'deployments' list")
    return data


def load_entrypoint(entrypoint: str, root: Path) -> Any:
    """The flow object an entrypoint ``path/to/file.py:function`` names (a module of this package)."""
    file, sep, attr = entrypoint.partition(":")
    if not sep or not file.endswith(".py"):
        raise ValueError(f"entrypoint {entrypoint!r} is not 'path/to/file.py:flow_function'")
    rel = Path(file)
    if rel.is_absolute() or not (root / rel).is_file():
        raise ValueError(f"entrypoint {entrypoint!r}: no file {rel} under {root}")
    import importlib

    module = importlib.import_module(".".join(rel.with_suffix("").parts))
    obj = getattr(module, attr, None)
    if obj is None:
        raise ValueError(f"entrypoint {entrypoint!r}: {module.__name__} has no {attr}")
    return obj


def _schedule_problems(schedules: Any) -> tuple[list[str], list[str]]:
    from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule, RRuleSchedule

    described: list[str] = []
    problems: list[str] = []
    if schedules is None:
        return described, problems
    if not isinstance(schedules, list):
        return described, [f"schedules must be a list, not {type(schedules).__name__}"]
    for i, entry in enumerate(schedules):
        if not isinstance(entry, dict):
            problems.append(f"schedules[{i}] is not a mapping")
            continue
        fields = {k: v for k, v in entry.items() if k not in ("active", "parameters", "slug", "max_scheduled_runs")}
        try:
            if "cron" in fields:
                described.append(f"cron {CronSchedule(**fields).cron} {fields.get('timezone', 'UTC')}")
            elif "interval" in fields:
                described.append(f"every {IntervalSchedule(**fields).interval}")
            elif "rrule" in fields:
                described.append(f"rrule {RRuleSchedule(**fields).rrule}")
            else:
                problems.append(f"schedules[{i}] has no cron, interval or rrule")
        except Exception as exc:  # pydantic says exactly what is wrong
            problems.append(f"schedules[{i}]: {exc}".splitlines()[0])
    return described, problems


def validate_prefect_yaml(path: Path = DEFAULT_PREFECT_FILE) -> list[DeploymentCheck]:
    """Check every deployment of ``path`` against its flow's parameter schema; never needs a server."""
    from prefect import Flow
    from prefect.utilities.callables import parameter_schema
    from prefect.utilities.schema_tools import validate

    data = load_prefect_yaml(path)
    root = path.resolve().parent
    checks = []
    names: set[str] = set()
    for i, dep in enumerate(data["deployments"]):
        problems: list[str] = []
        dep = dep if isinstance(dep, dict) else {}
        name = str(dep.get("name") or f"deployments[{i}]")
        entrypoint = str(dep.get("entrypoint") or "")
        params = dep.get("parameters") or {}
        pool = dep.get("work_pool") or {}
        pool_name = pool.get("name") if isinstance(pool, dict) else None
        flow_name = ""
        if not pool_name:
            problems.append("no work_pool.name")
        schedules, schedule_problems = _schedule_problems(dep.get("schedules"))
        problems += schedule_problems
        try:
            obj = load_entrypoint(entrypoint, root)
            if not isinstance(obj, Flow):
                raise ValueError(f"entrypoint {entrypoint!r} is a {type(obj).__name__}, not a flow")
            flow_name = obj.name
            if f"{flow_name}/{name}" in names:
                problems.append(f"duplicate deployment {flow_name}/{name}")
            names.add(f"{flow_name}/{name}")
            schema = parameter_schema(obj).model_dump_for_openapi()
            errors = validate(params, schema, preprocess=True, ignore_required=False, allow_none_with_default=True)
            problems += [f"parameter {'.'.join(map(str, e.path)) or '(all)'}: {e.message}" for e in errors]
            unknown = sorted(set(params) - set(schema.get("properties", {})))
            problems += [f"parameter {k}: the flow takes no such parameter" for k in unknown]
            if not errors and not unknown:
                obj.validate_parameters(dict(params))  # pydantic, as the flow itself would
        except Exception as exc:
            problems.append(str(exc).splitlines()[0])
        checks.append(DeploymentCheck(name, flow_name, entrypoint, pool_name, schedules, dict(params), problems))
    return checks
