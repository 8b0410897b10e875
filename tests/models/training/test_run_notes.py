"""The run note, model version description, tags and per-group table say what a training did."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd

from models.registry.gate import GateDecision, GateOutcome
from models.training.run_notes import (
    PreviousChampion,
    change_tags,
    group_table,
    run_note,
    version_description,
    version_tags,
)

METRICS = {"roc_auc": 0.7312, "recall_at_10pct": 0.41, "pr_auc": 0.22, "ece": 0.031}


def _result() -> Any:
    groups = {
        "service": pd.DataFrame(
            {
                "service": ["api", "web"],
                "n": [10, 5],
                "failures": [2, 1],
                "observed_rate": [0.2, 0.2],
                "mean_p": [0.123456, 0.3],
                "roc_auc": [0.7, math.nan],
            }
        ),
        "tribe": pd.DataFrame(
            {"tribe": ["core"], "n": [15], "failures": [3], "observed_rate": [0.2], "mean_p": [0.2], "roc_auc": [0.66]}
        ),
        "squad": pd.DataFrame(columns=["squad", "n"]),
    }
    return SimpleNamespace(
        split={
            "rule": "latest 20%",
            "train_start": "2026-01-01 00:00:00+00:00",
            "train_end": "2026-05-31 10:00",
            "test_start": "2026-06-01 00:00",
            "test_end": "2026-06-30 00:00",
        },
        data_summary={"failures_train": 40, "failures_test": 9, "failure_rate_train": 0.1, "failure_rate_test": 0.09},
        n_train=400,
        n_test=100,
        test_metrics=METRICS,
        baseline_metrics={"lines_added": {"roc_auc": 0.55, "recall_at_10pct": 0.12, "pr_auc": 0.1, "ece": 0.2}},
        chosen=SimpleNamespace(name="hgb(max_iter=40)"),
        calibration="isotonic",
        group_metrics=groups,
    )


def _outcome(promote: bool, champion: dict[str, float] | None) -> GateOutcome:
    reason = "roc_auc 0.7312 beats champion 0.7000 by 0.0312 >= 0.01" if promote else "gain 0.001 < margin 0.01"
    return GateOutcome("3", GateDecision(promote, reason), "2" if champion else None, champion, "")


def test_run_note_names_data_model_metrics_baselines_champion_and_gate():
    champion = {"roc_auc": 0.70, "recall_at_10pct": 0.35, "pr_auc": 0.2, "ece": 0.05}
    note = run_note(_result(), _outcome(True, champion), "fs-7", "abc123")
    first = note.splitlines()[0]
    assert first.startswith("**incident-risk v3: promoted to champion.** Test ROC-AUC 0.731 (champion 0.700)")
    assert "recall at 10% 0.410 (champion 0.350)" in first and "beats champion 0.7000" in first
    assert "2026-01-01 to 2026-05-31" in note and "2026-06-01 to 2026-06-30" in note
    assert "400 train (40 failed, rate 0.100)" in note and "hgb(max_iter=40)" in note
    assert "| ROC-AUC | 0.731 | 0.550 | 0.700 |" in note
    assert "| recall at 10% | 0.410 | 0.120 | 0.350 |" in note
    assert "champion v2" in note and "fs-7" in note and "`abc123`" in note


def test_run_note_without_champion_says_so():
    note = run_note(_result(), _outcome(False, None), "fs-7", "abc")
    assert "rejected (champion unchanged)" in note and "No champion to compare with" in note
    assert "champion v" not in note


def test_version_description_says_what_changed_against_the_champion():
    champion = {"roc_auc": 0.70, "recall_at_10pct": 0.35, "pr_auc": 0.25}
    previous = PreviousChampion("2", "fs-6", "2025-12-01 00:00", "2026-04-30 00:00")
    text = version_description(_result(), _outcome(True, champion), "fs-7", "abc", previous)
    assert "Trained on 400 deploys from 2026-01-01 to 2026-05-31" in text
    assert "ROC-AUC 0.731, recall at 10% 0.410" in text
    assert "champion v2" in text and "ROC-AUC +0.031" in text and "recall at 10% +0.060" in text
    assert "PR-AUC -0.030" in text
    assert "Feature set fs-6 -> fs-7" in text and "2025-12-01..2026-04-30 -> 2026-01-01..2026-05-31" in text
    assert text.endswith("Gate: promote: roc_auc 0.7312 beats champion 0.7000 by 0.0312 >= 0.01.")
    same = version_description(_result(), _outcome(True, champion), "fs-6", "abc", previous)
    assert "Feature set unchanged" in same
    again = PreviousChampion("2", "fs-7", "2026-01-01 00:00", "2026-05-31 23:00")
    same_data = version_description(_result(), _outcome(False, champion), "fs-7", "abc", again)
    assert "data period unchanged (2026-01-01..2026-05-31)" in same_data


def test_first_version_description_and_tags():
    text = version_description(_result(), _outcome(True, None), "fs-7", "abc", None)
    assert "first version compared with no champion" in text
    tags = version_tags(_result(), "fs-7", "abc")
    assert tags["trained_from"] == "2026-01-01" and tags["trained_to"] == "2026-05-31"
    assert tags["test_roc_auc"] == "0.7312" and tags["test_recall_at_10pct"] == "0.4100"
    assert tags["feature_set_version"] == "fs-7" and tags["data_fingerprint"] == "abc"


def test_group_table_stacks_every_non_empty_grouping():
    table = group_table(_result())
    assert list(table.columns[:2]) == ["by", "group"]
    assert table[["by", "group"]].values.tolist() == [["service", "api"], ["service", "web"], ["tribe", "core"]]
    assert table["n"].tolist() == [10, 5, 15]
    assert table["mean_p"].tolist() == [0.1235, 0.3, 0.2]


def test_change_tags_carry_the_deltas_and_the_champions_feature_set_and_period():
    champion = {"roc_auc": 0.70, "recall_at_10pct": 0.45}
    previous = PreviousChampion("2", "fs-6", "2025-12-01 00:00", "2026-04-30 00:00")
    tags = change_tags(_result(), _outcome(True, champion), previous)
    assert tags == {
        "delta_roc_auc_vs_champion": "+0.031",
        "delta_recall_at_10pct_vs_champion": "-0.040",
        "champion_feature_set_version": "fs-6",
        "champion_trained_from": "2025-12-01",
        "champion_trained_to": "2026-04-30",
    }
    assert change_tags(_result(), _outcome(True, None), None) == {}


def test_monitoring_windows_are_the_runs_datasets(home: Path) -> None:
    from mlflow import MlflowClient

    from models.training.run_notes import log_windows, store_source

    client = MlflowClient()
    run = client.create_run(client.create_experiment("monitor"))
    reference = pd.DataFrame({"deploy_id": ["a", "b"], "p": [0.1, 0.2], "factors": [["x"], []]})
    current = pd.DataFrame({"deploy_id": ["c"], "p": [0.4], "factors": [["y"]]})
    log_windows(run.info.run_id, reference, current, store_source(home / "store", 3))
    inputs = client.get_run(run.info.run_id).inputs
    assert inputs is not None
    by_context = {d.tags[0].value: d.dataset for d in inputs.dataset_inputs}
    assert set(by_context) == {"reference", "current"}
    current_set = by_context["current"]
    assert current_set.name == "deploy-window:current" and '"num_rows": 1' in str(current_set.profile)
    assert (home / "store").resolve().as_uri() + "?version=3" in by_context["reference"].source


def test_dataset_input_reads_the_schema_from_a_few_rows_and_profiles_the_whole_frame():
    from mlflow.data.pandas_dataset import from_pandas

    from models.training.run_notes import dataset_input, schema_rows

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "deploy_id": [f"d-{i}" for i in range(3000)],
            "x": rng.normal(size=3000),
            "n": np.arange(3000),
            "service": pd.Series(["a", "b"] * 1500, dtype=object),
        }
    )
    frame.loc[2500, "x"] = np.nan  # missing only beyond the first rows: "x" must not be required
    frame.loc[2900, "service"] = None
    assert len(schema_rows(frame, head=100)) == 102
    full = from_pandas(frame, source="file:///x", name="t", digest="abc", targets="n")._to_mlflow_entity()
    ours = dataset_input(frame, "t", "training", "file:///x", "abc", "n").dataset
    fields = ("schema", "profile", "digest", "source")
    assert [getattr(ours, f) for f in fields] == [getattr(full, f) for f in fields]
    scored = from_pandas(frame, source="file:///x", name="s")._to_mlflow_entity()
    assert dataset_input(frame, "s", "scoring", "file:///x").dataset.digest == scored.digest
