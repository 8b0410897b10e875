"""Code tests of the scoring rules one request and a batch share: team filling and ``new_author``."""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.labels.attribution import attribute
from features.labels.dora import fill_teams, service_teams, team_lookup
from features.pointintime.compute import build_features
from models.scoring.context import build_feature_index, entity_features
from models.scoring.explain import new_author, with_teams
from models.scoring.upcoming import UpcomingDeploy, deploys_frame
from tests.helpers.scoring import ATTRIBUTION, FEATURES, simulated


def _deploys() -> list[UpcomingDeploy]:
    history = simulated().history
    known = history.deploys.iloc[-1]
    service, author = str(known["service"]), str(known["author"])
    at = pd.Timestamp(known["created_at"]) + pd.Timedelta(minutes=5)
    return [
        UpcomingDeploy(service=service, created_at=at, author=author),  # both teams filled
        UpcomingDeploy(service=service, created_at=at, author="new.person", squad="given"),  # tribe only
        UpcomingDeploy(service="never-seen-svc", created_at=at, author=None),  # nothing to fill from
        UpcomingDeploy(service=None, created_at=at, author=author, tribe="t"),
    ]


def test_a_request_and_a_batch_fill_teams_by_the_same_rule() -> None:
    history = simulated().history
    deploys = _deploys()
    teams = team_lookup(history.deploys)
    one_by_one = [d.with_teams(teams) for d in deploys]
    frame, filled = with_teams(deploys_frame(deploys), history)
    expected = service_teams(history.deploys).set_index("service").loc[str(deploys[0].service)]
    assert (one_by_one[0][0].squad, one_by_one[0][0].tribe) == (expected["squad"], expected["tribe"])
    assert one_by_one[1][0].squad == "given" and one_by_one[1][1] == ("tribe",)
    for i, (deploy, names) in enumerate(one_by_one):
        assert frame["squad"].iloc[i] == deploy.squad or (pd.isna(frame["squad"].iloc[i]) and deploy.squad is None)
        assert frame["tribe"].iloc[i] == deploy.tribe or (pd.isna(frame["tribe"].iloc[i]) and deploy.tribe is None)
        assert tuple(t for t in ("squad", "tribe") if filled[t].iloc[i]) == names
    assert fill_teams("x", None, None, {"x": (None, "tr")}) == (None, "tr", ("tribe",))


def test_new_author_is_a_named_author_without_prior_deploys_in_both_paths() -> None:
    sim = simulated()
    labels = attribute(sim.history, ATTRIBUTION).deploy_labels
    deploys = _deploys()[:3]
    features = build_features(deploys_frame(deploys), sim.history, labels, FEATURES)
    batch = new_author(features["author_prior_deploys"], features["author_missing"])
    assert batch.tolist() == [False, True, False]  # known author, new author, missing author
    index = build_feature_index(sim.history, labels, FEATURES)
    single = [entity_features(index, d)[0] for d in deploys]
    assert [bool(new_author(n["author_prior_deploys"], n["author_missing"])) for n in single] == batch.tolist()
    assert np.asarray(new_author(np.array([0.0]), np.array([1.0]))).tolist() == [False]
