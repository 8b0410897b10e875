"""A candidate's prior risk is the champion's score of that deploy computed point-in-time: what happened after the
deploy (including the incident being asked about) never changes it."""

from __future__ import annotations

import pandas as pd

from features.history.schema import History
from features.labels.attribution import attribute
from models.scoring.context import ModelInfo, build_feature_index, make_bundle, make_scoring_context
from models.scoring.explain import score_frame
from models.scoring.suspects import SuspectContext, build_suspect_context, incident_suspects
from tests.helpers.scoring import ATTRIBUTION, FEATURES, fitted, serving_metadata, simulated


def _context(history: History) -> SuspectContext:
    bundle = make_bundle(fitted("logreg"), ModelInfo("t", "1"), {"feature_config": None})
    att = attribute(history, ATTRIBUTION)
    return build_suspect_context(history, build_feature_index(history, att.deploy_labels, FEATURES), bundle.scorer, att)


def _cut(history: History, at: pd.Timestamp) -> History:
    """The history as it stood at ``at``: rows created strictly before it."""
    d, t, i = history.deploys, history.toggle_events, history.incidents
    return History(d[d["created_at"] < at], t[t["occurred_at"] < at], i[i["created_at"] < at])


def test_prior_uses_only_history_strictly_before_the_deploy() -> None:
    sim = simulated()
    h = sim.history
    truth = h.incidents.merge(sim.incident_truth, on="incident_id")
    row = truth[truth["cause_kind"].eq("deploy")].iloc[10]
    full = _context(h)
    answer = incident_suspects(full, row["incident_id"], top=50)
    deploy_ids = [s["change_id"] for s in answer["suspects"] if s["change_kind"] == "deploy"]
    assert len(deploy_ids) >= 2
    for deploy_id in deploy_ids:
        created = h.deploys.loc[h.deploys["deploy_id"].eq(deploy_id), "created_at"].iloc[0]
        past = _context(_cut(h, created + pd.Timedelta(microseconds=1)))
        assert past.prior(deploy_id).probability == full.prior(deploy_id).probability
    # and it is the same score the batch (training) path gives that deploy
    first = deploy_ids[0]
    bundle = make_bundle(fitted("logreg"), ModelInfo("t", "1"), serving_metadata(fitted("logreg")))
    batch = score_frame(h.deploys[h.deploys["deploy_id"].eq(first)], make_scoring_context(bundle, h, 1))
    assert abs(batch["probability"].iloc[0] - full.prior(first).probability) < 1e-9
    shares = {s["change_id"]: s["why"]["prior_risk"] for s in answer["suspects"]}
    assert shares[first] == full.prior(first).probability
