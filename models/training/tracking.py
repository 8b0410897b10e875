"""MLflow tracking of one training: a parent run, a nested run per candidate, report, model, gate.

The tracking URI comes from the environment (``pipelines.settings.prepare_runtime`` or the test
harness sets ``MLFLOW_TRACKING_URI``); nothing here picks a location.
"""

from __future__ import annotations

import math
import subprocess
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Metric, Param

from models.registry.artifacts import MODEL_NAME, _jsonable, log_model
from models.registry.gate import GateOutcome, gate_and_alias, register_version
from models.training.config import METRIC_KEYS, flatten
from models.training.report import write_report
from models.training.train import EFFORT, LABEL, CandidateResult, TrainResult


@dataclass(frozen=True)
class RunContext:
    """What describes a training beyond its result: where the data came from and how it was made."""

    experiment: str
    data_fingerprint: str
    label_rule: str
    feature_set_version: str
    attribution_config: dict[str, Any]
    feature_config: dict[str, Any]
    source: str = ""
    #: Where a new experiment keeps artifacts; None leaves it to MLflow (``./mlruns`` with sqlite!).
    artifact_root: str | None = None


@dataclass(frozen=True)
class TrackedRun:
    run_id: str
    experiment_id: str
    model_uri: str
    outcome: GateOutcome

    def metrics_json(self, result: TrainResult) -> dict[str, Any]:
        """The ``--metrics-out`` document."""
        return {
            "run_id": self.run_id,
            "model_name": MODEL_NAME,
            "model_version": self.outcome.version,
            "split": result.split,
            "n_train": result.n_train,
            "n_test": result.n_test,
            "test": _clean(result.test_metrics),
            "baselines": {k: _clean(v) for k, v in result.baseline_metrics.items()},
            "gate": self.outcome.as_dict(),
        }


def _clean(metrics: dict[str, float]) -> dict[str, float | None]:
    return {k: (None if math.isnan(metrics[k]) else float(metrics[k])) for k in METRIC_KEYS}


def code_version(repo: Path | None = None) -> str:
    """The git commit of the code, or 'unknown' outside a repository or before the first commit."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo or Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


def _finite(metrics: dict[str, float], prefix: str) -> dict[str, float]:
    return {f"{prefix}{k}": float(v) for k, v in metrics.items() if not math.isnan(v)}


#: MLflow 3 opens an experiment without this tag in GenAI mode (traces, prompts); ours are classical ML.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


def ensure_experiment(client: MlflowClient, name: str, artifact_root: str | None) -> Any:
    """The experiment named ``name``, created with its artifacts under ``artifact_root`` if new, and
    tagged as classical model development (``EXPERIMENT_KIND``) if it is not yet.

    A tracking server (http/https URI) keeps the artifacts in its own store (``--artifacts-destination``,
    e.g. S3), so ``artifact_root``, a path on this machine, is ignored there: every client and the
    scoring service must reach the same artifacts.
    """
    found = client.get_experiment_by_name(name)
    if found is None:
        location = None
        if artifact_root is not None and not client.tracking_uri.startswith(("http://", "https://")):
            root = Path(artifact_root)
            location = (root / name).resolve().as_uri() if "://" not in artifact_root else f"{artifact_root}/{name}"
        found = client.get_experiment(client.create_experiment(name, artifact_location=location))
    if EXPERIMENT_KIND_TAG not in found.tags:
        client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        found = client.get_experiment(found.experiment_id)
    return found


def open_training_run(experiment: str, artifact_root: str | None, source: str = "") -> str:
    """Create the training's parent run now, before features and the search, so the MLflow UI shows it
    running and its duration is the training's; ``log_training(run_id=...)`` fills and ends it."""
    client = MlflowClient()
    exp = ensure_experiment(client, experiment, artifact_root)
    tags = {"run_kind": "training", "source": source, "code_version": code_version()}
    run = client.create_run(exp.experiment_id, tags=tags, run_name=f"train-{datetime.now(UTC):%Y%m%d-%H%M%S}")
    return str(run.info.run_id)


def fail_training_run(run_id: str) -> None:
    """Mark an opened training run FAILED (the training stopped before ``log_training`` ended it)."""
    MlflowClient().set_terminated(run_id, status="FAILED")


def serving_metadata(result: TrainResult, context: RunContext) -> dict[str, Any]:
    """What a scoring service needs next to the model: columns, bands, versions and configs."""
    clf = result.model.classifier_
    return {
        "numeric_features": [str(c) for c in clf.numeric_],
        "categorical_features": [str(c) for c in clf.categorical_],
        "band_thresholds": {
            "medium": float(result.model.band_thresholds_[0]),
            "high": float(result.model.band_thresholds_[1]),
        },
        "band_shares": {"high": result.config.high_share, "medium": result.config.medium_share},
        "feature_set_version": context.feature_set_version,
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "training_period": {"start": result.split["train_start"], "end": result.split["train_end"]},
        "test_metrics": result.test_metrics,
        "calibration": result.calibration,
        "chosen": result.chosen.name,
        "feature_config": context.feature_config,
        "attribution_config": context.attribution_config,
        "label_rule": context.label_rule,
        "data_fingerprint": context.data_fingerprint,
    }


def _log_candidate(client: MlflowClient, experiment_id: str, parent: str, cand: CandidateResult, chosen: bool) -> None:
    """One nested run per candidate, written in a single batch (per-call overhead dominates on sqlite)."""
    tags = {"mlflow.parentRunId": parent, "mlflow.runName": cand.name, "kind": cand.kind, "chosen": str(chosen)}
    run = client.create_run(experiment_id, tags=tags, run_name=cand.name)
    now = int(time.time() * 1000)
    metrics = [
        Metric(k, v, now, step)
        for step, fold in zip(cand.folds_run, cand.fold_metrics, strict=True)  # step: the fold's number
        for k, v in _finite(fold, "val_fold_").items()
    ]
    metrics += [
        Metric(k, v, now, 0) for k, v in {**_finite(cand.mean_metrics, "val_"), "seconds": cand.seconds}.items()
    ]
    metrics += [
        Metric("train_rows_fold", float(n), now, step) for step, n in zip(cand.folds_run, cand.fold_rows, strict=True)
    ]
    params = [Param("kind", cand.kind), *(Param(k, str(v)) for k, v in cand.params.items())]
    client.log_batch(run.info.run_id, metrics=metrics, params=params)
    client.set_terminated(run.info.run_id)


def gate_rows(outcome: GateOutcome) -> pd.DataFrame:
    """The gate's decision as report rows (field, value)."""
    period = outcome.comparison
    rows = [
        ("decision", "promote" if outcome.decision.promote else "reject"),
        ("reason", outcome.decision.reason),
        ("registered version", f"v{outcome.version}"),
        ("champion before", f"v{outcome.champion_version}" if outcome.champion_version else "none"),
        ("compared on", period.describe() if period is not None else "no champion to compare with"),
    ]
    if outcome.champion_note:
        rows.append(("champion note", outcome.champion_note))
    return pd.DataFrame(rows, columns=["", "value"])


def champion_comparison(outcome: GateOutcome, test_metrics: dict[str, float]) -> pd.DataFrame:
    """Challenger and champion metrics on the same comparison deploys (empty without a champion)."""
    if outcome.champion_metrics is None:
        return pd.DataFrame()
    challenger = outcome.challenger_compared or test_metrics
    return pd.DataFrame(
        [
            {
                "metric": k,
                "challenger": challenger.get(k, math.nan),
                "champion": outcome.champion_metrics.get(k, math.nan),
            }
            for k in METRIC_KEYS
        ]
    )


def _gate_tags(outcome: GateOutcome) -> dict[str, str]:
    period = outcome.comparison
    tags = {
        "gate_decision": "promote" if outcome.decision.promote else "reject",
        "gate_reason": outcome.decision.reason[:4000],
        "champion_before": outcome.champion_version or "none",
        "gate_period": period.describe()[:4000] if period is not None else "no champion to compare with",
    }
    if period is not None:
        tags.update(
            {
                "gate_period_after": str(period.after),
                "gate_period_start": str(period.start),
                "gate_period_end": str(period.end),
                "gate_period_n": str(period.n),
            }
        )
    return tags


def log_training(
    result: TrainResult, context: RunContext, progress: Any = None, run_id: str | None = None
) -> TrackedRun:
    """Log ``result`` as one parent run with nested candidate runs, register the model, run the gate,
    then write the report (it carries the gate's decision and the champion comparison).

    ``run_id``: the parent run ``open_training_run`` created when training started (default: a new run).
    """
    say = progress or (lambda _msg: None)
    client = MlflowClient()
    experiment = ensure_experiment(client, context.experiment, context.artifact_root)
    mlflow.set_experiment(experiment_id=experiment.experiment_id)
    tags = {
        "code_version": code_version(),
        "data_fingerprint": context.data_fingerprint,
        "label_rule": context.label_rule,
        "feature_set_version": context.feature_set_version,
        "chosen_candidate": result.chosen.name,
        "calibration": result.calibration,
        "calibration_reason": result.calibration_reason[:4000],
        "source": context.source,
        "run_kind": "training",
    }
    run_name = None if run_id else f"train-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    with mlflow.start_run(run_id=run_id, run_name=run_name, tags=None if run_id else tags) as parent:
        run_id = parent.info.run_id
        mlflow.set_tags(tags)
        params = {
            **{f"train.{k}": v for k, v in result.config.as_params().items()},
            **{f"attribution.{k}": v for k, v in flatten(context.attribution_config).items()},
            **{f"features.{k}": v for k, v in flatten(context.feature_config).items()},
            **{f"split.{k}": str(v) for k, v in result.split.items()},
        }
        mlflow.log_params({k: v[:6000] for k, v in params.items()})
        for cand in result.candidates:
            _log_candidate(client, experiment.experiment_id, run_id, cand, cand is result.chosen)
        metrics = {
            **_finite(result.test_metrics, "test_"),
            **{k: v for name, m in result.baseline_metrics.items() for k, v in _finite(m, f"baseline_{name}_").items()},
            **_finite(result.chosen.mean_metrics, "val_"),
            "n_train": float(result.n_train),
            "n_test": float(result.n_test),
            "failure_rate_test": result.data_summary["failure_rate_test"],
            "importance_rows": float(result.importance_rows),  # permutation importance's test sample
            "band_threshold_medium": float(result.model.band_thresholds_[0]),
            "band_threshold_high": float(result.model.band_thresholds_[1]),
            **{f"seconds_{k}": v for k, v in result.seconds.items()},
        }
        mlflow.log_metrics(metrics)
        mlflow.log_dict(result.data_summary, "data_summary.json")
        say("logging model")
        meta = _jsonable(serving_metadata(result, context))
        mlflow.log_dict(meta, "serving.json")
        result.model.set_params(metadata=meta)  # travels inside the skops file too
        example = result.test_frame.head(5)
        model_uri = log_model(result.model, example, meta)
        version = register_version(client, model_uri, run_id)
        y = result.test_frame[LABEL].to_numpy(dtype=np.int64)
        effort = (
            result.test_frame[EFFORT].to_numpy(dtype=np.float64, na_value=np.nan)
            if EFFORT in result.test_frame
            else None
        )
        outcome = gate_and_alias(
            client,
            version,
            result.test_metrics,
            result.test_frame,
            y,
            effort,
            result.config.gate,
            challenger_scores=result.test_scores,
            challenger_train_end=pd.Timestamp(result.split["train_end"]),
        )
        mlflow.set_tags({"model_version": version, **_gate_tags(outcome)})
        if outcome.champion_metrics is not None:
            mlflow.log_metrics(_finite(outcome.champion_metrics, "champion_test_"))
        if outcome.challenger_compared is not None:
            mlflow.log_metrics(_finite(outcome.challenger_compared, "challenger_compared_"))
        if outcome.comparison is not None:
            mlflow.log_metric("gate_period_n", float(outcome.comparison.n))
        say("logging report")
        with tempfile.TemporaryDirectory() as tmp:
            write_report(
                result,
                Path(tmp),
                {"run id": run_id, "code version": tags["code_version"], "data fingerprint": context.data_fingerprint},
                gate_rows(outcome),
                champion_comparison(outcome, result.test_metrics),
            )
            mlflow.log_artifacts(tmp, "report")
        say(
            f"registered {MODEL_NAME} v{version}; gate: {'promote' if outcome.decision.promote else 'reject'} "
            f"({outcome.decision.reason})"
        )
    return TrackedRun(run_id, experiment.experiment_id, model_uri, outcome)


RUN_COLUMNS = (
    ("start", "start"),
    ("version", "tags.model_version"),
    ("chosen", "tags.chosen_candidate"),
    ("gate", "tags.gate_decision"),
    ("gate period", "tags.gate_period_start"),
    ("gate n", "tags.gate_period_n"),
    ("n_train", "metrics.n_train"),
    ("n_test", "metrics.n_test"),
    *((f"test {k}", f"metrics.test_{k}") for k in METRIC_KEYS),
    ("lines_added roc_auc", "metrics.baseline_lines_added_roc_auc"),
    ("svc rate roc_auc", "metrics.baseline_service_failure_rate_roc_auc"),
    ("data", "tags.data_fingerprint"),
    ("code", "tags.code_version"),
)


def runs_table(experiment: str, limit: int = 10) -> pd.DataFrame:
    """The experiment's latest training runs side by side: one column per run, one row per field."""
    exp = mlflow.get_experiment_by_name(experiment)
    if exp is None:
        return pd.DataFrame()
    runs = mlflow.search_runs(
        [exp.experiment_id],
        filter_string="tags.run_kind = 'training'",
        order_by=["attributes.start_time DESC"],
        max_results=limit,
        output_format="pandas",
    )
    assert isinstance(runs, pd.DataFrame)
    if runs.empty:
        return pd.DataFrame()
    columns = {}
    for _, run in runs.iterrows():
        values = {}
        for label, key in RUN_COLUMNS:
            if label == "start":
                values[label] = str(pd.Timestamp(run["start_time"]).strftime("%Y-%m-%d %H:%M"))
                continue
            value = run.get(key)
            if isinstance(value, float):
                value = (
                    "" if math.isnan(value) else (f"{value:.4f}" if not float(value).is_integer() else f"{value:.0f}")
                )
            values[label] = "" if value is None else str(value)[:40]
        columns[str(run["run_id"])[:8]] = values
    return pd.DataFrame(columns)
