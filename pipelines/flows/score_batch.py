"""Batch scoring: a file of upcoming deploys -> champion scores with bands and reasons -> Parquet + MLflow.

The input has the generic deploys source's canonical column names (docs/data-model.md). Each row is
checked by the same ``conform`` as an ingest: rows that fail are reported (and not scored), never
crash the run. Columns an upcoming deploy cannot know yet get defaults: ``source`` "upcoming",
``status`` "running", ``environment`` "production", ``deploy_id`` "upcoming:<row>", ``created_at`` now.
Scoring is the batch path of ``models.scoring`` on the same ``load_scoring_context`` the service and
the CI gate use (the training feature build + the model's ``predict_proba``); each score says
whether the store's history ends too long before the deploy (``stale_history``).
Advice columns (``advice``: JSON list best first, ``best_action``, ``best_action_probability``) come
from ``models.scoring.advice`` on the same context, after the scores and without changing them.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from features.history.bounds import TimeBounds, check_time_bounds
from features.history.schema import DEPLOYS, RECORD_COLUMN, conform
from features.sources.base import SourceError
from features.sources.generic import read_table_file
from models.registry.artifacts import CHAMPION, MODEL_NAME
from models.scoring.advice import AdviceConfig, advise_many, build_advice_index
from models.scoring.context import ModelBundle, ScoringContext, ScoringUnavailable, load_scoring_context
from models.scoring.explain import band_counts, score_frame
from models.scoring.upcoming import deploys_from_frame, now_utc
from pipelines.flows.artifacts import record_scoring
from pipelines.settings import Settings
from pipelines.tracking_lock import TrackingBusyError

EXPERIMENT = "incident-risk-scoring"
#: How far ahead a planned deploy may be dated (``--horizon-days``); later ones are rejected as implausible.
DEFAULT_HORIZON_DAYS = 30.0
_FORMATS = {".csv": "csv", ".parquet": "parquet", ".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl"}


class BatchScoringError(RuntimeError):
    """The batch cannot be scored at all (unreadable input, no champion); row problems are not this."""


@dataclass
class BatchSummary:
    """What one batch scoring did; ``n_input = n_scored + n_rejected``."""

    input: str
    output: str
    n_input: int
    n_scored: int
    n_rejected: int
    bands: dict[str, int]
    mean_probability: float | None
    max_probability: float | None
    model_name: str
    model_version: str
    store_version: int
    data_end: str | None = None
    n_stale: int = 0  # scores whose history ends more than max_data_age_hours before the deploy
    run_id: str | None = None
    rejects: list[dict[str, Any]] = field(default_factory=list)  # the first few: record, field, reason

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def render(self) -> str:
        bands = ", ".join(f"{k} {v}" for k, v in self.bands.items())
        lines = [
            f"scored {self.n_scored} of {self.n_input} deploys with {self.model_name} v{self.model_version} "
            f"(store v{self.store_version}) -> {self.output}",
            f"bands: {bands}",
        ]
        if self.n_stale:
            lines.append(
                f"WARNING: {self.n_stale} scores rest on stale history (the store's newest event is {self.data_end}); "
                "check that ingest runs"
            )
        if self.mean_probability is not None:
            lines.append(f"probability: mean {self.mean_probability:.3f}, max {self.max_probability:.3f}")
        for r in self.rejects:
            lines.append(f"rejected record {r['record']}: {r['field']}: {r['reason']}")
        if self.run_id:
            lines.append(f"MLflow run {self.run_id} (experiment {EXPERIMENT})")
        return "\n".join(lines)


def read_upcoming(
    path: Path, now: pd.Timestamp, horizon_days: float = DEFAULT_HORIZON_DAYS
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(valid canonical deploy rows, rejects) of an upcoming-deploys file.

    Times must lie in the plausible range: not before 2000-01-01, not after ``now`` plus ``horizon_days``.
    """
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise BatchScoringError(f"{path}: unknown file type (expected {', '.join(sorted(_FORMATS))})")
    try:
        raw = read_table_file(path, str(path), fmt)  # type: ignore[arg-type]
    except SourceError as exc:
        raise BatchScoringError(str(exc)) from None
    frame = raw.reset_index(drop=True).copy()
    records = np.arange(1, len(frame) + 1)
    defaults = {
        "source": "upcoming",
        "status": "running",
        "environment": "production",
        "created_at": now.isoformat(),
    }
    for column, value in defaults.items():
        frame[column] = frame[column].where(_present(frame[column]), value) if column in frame else value
    ids = pd.Series([f"upcoming:{r}" for r in records], index=frame.index, dtype=object)
    frame["deploy_id"] = frame["deploy_id"].where(_present(frame["deploy_id"]), ids) if "deploy_id" in frame else ids
    frame[RECORD_COLUMN] = records
    try:
        result = conform(DEPLOYS, frame, source="upcoming", file=str(path))
        bounds = TimeBounds(max_days_ahead=horizon_days)
    except ValueError as exc:
        raise BatchScoringError(str(exc)) from None
    kept = records[result.kept]
    result = check_time_bounds(
        DEPLOYS, result, kept, bounds, now, source="upcoming", file=str(path), reference="scoring time"
    ).conformed
    return result.valid, result.rejects


def _present(values: pd.Series) -> pd.Series:
    return values.notna() & values.astype(str).str.strip().ne("")


@task(name="load-scoring-context", cache_policy=NO_CACHE)
def load_context(settings: Settings, name: str, alias: str) -> ScoringContext:
    try:
        return load_scoring_context(settings.store_dir, name, alias)
    except ScoringUnavailable as exc:
        raise BatchScoringError(str(exc)) from None


@task(name="score-deploys", cache_policy=NO_CACHE)
def score_deploys(valid: pd.DataFrame, context: ScoringContext, advice: AdviceConfig | None = None) -> pd.DataFrame:
    scores = score_frame(valid, context, with_features=True)
    if not len(valid):
        return with_advice(scores, [])
    found = advise_many(
        context.index,
        context.bundle.scorer,
        build_advice_index(context.history, context.bundle.feature_config),
        deploys_from_frame(valid),
        scores["probability"].tolist(),
        advice or AdviceConfig(),
    )
    return with_advice(scores, [[a.as_dict() for a in row] for row in found])


def with_advice(scores: pd.DataFrame, advice: list[list[dict[str, Any]]]) -> pd.DataFrame:
    """The advice columns: the list (best first), the best action and its probability (None without advice)."""
    out = scores.copy()
    out["advice"] = pd.Series(advice, index=scores.index, dtype=object) if len(scores) else []
    out["best_action"] = pd.array([row[0]["action"] if row else None for row in advice], "string")
    out["best_action_probability"] = pd.array([row[0]["probability"] if row else None for row in advice], "Float64")
    return out


def write_scores(scores: pd.DataFrame, out: Path, bundle: ModelBundle) -> None:
    """Scores to Parquet (or CSV for a .csv name); factors as JSON text so any reader can open them."""
    table = scores.copy()
    table["top_factors"] = [json.dumps(f) for f in table["top_factors"]]
    if "advice" in table:
        table["advice"] = [json.dumps(a) for a in table["advice"]]
    table["filled_teams"] = [",".join(f) for f in table["filled_teams"]]
    table["model_name"] = bundle.info.name
    table["model_version"] = bundle.info.version
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    if out.suffix.lower() == ".csv":
        table.to_csv(tmp, index=False)
    else:
        table.to_parquet(tmp, index=False)
    tmp.replace(out)


def log_batch(home: Path, scores: pd.DataFrame, valid: pd.DataFrame, bundle: ModelBundle, store_version: int) -> None:
    """Every score of the batch into the prediction log (models/monitoring/predlog.py)."""
    from features.pointintime.catalog import FEATURE_SET_VERSION
    from models.monitoring.predlog import append_now, batch_records, predictions_dir

    fsv = FEATURE_SET_VERSION  # the rows were computed by this code's feature set
    info = bundle.info
    records = batch_records(
        scores,
        valid,
        caller="score-batch",
        model_name=info.name,
        model_version=info.version,
        feature_set_version=fsv,
        store_version=store_version,
    )
    append_now(predictions_dir(home), records)


@task(name="log-summary", cache_policy=NO_CACHE)
def log_summary(summary: BatchSummary, settings: Settings) -> str:
    import mlflow
    from mlflow import MlflowClient

    from models.training.tracking import ensure_experiment
    from pipelines.tracking_lock import tracking_writes

    with tracking_writes(mlflow.get_tracking_uri(), "score-batch (logging its summary)"):
        experiment = ensure_experiment(MlflowClient(), EXPERIMENT, str(settings.artifact_root))
        return _log_summary(summary, experiment)


def _log_summary(summary: BatchSummary, experiment: Any) -> str:
    import mlflow

    with mlflow.start_run(
        experiment_id=experiment.experiment_id, run_name="score-batch", tags={"run_kind": "batch_scoring"}
    ) as run:
        mlflow.log_params(
            {
                "input": summary.input[:500],
                "output": summary.output[:500],
                "model_name": summary.model_name,
                "model_version": summary.model_version,
                "store_version": summary.store_version,
            }
        )
        metrics: dict[str, float] = {
            "n_input": summary.n_input,
            "n_scored": summary.n_scored,
            "n_rejected": summary.n_rejected,
            "n_stale": summary.n_stale,
            **{f"band_{k}": v for k, v in summary.bands.items()},
        }
        if summary.mean_probability is not None:
            metrics["mean_probability"] = summary.mean_probability
            metrics["max_probability"] = float(summary.max_probability or 0.0)
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "summary.json"
            path.write_text(json.dumps(summary.as_dict(), indent=2))
            mlflow.log_artifact(str(path))
        return str(run.info.run_id)


@flow(name="score-batch", validate_parameters=False)
def score_batch_flow(
    input_path: str,
    out_path: str,
    settings: Settings,
    model_name: str,
    alias: str,
    horizon_days: float = DEFAULT_HORIZON_DAYS,
) -> BatchSummary:
    """Read, check, score and write a batch of upcoming deploys; log the summary to MLflow."""
    source, out = Path(input_path), Path(out_path)
    valid, rejects = read_upcoming(source, now_utc(), horizon_days)
    context = load_context(settings, model_name, alias)
    bundle = context.bundle
    scores = score_deploys(valid, context)
    log_batch(settings.home, scores, valid, bundle, context.store_version)
    write_scores(scores.drop(columns="features", errors="ignore"), out, bundle)
    p = scores["probability"].to_numpy(dtype=np.float64)
    n_rejected = int(rejects["record"].nunique()) if len(rejects) else 0
    summary = BatchSummary(
        input=str(source),
        output=str(out),
        n_input=len(valid) + n_rejected,
        n_scored=len(scores),
        n_rejected=n_rejected,
        bands=band_counts(scores["band"].tolist()),
        mean_probability=float(p.mean()) if len(p) else None,
        max_probability=float(p.max()) if len(p) else None,
        model_name=bundle.info.name,
        model_version=bundle.info.version,
        store_version=context.store_version,
        data_end=None if context.data_end is None else context.data_end.isoformat(),
        n_stale=int(scores["stale_history"].sum()),
        rejects=[
            {"record": int(str(r.record)), "field": str(r.field), "reason": str(r.reason)}
            for r in rejects.head(10).itertuples(index=False)
        ],
    )
    try:
        summary.run_id = log_summary(summary, settings)
    except TrackingBusyError as exc:
        raise BatchScoringError(f"scores written to {out}, but {exc}") from None
    record_scoring(summary, scores)  # the scored file as MLflow dataset; Prefect artifacts and events
    return summary


def run_batch_scoring(
    input_path: Path,
    out_path: Path,
    settings: Settings,
    *,
    model_name: str = MODEL_NAME,
    alias: str = CHAMPION,
    horizon_days: float = DEFAULT_HORIZON_DAYS,
) -> BatchSummary:
    """Score ``input_path`` with ``model_name@alias`` into ``out_path``; returns the summary.

    Raises ``BatchScoringError`` when nothing can be scored (unreadable input, no champion).
    """
    return score_batch_flow(str(input_path), str(out_path), settings, model_name, alias, horizon_days)
