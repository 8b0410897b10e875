"""The monitor flow: logged predictions + matured labels -> metrics, drift, the decay alarm -> MLflow, event, retrain.

Steps (Prefect tasks around ``models.monitoring``): read the prediction log, load the model that
made the latest predictions from the registry, label the history as known now with that model's
attribution config, ``assess`` (outcomes, rolling metrics, per-group calibration, drift, alarm),
log everything to the MLflow experiment ``incident-risk-monitoring`` (metrics over time, tables,
figures), emit a Prefect event when the alarm fires, and, when asked, run the training flow (the
promotion gate then decides as usual): on an alarm, and after a promoted retrain from a change's
onset, again from that onset on every run while it is young (``RetrainConfig.follow_change``).
Nothing is written before the assessment is complete.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from models.monitoring.alarms import AlarmConfig
from models.monitoring.assess import Assessment, MonitorInputError, assess, reference_of
from models.monitoring.predlog import predictions_dir, read_predictions
from models.registry.artifacts import MODEL_NAME
from models.scoring.context import ModelBundle
from models.training.config import GateConfig, GateRule
from pipelines.flows.artifacts import publish_summary
from pipelines.settings import Settings

if TYPE_CHECKING:
    from features.history.schema import History
    from models.training.train import TrainingTable
    from pipelines.flows.train import TrainOptions

EXPERIMENT = "incident-risk-monitoring"
EXIT_OK, EXIT_ALARM, EXIT_CANNOT = 0, 3, 4


class MonitorError(RuntimeError):
    """The monitor cannot judge (no predictions, no matured labels, model gone): one line, exit code 4."""


@dataclass(frozen=True)
class RetrainConfig:
    """Which matured deploys the alarm's retrain learns from.

    The latest ``window_days``, extended back to the degradation's onset (``Assessment.onset``)
    when ``from_onset`` and the onset is earlier, by at most up to ``max_window_days``: right after
    a change a short window keeps most pre-change rows out, and weeks later every row since the
    change is of the new regime and worth learning from (docs/benchmarks.md, "Monitoring").
    """

    window_days: float = 30.0
    from_onset: bool = True
    max_window_days: float = 90.0
    #: The gate's rule for the retrain (``GateConfig.rule``): "paired" promotes only a challenger a paired
    #: DeLong test finds better (one-sided ``gate_alpha``) on the deploys after both training ends; a
    #: 0.005 margin on ~1,000 deploys promoted worse models (docs/benchmarks.md). "margin": the nightly rule.
    gate_rule: GateRule = "paired"
    gate_alpha: float = 0.05
    #: After a retrain from an onset is promoted, retrain from that onset on every monitor run, alarm or
    #: not, while the onset is under ``follow_days`` old: the first promotion weeks after a change has
    #: learnt from only part of the new regime, and the promoted champion's own alarm judges it against
    #: its own post-change baseline, so nothing else would replace it. The gate decides each time (on the
    #: simulated drift: the final champion at 97.1% of the oracle AUC on average over 20 seeds, against
    #: 94.4% over 10 without; docs/benchmarks.md, "Re-run 2026-12-06 (eighth)").
    follow_change: bool = True
    #: A follow-up's gate alpha: 0.5 promotes a follow-up that ranks the same deploys better than the
    #: champion (z > 0; a tie, e.g. a retrain on the same rows, keeps the champion). It learnt from the
    #: champion's rows of the new regime plus newer ones, so "not better beyond noise" is no reason to
    #: keep the champion.
    follow_gate_alpha: float = 0.5
    #: How long after the onset the follow-ups run: two windows. Once the onset is ``max_window_days``
    #: old the retrain learns from the latest ``max_window_days``, which then slides past an onset placed
    #: too early (seed 12 of the simulated drift: 45 days before the change, so at 90 days half the
    #: window was of the old regime); a rightly placed onset costs only more retrains on the new regime.
    follow_days: float = 180.0

    def __post_init__(self) -> None:
        if not self.window_days > 0:
            raise ValueError(f"the retrain window must be positive, got {self.window_days}")
        if not self.follow_days > 0:
            raise ValueError(f"the follow-ups' days must be positive, got {self.follow_days}")
        GateConfig(rule=self.gate_rule, alpha=self.gate_alpha)  # the same checks as the gate's
        GateConfig(rule=self.gate_rule, alpha=self.follow_gate_alpha)

    def gate(self, base: GateConfig, follow_up: bool = False) -> GateConfig:
        """``base`` (the training config's gate) with the retrain's rule (a follow-up's alpha for ``follow_up``)."""
        return replace(base, rule=self.gate_rule, alpha=self.follow_gate_alpha if follow_up else self.gate_alpha)

    def days(self, latest: pd.Timestamp, onset: pd.Timestamp | None) -> float:
        """The window's length, counted back from the latest training row ``latest``."""
        if not self.from_onset or onset is None:
            return self.window_days
        since = (pd.Timestamp(latest) - pd.Timestamp(onset)) / pd.Timedelta(days=1)
        return float(max(self.window_days, min(since, self.max_window_days)))

    def follows(self, onset: pd.Timestamp | None, as_of: pd.Timestamp) -> bool:
        """Whether a champion retrained from ``onset`` (``champion_onset``) is retrained again at ``as_of``."""
        if not (self.follow_change and self.from_onset) or onset is None:
            return False
        return bool((pd.Timestamp(as_of) - pd.Timestamp(onset)) / pd.Timedelta(days=1) < self.follow_days)


@dataclass(frozen=True)
class MonitorOptions:
    """What one monitor run looks at and how it judges."""

    as_of: pd.Timestamp | None = None  # default: now
    lookback_days: float = 180.0  # predictions logged in this many days before as_of are read
    alarm: AlarmConfig = field(default_factory=AlarmConfig)
    retrain: bool = False
    retraining: RetrainConfig = field(default_factory=RetrainConfig)
    model_name: str = MODEL_NAME
    experiment: str = EXPERIMENT


@dataclass
class MonitorOutcome:
    """What the run found and did; ``exit_code`` 0 healthy, 3 alarm."""

    model_name: str
    model_version: str
    summary: dict[str, Any]
    firing: bool
    run_id: str | None = None
    retrain: dict[str, Any] | None = None

    @property
    def exit_code(self) -> int:
        return EXIT_ALARM if self.firing else EXIT_OK

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": f"{self.model_name} v{self.model_version}",
            "firing": self.firing,
            "run_id": self.run_id,
            "retrain": self.retrain,
            **self.summary,
        }

    def render(self) -> str:
        s = self.summary
        w = s["latest_window"]
        counts = s["predictions"]
        lines = [
            f"{self.model_name} v{self.model_version}: {'DECAY ALARM' if self.firing else 'healthy'} "
            f"(as of {s['as_of']})",
            f"predictions: {counts['matured']} matured, {counts['pending']} pending, {counts['unmatched']} unmatched",
            f"latest window: {int(w['n'] or 0)} deploys, {int(w['failures'] or 0)} failures, AUC {_f(w['roc_auc'])} "
            f"[{_f(w['roc_auc_lo'])}, {_f(w['roc_auc_hi'])}], ECE {_f(w['ece'])}, Brier {_f(w['brier'])}, "
            f"recall@10% {_f(w['recall_at_10pct'])}; realised {_f(w['realised_rate'])} vs predicted "
            f"{_f(w['predicted_rate'])}",
            f"drift: score PSI {_f(s['score_psi'])}; "
            + ", ".join(f"{k} {v:.2f}" for k, v in list(s["feature_psi"].items())[:5]),
        ]
        lines += [f"alarm: {r}" for r in s["alarm"]["reasons"]]
        lines += [f"note: {r}" for r in s["alarm"]["warnings"]]
        if self.retrain is not None:
            lines.append(retrain_line(self.retrain))
        if self.run_id:
            lines.append(f"MLflow run {self.run_id} (experiment {EXPERIMENT})")
        return "\n".join(lines)


def retrain_line(r: dict[str, Any]) -> str:
    """What the monitor's retrain did, in one line: rows, trigger, version and the gate's reason."""
    rows = f" on {r['rows']} deploys from {r['rows_from']}" if "rows" in r else ""
    trigger = f" ({r['trigger']})" if r.get("trigger") else ""
    verdict = (" promoted" if r["promoted"] else " not promoted") if "promoted" in r else ""
    return f"retrained{rows}{trigger}: v{r.get('model_version', '?')}{verdict}, {r.get('reason', '')}"


def _f(value: Any) -> str:
    return "n/a" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.3f}"


@task(name="read-predictions", cache_policy=NO_CACHE)
def load_predictions(settings: Settings, as_of: pd.Timestamp, lookback_days: float, model_name: str) -> pd.DataFrame:
    root = predictions_dir(settings.home)
    frame = read_predictions(root, as_of - pd.Timedelta(days=lookback_days), as_of + pd.Timedelta(microseconds=1))
    frame = frame[frame["model_name"].astype("string") == model_name].reset_index(drop=True)
    if frame.empty:
        raise MonitorError(f"no predictions of {model_name} logged under {root} yet: nothing to monitor")
    return frame


@task(name="load-model", cache_policy=NO_CACHE)
def load_monitored_model(name: str, version: str) -> ModelBundle:
    """The registered version that made the predictions; gone from the registry is a clear error."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from models.scoring.context import load_bundle

    client = MlflowClient()
    try:
        return load_bundle(client, name, version)
    except (MlflowException, OSError) as exc:
        first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise MonitorError(
            f"{name} v{version} made the latest predictions but cannot be loaded from the registry ({first})"
        ) from None


@task(name="assess", cache_policy=NO_CACHE)
def assess_task(
    settings: Settings, predictions: pd.DataFrame, bundle: ModelBundle, options: MonitorOptions, as_of: pd.Timestamp
) -> Assessment:
    from features.history.store import HistoryStore
    from features.labels.attribution import attribute
    from models.scoring.context import make_scoring_context

    history = HistoryStore(settings.store_dir).read_history()
    if history.deploys.empty:
        raise MonitorError(f"the store at {settings.store_dir} holds no deploys: no outcomes to compare with")
    labels = attribute(history, bundle.attribution_config, as_of).deploy_labels
    period = bundle.metadata.get("training_period") or {}
    start, end = (pd.Timestamp(period[k]) if period.get(k) else None for k in ("start", "end"))
    store_version = HistoryStore(settings.store_dir).manifest().version
    reference = reference_of(make_scoring_context(bundle, history, store_version, labels), start, end)
    try:
        return assess(predictions, labels, history.deploys, reference, options.alarm, as_of)
    except MonitorInputError as exc:
        raise MonitorError(str(exc)) from None


def _metric_name(key: str) -> str:
    return key.replace("@", "_at_")


#: The rolling metrics logged as MLflow time series (``rolling_<key>``), for the UI's charts.
ROLLING_SERIES = (
    "roc_auc", "expected_roc_auc", "brier", "ece", "recall_at_10pct", "realised_rate", "predicted_rate", "n"
)  # fmt: skip


@task(name="log-monitoring", cache_policy=NO_CACHE)
def log_assessment(a: Assessment, bundle: ModelBundle, options: MonitorOptions, settings: Settings) -> str:
    """One MLflow run: latest metrics, the rolling metrics as a time series, tables and figures as artifacts."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    from models.monitoring import plots
    from models.training.tracking import ensure_experiment

    client = MlflowClient()
    experiment = ensure_experiment(client, options.experiment, str(settings.artifact_root))
    floor = bundle.info.metrics.get("roc_auc", math.nan) - options.alarm.auc_margin
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        (out / "summary.json").write_text(json.dumps(a.summary(), indent=2, default=str))
        a.rolling.to_csv(out / "rolling_metrics.csv", index=False)
        a.feature_psi.to_csv(out / "feature_drift.csv", index=False)
        for group, table in a.groups.items():
            table.to_csv(out / f"realised_vs_predicted_by_{group}.csv", index=False)
        figures = out / "figures"
        if "squad" in a.groups:
            plots.save(plots.realised_vs_predicted(a.groups["squad"], "squad"), figures / "realised_vs_predicted.png")
        plots.save(plots.drift_by_feature(a.feature_psi, a.score_psi, options.alarm.psi_max), figures / "drift.png")
        champion_auc = bundle.info.metrics.get("roc_auc", math.nan)
        plots.save(plots.auc_over_time(a.rolling, champion_auc, floor), figures / "auc_over_time.png")
        tags = {
            "run_kind": "monitoring",
            "model_name": bundle.info.name,
            "model_version": bundle.info.version,
            "alarm": "firing" if a.alarm.firing else "ok",
        }
        with mlflow.start_run(
            experiment_id=experiment.experiment_id, run_name=f"monitor v{bundle.info.version}", tags=tags
        ) as run:
            mlflow.log_params({"as_of": a.as_of.isoformat(), **options.alarm.as_params()})
            latest = {f"latest_{_metric_name(k)}": v for k, v in a.latest.items() if math.isfinite(v)}
            latest.update({f"count_{k}": float(v) for k, v in a.counts.items()})
            latest.update({k: v for k, v in a.newcomers.items() if math.isfinite(v)})
            if math.isfinite(a.score_psi):
                latest["score_psi"] = a.score_psi
            latest["alarm"] = float(a.alarm.firing)
            mlflow.log_metrics(latest)
            series = []
            ends = pd.to_datetime(a.rolling["window_end"], utc=True)
            for i, row in enumerate(a.rolling.itertuples(index=False)):
                stamp = int(ends.iloc[i].timestamp() * 1000)
                for key in ROLLING_SERIES:
                    value = float(getattr(row, key))
                    if math.isfinite(value):
                        series.append(Metric(f"rolling_{key}", value, stamp, i))
            for start in range(0, len(series), 900):
                client.log_batch(run.info.run_id, metrics=series[start : start + 900])
            mlflow.log_artifacts(str(out))
            return str(run.info.run_id)


#: The monitor's Prometheus textfile under the home (point node_exporter's textfile collector at it).
TEXTFILE = "monitor.prom"


def write_textfile(settings: Settings, a: Assessment, bundle: ModelBundle) -> Path:
    """``<home>/monitor.prom``, written aside and renamed, so Prometheus alerts on the monitor too."""
    import time

    from models.monitoring.assess import prometheus_text

    path = settings.home / TEXTFILE
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(prometheus_text(a, bundle.info.name, bundle.info.version, time.time()))
    tmp.replace(path)
    return path


def emit_alarm(bundle: ModelBundle, a: Assessment) -> None:
    """The decay-alarm event (``pipelines.flows.artifacts.DECAY_ALARM``) a retraining automation listens to
    (docs/automations.md); the first firing check names the metric, its value and threshold."""
    from pipelines.flows.artifacts import emit_decay_alarm

    check = next((c for c in a.alarm.checks if c.firing), None)
    finite = lambda v: float(v) if v is not None and math.isfinite(v) else None  # noqa: E731
    emit_decay_alarm(
        metric=check.name if check else "alarm",
        value=finite(check.value) if check else None,
        baseline=finite(check.threshold) if check else None,
        window=f"up to {a.as_of.isoformat()}",
        details={
            "model_version": bundle.info.version,
            "reasons": list(a.alarm.reasons),
            **a.summary()["latest_window"],
        },
    )


def monitor_markdown(outcome: MonitorOutcome) -> str:
    """The Prefect UI's summary of a monitor run: the verdict first, then the latest window's metrics."""
    alarm = outcome.summary.get("alarm", {})
    verdict = "**decay alarm**: " + "; ".join(alarm.get("reasons", [])) if outcome.firing else "no alarm"
    latest = outcome.summary.get("latest_window", {})
    rows = "\n".join(f"| {k} | {'' if v is None else round(v, 4)} |" for k, v in latest.items())
    lines = [f"# Monitor: {outcome.model_name} v{outcome.model_version}", "", verdict, "", "| metric | latest window |"]
    lines += ["|---|---|", rows, "", f"MLflow run: `{outcome.run_id}` (experiment `{EXPERIMENT}`)."]
    if outcome.retrain:
        lines += ["", f"**Retrain**: {retrain_line(outcome.retrain)}"]
    return "\n".join(lines)


def retrain_options(
    as_of: pd.Timestamp | None = None,
    source: str = "monitor: decay alarm",
    config: RetrainConfig | None = None,
    follow_up: bool = False,
) -> TrainOptions:
    """The retrain's training options: the product's training config with the retrain's gate
    (``RetrainConfig.gate``), labels as known at the monitor's ``as_of``."""
    from pipelines.flows.train import TrainOptions

    options = TrainOptions(source=source, as_of=as_of)
    gate = (config or RetrainConfig()).gate(options.train.gate, follow_up)
    return replace(options, train=replace(options.train, gate=gate))


def retrain_table(
    history: History, options: TrainOptions, config: RetrainConfig, onset: pd.Timestamp | None
) -> TrainingTable:
    """The matured deploys the retrain learns from (``RetrainConfig``); features still see all history.

    Plain, so benchmarks/monitoring.py builds its challengers exactly as the monitor does.
    """
    from pipelines.flows.deployments import window_table
    from pipelines.flows.train import make_table

    table = make_table(history, options)
    latest = pd.to_datetime(table.frame["created_at"], utc=True).max()
    return window_table(table, config.days(latest, onset))


@task(name="retrain-table", cache_policy=NO_CACHE, persist_result=False)
def retrain_table_task(
    settings: Settings, options: TrainOptions, config: RetrainConfig, onset: pd.Timestamp | None
) -> TrainingTable:
    """``retrain_table`` on the store, as a task so the Prefect UI shows the step."""
    from pipelines.flows.train import load_history

    return retrain_table(load_history(settings.store_dir), options, config, onset)


#: The registry tag on a retrain's version: the change's onset it learnt from (``RetrainConfig.follows``).
ONSET_TAG = "retrain_onset"


def champion_onset(name: str = MODEL_NAME) -> pd.Timestamp | None:
    """The onset the champion's retrain learnt from (``ONSET_TAG``); None for a champion not retrained from one.

    A tag that is not a time (edited by hand) is a ``MonitorError``, not a silent stop of the follow-ups.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from models.registry.artifacts import CHAMPION

    try:
        version = MlflowClient().get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None
    raw = version.tags.get(ONSET_TAG)
    if not raw:
        return None
    try:
        onset = pd.Timestamp(raw)
    except ValueError:
        raise MonitorError(f"{name} v{version.version}: tag {ONSET_TAG}={raw!r} is not a time") from None
    return onset.tz_localize("UTC") if onset.tzinfo is None else onset


def retrain(
    settings: Settings,
    config: RetrainConfig,
    as_of: pd.Timestamp | None = None,
    onset: pd.Timestamp | None = None,
    follow_up: bool = False,
) -> dict[str, Any]:
    """The training flow on the recent matured deploys (``retrain_table``) with the retrain's gate
    (``RetrainConfig.gate``: by default promoted only when a paired test finds it better on the recent
    out-of-sample period; a ``follow_up``, when it ranks those deploys better at all). The version is tagged
    with the onset it learnt from (``ONSET_TAG``), which the follow-ups read once it is the champion
    (``RetrainConfig.follow_change``).

    Weeks after a change every row since its onset is of the new regime, so the window reaches back
    to it; on the simulated drift that recovered 97.2% of the oracle AUC where a fixed 30 days
    reached 93.1% (seed 0), and about nothing on seeds 1 (91.8% both) and 2 (98.6% -> 98.4%;
    docs/benchmarks.md, "Re-run 2026-12-06 (later)").
    """
    from mlflow import MlflowClient

    from pipelines.flows.train import run_training

    learnt_from = onset if config.from_onset else None  # the onset the window reaches back to, if any
    onset_note = f", from the onset {learnt_from:%Y-%m-%d}" if learnt_from is not None else ""
    trigger = f"follow-up of the change from {onset:%Y-%m-%d}" if follow_up and onset is not None else "decay alarm"
    source = f"monitor: {trigger}, window>={config.window_days:g}d{onset_note}, gate {config.gate_rule}"
    options = retrain_options(as_of, source, config, follow_up)
    table = retrain_table_task(settings, options, config, onset)
    outcome = run_training(settings, options, progress=lambda _m: None, table=table)
    if learnt_from is not None:
        MlflowClient().set_model_version_tag(MODEL_NAME, outcome.model_version, ONSET_TAG, learnt_from.isoformat())
    created = pd.to_datetime(table.frame["created_at"], utc=True)
    return {
        "trigger": trigger,
        "model_version": outcome.model_version,
        "promoted": outcome.promoted,
        "reason": outcome.reason,
        "rows": int(len(table.frame)),
        "rows_from": created.min().isoformat(),
        "onset": None if onset is None else onset.isoformat(),
    }


@flow(name="monitor", persist_result=False, validate_parameters=False)
def monitor_flow(settings: Settings, options: MonitorOptions) -> MonitorOutcome:
    """Assess the served model on matured outcomes, log it, and act on a decay alarm."""
    as_of = options.as_of if options.as_of is not None else pd.Timestamp.now(tz="UTC")
    predictions = load_predictions(settings, as_of, options.lookback_days, options.model_name)
    version = str(predictions["model_version"].iloc[-1])  # the model that made the latest prediction
    predictions = predictions[predictions["model_version"].astype("string") == version].reset_index(drop=True)
    bundle = load_monitored_model(options.model_name, version)
    # read before anything is written: a bad tag stops the run with nothing logged
    recorded = champion_onset() if options.retrain and options.retraining.follow_change else None
    assessment = assess_task(settings, predictions, bundle, options, as_of)
    run_id = log_assessment(assessment, bundle, options, settings)
    write_textfile(settings, assessment, bundle)
    outcome = MonitorOutcome(bundle.info.name, version, assessment.summary(), assessment.alarm.firing, run_id)
    if assessment.alarm.firing:
        emit_alarm(bundle, assessment)
    if options.retrain:
        # a champion retrained from a young onset is retrained from it again, alarm or not; its own alarm
        # would place the onset on its own short log and drop the change's earlier rows
        if options.retraining.follows(recorded, as_of) and recorded is not None:
            outcome.retrain = retrain(settings, options.retraining, options.as_of, recorded, follow_up=True)
        elif assessment.alarm.firing:
            outcome.retrain = retrain(settings, options.retraining, options.as_of, assessment.onset)
    publish_summary("monitor-summary", monitor_markdown(outcome), "the champion judged on matured outcomes")
    return outcome


def run_monitor(settings: Settings, options: MonitorOptions | None = None) -> MonitorOutcome:
    """Run the monitor flow; raises ``MonitorError`` when there is nothing to judge yet."""
    return monitor_flow(settings, options or MonitorOptions())
