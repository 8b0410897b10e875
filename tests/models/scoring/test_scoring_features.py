"""The fast one-deploy feature path equals the training build (``build_features``) exactly."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from features.history.schema import History
from features.labels.attribution import attribute
from features.pointintime.compute import FeatureConfig, build_features, feature_columns
from models.scoring.context import build_feature_index, entity_features
from models.scoring.upcoming import UpcomingDeploy, deploys_frame, deploys_from_frame
from tests.helpers.scoring import ATTRIBUTION, FEATURES, simulated


def _assert_rows_equal(index, deploys: list[UpcomingDeploy], reference: pd.DataFrame) -> None:
    numeric, categorical = feature_columns(reference)
    for i, deploy in enumerate(deploys):
        num, cats = entity_features(index, deploy)
        assert set(num) == set(numeric)
        row = reference.iloc[i]
        wrong = {c: (num[c], row[c]) for c in numeric if num[c] != row[c]}
        assert not wrong, f"deploy {deploy.deploy_id}: {wrong}"
        assert cats == {c: row[c] for c in categorical}


@pytest.mark.parametrize(
    "config",
    [
        FEATURES,
        FeatureConfig(flip_window_minutes=90, stale_after_days=3, history_environments=("production", "staging")),
    ],
)
def test_every_deploy_of_a_history_equals_the_training_build(config: FeatureConfig) -> None:
    sim = simulated(days=60, services=12, seed=3)
    labels = attribute(sim.history, ATTRIBUTION).deploy_labels
    index = build_feature_index(sim.history, labels, config)
    entities = pd.concat([sim.history.deploys, sim.upcoming], ignore_index=True)
    reference = build_features(entities, sim.history, labels, config)
    assert len(entities) > 800
    _assert_rows_equal(index, deploys_from_frame(entities), reference)


def test_new_entities_missing_values_extras_and_one_row_frames() -> None:
    sim = simulated()
    labels = attribute(sim.history, ATTRIBUTION).deploy_labels
    index = build_feature_index(sim.history, labels, FEATURES)
    known = sim.history.deploys.iloc[-1]
    at = pd.Timestamp(known["created_at"]) + pd.Timedelta(minutes=5)
    deploys = [
        UpcomingDeploy(service="never-seen-svc", created_at=at, author="new.person", lines_added=5),
        UpcomingDeploy(service=str(known["service"]), created_at=at, author=None),  # sizes all missing
        UpcomingDeploy(
            service="reviews-svc",
            created_at=at,
            author=str(known["author"]),
            lines_added=-3,
            touches_infra=True,
            is_rollback=False,
            squad="sq",
            extra={"extra_tests": 4.0},
        ),
        UpcomingDeploy(
            service=str(known["service"]),
            created_at=pd.Timestamp(known["created_at"]),
            author=str(known["author"]),
            lines_added=10,
            lines_deleted=2,
            files_changed=1,
        ),
    ]
    for deploy in deploys:  # each as its own one-row frame, as a scoring request would be
        reference = build_features(deploys_frame([deploy]), sim.history, labels, FEATURES)
        _assert_rows_equal(index, [deploy], reference)
    num, _ = entity_features(index, deploys[0])
    assert num["service_prior_deploys"] == 0 and num["author_prior_deploys"] == 0
    assert num["hours_since_prev_deploy"] == FEATURES.max_gap_days * 24


def test_empty_history_gives_the_priors() -> None:
    empty = History.empty()
    labels = attribute(empty, ATTRIBUTION).deploy_labels
    index = build_feature_index(empty, labels, FEATURES)
    deploy = UpcomingDeploy(service="a", created_at=pd.Timestamp("2026-03-06T15:00:00Z"), author="x")
    num, cats = entity_features(index, deploy)
    reference = build_features(deploys_frame([deploy]), empty, labels, FEATURES)
    _assert_rows_equal(index, [deploy], reference)
    assert math.isclose(num["service_failure_rate"], FEATURES.base_failure_rate)
    assert num["is_friday_afternoon"] == 1.0 and cats["squad"] == "(missing)"
