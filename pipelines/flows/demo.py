"""The main job on the embedded sample: ingest, label, DORA, train, score, with a summary."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

from features.history.ownership import service_teams
from features.history.store import HistoryStore
from features.labels.attribution import AttributionConfig, attribute
from features.labels.dora import DoraConfig, dora_metrics
from models.notify.config import NotifyConfigError, load_notify_config
from pipelines.console import make_console
from pipelines.flows.digest import EXPERIMENT as DIGEST_EXPERIMENT
from pipelines.flows.digest import DigestError, run_digest
from pipelines.flows.dora import DORA_EXPERIMENT, log_dora_trends
from pipelines.flows.ingest import print_error, run_ingest
from pipelines.flows.score_batch import BatchScoringError, run_batch_scoring
from pipelines.flows.train import TrainingError, run_training
from pipelines.settings import Settings

STEPS = 6


def run_demo(settings: Settings, sample_dir: Path) -> int:
    """Every stage in order on ``sample_dir``; returns the process exit code."""
    console = make_console()
    started = time.perf_counter()
    config = sample_dir / "sources.yaml"
    console.print(f"[bold]incident-risk demo[/bold] on {sample_dir} (home {settings.home})")

    console.print(f"\n[bold]1/{STEPS} ingest[/bold] {config}")
    report = run_ingest(config, settings.store_dir)
    if not report.ok:
        print_error(report.error or "ingest failed")
        return 1
    report.render(console)

    console.print(f"\n[bold]2/{STEPS} attribute incidents to changes[/bold]")
    history = HistoryStore(settings.store_dir).read_history()
    attribution = attribute(history, AttributionConfig())
    s = attribution.summary
    console.print(
        f"{s['incidents_linked']} of {s['incidents']} incidents linked to a change "
        f"({s['links_explicit_deploy_id'] + s['links_explicit_commit_sha'] + s['links_explicit_flag_key']} explicit, "
        f"{s['links_time_window_deploy']} deploys and {s['links_time_window_toggle']} toggle flips by time window), "
        f"{s['incidents_not_change_related']} marked not change-related; {s['links_rollback']} rollbacks.\n"
        f"{s['deploys_failed']} of {s['deploys_eligible']} production deploys failed; "
        f"{s['deploys_immature']} too young to label (excluded)."
    )
    teams = service_teams(history.catalog)
    owned = teams[teams["squad"].notna()]
    if len(owned):
        console.print(
            f"Backstage catalog: {len(owned)} services owned by {owned['squad'].nunique()} squads in "
            f"{owned['tribe'].nunique()} tribes (squad/tribe of every deploy filled from it where missing)."
        )

    console.print(f"\n[bold]3/{STEPS} DORA metrics[/bold] (by tribe and week, logged to MLflow)")
    dora = dora_metrics(history, attribution, DoraConfig(by="tribe", period="week"))
    dora_run = log_dora_trends(dora, attribution, settings, "tribe", "week")
    console.print(f"MLflow run {dora_run} in experiment {DORA_EXPERIMENT}: dora.csv, dora_trends.png")

    console.print(f"\n[bold]4/{STEPS} train, calibrate, evaluate, register[/bold]")
    try:
        outcome = run_training(settings, progress=lambda msg: console.print(f"  {msg}"))
    except TrainingError as exc:
        print_error(str(exc))
        return 1
    test = outcome.metrics["test"]
    console.print(
        f"model {outcome.metrics['model_name']} v{outcome.model_version}: test ROC-AUC {test['roc_auc']:.3f}, "
        f"PR-AUC {test['pr_auc']:.3f}, recall at 10% gated {test['recall_at_10pct']:.2f}, ECE {test['ece']:.3f}"
    )
    console.print(
        f"promotion gate: {'promoted to champion' if outcome.promoted else 'kept the champion'}: {outcome.reason}"
    )

    console.print(f"\n[bold]5/{STEPS} score the upcoming deploys[/bold]")
    scores_path = settings.home / "scores" / "upcoming.parquet"
    scores_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        summary = run_batch_scoring(sample_dir / "upcoming.csv", scores_path, settings)
    except BatchScoringError as exc:
        print_error(str(exc))
        return 1
    console.print(summary.render())
    _show_riskiest(console, scores_path)

    console.print(f"\n[bold]6/{STEPS} weekly risk digest[/bold] (dry run: written, not sent to Slack)")
    digest_dir = settings.home / "digests"
    try:
        digest = run_digest(settings, load_notify_config(None), dry_run=True, out_dir=digest_dir)
    except (DigestError, NotifyConfigError) as exc:
        print_error(str(exc))
        return 1
    channels = sorted({m["channel"] for m in digest.messages})
    console.print(
        f"week of {digest.week_start}: {len(digest.messages)} Block Kit messages for {len(channels)} squad and tribe "
        f"channels in {digest_dir}; chart and messages in MLflow run {digest.run_id} (experiment {DIGEST_EXPERIMENT})"
    )

    console.print(f"\nDone in {time.perf_counter() - started:.0f} s. Everything is under {settings.home}")
    console.print("Look next:")
    console.print(f"  .venv/bin/mlflow ui --backend-store-uri {settings.mlflow_tracking_uri}")
    console.print(
        "  (experiment 'incident-risk': open the training run's report.html; 'incident-risk-dora': DORA trends)"
    )
    console.print(f"  .venv/bin/incident-risk runs --home {settings.home}")
    console.print(f"  .venv/bin/incident-risk serve --home {settings.home}")
    console.print(f"  SLACK_BOT_TOKEN=... .venv/bin/incident-risk digest --home {settings.home}   (docs/notify.md)")
    return 0


def _show_riskiest(console: Console, scores_path: Path, n: int = 5) -> None:
    scores = pd.read_parquet(scores_path)
    if scores.empty or "probability" not in scores.columns:
        return
    top = scores.sort_values("probability", ascending=False).head(n)
    table = Table(title=f"riskiest {len(top)} upcoming deploys")
    for col in ("deploy_id", "service", "probability", "band"):
        table.add_column(col)
    for row in top.itertuples():
        table.add_row(str(row.deploy_id), str(row.service), f"{row.probability:.3f}", str(row.band))
    console.print(table)
