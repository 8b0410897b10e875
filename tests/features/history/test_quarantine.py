"""Code tests of the quarantine summary and of replacing a source's quarantine on re-ingest."""

from __future__ import annotations

import pandas as pd

from features.history.quarantine import reason_counts, replace_sources, summarise


def _entries(rows: list[tuple[str, str, int, str, str, str | None]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "table": "deploys",
            "source": [r[0] for r in rows],
            "file": [r[1] for r in rows],
            "record": pd.array([r[2] for r in rows], dtype="Int64"),
            "field": [r[3] for r in rows],
            "reason": [r[4] for r in rows],
            "value": [r[5] for r in rows],
        }
    )


STORED = _entries(
    [
        ("ci", "d.csv", 1, "environment", "unknown value", "prodd"),
        ("ci", "d.csv", 2, "environment", "unknown value", "prdo"),
        ("ci", "d.csv", 2, "created_at", "not an ISO 8601 timestamp", "yesterday"),
        ("ci", "d.csv", 3, "lines_added", "negative count", "-5"),
        ("ci", "d.csv", 4, "environment", "unknown value", "x"),
        ("gh", "g.json", 7, "deploy_id", "required field is missing", None),
    ]
)


def test_reasons_are_counted_most_frequent_first_with_examples_naming_file_record_field() -> None:
    reasons = reason_counts(STORED[STORED["source"] == "ci"], limit=2, examples=2)
    assert [(r.field, r.reason, r.count) for r in reasons] == [
        ("environment", "unknown value", 3),
        ("created_at", "not an ISO 8601 timestamp", 1),
    ]
    assert reasons[0].examples == (
        {"file": "d.csv", "record": 1, "field": "environment", "value": "prodd"},
        {"file": "d.csv", "record": 2, "field": "environment", "value": "prdo"},
    )
    assert reasons[0].line() == "environment: unknown value (3)"


def test_summary_per_source_counts_entries_and_distinct_records() -> None:
    summary = summarise(STORED, examples=1)
    assert [(s.source, s.entries, s.records, len(s.reasons)) for s in summary] == [("ci", 5, 4, 3), ("gh", 1, 1, 1)]
    only = summarise(STORED, source="gh")
    assert [s.source for s in only] == ["gh"]
    assert only[0].reasons[0].examples[0] == {"file": "g.json", "record": 7, "field": "deploy_id", "value": None}
    assert summarise(STORED, source="nope") == []


def test_a_reingested_source_replaces_its_entries_and_keeps_other_sources() -> None:
    fixed = _entries([("ci", "d.csv", 4, "environment", "unknown value", "x")])
    result = replace_sources(STORED, fixed, ["ci"])
    assert sorted(zip(result["source"], result["record"], result["field"], strict=True)) == [
        ("ci", 4, "environment"),
        ("gh", 7, "deploy_id"),
    ]
    # a source ingested clean leaves nothing behind; a source not ingested keeps everything
    cleared = replace_sources(STORED, STORED.iloc[:0], ["ci"])
    assert cleared["source"].tolist() == ["gh"]
    assert len(replace_sources(STORED, STORED.iloc[:0], ["other"])) == len(STORED)
    assert len(STORED) == 6  # inputs are not modified
