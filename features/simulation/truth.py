"""The simulator's true hazard of any deploy, including deploys that never happened (advised variants).

``TrueHazard`` evaluates the documented deploy hazard (``simulator.hazard_logit``) for a deploy given
as plain values, against the simulated history as it stood at the end: flips of the service's flags
in production in the hour before, the service's incidents of the last 7 days, the author's deploys
before, and the service's random base risk (recomputed from the seed, which fixes it). It is how the
advice benchmark asks "would this change truly have lowered the risk?". Evaluation only: nothing in
the pipeline may read it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.simulation.simulator import (
    _DAY,
    _HOUR,
    HAZARD_FLIP_ACTIONS,
    DeployHazard,
    SimulatedHistory,
    SimulationConfig,
    _organisation,
    _sigmoid,
    hazard_logit,
)


def _seconds(values: pd.Series) -> np.ndarray:
    return (pd.to_datetime(values, utc=True).dt.as_unit("s").astype("int64")).to_numpy()


def _by_key(keys: pd.Series, seconds: np.ndarray) -> dict[str, np.ndarray]:
    frame = pd.DataFrame({"k": keys.astype("string").to_numpy(dtype=object), "t": seconds})
    frame = frame.dropna(subset=["k"])
    return {str(k): np.sort(g["t"].to_numpy(dtype=np.int64)) for k, g in frame.groupby("k", sort=False)}


def _count(times: np.ndarray | None, t: int, window: int | None) -> int:
    """Events strictly before ``t`` (and at or after ``t - window``), as the simulator counts them."""
    if times is None:
        return 0
    hi = int(np.searchsorted(times, t, side="left"))
    lo = 0 if window is None else int(np.searchsorted(times, t - window, side="left"))
    return hi - lo


@dataclass(frozen=True)
class TrueHazard:
    """The simulator's deploy hazard as a function of one deploy's values; see the module docstring."""

    hazard: DeployHazard
    base_risk: Mapping[str, float]
    flips: Mapping[str, np.ndarray]  # service -> production flip times (unix seconds)
    incidents: Mapping[str, np.ndarray]  # service -> incident times
    author_deploys: Mapping[str, np.ndarray]  # author -> deploy times (all environments, as the simulator)

    @classmethod
    def of(cls, config: SimulationConfig, sim: SimulatedHistory) -> TrueHazard:
        """The truth of ``sim``, which ``simulate(config)`` made (the seed gives the services' base risk)."""
        r_org = np.random.default_rng(np.random.SeedSequence(config.seed).spawn(9)[0])
        t0 = int(pd.Timestamp(config.start, tz="UTC").floor("D").timestamp())
        org = _organisation(r_org, config, t0, t0 + config.days * _DAY)
        tog = sim.history.toggle_events
        flips = tog.loc[
            (tog["environment"].astype("string") == "production").fillna(False).to_numpy(dtype=bool)
            & tog["action"].astype("string").isin(list(HAZARD_FLIP_ACTIONS)).fillna(False).to_numpy(dtype=bool)
        ]
        inc, dep = sim.history.incidents, sim.history.deploys
        return cls(
            hazard=config.hazard,
            base_risk={str(s): float(r) for s, r in zip(org.service, org.base_risk, strict=True)},
            flips=_by_key(flips["service"], _seconds(flips["occurred_at"])),
            incidents=_by_key(inc["service"], _seconds(inc["created_at"])),
            author_deploys=_by_key(dep["author"], _seconds(dep["created_at"])),
        )

    def probability(
        self,
        *,
        service: str,
        author: str | None,
        at: pd.Timestamp,
        lines: float,
        touches_infra: bool = False,
        is_rollback: bool = False,
        environment: str = "production",
    ) -> float:
        """True probability that this deploy (``lines`` added + deleted, shipping ``at``) causes an incident."""
        if environment != "production":
            return 0.0
        t = int(pd.Timestamp(at).timestamp())
        logit = hazard_logit(
            self.hazard,
            log_size=np.array([np.log1p(lines)]),
            flips_1h=np.array([_count(self.flips.get(service), t, _HOUR)]),
            incidents_7d=np.array([_count(self.incidents.get(service), t, 7 * _DAY)]),
            author_prior=np.array([_count(self.author_deploys.get(author or ""), t, None)]),
            t=np.array([t]),
            touches_infra=np.array([bool(touches_infra)]),
            is_rollback=np.array([bool(is_rollback)]),
            base_risk=np.array([self.base_risk.get(service, 0.0)]),
        )
        return float(_sigmoid(logit)[0])
