"""The prediction log: buffered appends, interval and shutdown flushes, whole files only, day partitions."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from models.monitoring.predlog import (
    COLUMNS,
    RECORD_FIELDS,
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


def test_every_column_round_trips_exactly(tmp_path: Path) -> None:
    """What is written is what is read: microsecond times, text (with None and non-ASCII), flags, ints,
    the probability's exact float and every feature value, NaN and infinities included."""
    features = {"lines_added": 1e-300, "gap": float("nan"), "big": float("inf"), "neg": -0.0, "squad": "équipe-ß"}
    rec = prediction_record(
        {**_payload(3, "deploys:é"), "scored_for": "2026-03-02T10:00:00.000001+00:00", "features": features,
         "probability": 0.1 + 0.2, "store_version": 2**40},
        caller="gate",
        deploy={"author": None, "commit_sha": "c0ffee"},
        feature_set_version="pit-9",
        logged_at=pd.Timestamp("2026-03-02T10:00:00.123456Z"),
    )  # fmt: skip
    write_records(tmp_path, [rec])
    row = read_predictions(tmp_path).iloc[0]
    assert row["logged_at"] == pd.Timestamp("2026-03-02T10:00:00.123456Z")
    assert row["planned_at"] == pd.Timestamp("2026-03-02T10:00:00.000001Z")
    assert row["deploy_id"] == "deploys:é" and bool(row["has_deploy_id"]) and row["caller"] == "gate"
    assert pd.isna(row["author"]) and row["commit_sha"] == "c0ffee" and row["feature_set_version"] == "pit-9"
    assert row["probability"] == 0.1 + 0.2 and row["store_version"] == 2**40
    got = feature_rows(read_predictions(tmp_path)).iloc[0]
    assert got["lines_added"] == 1e-300 and math.isnan(got["gap"]) and got["big"] == float("inf")
    assert got["neg"] == 0.0 and math.copysign(1.0, got["neg"]) == -1.0 and got["squad"] == "équipe-ß"


def test_days_split_at_midnight_utc_whatever_the_offset_given(tmp_path: Path) -> None:
    records = [
        _record(1, "2026-03-01T23:59:59.999999Z"),
        _record(2, "2026-03-02T00:00:00Z"),
        _record(3, "2026-03-02T01:30:00+02:00"),  # 23:30 UTC the day before
    ]
    written = write_records(tmp_path, records)
    days = {p.parent.name: pq.read_table(p).column("probability").to_pylist() for p in written}
    assert days == {"day=2026-03-01": [0.01, 0.03], "day=2026-03-02": [0.02]}
    assert read_predictions(tmp_path, end=pd.Timestamp("2026-03-02", tz="UTC"))["probability"].tolist() == [
        0.03,
        0.01,
    ]


def test_feature_rows_of_two_models_in_one_flush_keep_their_own_features(tmp_path: Path) -> None:
    """A model swap between flushes puts two feature sets in one buffer: each row keeps its own, in order."""
    old = _payload(1) | {"features": {"a": 1.0, "svc": "x"}}
    new = _payload(2) | {"features": {"a": 2.0, "b": 3.0, "svc": "y", "tier": "gold"}}
    log = PredictionLog(tmp_path, flush_seconds=3600)
    at = [f"2026-03-02T10:00:0{i}Z" for i in range(4)]
    for payload, when in zip([old, new, old, new], at, strict=True):
        log.add(prediction_record(payload, caller="/v1/score", logged_at=pd.Timestamp(when)))
    assert log.flush() == 4
    frame = read_predictions(tmp_path)
    rows = feature_rows(frame)
    assert rows["a"].tolist() == [1.0, 2.0, 1.0, 2.0] and rows["svc"].tolist() == ["x", "y", "x", "y"]
    assert math.isnan(rows["b"].iloc[0]) and rows["b"].iloc[1] == 3.0
    assert pd.isna(rows["tier"].iloc[0]) and rows["tier"].iloc[1] == "gold"
    assert dict(frame["numeric_features"].iloc[1]) == {"a": 2.0, "b": 3.0}  # the stored maps, as analysts see them
    assert dict(frame["categorical_features"].iloc[1]) == {"svc": "y", "tier": "gold"}


def test_rows_read_back_write_again_unchanged(tmp_path: Path) -> None:
    """The monitor's tests and analysts rewrite a log from a read frame (``to_dict("records")``)."""
    write_records(tmp_path / "a", [_record(i, f"2026-03-0{i}T12:00:00Z", deploy_id=f"d:{i}") for i in (1, 2, 3)])
    first = read_predictions(tmp_path / "a")
    write_records(tmp_path / "b", first.to_dict("records"))
    again = read_predictions(tmp_path / "b")
    pd.testing.assert_frame_equal(first, again)
    pd.testing.assert_frame_equal(feature_rows(first), feature_rows(again))


def test_a_log_of_the_first_format_is_still_read(tmp_path: Path) -> None:
    """Files written before the feature maps (the feature row as JSON text in ``features``)."""
    old = pa.table(
        {
            "prediction_id": ["p1"],
            "logged_at": pa.array([1772445600000000], pa.timestamp("us", tz="UTC")),
            "deploy_id": ["d:1"],
            "has_deploy_id": [True],
            **{c: pa.array([None], pa.string()) for c in ("commit_sha", "squad", "tribe", "author")},
            "service": ["svc"],
            "planned_at": pa.array([1772445600000000], pa.timestamp("us", tz="UTC")),
            "probability": [0.25],
            "band": ["medium"],
            "model_name": ["m"],
            "model_version": ["1"],
            "feature_set_version": ["pit-1"],
            "store_version": pa.array([3], pa.int64()),
            "caller": ["/v1/score"],
            "features": [json.dumps({"lines_added": 4.0, "gap": None, "squad": "otters"})],
        }
    )
    folder = tmp_path / "day=2026-03-02"
    folder.mkdir()
    pq.write_table(old, folder / "1772445600000000-1-abc.parquet")
    write_records(tmp_path, [_record(2)])
    frame = read_predictions(tmp_path)
    assert list(frame.columns) == list(COLUMNS) and frame["probability"].tolist() == [0.25, 0.02]
    rows = feature_rows(frame)
    assert rows["lines_added"].tolist() == [4.0, 2.0] and math.isnan(rows["gap"].iloc[0])
    assert rows["squad"].tolist() == ["otters", "payments-otter"]


def test_analysts_read_the_feature_maps_with_duckdb(tmp_path: Path) -> None:
    duckdb = pytest.importorskip("duckdb")
    write_records(tmp_path, [_record(i, deploy_id=f"d:{i}") for i in (1, 2)])
    query = (
        "select deploy_id, numeric_features['lines_added'], categorical_features['squad'] "
        f"from '{tmp_path}/*/*.parquet' order by deploy_id"
    )
    assert duckdb.sql(query).fetchall() == [("d:1", 1.0, "payments-otter"), ("d:2", 2.0, "payments-otter")]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"scored_for": "next tuesday"}, "not an ISO 8601 time"),
        ({"scored_for": 1.5}, "not a time"),
        ({"probability": "high"}, "could not convert"),
        ({"features": 42}, "a feature row is a mapping"),
    ],
)
def test_bad_input_is_refused_with_a_clear_error(change: dict, message: str) -> None:
    with pytest.raises((TypeError, ValueError), match=message):
        prediction_record(_payload(1) | change, caller="/v1/score")


def test_a_record_that_can_never_be_written_is_dropped_not_retried_forever(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, flush_seconds=3600)
    log.add(_record(1, deploy_id="d:1"))
    log.add(prediction_record(_payload(2) | {"features": {"lines_added": {"nested": 1}}}, caller="/v1/score"))
    log.add(_record(3, deploy_id="d:3"))
    with pytest.raises(ValueError, match="'lines_added'.*neither a number nor text"):
        write_records(tmp_path / "direct", list(log._buffer))
    assert log.flush() == 2 and log.dropped == 1 and log.errors == 0 and log.pending == 0
    assert read_predictions(tmp_path)["deploy_id"].tolist() == ["d:1", "d:3"]


def test_record_fields_are_the_columns_with_one_feature_row() -> None:
    assert RECORD_FIELDS[:-1] == COLUMNS[:-2] and RECORD_FIELDS[-1] == "features"
    assert COLUMNS[-2:] == ("numeric_features", "categorical_features")
