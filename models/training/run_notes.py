"""What a training tells the MLflow UI: datasets, the run's description, the version's story, group tables.

Users read runs and model versions in MLflow's own UI, so the summary lives where it shows:
``mlflow.note.content`` (the run's description), the model version's description and tags, the
run's Datasets (one input per table with context ``training`` / ``test``) and ``log_table`` tables
(the UI's table view and run comparison). The text is built by pure functions (tested without
MLflow); ``describe_training`` only writes it, after the gate has decided, through the client (so
it works on a run that has already ended). ``log_windows`` is the same for monitoring runs.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import DatasetInput, InputTag

from models.registry.artifacts import MODEL_NAME
from models.registry.gate import GateOutcome
from models.training.dataset import is_in
from models.training.train import LABEL, TrainingTable, TrainResult

NOTE_TAG = "mlflow.note.content"
CONTEXT_TAG = "mlflow.data.context"
#: The metrics an analyst reads first, in the order shown, with their words.
HEADLINE = (("roc_auc", "ROC-AUC"), ("recall_at_10pct", "recall at 10%"), ("pr_auc", "PR-AUC"), ("ece", "ECE"))
_BASELINE_WORDS = {"lines_added": "lines added", "service_failure_rate": "service failure rate"}


@dataclass(frozen=True)
class PreviousChampion:
    """What the champion before this training was trained on, read from its run (for the delta)."""

    version: str
    feature_set_version: str
    train_start: str
    train_end: str


def _num(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _delta(new: float | None, old: float | None) -> str:
    if new is None or old is None or math.isnan(new) or math.isnan(old):
        return "n/a"
    return f"{new - old:+.3f}"


def _day(stamp: str) -> str:
    return str(stamp)[:10]


def _decision(outcome: GateOutcome) -> str:
    return "promoted to champion" if outcome.decision.promote else "rejected (champion unchanged)"


def metric_rows(result: TrainResult, outcome: GateOutcome) -> list[dict[str, str]]:
    """Test metrics of the model, each baseline and the champion (same test deploys), one row per metric."""
    champion = outcome.champion_metrics
    rows = []
    for key, words in HEADLINE:
        row = {"metric": words, "model": _num(result.test_metrics.get(key))}
        for name, metrics in result.baseline_metrics.items():
            row[f"baseline: {_BASELINE_WORDS.get(name, name)}"] = _num(metrics.get(key))
        if champion is not None:
            row[f"champion v{outcome.champion_version}"] = _num(champion.get(key))
        rows.append(row)
    return rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """Rows of equal keys as a markdown table (MLflow and Prefect both render it)."""
    if not rows:
        return ""
    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(r.get(c, "")).replace("|", "/") for c in head) + " |" for r in rows]
    return "\n".join(lines)


def _headline(result: TrainResult, champion: dict[str, float] | None) -> str:
    """Test ROC-AUC and recall at 10% (with the champion's), for the line the UI shows collapsed."""
    parts = []
    for key, words in HEADLINE[:2]:
        vs = f" (champion {_num(champion.get(key))})" if champion is not None else ""
        parts.append(f"{words} {_num(result.test_metrics.get(key))}{vs}")
    return "Test " + ", ".join(parts) + "."


def run_note(result: TrainResult, outcome: GateOutcome, feature_set_version: str, data_fingerprint: str) -> str:
    """The run's markdown description: data, chosen model, test metrics against baselines and champion, gate."""
    s, d = result.split, result.data_summary
    champion = outcome.champion_metrics
    table = markdown_table(metric_rows(result, outcome))
    vs = (
        f"Compared with champion v{outcome.champion_version} on the same test deploys."
        if champion is not None
        else f"No champion to compare with{f' ({outcome.champion_note})' if outcome.champion_note else ''}."
    )
    return "\n".join(
        [
            f"**{MODEL_NAME} v{outcome.version}: {_decision(outcome)}.** {_headline(result, champion)} "
            f"Gate: {outcome.decision.reason}.",
            "",
            f"- **Data**: trained on {_day(s['train_start'])} to {_day(s['train_end'])}, "
            f"tested on {_day(s['test_start'])} to {_day(s['test_end'])} (time split, {s.get('rule', '')})",
            f"- **Deploys**: {result.n_train} train ({d.get('failures_train', 0)} failed, "
            f"rate {_num(d.get('failure_rate_train'))}), {result.n_test} test ({d.get('failures_test', 0)} failed, "
            f"rate {_num(d.get('failure_rate_test'))})",
            f"- **Model**: {result.chosen.name}, calibration {result.calibration}",
            f"- **Feature set** {feature_set_version}, data fingerprint `{data_fingerprint}`",
            "",
            "Test metrics (higher is better, except ECE):",
            "",
            table,
            "",
            vs,
        ]
    )


def version_tags(result: TrainResult, feature_set_version: str, data_fingerprint: str) -> dict[str, str]:
    """The model version's searchable facts: what it was trained on and its headline test metrics."""
    s = result.split
    tags = {
        "trained_from": _day(s["train_start"]),
        "trained_to": _day(s["train_end"]),
        "tested_from": _day(s["test_start"]),
        "tested_to": _day(s["test_end"]),
        "feature_set_version": feature_set_version,
        "data_fingerprint": data_fingerprint,
        "chosen_candidate": result.chosen.name,
        "n_train": str(result.n_train),
    }
    for key, _words in HEADLINE[:2]:
        tags[f"test_{key}"] = _num(result.test_metrics.get(key), 4)
    return tags


def change_tags(result: TrainResult, outcome: GateOutcome, previous: PreviousChampion | None) -> dict[str, str]:
    """What changed against the champion, as tags: metric deltas, its feature set and training period."""
    tags = {}
    if outcome.champion_metrics is not None:
        for key, _words in HEADLINE[:2]:
            tags[f"delta_{key}_vs_champion"] = _delta(result.test_metrics.get(key), outcome.champion_metrics.get(key))
    if previous is not None:
        tags["champion_feature_set_version"] = previous.feature_set_version
        tags["champion_trained_from"] = _day(previous.train_start)
        tags["champion_trained_to"] = _day(previous.train_end)
    return tags


def version_description(
    result: TrainResult,
    outcome: GateOutcome,
    feature_set_version: str,
    data_fingerprint: str,
    previous: PreviousChampion | None,
) -> str:
    """The model version's description: trained on what, how good, what changed against the champion."""
    s, m = result.split, result.test_metrics
    lines = [
        f"Trained on {result.n_train} deploys from {_day(s['train_start'])} to {_day(s['train_end'])} "
        f"(feature set {feature_set_version}, data `{data_fingerprint}`); {result.chosen.name}, "
        f"calibration {result.calibration}.",
        "",
        f"Test ({_day(s['test_start'])} to {_day(s['test_end'])}, {result.n_test} deploys): "
        f"ROC-AUC {_num(m.get('roc_auc'))}, recall at 10% {_num(m.get('recall_at_10pct'))}, "
        f"ECE {_num(m.get('ece'))}.",
        "",
    ]
    champ = outcome.champion_metrics
    if outcome.champion_version is None:
        lines.append("Changes: first version compared with no champion.")
    else:
        deltas = ", ".join(
            f"{words} {_delta(m.get(key), None if champ is None else champ.get(key))}" for key, words in HEADLINE[:3]
        )
        lines.append(f"Changes against champion v{outcome.champion_version} (same test deploys): {deltas}.")
        if previous is not None:
            fs = (
                "unchanged"
                if previous.feature_set_version == feature_set_version
                else f"{previous.feature_set_version} -> {feature_set_version}"
            )
            before = f"{_day(previous.train_start)}..{_day(previous.train_end)}"
            now = f"{_day(s['train_start'])}..{_day(s['train_end'])}"
            period = f"unchanged ({now})" if before == now else f"{before} -> {now}"
            lines.append(f"Feature set {fs}; data period {period}.")
    lines += ["", f"Gate: {'promote' if outcome.decision.promote else 'reject'}: {outcome.decision.reason}."]
    return "\n".join(lines)


GROUP_TABLE = "report/metrics_by_group.json"


def group_table(result: TrainResult) -> pd.DataFrame:
    """Per-group test metrics as one table (``by``, ``group``, counts, rates, ROC-AUC) for ``mlflow.log_table``.

    One table under one name in every run, so the UI's run comparison lines the runs up.
    """
    parts = [
        frame.rename(columns={by: "group"}).assign(by=by, group=lambda f: f["group"].astype(str))
        for by, frame in result.group_metrics.items()
        if len(frame)
    ]
    if not parts:
        return pd.DataFrame(columns=["by", "group", "n", "failures", "observed_rate", "mean_p", "roc_auc"])
    table = pd.concat(parts, ignore_index=True)
    table = table[["by", "group", *(c for c in table.columns if c not in ("by", "group"))]]
    return table.round(4)  # the UI's table view shows every digit


def previous_champion(client: MlflowClient, version: str | None, name: str = MODEL_NAME) -> PreviousChampion | None:
    """The champion's training period and feature set, from the run that made it (None if unknown)."""
    if version is None:
        return None
    try:
        run = client.get_run(str(client.get_model_version(name, version).run_id))
    except Exception:  # a deleted run must not block describing the new version
        return None
    params = run.data.params
    return PreviousChampion(
        version=version,
        feature_set_version=run.data.tags.get("feature_set_version", "unknown"),
        train_start=params.get("split.train_start", "?"),
        train_end=params.get("split.train_end", "?"),
    )


def dataset_input(
    frame: pd.DataFrame, name: str, context: str, source: str, digest: str | None = None, targets: str | None = None
) -> DatasetInput:
    """One MLflow dataset input (schema and row count of ``frame``; the data stays where it is).

    MLflow infers the schema value by value in Python (about 3 minutes for the 426k-deploy training
    and test tables, longer at 1M), so it reads ``schema_rows(frame)``, which gives the same schema;
    the profile (rows, cells) and the digest are the whole frame's.
    """
    from mlflow.data.digest_utils import compute_pandas_digest
    from mlflow.data.pandas_dataset import from_pandas
    from mlflow.entities import Dataset

    digest = digest[:36] if digest is not None else compute_pandas_digest(frame)
    with warnings.catch_warnings():  # schema hints and "source can be read two ways" are noise here
        warnings.simplefilter("ignore", UserWarning)
        dataset = from_pandas(schema_rows(frame), source=source, name=name, digest=digest, targets=targets)
        entity = dataset._to_mlflow_entity()
    profile = json.dumps({"num_rows": len(frame), "num_elements": int(frame.size)})  # MLflow's profile, whole frame
    whole = Dataset(entity.name, entity.digest, entity.source_type, entity.source, entity.schema, profile)
    return DatasetInput(whole, tags=[InputTag(CONTEXT_TAG, context)])


def schema_rows(frame: pd.DataFrame, head: int = 1000) -> pd.DataFrame:
    """Rows with ``frame``'s MLflow schema: the first ``head``, plus each column's first missing cell.

    MLflow types a column by its dtype (its values for object columns) and marks it required when
    it has no missing value, so these rows give the whole frame's schema.
    """
    missing = frame.isna().to_numpy()
    firsts = missing.argmax(axis=0)[missing.any(axis=0)]
    rows = np.union1d(np.arange(min(head, len(frame))), firsts)
    return frame.iloc[rows]


def store_source(store_dir: Path | None, store_version: int | None) -> str:
    """The dataset source of a store read: the store's URI with its version."""
    if store_dir is None:
        return "file:///unknown-store"
    return f"{store_dir.resolve().as_uri()}?version={store_version}"


def _plain(frame: pd.DataFrame) -> pd.DataFrame:
    """Columns MLflow's schema inference takes (lists and dicts become text)."""
    out = frame.copy()
    for col in out.columns:
        if out[col].dtype == object and out[col].map(lambda v: isinstance(v, (list, dict))).any():
            out[col] = out[col].map(str)
    return out


def describe_training(
    run_id: str,
    result: TrainResult,
    outcome: GateOutcome,
    table: TrainingTable,
    feature_set_version: str,
    data_fingerprint: str,
    source: str,
    client: MlflowClient | None = None,
) -> None:
    """Write datasets, the run's note, group tables and the model version's description and tags."""
    import mlflow

    client = client or MlflowClient()
    frame = table.frame
    if "deploy_id" in result.test_frame and len(result.test_frame):
        train = frame[~is_in(frame["deploy_id"], result.test_frame["deploy_id"])]
    else:
        train = frame.iloc[: result.n_train]
    client.log_inputs(
        run_id,
        datasets=[
            dataset_input(_plain(train), "training-table", "training", source, data_fingerprint, LABEL),
            dataset_input(_plain(result.test_frame), "test-table", "test", source, data_fingerprint, LABEL),
        ],
    )
    client.set_tag(run_id, NOTE_TAG, run_note(result, outcome, feature_set_version, data_fingerprint))
    mlflow.log_table(group_table(result), GROUP_TABLE, run_id=run_id)
    previous = previous_champion(client, outcome.champion_version)
    client.update_model_version(
        MODEL_NAME,
        outcome.version,
        description=version_description(result, outcome, feature_set_version, data_fingerprint, previous),
    )
    for key, value in version_tags(result, feature_set_version, data_fingerprint).items():
        client.set_model_version_tag(MODEL_NAME, outcome.version, key, value)
    for key, value in change_tags(result, outcome, previous).items():
        client.set_model_version_tag(MODEL_NAME, outcome.version, key, value)


def log_scored_input(run_id: str, frame: pd.DataFrame, input_path: Path, client: MlflowClient | None = None) -> None:
    """The scored file of a batch scoring as the run's dataset (context ``scoring``)."""
    source = input_path.resolve().as_uri()
    (client or MlflowClient()).log_inputs(
        run_id, datasets=[dataset_input(_plain(frame), input_path.name, "scoring", source)]
    )


def log_windows(
    run_id: str,
    reference: pd.DataFrame,
    current: pd.DataFrame,
    source: str,
    name: str = "deploy-window",
    client: MlflowClient | None = None,
) -> None:
    """For monitoring runs: the two windows compared, as datasets with context ``reference`` / ``current``.

    ``source`` says where both came from (``store_source(store_dir, version)`` for the store).
    """
    (client or MlflowClient()).log_inputs(
        run_id,
        datasets=[
            dataset_input(_plain(reference), f"{name}:reference", "reference", source),
            dataset_input(_plain(current), f"{name}:current", "current", source),
        ],
    )
