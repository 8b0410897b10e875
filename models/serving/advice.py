"""Advice over HTTP: the response model of one action and the advice events of the served snapshot.

The advice events (``models.scoring.advice.AdviceIndex``) depend only on the store version, so they
are built once per snapshot, in the refresh thread when the snapshot swaps, never per request.
"""

from __future__ import annotations

import threading
from typing import Any

from pydantic import BaseModel, Field

from models.scoring.advice import Action, AdviceConfig, AdviceIndex, advise, build_advice_index
from models.scoring.context import ScoringContext
from models.scoring.upcoming import UpcomingDeploy


class AdviceOut(BaseModel):
    action: Action
    detail: str = Field(description="What to do, in words")
    probability: float = Field(description="The model's probability for the deploy changed by the action")
    change: float = Field(description="probability minus the deploy's score (negative: lower risk)")
    ship_at: str | None = Field(None, description="For waits: the ship time the action was scored at (UTC)")
    parts: int | None = Field(None, description="For splits: into how many deploys")
    author: str | None = Field(None, description="For a different author, when names are configured")


class AdviceEvents:
    """The advice events of the latest snapshot seen; ``get`` builds them once per snapshot."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entry: tuple[ScoringContext, AdviceIndex] | None = None

    def prepare(self, snap: ScoringContext) -> None:
        """The swap hook: build the new snapshot's events before requests ask for them."""
        self.get(snap)

    def get(self, snap: ScoringContext) -> AdviceIndex:
        entry = self._entry
        if entry is not None and entry[0] is snap:
            return entry[1]
        with self._lock:
            entry = self._entry
            if entry is not None and entry[0] is snap:
                return entry[1]
            events = build_advice_index(snap.history, snap.index.config)
            self._entry = (snap, events)
            return events


def advice_payload(
    snap: ScoringContext, deploy: UpcomingDeploy, probability: float, config: AdviceConfig, events: AdviceEvents
) -> list[dict[str, Any]]:
    """The advice list of a scored deploy (``probability`` is its score, read and never changed)."""
    found = advise(snap.index, snap.bundle.scorer, events.get(snap), deploy, probability, config)
    return [a.as_dict() for a in found]
