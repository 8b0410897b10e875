"""What every flow run leaves in the Prefect UI: a markdown summary, tables, links, and events.

Operators read a flow run's Artifacts tab, not its logs; automations listen to events. The content
is built by pure functions (tested without Prefect); the ``publish_*`` functions only hand it to
Prefect, and only inside a flow run (``orchestrate=False`` paths publish nothing). Monitor and
digest flows use ``publish_summary`` and ``emit_decay_alarm`` (docs/ui.md, docs/automations.md).

Events (``incident-risk.*``, docs/automations.md):
``store.committed``, ``model.promoted`` / ``model.rejected``, ``deploy.high-risk``, ``monitor.decay-alarm``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from models.training.tracking import RunContext, TrackedRun
    from models.training.train import TrainingTable, TrainResult
    from pipelines.flows.ingest import IngestReport
    from pipelines.flows.score_batch import BatchSummary

#: Where people open MLflow when the tracking URI is a local database (what ``mlflow ui`` serves).
UI_URL_ENV = "INCIDENT_RISK_MLFLOW_UI_URL"
DEFAULT_MLFLOW_UI = "http://127.0.0.1:5000"
#: At most this many high-risk deploy events per batch (one per deploy; the summary counts all).
MAX_HIGH_RISK_EVENTS = 50

STORE_COMMITTED = "incident-risk.store.committed"
MODEL_PROMOTED = "incident-risk.model.promoted"
MODEL_REJECTED = "incident-risk.model.rejected"
HIGH_RISK_SCORED = "incident-risk.deploy.high-risk"
DECAY_ALARM = "incident-risk.monitor.decay-alarm"


@dataclass(frozen=True)
class EventSpec:
    """One event to emit: name, the resource it is about, what happened."""

    event: str
    resource: dict[str, str]
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Link:
    key: str
    url: str
    text: str


def _model_name() -> str:
    """The registered model's name (imported late: ingest must not load the model stack)."""
    from models.registry.artifacts import MODEL_NAME

    return MODEL_NAME


# --- links -------------------------------------------------------------------------------------


def mlflow_ui_url(tracking_uri: str) -> str:
    """The MLflow UI's address: ``$INCIDENT_RISK_MLFLOW_UI_URL``, a tracking server's own URL, or ``mlflow ui``'s."""
    chosen = os.environ.get(UI_URL_ENV)
    if chosen:
        return chosen.rstrip("/")
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri.rstrip("/")
    return DEFAULT_MLFLOW_UI


def run_link(base: str, experiment_id: str, run_id: str) -> str:
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"


def version_link(base: str, version: str, name: str | None = None) -> str:
    name = name or _model_name()
    return f"{base}/#/models/{name}/versions/{version}"


# --- content (pure) ----------------------------------------------------------------------------

_INGEST_COLUMNS = ("source", "table", "files", "read", "inserted", "updated", "unchanged", "quarantined")


def ingest_rows(report: IngestReport) -> list[dict[str, Any]]:
    """The reconciliation table, one row per source: read = inserted + updated + unchanged + quarantined."""
    return [{c: getattr(s, c) for c in _INGEST_COLUMNS} for s in report.sources]


def _md_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(r.get(c, "")).replace("|", "/") for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def ingest_markdown(report: IngestReport) -> str:
    """Ingest summary: committed or not, the reconciliation table, quarantine counts with top reasons."""
    if not report.ok:
        return f"## Ingest failed: store unchanged (version {report.store_version})\n\n{report.error}"
    totals = report.totals()
    state = (
        f"committed store version **{report.store_version}**"
        if report.committed
        else f"nothing new: store stays at version {report.store_version}"
    )
    parts = [
        f"## Ingest of `{report.config}`: {state}",
        "",
        f"{totals['read']} records read: {totals['inserted']} inserted, {totals['updated']} updated, "
        f"{totals['unchanged']} unchanged, {totals['quarantined']} quarantined.",
        "",
        _md_table(ingest_rows(report), _INGEST_COLUMNS),
    ]
    quarantined = [s for s in report.sources if s.quarantined]
    if quarantined:
        parts += ["", "### Quarantine", ""]
        for s in quarantined:
            reasons = "; ".join(r.line() for r in s.top_reasons) or "see `incident-risk quarantine`"
            parts.append(f"- **{s.source}**: {s.quarantined} of {s.read} ({reasons})")
        parts += ["", f"Details: `incident-risk quarantine --source {quarantined[0].source}`"]
    if report.empty_sources:
        parts += ["", f"**No rows from** {', '.join(report.empty_sources)}: fix the export or the mapping."]
    return "\n".join(parts)


def training_markdown(tracked: TrackedRun, result: TrainResult, links: Sequence[Link]) -> str:
    """Training summary: gate decision and why, data, metrics table, links to MLflow."""
    outcome = tracked.outcome
    verdict = "promoted to champion" if outcome.decision.promote else "rejected: champion unchanged"
    from models.training.run_notes import metric_rows

    rows = metric_rows(result, outcome)
    s = result.split
    parts = [
        f"## {_model_name()} v{outcome.version} {verdict}",
        "",
        f"**Gate**: {outcome.decision.reason}",
        "",
        f"Trained on {result.n_train} deploys ({str(s['train_start'])[:10]} to {str(s['train_end'])[:10]}), "
        f"tested on {result.n_test} ({str(s['test_start'])[:10]} to {str(s['test_end'])[:10]}); "
        f"chosen {result.chosen.name}"
        + (f"; champion before: v{outcome.champion_version}" if outcome.champion_version else "; no champion before")
        + ".",
        "",
        _md_table(rows, list(rows[0])),
        "",
        *(f"- [{link.text}]({link.url})" for link in links),
    ]
    return "\n".join(parts)


def riskiest(scores: pd.DataFrame, n: int = 10) -> list[dict[str, Any]]:
    """The ``n`` highest-probability deploys of a batch, with their top factor."""
    top = scores.sort_values("probability", ascending=False).head(n)
    rows = []
    for r in top.to_dict("records"):
        factors = list(r.get("top_factors") or [])
        first = factors[0] if factors else {}
        service = r.get("service")
        rows.append(
            {
                "deploy_id": str(r["deploy_id"]),
                "service": "" if not isinstance(service, str) else service,
                "probability": round(float(r["probability"]), 4),
                "band": str(r["band"]),
                "top factor": str(first.get("feature", "")) if isinstance(first, dict) else str(first),
            }
        )
    return rows


def scoring_markdown(summary: BatchSummary, top: Sequence[dict[str, Any]], links: Sequence[Link]) -> str:
    """Batch scoring summary: band counts, rejects, the riskiest deploys, links to MLflow."""
    bands = " · ".join(f"**{k}** {v}" for k, v in summary.bands.items())
    parts = [
        f"## Scored {summary.n_scored} of {summary.n_input} deploys with {summary.model_name} v{summary.model_version}",
        "",
        f"Bands: {bands}" + (f"; {summary.n_rejected} rows rejected" if summary.n_rejected else ""),
        "",
        f"Input `{summary.input}` -> `{summary.output}` (store version {summary.store_version}).",
    ]
    if top:
        parts += ["", "### Riskiest deploys", "", _md_table(top, list(top[0]))]
    if summary.rejects:
        parts += ["", "### Rejected rows", ""]
        parts += [f"- record {r['record']}: {r['field']}: {r['reason']}" for r in summary.rejects]
    parts += ["", *(f"- [{link.text}]({link.url})" for link in links)]
    return "\n".join(parts)


# --- events (pure) -----------------------------------------------------------------------------


def _model_resource(name: str, version: str) -> dict[str, str]:
    return {
        "prefect.resource.id": f"incident-risk.model.{name}",
        "prefect.resource.name": name,
        "incident-risk.model-version": version,
    }


def store_event(report: IngestReport, store_dir: Path) -> EventSpec | None:
    """``store.committed`` when the ingest wrote a new store version, else nothing."""
    if not (report.ok and report.committed):
        return None
    return EventSpec(
        STORE_COMMITTED,
        {"prefect.resource.id": "incident-risk.store", "prefect.resource.name": str(store_dir)},
        {"store_version": report.store_version, "config": report.config, **report.totals()},
    )


def gate_event(tracked: TrackedRun, links: Sequence[Link]) -> EventSpec:
    """``model.promoted`` or ``model.rejected``, with the reason and the champion it was compared with."""
    o = tracked.outcome
    return EventSpec(
        MODEL_PROMOTED if o.decision.promote else MODEL_REJECTED,
        _model_resource(_model_name(), o.version),
        {
            "version": o.version,
            "reason": o.decision.reason,
            "champion_before": o.champion_version,
            "run_id": tracked.run_id,
            "links": {link.key: link.url for link in links},
        },
    )


def high_risk_events(summary: BatchSummary, scores: pd.DataFrame, limit: int = MAX_HIGH_RISK_EVENTS) -> list[EventSpec]:
    """One ``deploy.high-risk`` per deploy in the high band (riskiest first, at most ``limit``)."""
    high = scores[scores["band"] == "high"].sort_values("probability", ascending=False).head(limit)
    events = []
    for row in riskiest(high, n=limit):
        events.append(
            EventSpec(
                HIGH_RISK_SCORED,
                {
                    "prefect.resource.id": f"incident-risk.deploy.{row['deploy_id']}",
                    "incident-risk.service": row["service"],
                },
                {**row, "model_version": summary.model_version, "input": summary.input},
            )
        )
    return events


def decay_event(
    metric: str, value: float | None, baseline: float | None, window: str, details: dict[str, Any] | None = None
) -> EventSpec:
    """``monitor.decay-alarm``: the champion's live ``metric`` fell to ``value`` against ``baseline``."""
    return EventSpec(
        DECAY_ALARM,
        {"prefect.resource.id": f"incident-risk.model.{_model_name()}", "prefect.resource.name": _model_name()},
        {"metric": metric, "value": value, "baseline": baseline, "window": window, **(details or {})},
    )


# --- publishing --------------------------------------------------------------------------------


def in_flow_run() -> bool:
    """Artifacts and events belong to a flow run; outside one (``orchestrate=False``) nothing is sent."""
    from prefect.context import FlowRunContext

    return FlowRunContext.get() is not None


def emit(spec: EventSpec) -> None:
    from prefect.events import emit_event

    emit_event(event=spec.event, resource=spec.resource, payload=spec.payload)


def publish_summary(
    key: str,
    markdown: str,
    description: str,
    table: list[dict[str, Any]] | None = None,
    links: Sequence[Link] = (),
) -> None:
    """A flow run's artifacts: the markdown summary, a table if one fits, and links (keys: lowercase-dashed).

    The one way every flow (monitor and digest included) shows its outcome in the Prefect UI.
    """
    if not in_flow_run():
        return
    from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

    create_markdown_artifact(markdown, key=key, description=description)
    if table:
        create_table_artifact(table, key=f"{key}-table", description=description)
    for link in links:
        create_link_artifact(link.url, link_text=link.text, key=link.key, description=link.text)


def publish_ingest(report: IngestReport, store_dir: Path) -> None:
    """Ingest: reconciliation summary and table; ``store.committed`` when a version was written."""
    if not in_flow_run():
        return
    publish_summary("ingest-summary", ingest_markdown(report), "what this ingest committed", ingest_rows(report))
    event = store_event(report, store_dir)
    if event is not None:
        emit(event)


def training_links(tracked: TrackedRun, tracking_uri: str) -> list[Link]:
    base = mlflow_ui_url(tracking_uri)
    version = tracked.outcome.version
    return [
        Link("mlflow-training-run", run_link(base, tracked.experiment_id, tracked.run_id), "MLflow training run"),
        Link("mlflow-model-version", version_link(base, version), f"MLflow model {_model_name()} v{version}"),
    ]


def record_training(
    tracked: TrackedRun, result: TrainResult, table: TrainingTable, context: RunContext, store_dir: Path | None
) -> None:
    """After the gate: the story in MLflow (datasets, note, version), then Prefect artifacts and the gate event."""
    import mlflow

    from features.history.store import HistoryStore
    from models.training.run_notes import describe_training, metric_rows, store_source

    version = None
    if store_dir is not None and (store_dir / "manifest.json").exists():
        version = HistoryStore(store_dir).manifest().version
    source = store_source(store_dir, version) if store_dir is not None else f"file:///{context.source}"
    describe_training(
        tracked.run_id,
        result,
        tracked.outcome,
        table,
        context.feature_set_version,
        context.data_fingerprint,
        source,
    )
    if not in_flow_run():
        return
    links = training_links(tracked, mlflow.get_tracking_uri())
    publish_summary(
        "training-summary",
        training_markdown(tracked, result, links),
        "gate decision and test metrics",
        metric_rows(result, tracked.outcome),
        links,
    )
    emit(gate_event(tracked, links))


def record_scoring(summary: BatchSummary, scores: pd.DataFrame, experiment_id: str | None = None) -> None:
    """Batch scoring: the scored file as the run's dataset; band counts, riskiest deploys, high-risk events."""
    import mlflow

    from models.training.run_notes import log_scored_input

    if summary.run_id:
        log_scored_input(summary.run_id, scores.drop(columns=["top_factors"], errors="ignore"), Path(summary.input))
    if not in_flow_run():
        return
    links = []
    if summary.run_id:
        if experiment_id is None:
            experiment_id = mlflow.get_run(summary.run_id).info.experiment_id
        base = mlflow_ui_url(mlflow.get_tracking_uri())
        links = [
            Link("mlflow-scoring-run", run_link(base, experiment_id, summary.run_id), "MLflow scoring run"),
            Link(
                "mlflow-champion-version",
                version_link(base, summary.model_version, summary.model_name),
                f"MLflow model {summary.model_name} v{summary.model_version}",
            ),
        ]
    top = riskiest(scores)
    publish_summary(
        "score-batch-summary", scoring_markdown(summary, top, links), "band counts and the riskiest deploys", top, links
    )
    for event in high_risk_events(summary, scores):
        emit(event)


def emit_decay_alarm(
    metric: str, value: float | None, baseline: float | None, window: str, details: dict[str, Any] | None = None
) -> None:
    """For the monitor flow: the event a retraining automation listens to (docs/automations.md)."""
    if in_flow_run():
        emit(decay_event(metric, value, baseline, window, details))
