"""Code tests of the store: atomic multi-table commits, crash safety, concurrent-writer refusal."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from features.history.schema import DEPLOYS, conform, empty_quarantine
from features.history.store import HistoryStore, StoreError


def _deploys(n: int, start: int = 0) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "deploy_id": [f"s:{i}" for i in range(start, start + n)],
            "source": "s",
            "service": "api",
            "environment": "production",
            "status": "success",
            "created_at": pd.date_range("2026-01-05", periods=n, freq="h", tz="UTC"),
            "extra_ns": 1.0,
        }
    )
    return conform(DEPLOYS, frame, source="s", file="f").valid


def test_round_trip_keeps_canonical_dtypes(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path)
    rows = _deploys(3)
    store.commit({"deploys": rows}, None, expected_version=0)
    back = store.read("deploys")
    assert back.dtypes.to_dict() == rows.dtypes.to_dict()
    pd.testing.assert_frame_equal(back, rows)
    assert store.read_history().incidents.empty


def test_crash_mid_commit_leaves_previous_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = HistoryStore(tmp_path)
    store.commit({"deploys": _deploys(2)}, None, expected_version=0)
    calls = {"n": 0}
    real = HistoryStore._write_table

    def failing(self: HistoryStore, name: str, version: int, frame: pd.DataFrame) -> str:
        calls["n"] += 1
        if calls["n"] == 2:  # the second table of the commit: the first is already on disk
            raise OSError("disk full")
        return real(self, name, version, frame)

    monkeypatch.setattr(HistoryStore, "_write_table", failing)
    with pytest.raises(StoreError, match="could not write store version 2 .disk full.; nothing was committed"):
        store.commit({"deploys": _deploys(5), "incidents": store.read("incidents")}, None, expected_version=1)
    assert store.manifest().version == 1
    assert len(store.read("deploys")) == 2
    assert not list(tmp_path.rglob("v000002-*"))  # the first table's new file is removed, not left behind


def test_commit_on_a_newer_store_is_refused(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path)
    store.commit({"deploys": _deploys(1)}, None, expected_version=0)
    with pytest.raises(StoreError, match="changed during the ingest"):
        store.commit({"deploys": _deploys(2)}, None, expected_version=0)


def test_old_files_are_cleaned_up_but_previous_version_kept(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path)
    for version in range(4):
        store.commit({"deploys": _deploys(version + 1)}, empty_quarantine(), expected_version=version)
    assert len(list((tmp_path / "deploys").glob("*.parquet"))) == 2


def test_unreadable_manifest_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(StoreError, match="manifest.json: unreadable store manifest"):
        HistoryStore(tmp_path).read_history()
