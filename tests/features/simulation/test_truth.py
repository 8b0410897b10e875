"""``TrueHazard``: the simulator's own probabilities, reproduced for real deploys and moved by the hazard's terms."""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import pytest

from features.simulation.simulator import SimulatedHistory, SimulationConfig, simulate
from features.simulation.truth import TrueHazard

CONFIG = SimulationConfig(days=30, services=8, seed=1)


@functools.cache
def _sim() -> tuple[SimulatedHistory, TrueHazard]:
    sim = simulate(CONFIG)
    return sim, TrueHazard.of(CONFIG, sim)


def _p(truth: TrueHazard, row: object, **changes: object) -> float:
    values = {
        "service": row.service,  # type: ignore[attr-defined]
        "author": row.author,  # type: ignore[attr-defined]
        "at": row.created_at,  # type: ignore[attr-defined]
        "lines": float(row.lines_added + row.lines_deleted),  # type: ignore[attr-defined]
        "touches_infra": bool(row.touches_infra),  # type: ignore[attr-defined]
        "is_rollback": bool(row.is_rollback),  # type: ignore[attr-defined]
        "environment": row.environment,  # type: ignore[attr-defined]
    }
    return truth.probability(**{**values, **changes})  # type: ignore[arg-type]


def test_reproduces_the_simulators_probability_of_upcoming_and_historic_deploys() -> None:
    sim, truth = _sim()
    upcoming = sim.upcoming.merge(sim.upcoming_truth, on="deploy_id")
    got = np.array([_p(truth, r) for r in upcoming.itertuples()])
    assert len(upcoming) and np.array_equal(got, upcoming["p_incident"].to_numpy())
    past = sim.history.deploys.merge(sim.deploy_truth, on="deploy_id")
    past = past[(past["environment"] == "production") & (past["status"] != "canceled")]
    got = np.array([_p(truth, r) for r in past.itertuples()])
    assert len(past) > 100 and np.allclose(got, past["p_incident"].to_numpy(), rtol=0, atol=1e-15)


def test_moves_with_the_hazard_terms_an_advice_changes() -> None:
    sim, truth = _sim()
    row = next(sim.upcoming.itertuples())
    monday_morning = pd.Timestamp("2026-02-09T10:00:00Z")
    saturday_night = pd.Timestamp("2026-02-07T23:00:00Z")
    assert _p(truth, row, at=saturday_night) > _p(truth, row, at=monday_morning)  # outside_hours term
    assert _p(truth, row, lines=10.0) < _p(truth, row, lines=5000.0)  # log_size term
    h = CONFIG.hazard
    p, q = _p(truth, row, at=monday_morning, lines=5000.0), _p(truth, row, at=monday_morning, lines=2500.0)
    logit = np.log(p / (1 - p)) - np.log(q / (1 - q))
    assert logit == pytest.approx((h.log_size + h.infra_x_log_size * bool(row.touches_infra)) * np.log(5001 / 2501))
    assert _p(truth, row, environment="staging") == 0.0
