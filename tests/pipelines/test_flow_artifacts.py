"""What flows leave in the Prefect and MLflow UIs: summaries, tables, links, events, datasets, notes."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from features.history.ingest import SourceCounts
from features.history.quarantine import ReasonCount
from pipelines.flows.artifacts import (
    DECAY_ALARM,
    HIGH_RISK_SCORED,
    MODEL_PROMOTED,
    MODEL_REJECTED,
    STORE_COMMITTED,
    decay_event,
    high_risk_events,
    ingest_markdown,
    ingest_rows,
    mlflow_ui_url,
    riskiest,
    scoring_markdown,
    store_event,
    version_link,
)
from pipelines.flows.ingest import IngestReport
from pipelines.flows.score_batch import BatchSummary
from tests.helpers.paths import REPO


def _report(committed: bool = True) -> IngestReport:
    reasons = [ReasonCount("created_at", "not a timestamp", 2)]
    return IngestReport(
        config="sources.yaml",
        sources=[
            SourceCounts(
                "github",
                "deploys",
                files=2,
                read=10,
                inserted=7,
                updated=1,
                unchanged=0,
                quarantined=2,
                top_reasons=reasons,
            ),
            SourceCounts("pagerduty", "incidents", files=1, read=3, inserted=0, updated=0, unchanged=3),
        ],
        store_version=4,
        committed=committed,
    )


def _scores() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "deploy_id": ["a", "b", "c", "d"],
            "service": ["api", None, "web", "api"],
            "probability": [0.05, 0.61, 0.32, 0.48],
            "band": ["low", "high", "medium", "high"],
            "top_factors": [[], [{"feature": "lines_added", "contribution": 0.4}], [], []],
        }
    )


def _summary() -> BatchSummary:
    return BatchSummary(
        "up.csv",
        "out.parquet",
        5,
        4,
        1,
        {"low": 1, "medium": 1, "high": 2},
        0.36,
        0.61,
        "incident-risk",
        "3",
        4,
        rejects=[{"record": 5, "field": "service", "reason": "missing"}],
    )


def test_ingest_summary_reconciles_and_names_the_quarantine():
    md = ingest_markdown(_report())
    assert "committed store version **4**" in md
    assert "13 records read: 7 inserted, 1 updated, 3 unchanged, 2 quarantined" in md
    assert "| github | deploys | 2 | 10 | 7 | 1 | 0 | 2 |" in md
    assert "**github**: 2 of 10 (created_at: not a timestamp (2))" in md and "pagerduty**" not in md
    assert ingest_rows(_report())[1] == {
        "source": "pagerduty",
        "table": "incidents",
        "files": 1,
        "read": 3,
        "inserted": 0,
        "updated": 0,
        "unchanged": 3,
        "quarantined": 0,
    }
    assert "nothing new: store stays at version 4" in ingest_markdown(_report(committed=False))


def test_store_event_only_when_a_version_was_written():
    event = store_event(_report(), Path("/data/store"))
    assert event is not None and event.event == STORE_COMMITTED
    assert event.payload["store_version"] == 4 and event.payload["quarantined"] == 2
    assert store_event(_report(committed=False), Path("/data/store")) is None


def test_scoring_summary_riskiest_first_and_one_event_per_high_deploy():
    top = riskiest(_scores(), n=3)
    assert [r["deploy_id"] for r in top] == ["b", "d", "c"]
    assert top[0]["top factor"] == "lines_added" and top[0]["service"] == ""
    md = scoring_markdown(_summary(), top, [])
    assert "Scored 4 of 5 deploys with incident-risk v3" in md and "**high** 2" in md
    assert "| b |  | 0.61 | high | lines_added |" in md and "record 5: service: missing" in md
    events = high_risk_events(_summary(), _scores())
    assert [e.event for e in events] == [HIGH_RISK_SCORED] * 2
    assert [e.payload["deploy_id"] for e in events] == ["b", "d"]
    assert events[0].resource["prefect.resource.id"] == "incident-risk.deploy.b"
    assert len(high_risk_events(_summary(), _scores(), limit=1)) == 1


def test_links_point_at_the_ui_people_open(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("INCIDENT_RISK_MLFLOW_UI_URL", raising=False)
    assert mlflow_ui_url("sqlite:///x/mlflow.db") == "http://127.0.0.1:5000"
    assert mlflow_ui_url("https://mlflow.example/") == "https://mlflow.example"
    monkeypatch.setenv("INCIDENT_RISK_MLFLOW_UI_URL", "https://ml.corp/")
    assert mlflow_ui_url("sqlite:///x") == "https://ml.corp"
    assert version_link("https://ml.corp", "3", "m") == "https://ml.corp/#/models/m/versions/3"


def test_documented_retrain_trigger_is_valid_and_listens_to_the_decay_alarm():
    from prefect.cli.deploy._triggers import _initialize_deployment_triggers

    from pipelines.flows.deployments import scheduled_train

    doc = (REPO / "docs" / "automations.md").read_text()
    block = re.search(r"```yaml\n(.*?)```", doc, re.S)
    assert block is not None
    spec = yaml.safe_load(block.group(1))["triggers"]
    (trigger,) = _initialize_deployment_triggers("nightly", spec)
    assert DECAY_ALARM in trigger.expect  # type: ignore[union-attr]
    event = decay_event("roc_auc", 0.58, 0.71, "2026-06-01..2026-06-30")
    pattern = trigger.match.model_dump()["prefect.resource.id"]  # type: ignore[union-attr]
    assert re.fullmatch(pattern.replace(".", r"\.").replace("*", ".*"), event.resource["prefect.resource.id"])
    assert set(spec[0]["parameters"]) <= set(scheduled_train.parameters.properties)


# --- the flows, read back through Prefect and MLflow ------------------------------------------------


def _artifacts(key: str, since: datetime) -> list[Any]:
    """This test's artifacts under ``key``: the session's Prefect server also holds other flow tests' runs."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    return [a for a in found if a.created is not None and a.created >= since]


@pytest.mark.flow
def test_flows_leave_artifacts_events_datasets_and_notes(
    home: Path, prefect_harness: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = datetime.now(UTC)
    from mlflow import MlflowClient
    from prefect.events.clients import AssertingEventsClient
    from prefect.events.worker import EventsWorker

    from features.history.store import HistoryStore
    from features.simulation.simulator import SimulationConfig, simulate
    from models.registry.artifacts import MODEL_NAME
    from models.registry.gate import promote
    from pipelines.flows.ingest import run_ingest
    from pipelines.flows.score_batch import run_batch_scoring
    from pipelines.flows.train import TrainOptions, run_training
    from pipelines.settings import prepare_runtime, resolve_settings
    from tests.pipelines.test_train_flow import SMALL

    worker = EventsWorker.instance(AssertingEventsClient)
    monkeypatch.setattr(EventsWorker, "instance", lambda *_: worker)

    # ingest: a tiny export into its own store
    exports = home / "exports"
    exports.mkdir()
    (exports / "deploys.csv").write_text(
        "deploy_id,service,created_at,environment,status\n1,api,2026-01-01T00:00:00Z,production,success\n"
        "2,api,not-a-time,production,success\n"
    )
    (exports / "sources.yaml").write_text(
        "sources:\n  - name: changes\n    table: deploys\n    format: csv\n    path: deploys.csv\n"
    )
    report = run_ingest(exports / "sources.yaml", home / "ingest-store", quiet=True)
    assert report.committed, report.error
    (ingest,) = _artifacts("ingest-summary", started)
    ingest_text = str(ingest.data)
    assert "committed store version **1**" in ingest_text and "| changes | deploys | 1 | 2 | 1 |" in ingest_text
    (ingest_table,) = _artifacts("ingest-summary-table", started)
    assert '"quarantined": 1' in str(ingest_table.data).replace("'", '"')

    # train on a simulated store
    history = simulate(SimulationConfig(days=60, services=12, seed=2)).history
    store = HistoryStore(home / "store")
    with store.lock():
        store.commit(
            {"deploys": history.deploys, "toggle_events": history.toggle_events, "incidents": history.incidents},
            None,
            0,
        )
    settings = resolve_settings(home)
    prepare_runtime(settings)
    outcome = run_training(settings, TrainOptions(train=SMALL), progress=lambda _m: None)
    client = MlflowClient()
    run = client.get_run(outcome.run_id)
    assert run.inputs is not None
    inputs = {d.tags[0].value: d.dataset for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"training", "test"}
    assert inputs["training"].digest == run.data.tags["data_fingerprint"] == inputs["test"].digest
    assert json.loads(inputs["training"].source)["uri"] == (home / "store").resolve().as_uri() + "?version=1"
    assert f'"num_rows": {outcome.metrics["n_test"]}' in str(inputs["test"].profile)
    note = run.data.tags["mlflow.note.content"]
    assert f"{MODEL_NAME} v1:" in note and "| ROC-AUC |" in note and outcome.reason in note
    assert "report/metrics_by_group.json" in {a.path for a in client.list_artifacts(outcome.run_id, "report")}
    version = client.get_model_version(MODEL_NAME, "1")
    description = str(version.description)
    assert description.startswith("Trained on") and "first version compared with no champion" in description
    assert version.tags["trained_from"] == str(outcome.metrics["split"]["train_start"])[:10]
    assert version.tags["test_roc_auc"] == f"{outcome.metrics['test']['roc_auc']:.4f}"
    (summary_md,) = _artifacts("training-summary", started)
    summary_text = str(summary_md.data)
    assert "v1" in summary_text and outcome.reason in summary_text and outcome.run_id in summary_text
    (run_link,) = _artifacts("mlflow-training-run", started)
    assert str(run_link.data).startswith("[MLflow training run](") and outcome.run_id in str(run_link.data)

    # score the last simulated deploys as upcoming ones with the (forced) champion
    if not outcome.promoted:
        promote(client, "1", reason="test")
    upcoming = history.deploys.tail(40)[["service", "author", "lines_added", "lines_deleted", "files_changed"]]
    upcoming.to_csv(home / "upcoming.csv", index=False)
    scored = run_batch_scoring(home / "upcoming.csv", home / "scores.parquet", settings)
    scoring_run = client.get_run(str(scored.run_id))
    assert scoring_run.inputs is not None
    (scoring_input,) = scoring_run.inputs.dataset_inputs
    assert scoring_input.tags[0].value == "scoring" and scoring_input.dataset.name == "upcoming.csv"
    (scoring_md,) = _artifacts("score-batch-summary", started)
    scoring_text = str(scoring_md.data)
    assert f"Scored {scored.n_scored} of 40 deploys" in scoring_text and "Riskiest deploys" in scoring_text

    worker.drain()
    names = [e.event for e in worker._client.events]  # type: ignore[attr-defined]
    assert names.count(STORE_COMMITTED) == 1
    assert names.count(MODEL_PROMOTED) + names.count(MODEL_REJECTED) == 1
    assert names.count(HIGH_RISK_SCORED) == scored.bands["high"]
    gate = next(e for e in worker._client.events if e.event in (MODEL_PROMOTED, MODEL_REJECTED))  # type: ignore[attr-defined]
    assert gate.payload["version"] == "1" and gate.payload["run_id"] == outcome.run_id
