"""The weekly risk digest flow: history + champion scores -> a digest per squad and tribe -> Slack.

The chart and the messages are logged to an MLflow run (experiment ``incident-risk-digest``),
and every message links to it. ``dry_run`` prints the Block Kit JSON instead of sending;
``out_dir`` writes one JSON file per message and the chart. Slack credentials come from the
environment only and are never logged (models/notify/config.py).
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from features.history.ownership import squad_channels
from features.history.schema import History
from features.history.store import HistoryStore
from features.labels.attribution import Attribution, AttributionConfig, attribute, data_end
from models.notify.config import Links, NotifyConfig
from models.notify.digest import (
    WEEK,
    DigestConfig,
    build_digests,
    digest_messages,
    last_full_week,
    plot_digest,
    rank_incidents,
)
from models.notify.sender import Message, SendError, SlackSender
from models.scoring.context import ModelBundle, champion_version, load_bundle, make_scoring_context
from models.scoring.explain import score_frame
from models.scoring.suspects import build_suspect_context
from pipelines.flows.artifacts import publish_summary
from pipelines.settings import Settings

EXPERIMENT = "incident-risk-digest"


class DigestError(RuntimeError):
    """A digest that cannot be made (empty store, bad week)."""


@dataclass
class DigestReport:
    week_start: str
    messages: list[dict[str, Any]]
    sent: int = 0
    failed: list[str] = field(default_factory=list)
    run_id: str | None = None
    chart: str | None = None
    scored: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "week_start": self.week_start,
            "messages": len(self.messages),
            "channels": sorted({m["channel"] for m in self.messages}),
            "sent": self.sent,
            "failed": self.failed,
            "run_id": self.run_id,
            "chart": self.chart,
            "scored": self.scored,
        }


def choose_week(history: History, week_start: str | None, now: pd.Timestamp) -> pd.Timestamp:
    """The given Monday, else the last complete week before now (or before the data's end, if earlier)."""
    if week_start:
        try:
            ts = pd.Timestamp(week_start)
        except ValueError:
            raise DigestError(f"--week {week_start!r}: not a date") from None
        ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
        if ts.dayofweek != 0 or ts != ts.normalize():
            raise DigestError(f"--week {week_start}: must be a Monday (weeks run Monday to Sunday, UTC)")
        return ts
    end = data_end(history)
    return last_full_week(min(now, end) if end is not None else now)


@task(name="score-week", cache_policy=NO_CACHE)
def score_week(history: History, bundle: ModelBundle, start: pd.Timestamp) -> pd.DataFrame:
    """The champion's probabilities of the week's deploys (point-in-time features, as when they shipped)."""
    d = history.deploys
    week = d[(d["created_at"] >= start) & (d["created_at"] < start + pd.Timedelta(days=7))]
    context = make_scoring_context(bundle, history, store_version=0)  # labels by the bundle's own attribution rule
    return score_frame(week, context)[["deploy_id", "probability", "band"]]


@task(name="rank-week-suspects", cache_policy=NO_CACHE)
def rank_week_suspects(
    history: History, bundle: ModelBundle, attribution: Attribution, start: pd.Timestamp, k: int
) -> dict[str, dict[str, Any]]:
    """The suspects model's answer for each of the week's incidents, as the API would give it at the week's end."""
    context = make_scoring_context(bundle, history, store_version=0)
    ctx = build_suspect_context(history, context.index, bundle.scorer, attribution)
    inc = history.incidents
    week = inc[(inc["created_at"] >= start) & (inc["created_at"] < start + WEEK)]
    return rank_incidents(ctx, week["incident_id"].astype(str), start + WEEK, k)


def _champion(model_name: str, alias: str) -> ModelBundle | None:
    from mlflow import MlflowClient

    client = MlflowClient()
    try:
        target = champion_version(client, model_name, alias)
    except Exception:  # no registry yet: the digest still goes out, without predictions
        return None
    return load_bundle(client, model_name, target[0], alias) if target else None


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "channel"


@task(name="log-digest", cache_policy=NO_CACHE)
def log_digest(settings: Settings, week: str, chart: Path, messages: list[Message], scored: bool) -> str:
    """An MLflow run holding the chart and the messages (params: the week and counts, never a secret)."""
    import mlflow
    from mlflow import MlflowClient

    from models.training.tracking import ensure_experiment

    experiment = ensure_experiment(MlflowClient(), EXPERIMENT, str(settings.artifact_root))
    with mlflow.start_run(
        experiment_id=experiment.experiment_id, run_name=f"digest-{week}", tags={"run_kind": "digest"}
    ) as run:
        mlflow.log_params({"week_start": week, "messages": len(messages), "scored": scored})
        mlflow.log_artifact(str(chart))
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "messages.json"
            path.write_text(json.dumps([m.as_dict() for m in messages], indent=1, ensure_ascii=False))
            mlflow.log_artifact(str(path))
        return str(run.info.run_id)


@flow(name="weekly-digest", validate_parameters=False)
def digest_flow(
    settings: Settings,
    notify: NotifyConfig,
    week_start: str | None = None,
    dry_run: bool = False,
    out_dir: str | None = None,
    model_name: str = "incident-risk",
    alias: str = "champion",
) -> DigestReport:
    """Build the week's digests, log the chart to MLflow, then send (or print, or write) them."""
    history = HistoryStore(settings.store_dir).read_history()
    if history.deploys.empty:
        raise DigestError(f"the store at {settings.store_dir} holds no deploys; run an ingest first")
    start = choose_week(history, week_start, pd.Timestamp.now(tz="UTC"))
    bundle = _champion(model_name, alias)
    attribution = attribute(history, bundle.attribution_config if bundle else AttributionConfig())
    scores = score_week(history, bundle, start) if bundle else None
    config = DigestConfig(start)
    answers = rank_week_suspects(history, bundle, attribution, start, config.suspects) if bundle else None
    digests = build_digests(history, attribution, scores, config, answers)
    week = start.strftime("%Y-%m-%d")
    with tempfile.TemporaryDirectory() as tmp:
        chart = Path(out_dir) / f"digest-{week}.png" if out_dir else Path(tmp) / f"digest-{week}.png"
        plot_digest(digests, chart)
        placeholder = digest_messages(digests, notify.routing, squad_channels(history.catalog), None, notify.links)
        run_id = log_digest(settings, week, chart, placeholder, scores is not None)
    links = notify.links
    if links.mlflow_url is None and str(_tracking_uri()).startswith(("http://", "https://")):
        links = Links(links.deploy_url, _tracking_uri())
    messages = digest_messages(digests, notify.routing, squad_channels(history.catalog), links.run(run_id), links)
    report = DigestReport(week, [m.as_dict() for m in messages], run_id=run_id, scored=scores is not None)
    report.chart = str(chart) if out_dir else None
    if out_dir:
        folder = Path(out_dir)
        folder.mkdir(parents=True, exist_ok=True)
        for i, m in enumerate(messages):
            name = f"{i:03d}-{_safe_name(m.channel)}.json"
            (folder / name).write_text(json.dumps(m.as_dict(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    if not dry_run:
        sender = SlackSender(notify.slack)
        for m in messages:
            try:
                sender.post(m)
                report.sent += 1
            except SendError as exc:
                report.failed.append(f"{m.channel}: {exc}")
    publish_summary(
        "digest-summary",
        digest_markdown(report, dry_run),
        "the weekly risk digest",
        [{"channel": m.channel} for m in messages],
    )
    return report


def digest_markdown(report: DigestReport, dry_run: bool) -> str:
    """The Prefect UI's summary of a digest run: the week, how many messages went where, what failed."""
    fate = "written, not sent (dry run)" if dry_run else f"{report.sent} sent, {len(report.failed)} failed"
    lines = [
        f"# Weekly risk digest, week of {report.week_start}",
        "",
        f"{len(report.messages)} messages: {fate}. Champion scores {'included' if report.scored else 'not available'}.",
        f"MLflow run: `{report.run_id}` (experiment `{EXPERIMENT}`)." if report.run_id else "",
    ]
    lines += [f"- failed: {f}" for f in report.failed]
    return "\n".join(lines)


def _tracking_uri() -> str:
    import mlflow

    return str(mlflow.get_tracking_uri())


def run_digest(
    settings: Settings,
    notify: NotifyConfig,
    *,
    week_start: str | None = None,
    dry_run: bool = False,
    out_dir: Path | None = None,
    model_name: str = "incident-risk",
    alias: str = "champion",
) -> DigestReport:
    """Run the digest flow; raises ``DigestError`` (or ``SendError`` when Slack is not configured)."""
    if not dry_run and not notify.slack.enabled:
        raise SendError("Slack is not configured: set SLACK_BOT_TOKEN or SLACK_WEBHOOK_URL, or use --dry-run")
    return digest_flow(settings, notify, week_start, dry_run, str(out_dir) if out_dir else None, model_name, alias)
