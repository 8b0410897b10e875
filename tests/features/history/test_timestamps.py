"""Code tests of the one timestamp rule: aware times convert to UTC, naive ones are refused everywhere."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd
import pytest

from features.history.schema import History
from features.history.timestamps import utc_micros, utc_micros_column, utc_timestamp
from features.labels.attribution import AttributionConfig, attribute
from features.pointintime.compute import EntityArrays
from models.scoring.upcoming import UpcomingDeploy
from models.training.split import time_split

AWARE = pd.Timestamp("2026-03-01T12:00:00+01:00")
MICROS = int(pd.Timestamp("2026-03-01T11:00:00Z").value // 1000)


def test_aware_values_convert_to_utc_in_every_form() -> None:
    assert utc_timestamp(AWARE, "t") == utc_timestamp("2026-03-01T11:00:00Z", "t") == AWARE
    assert str(utc_timestamp(AWARE, "t").tz) == "UTC"
    assert utc_micros(AWARE, "t") == utc_micros(AWARE.to_pydatetime(), "t") == utc_micros(MICROS, "t") == MICROS
    column = pd.Series([AWARE, pd.NaT], dtype="datetime64[us, Europe/Berlin]")
    micros, present = utc_micros_column(column, "c")
    assert micros[0] == MICROS and present.tolist() == [True, False]
    text, present = utc_micros_column(pd.Series(["2026-03-01T12:00:00+01:00", None], dtype=object), "c")
    assert text[0] == MICROS and present.tolist() == [True, False]


@pytest.mark.parametrize("naive", ["2026-03-01T11:00:00", pd.Timestamp("2026-03-01"), datetime(2026, 3, 1)])
def test_naive_values_are_refused_by_every_converter(naive: object) -> None:
    with pytest.raises(ValueError, match="naive"):
        utc_timestamp(naive, "t")
    with pytest.raises(ValueError, match="naive"):
        utc_micros(naive, "t")
    with pytest.raises(ValueError, match="naive"):
        utc_micros_column(pd.Series([naive], dtype=object), "c")


def test_naive_columns_are_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        utc_micros_column(pd.Series([pd.Timestamp("2026-03-01")]), "c")


def test_missing_and_garbage_are_named() -> None:
    with pytest.raises(ValueError, match="t is missing"):
        utc_timestamp(None, "t")
    with pytest.raises(ValueError, match="'soon' is not a date/time"):
        utc_timestamp("soon", "t")


def test_only_command_line_dates_read_naive_as_utc() -> None:
    assert utc_timestamp("2026-03-01", "--test-start", naive_is_utc=True) == pd.Timestamp("2026-03-01", tz="UTC")


def test_the_callers_share_the_rule() -> None:
    """Attribution's as-of, the time split, an upcoming deploy and a request all refuse a naive time."""
    naive = pd.Timestamp("2026-03-01T11:00:00")
    with pytest.raises(ValueError, match="naive"):
        attribute(History.empty(), AttributionConfig(), as_of=naive)
    frame = pd.DataFrame({"created_at": pd.date_range("2026-01-01", periods=10, freq="D", tz="UTC")})
    with pytest.raises(ValueError, match="naive"):
        time_split(frame, test_start=naive)
    with pytest.raises(ValueError, match="naive"):
        _ = UpcomingDeploy(service="a", created_at=naive).micros
    with pytest.raises(ValueError, match="naive"):
        EntityArrays.from_mapping({"created_at": naive.to_pydatetime()})
    aware = UpcomingDeploy(service="a", created_at=AWARE)
    assert aware.micros == MICROS
    assert np.array_equal(EntityArrays.from_mapping({"created_at": AWARE}).t, [MICROS])
