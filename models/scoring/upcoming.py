"""The deploy to score: an upcoming deploy as plain values, and frames of them for the batch path."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd

from features.history.schema import EXTRA_PREFIX
from features.history.timestamps import utc_micros
from features.labels.dora import fill_teams

_SIZE_COLUMNS = ("lines_added", "lines_deleted", "files_changed", "commit_count")


@dataclass(frozen=True)
class UpcomingDeploy:
    """One deploy about to ship, in canonical deploys-table terms; ``created_at`` is when it ships (UTC)."""

    service: str | None
    created_at: pd.Timestamp
    deploy_id: str | None = None
    environment: str = "production"
    author: str | None = None
    lines_added: float | None = None
    lines_deleted: float | None = None
    files_changed: float | None = None
    commit_count: float | None = None
    commit_sha: str | None = None
    touches_infra: bool | None = None
    is_rollback: bool | None = None
    squad: str | None = None
    tribe: str | None = None
    extra: Mapping[str, float] = field(default_factory=dict)

    @property
    def micros(self) -> int:
        """Ship time as UTC microseconds since the epoch (the feature code's time axis)."""
        return utc_micros(self.created_at, "created_at")

    def with_teams(self, teams: Mapping[str, tuple[str | None, str | None]]) -> tuple[UpcomingDeploy, tuple[str, ...]]:
        """Squad and tribe filled from the service's latest deploy that names them, and which were filled."""
        squad, tribe, filled = fill_teams(self.service, self.squad, self.tribe, teams)
        if not filled:
            return self, ()
        return replace(self, squad=squad, tribe=tribe), filled


def deploys_frame(deploys: Sequence[UpcomingDeploy], extra_columns: Sequence[str] = ()) -> pd.DataFrame:
    """The deploys as a canonical entity frame for ``build_features`` (the batch path's input)."""
    extras = sorted({*extra_columns, *(k for d in deploys for k in d.extra)})
    created = pd.to_datetime([d.micros for d in deploys], unit="us", utc=True)
    frame = pd.DataFrame(
        {
            "deploy_id": pd.array([d.deploy_id for d in deploys], dtype="string"),
            "service": pd.array([d.service for d in deploys], dtype="string"),
            "environment": pd.array([d.environment for d in deploys], dtype="string"),
            "created_at": pd.Series(created).dt.as_unit("us"),
            "author": pd.array([d.author for d in deploys], dtype="string"),
            "commit_sha": pd.array([d.commit_sha for d in deploys], dtype="string"),
            **{c: pd.array([getattr(d, c) for d in deploys], dtype="Float64") for c in _SIZE_COLUMNS},
            "touches_infra": pd.array([d.touches_infra for d in deploys], dtype="boolean"),
            "is_rollback": pd.array([d.is_rollback for d in deploys], dtype="boolean"),
            "squad": pd.array([d.squad for d in deploys], dtype="string"),
            "tribe": pd.array([d.tribe for d in deploys], dtype="string"),
        }
    )
    for name in extras:
        frame[name] = pd.array([d.extra.get(name) for d in deploys], dtype="Float64")
    return frame


def deploys_from_frame(frame: pd.DataFrame) -> list[UpcomingDeploy]:
    """Canonical deploy rows (e.g. the store's deploys table) as ``UpcomingDeploy`` values."""
    extras = [c for c in frame.columns if str(c).startswith(EXTRA_PREFIX)]
    out = []
    for row in frame.to_dict("records"):
        out.append(
            UpcomingDeploy(
                service=_opt_str(row.get("service")),
                created_at=pd.Timestamp(row["created_at"]),
                deploy_id=_opt_str(row.get("deploy_id")),
                environment=_opt_str(row.get("environment")) or "production",
                author=_opt_str(row.get("author")),
                commit_sha=_opt_str(row.get("commit_sha")),
                touches_infra=_opt_bool(row.get("touches_infra")),
                is_rollback=_opt_bool(row.get("is_rollback")),
                squad=_opt_str(row.get("squad")),
                tribe=_opt_str(row.get("tribe")),
                extra={c: float(row[c]) for c in extras if _present(row.get(c))},
                **{c: float(row[c]) if _present(row.get(c)) else None for c in _SIZE_COLUMNS},
            )
        )
    return out


def _present(v: Any) -> bool:
    return v is not None and v is not pd.NA and not (isinstance(v, float) and math.isnan(v))


def _opt_str(v: Any) -> str | None:
    return str(v) if _present(v) else None


def _opt_bool(v: Any) -> bool | None:
    return bool(v) if _present(v) else None


def now_utc() -> pd.Timestamp:
    """Now, as the ship time of a deploy that gives none (microsecond precision, like the store)."""
    return pd.Timestamp(time.time_ns() // 1000, unit="us", tz="UTC")
