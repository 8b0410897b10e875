"""The service's request and response schemas: bounded, extra fields forbidden, NaN refused."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import pandas as pd
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, field_validator

from features.history.schema import ENVIRONMENTS, MAX_LINES
from models.scoring.upcoming import UpcomingDeploy
from models.serving.advice import AdviceOut
from models.training.config import Band

#: Most deploys one batch request may carry.
MAX_BATCH = 500


MAX_FILES = 10_000_000


MAX_COMMITS = 1_000_000


MAX_EXTRA = 1e15


_EARLIEST = datetime.fromisoformat("1990-01-01T00:00:00+00:00")


_LATEST = datetime.fromisoformat("2200-01-01T00:00:00+00:00")


Text = Annotated[str, StringConstraints(min_length=1, max_length=256)]


ExtraName = Annotated[str, StringConstraints(pattern=r"^extra_[A-Za-z0-9_]{1,100}$")]


ExtraValue = Annotated[float, Field(allow_inf_nan=False, ge=-MAX_EXTRA, le=MAX_EXTRA)]


class DeployIn(BaseModel):
    """One upcoming deploy. Only ``service`` is required; every omitted size is scored as missing."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    service: Text
    environment: Literal[ENVIRONMENTS] = "production"  # type: ignore[valid-type]
    author: Text | None = None
    lines_added: Annotated[int, Field(strict=True, ge=0, le=MAX_LINES)] | None = None
    lines_deleted: Annotated[int, Field(strict=True, ge=0, le=MAX_LINES)] | None = None
    files_changed: Annotated[int, Field(strict=True, ge=0, le=MAX_FILES)] | None = None
    commit_count: Annotated[int, Field(strict=True, ge=0, le=MAX_COMMITS)] | None = None
    commit_sha: Annotated[str, StringConstraints(min_length=1, max_length=256)] | None = None
    deploy_id: Text | None = None
    touches_infra: Annotated[bool, Field(strict=True)] | None = None
    is_rollback: Annotated[bool, Field(strict=True)] | None = None
    planned_at: AwareDatetime | None = Field(None, description="When it ships (with a UTC offset); default now")
    squad: Text | None = None
    tribe: Text | None = None
    extra: dict[ExtraName, ExtraValue] = Field(default_factory=dict, max_length=64)
    advice: Annotated[bool, Field(strict=True)] = Field(
        False, description="Also return what would make this deploy safer (docs/advice.md)"
    )

    @field_validator("planned_at")
    @classmethod
    def _plausible_time(cls, value: datetime | None) -> datetime | None:
        if value is not None and not _EARLIEST <= value < _LATEST:
            raise ValueError("planned_at must be between 1990 and 2200")
        return value

    def to_deploy(self, now: pd.Timestamp) -> UpcomingDeploy:
        at = pd.Timestamp(self.planned_at).tz_convert("UTC") if self.planned_at is not None else now
        return UpcomingDeploy(
            service=self.service,
            created_at=at,
            deploy_id=self.deploy_id or self.commit_sha,
            environment=self.environment,
            author=self.author,
            lines_added=self.lines_added,
            lines_deleted=self.lines_deleted,
            files_changed=self.files_changed,
            commit_count=self.commit_count,
            commit_sha=self.commit_sha,
            touches_infra=self.touches_infra,
            is_rollback=self.is_rollback,
            squad=self.squad,
            tribe=self.tribe,
            extra=dict(self.extra),
        )


class BatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    deploys: list[DeployIn] = Field(min_length=1, max_length=MAX_BATCH)


class FactorOut(BaseModel):
    feature: str
    value: float | str
    contribution: float = Field(description="Log-odds contribution (see explanation_method)")
    direction: Literal["up", "down"]


class ModelRef(BaseModel):
    name: str
    version: str
    run_id: str | None
    alias: str | None


class ScoreOut(BaseModel):
    deploy_id: str | None
    service: str | None
    scored_for: str = Field(description="The ship time the features were computed at (UTC)")
    probability: float = Field(description="Calibrated probability that the deploy causes an incident")
    band: Band
    factors: list[FactorOut]
    features: dict[str, float | str]
    flags: dict[str, Any]
    explanation_method: str
    model: ModelRef
    store_version: int
    data_end: str | None = Field(description="The newest event time in the history store (UTC), None when empty")
    data_age_hours: float | None = Field(description="Hours from data_end to scored_for")
    stale_history: bool = Field(
        description="data_age_hours is above the service's max_data_age_hours: the features miss recent history"
    )
    advice: list[AdviceOut] | None = Field(None, description="With advice: true; best first (docs/advice.md)")


class BatchOut(BaseModel):
    scores: list[ScoreOut]


class ModelOut(BaseModel):
    name: str
    version: str
    run_id: str | None
    alias: str | None
    kind: str
    trained_at: str | None
    test_metrics: dict[str, float]
    bands: dict[str, Any]
    features: dict[str, list[str]]
    explanation_method: str
    store_version: int
    loaded_at: float


class StatusOut(BaseModel):
    status: str
    detail: str | None = None


class ErrorOut(BaseModel):
    detail: Any = Field(description="What was wrong with the request (or why the service cannot answer)")


_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorOut} for code in (400, 401, 413, 503)}


EXPLANATION = {
    "logreg": "coefficient x standardised value (log-odds), missing indicator included",
    "hgb": "log-odds output minus output with the feature at its training median (categories: unknown)",
}
