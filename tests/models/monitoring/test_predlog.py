"""The prediction log: buffered appends, interval and shutdown flushes, whole files only, day partitions."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from models.monitoring.predlog import (
    COLUMNS,
    PredictionLog,
    append_now,
    batch_records,
    feature_rows,
    prediction_record,
    read_predictions,
    records_frame,
    write_records,
)


def _payload(i: int, deploy_id: str | None = None) -> dict:
    return {
        "deploy_id": deploy_id,
        "service": "checkout-api",
        "scored_for": "2026-03-02T10:00:00+00:00",
        "probability": 0.01 * i,
        "band": "low",
        "model": {"name": "incident-risk", "version": "3"},
        "features": {"lines_added": float(i), "gap": float("nan"), "squad": "payments-otter"},
        "store_version": 7,
    }


def _record(i: int, at: str = "2026-03-02T10:00:00Z", **kw: object) -> dict:
    return prediction_record(_payload(i, **kw), caller="/v1/score", logged_at=pd.Timestamp(at))  # type: ignore[arg-type]


def test_a_record_carries_the_score_the_model_and_the_feature_row() -> None:
    rec = prediction_record(
        _payload(5, "deploys:42"),
        caller="/v1/score",
        deploy={"author": "ada.lovelace", "commit_sha": "abc", "squad": None},
        teams=("payments-otter", "payments"),
        feature_set_version="pit-1",
    )
    assert rec.deploy_id == "deploys:42" and rec.has_deploy_id
    assert (rec.squad, rec.tribe, rec.author) == ("payments-otter", "payments", "ada.lovelace")
    assert rec.model_version == "3" and rec.feature_set_version == "pit-1" and rec.store_version == 7
    assert isinstance(rec.logged_at, int) and rec.planned_at == 1772445600 * 10**6  # primitives until the flush
    frame = records_frame([rec])
    assert list(frame.columns) == list(COLUMNS)
    row = frame.iloc[0]
    features = feature_rows(frame).iloc[0]
    assert features["lines_added"] == 5.0 and math.isnan(features["gap"]) and features["squad"] == "payments-otter"
    assert row["planned_at"] == pd.Timestamp("2026-03-02T10:00:00Z") and row["logged_at"].tzname() == "UTC"


def test_a_score_without_deploy_id_gets_a_request_id() -> None:
    a, b = _record(1), _record(1)
    assert a.deploy_id.startswith("request:") and not a.has_deploy_id
    assert a.deploy_id != b.deploy_id and a.prediction_id != b.prediction_id


def test_written_records_read_back_partitioned_by_day_and_filtered_by_time(tmp_path: Path) -> None:
    records = [_record(1, "2026-03-01T23:59:00Z"), _record(2, "2026-03-02T00:01:00Z"), _record(3, "2026-03-02T12:00Z")]
    written = write_records(tmp_path, records)
    assert sorted(p.parent.name for p in written) == ["day=2026-03-01", "day=2026-03-02"]
    frame = read_predictions(tmp_path)
    assert frame["probability"].tolist() == [0.01, 0.02, 0.03]
    assert list(frame.columns) == list(COLUMNS)
    later = read_predictions(tmp_path, start=pd.Timestamp("2026-03-02", tz="UTC"))
    assert later["probability"].tolist() == [0.02, 0.03]
    assert feature_rows(frame)["lines_added"].tolist() == [1.0, 2.0, 3.0]


def test_add_is_buffered_until_a_flush_and_stop_flushes_the_rest(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, flush_seconds=3600)
    log.start()
    for i in range(5):
        log.add(_record(i))
    assert log.pending == 5 and read_predictions(tmp_path).empty  # nothing written on the request path
    log.stop()
    assert log.pending == 0 and len(read_predictions(tmp_path)) == 5


def test_the_background_thread_flushes_every_interval(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, flush_seconds=0.1)
    log.start()
    try:
        log.add(_record(1))
        deadline = time.monotonic() + 10
        while read_predictions(tmp_path).empty and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(read_predictions(tmp_path)) == 1
    finally:
        log.stop()


def test_a_failed_flush_keeps_the_records_for_the_next_one(tmp_path: Path) -> None:
    blocker = tmp_path / "log"
    blocker.write_text("a file where the log directory should be")
    log = PredictionLog(blocker, flush_seconds=3600)
    log.add(_record(1))
    assert log.flush() == 0 and log.errors == 1 and log.pending == 1
    blocker.unlink()
    assert log.flush() == 1 and len(read_predictions(blocker)) == 1


def test_append_now_never_raises(tmp_path: Path) -> None:
    blocker = tmp_path / "log"
    blocker.write_text("x")
    assert append_now(blocker, [_record(1)]) is False
    assert append_now(tmp_path / "ok", [_record(1)]) is True


def test_readers_skip_files_being_written(tmp_path: Path) -> None:
    write_records(tmp_path, [_record(1)])
    day = next(tmp_path.glob("day=*"))
    (day / ".half-written.parquet.tmp").write_bytes(b"PAR1 truncated")
    assert len(read_predictions(tmp_path)) == 1
    for f in day.glob("*.parquet"):
        assert pq.read_metadata(f).num_rows == 1


def test_batch_records_keep_real_deploy_ids_and_treat_made_up_ones_as_requests() -> None:
    scores = pd.DataFrame(
        {
            "deploy_id": ["deploys:7", "upcoming:2"],
            "service": ["a", "b"],
            "created_at": pd.to_datetime(["2026-03-02T10:00Z", "2026-03-02T11:00Z"], utc=True),
            "probability": [0.2, 0.3],
            "band": ["high", "medium"],
            "features": [{"x": 1.0}, {"x": 2.0}],
        }
    )
    deploys = pd.DataFrame(
        {"squad": ["s1", None], "tribe": ["t", "t"], "author": ["ann", "bob"], "commit_sha": ["c1", None]}
    )
    out = batch_records(scores, deploys, caller="score-batch", model_name="m", model_version="2",
                        feature_set_version="pit-1", store_version=3)  # fmt: skip
    assert [r.has_deploy_id for r in out] == [True, False]
    assert out[0].deploy_id == "deploys:7" and out[1].deploy_id.startswith("request:")
    assert out[0].squad == "s1" and out[1].squad is None and out[0].commit_sha == "c1"
    assert out[0].planned_at == 1772445600 * 10**6 and out[0].features == (("x",), (1.0,))


@pytest.mark.parametrize("n", [0])
def test_an_empty_flush_writes_nothing(tmp_path: Path, n: int) -> None:
    assert PredictionLog(tmp_path).flush() == n and not any(tmp_path.iterdir())
