"""Code tests of the boundary check: every kind of bad value is quarantined with a reason."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.history.schema import DEPLOYS, INCIDENTS, RECORD_COLUMN, TimestampFormat, conform, parse_timestamps


def _deploys(**overrides: list[object]) -> pd.DataFrame:
    base: dict[str, list[object]] = {
        RECORD_COLUMN: [1, 2],
        "deploy_id": ["s:1", "s:2"],
        "source": ["s", "s"],
        "service": ["api", "web"],
        "environment": ["production", "Staging"],
        "status": ["success", "failure"],
        "created_at": ["2026-01-05T10:00:00Z", "2026-01-05T11:00:00+01:00"],
        "lines_added": ["10", 3],
    }
    base.update(overrides)
    return pd.DataFrame(base)


def _reasons(frame: pd.DataFrame, **ts: str) -> dict[tuple[int, str], str]:
    result = conform(DEPLOYS, frame, source="s", file="f.csv", timestamps=TimestampFormat(**ts))
    return {(int(r.record), r.field): r.reason for r in result.rejects.itertuples()}


def test_valid_rows_get_canonical_types_and_utc() -> None:
    result = conform(DEPLOYS, _deploys(), source="s", file="f.csv")
    assert result.rejects.empty
    valid = result.valid
    assert list(valid["environment"]) == ["production", "staging"]
    assert str(valid["created_at"].dtype) == "datetime64[us, UTC]"
    assert valid["created_at"].iloc[1] == pd.Timestamp("2026-01-05T10:00:00Z")
    assert valid["lines_added"].tolist() == [10, 3]


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("lines_added", -1, "negative count"),
        ("lines_added", "ten", "not a number"),
        ("lines_added", float("nan"), None),  # NaN is missing, and the column is optional
        ("lines_added", np.inf, "not a finite number"),
        ("lines_added", 2.5, "count is not a whole number"),
        ("lines_added", 10**12, "implausibly large"),
        ("environment", "prod-eu", "unknown value"),
        ("status", None, "required field is missing"),
        ("service", "x" * 5000, "text longer than 256"),
        ("created_at", "yesterday", "not an ISO 8601 timestamp"),
        ("created_at", "2026-01-05 10:00:00", "naive timestamp and no timezone"),
        ("is_rollback", "maybe", "not a boolean"),
        ("label", 2, "label must be 0 or 1"),
    ],
)
def test_bad_values_are_quarantined_with_field_and_reason(column: str, value: object, reason: str | None) -> None:
    good = {"status": "success", "is_rollback": "false", "label": 1}
    second = good.get(column, _deploys()[column].iloc[1] if column in _deploys() else None)
    frame = _deploys(**{column: [value, second]})
    reasons = _reasons(frame)
    if reason is None:
        assert reasons == {}
    else:
        assert (1, column) in reasons and reason in reasons[(1, column)]
        assert not any(rec == 2 for rec, _ in reasons)


def test_naive_timestamps_localised_with_configured_zone() -> None:
    ts, bad = parse_timestamps(pd.Series(["2026/3/1 9:30"]), TimestampFormat("%Y/%m/%d %H:%M", "America/New_York"))
    assert bad.isna().all()
    assert ts.iloc[0] == pd.Timestamp("2026-03-01T14:30:00Z")


@pytest.mark.parametrize(
    ("fmt", "value", "expected"),
    [("unix_s", 1136073600, "2006-01-01"), ("unix_ms", "1472243938774", "2016-08-26T20:38:58.774")],
)
def test_unix_timestamps(fmt: str, value: object, expected: str) -> None:
    ts, bad = parse_timestamps(pd.Series([value]), TimestampFormat(fmt))
    assert bad.isna().all()
    assert ts.iloc[0] == pd.Timestamp(expected, tz="UTC")


def test_unix_timestamp_rejects_text_and_absurd_values() -> None:
    _, bad = parse_timestamps(pd.Series(["abc", 1e20, 5]), TimestampFormat("unix_s"))
    assert bad.tolist()[:2] == ["not a unix_s timestamp", "unix_s timestamp out of range"]
    assert pd.isna(bad.iloc[2])


def test_unknown_columns_are_a_programming_error() -> None:
    with pytest.raises(ValueError, match="not canonical columns"):
        conform(INCIDENTS, pd.DataFrame({"bogus": [1]}), source="s", file="f")


def test_input_frame_is_not_modified() -> None:
    frame = _deploys()
    before = frame.copy()
    conform(DEPLOYS, frame, source="s", file="f.csv")
    pd.testing.assert_frame_equal(frame, before)
