"""Code tests of the pure ingest logic: merge rules, duplicates, and the reconciliation invariant."""

from __future__ import annotations

import string

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.history.ingest import merge_rows, prepare_file
from features.history.schema import DEPLOYS, RECORD_COLUMN, TimestampFormat, empty_table
from features.sources.base import ParsedFile


def _parsed(rows: list[dict[str, object]]) -> ParsedFile:
    frame = pd.DataFrame(rows, dtype=object)
    frame[RECORD_COLUMN] = np.arange(1, len(frame) + 1)
    return ParsedFile(table="deploys", frame=frame, timestamps=TimestampFormat("iso8601", "UTC"))


def _prepare(rows: list[dict[str, object]]):  # type: ignore[no-untyped-def]
    return prepare_file(
        _parsed(rows),
        source="gh",
        file="f.json",
        id_prefix="gh",
        defaults={"environment": "production", "status": "success"},
        service_map={"org/api": "api"},
    )


def _row(i: int, **kw: object) -> dict[str, object]:
    row: dict[str, object] = {
        "deploy_id": str(i),
        "service": "org/api",
        "created_at": f"2026-01-05T{i % 24:02d}:00:00Z",
    }
    row.update(kw)
    return row


def test_defaults_service_map_and_id_prefix() -> None:
    prepared = _prepare([_row(1), _row(2, environment="staging")])
    rows = prepared.rows
    assert rows["deploy_id"].tolist() == ["gh:1", "gh:2"]
    assert rows["service"].tolist() == ["api", "api"]
    assert rows["environment"].tolist() == ["production", "staging"]
    assert rows["source"].tolist() == ["gh", "gh"]


def test_identical_duplicates_count_once_conflicting_are_quarantined() -> None:
    prepared = _prepare([_row(1), _row(1), _row(2, lines_added=1), _row(2, lines_added=2), _row(3)])
    assert prepared.rows["deploy_id"].tolist() == ["gh:1", "gh:3"]
    assert prepared.duplicates == 1
    assert prepared.quarantined == 2
    assert set(prepared.rejects["reason"]) == {"duplicate key with conflicting content in the same file"}


def test_merge_insert_update_unchanged_and_stale() -> None:
    first = _prepare([_row(1, updated_at="2026-01-06T00:00:00Z"), _row(2)]).rows
    table, counts = merge_rows(DEPLOYS, empty_table(DEPLOYS), first)
    assert (counts.inserted, counts.updated, counts.unchanged) == (2, 0, 0)
    again = _prepare(
        [
            _row(1, updated_at="2026-01-05T00:00:00Z", lines_added=5),  # older than stored: stale
            _row(2, lines_added=7),  # no updated_at: the later ingest wins
            _row(3),
        ]
    ).rows
    table2, counts2 = merge_rows(DEPLOYS, table, again)
    assert (counts2.inserted, counts2.updated, counts2.unchanged) == (1, 1, 1)
    by_id = table2.set_index("deploy_id")
    assert pd.isna(by_id.loc["gh:1", "lines_added"])
    assert by_id.loc["gh:2", "lines_added"] == 7
    table3, counts3 = merge_rows(DEPLOYS, table2, again)
    assert (counts3.inserted, counts3.updated, counts3.unchanged) == (0, 0, 3)
    pd.testing.assert_frame_equal(table3, table2)


_junk = st.one_of(
    st.none(),
    st.integers(-(10**9), 10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(alphabet=string.printable, max_size=30),
    st.sampled_from(["production", "success", "2026-01-05T10:00:00Z", "2026-01-05 10:00", "", "true"]),
    # an over-long text field: built from a small draw, so the health check never sees it as too much data
    st.sampled_from(string.printable[:62]).map(lambda char: char * 3001),
)
_record = st.fixed_dictionaries(
    {
        "deploy_id": st.one_of(st.sampled_from(["1", "2", "3", "4"]), _junk),
        "service": st.one_of(st.just("api"), _junk),
        "created_at": st.one_of(st.just("2026-01-05T10:00:00Z"), _junk),
    },
    optional={
        "environment": _junk,
        "status": _junk,
        "lines_added": _junk,
        "files_changed": _junk,
        "touches_infra": _junk,
        "label": _junk,
    },
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=st.lists(st.lists(_record, min_size=1, max_size=12), min_size=1, max_size=3))
def test_random_malformed_records_always_reconcile(batches: list[list[dict[str, object]]]) -> None:
    table = empty_table(DEPLOYS)
    for batch in batches:
        prepared = _prepare(batch)
        table, counts = merge_rows(DEPLOYS, table, prepared.rows)
        assert prepared.read == len(batch)
        assert (
            prepared.read
            == counts.inserted + counts.updated + counts.unchanged + prepared.duplicates + prepared.quarantined
        )
        assert table["deploy_id"].is_unique
        assert set(prepared.rejects["record"].astype(int)) <= set(range(1, len(batch) + 1))
