"""Drift you can test against: the simulator's deploy hazard changed from a given day, with the truth recorded.

A ``HazardDrift`` is a ``simulator.HazardChange``: from ``at`` on, it adds a logit shift to every
deploy's true hazard. The kinds model changes in how teams ship:

- ``toggles``: feature-flag flips in the hour before a deploy matter three times more
  (the flips coefficient x ``factor``, default 3).
- ``shipping``: teams move to small changes behind flags: change size stops mattering, flips
  matter three times more, touching infrastructure no more than any change; the size effect is
  pivoted so the overall failure rate stays about the same (a change of ranking, not of level).
- ``squad``: a third of the squads change their process and get riskier (+``factor`` x 0.4
  logit on every deploy of theirs, default +1.2), so the model under-predicts for them.

Monitoring is evaluated on these (benchmarks/monitoring.py): the alarm must fire after ``at`` and
never on the undrifted run of the same seed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from features.simulation.simulator import DeployHazard, SimulationConfig

DriftKind = Literal["toggles", "shipping", "squad"]
DRIFT_KINDS: tuple[str, ...] = ("toggles", "shipping", "squad")
#: Pivot of the size effect under ``shipping``, chosen so the failure rate stays about level (measured).
_MEAN_LOG_SIZE = 4.6


@dataclass(frozen=True)
class HazardDrift:
    """The hazard from ``at`` (unix seconds) on; ``factor`` scales the kind's effect (see the module doc)."""

    kind: DriftKind
    at: int
    factor: float = 3.0
    hazard: DeployHazard = DeployHazard()

    def __post_init__(self) -> None:
        if self.kind not in DRIFT_KINDS:
            raise ValueError(f"unknown drift kind {self.kind!r} (expected one of {', '.join(DRIFT_KINDS)})")

    def logit_delta(self, *, t: np.ndarray, squad: np.ndarray, log_size: np.ndarray, flips_1h: np.ndarray,
                    touches_infra: np.ndarray) -> np.ndarray:  # fmt: skip
        after = (np.asarray(t) >= self.at).astype(float)
        h = self.hazard
        flips = np.minimum(np.asarray(flips_1h, dtype=float), 3)
        if self.kind == "toggles":
            delta = (self.factor - 1.0) * h.flips_1h * flips
        elif self.kind == "shipping":
            size_drop = h.log_size
            infra = np.asarray(touches_infra, dtype=float)
            delta = (
                -size_drop * (np.asarray(log_size) - _MEAN_LOG_SIZE)
                + (self.factor - 1.0) * h.flips_1h * flips
                - infra * (h.touches_infra + h.infra_x_log_size * np.asarray(log_size))
            )
        else:
            affected = (np.asarray(squad) % 3) == 0
            delta = affected * self.factor * 0.4
        return after * delta

    def describe(self, start: str) -> dict[str, Any]:
        """The truth to record next to the simulation (what changed, from when)."""
        out = asdict(self)
        out["hazard"] = asdict(self.hazard)
        out["at_iso"] = pd.Timestamp(self.at, unit="s", tz="UTC").isoformat()
        out["at_day"] = int((self.at - pd.Timestamp(start, tz="UTC").floor("D").timestamp()) // 86_400)
        if self.kind == "squad":
            out["affected_squads"] = "squad index % 3 == 0 (the simulator's squad order)"
        return out


def drifted_config(config: SimulationConfig, kind: str, at_day: int, factor: float = 3.0) -> SimulationConfig:
    """``config`` with the hazard changed from day ``at_day`` (0 = the first simulated day)."""
    if not 0 <= at_day <= config.days:
        raise ValueError(f"--drift-at-day must be within [0, {config.days}], got {at_day}")
    start = int(pd.Timestamp(config.start, tz="UTC").floor("D").timestamp())
    drift = HazardDrift(kind, start + at_day * 86_400, factor, config.hazard)  # type: ignore[arg-type]
    return SimulationConfig(**{**{f: getattr(config, f) for f in config.__dataclass_fields__}, "hazard_change": drift})
