"""The time-ordered split and the count of matured rows: what training will train and test on.

Kept apart from ``train.py`` (and scikit-learn) so that a command can check, in a second and
before any orchestration starts, that the store holds enough matured deploys to train on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from features.history.schema import History
from features.history.timestamps import utc_timestamp
from features.labels.attribution import AttributionConfig, attribute

# Column names of a training table (the contract between the flow and models/).
ID = "deploy_id"
TIME = "created_at"
MATURED = "matured_at"  # when the label became final


@dataclass(frozen=True)
class Split:
    """Positions (in the time-sorted table) of the training and test periods, and their bounds."""

    train: np.ndarray
    test: np.ndarray
    test_start: pd.Timestamp
    rule: str

    def describe(self, frame: pd.DataFrame) -> dict[str, Any]:
        t = frame[TIME]
        return {
            "rule": self.rule,
            "train_start": str(t.iloc[self.train].min()),
            "train_end": str(t.iloc[self.train].max()),
            "test_start": str(t.iloc[self.test].min()),
            "test_end": str(t.iloc[self.test].max()),
        }


def time_split(frame: pd.DataFrame, test_fraction: float = 0.2, test_start: pd.Timestamp | None = None) -> Split:
    """The latest ``test_fraction`` of rows by time is the test period, or everything from ``test_start``.

    ``frame`` must be sorted by time. Rows sharing the boundary timestamp all go to the test
    period, so no deploy is split from its same-instant siblings.
    """
    n = len(frame)
    times = frame[TIME]
    if test_start is not None:
        start = utc_timestamp(test_start, "test_start")
        rule = f"test_start={start.isoformat()}"
    else:
        if not 0 < test_fraction < 1:
            raise ValueError(f"test fraction must be in (0, 1), got {test_fraction}")
        if n < 2:
            raise ValueError("need at least two rows to split")
        first_test = min(n - 1, max(1, int(math.floor(n * (1 - test_fraction)))))
        start = times.iloc[first_test]
        rule = f"test_fraction={test_fraction}"
    is_test = (times >= start).to_numpy()
    train, test = np.flatnonzero(~is_test), np.flatnonzero(is_test)
    if len(train) == 0 or len(test) == 0:
        raise ValueError(f"split {rule} leaves {len(train)} training and {len(test)} test rows")
    return Split(train=train, test=test, test_start=start, rule=rule)


def matured_labels(labels: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """The eligible deploys whose label is final (id, failed, matured_at), and how many were left out."""
    eligible = labels["eligible"].fillna(False).astype(bool)
    mature = labels["mature"].fillna(False).astype(bool)
    keep = labels.loc[eligible & mature, [ID, "failed", MATURED]]
    excluded = {"immature": int((eligible & ~mature).sum()), "not_eligible": int((~eligible).sum())}
    return keep, excluded


@dataclass(frozen=True)
class TrainingPeriod:
    """How many rows training would get, counted from labels alone (no features): a cheap check
    that can refuse a run before any orchestration starts."""

    matured: int
    train_rows: int
    train_failures: int
    excluded: dict[str, int]
    #: why the time split itself fails (e.g. a test start before every matured deploy)
    split_error: str | None = None


def training_period(
    history: History,
    attribution: AttributionConfig,
    test_fraction: float,
    test_start: pd.Timestamp | None,
    as_of: pd.Timestamp | None = None,
) -> TrainingPeriod:
    """The matured rows and the training period's rows and failures that ``train`` would split off."""
    keep, excluded = matured_labels(attribute(history, attribution, as_of).deploy_labels)
    times = history.deploys[[ID, TIME]].merge(keep[[ID, "failed"]], on=ID, how="inner", validate="one_to_one")
    times = times.assign(**{TIME: pd.to_datetime(times[TIME], utc=True)}).sort_values(TIME, kind="stable")
    times = times.reset_index(drop=True)
    if len(times) == 0:
        return TrainingPeriod(0, 0, 0, excluded)
    try:
        split = time_split(times, test_fraction, test_start)
    except ValueError as exc:
        return TrainingPeriod(len(times), 0, 0, excluded, split_error=str(exc))
    failed = times["failed"].astype(bool).to_numpy()[split.train]
    return TrainingPeriod(len(times), len(split.train), int(failed.sum()), excluded)
