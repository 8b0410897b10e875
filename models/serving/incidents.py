"""Incident routes: ``POST /v1/incidents/suspects`` and the PagerDuty v3 webhook ``POST /v1/webhooks/pagerduty``.

Both answer with the ranked suspects of an incident (``models.scoring.suspects``); nothing is
stored. The suspects context (the learned suspect model and the change index) is built for each
new snapshot in the refresh thread (``ScoringState.on_swap``), never on the request path. Every bad
input gets a 4xx naming the field: 404 for an unknown incident or service, 422 otherwise.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, HTTPException, Response
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, model_validator

from features.history.schema import ENVIRONMENTS
from features.labels.dependencies import Dependencies
from models.scoring.context import ScoringContext
from models.scoring.suspects import (
    SuspectContext,
    SuspectsError,
    build_suspect_context,
    incident_suspects,
    load_dependencies,
    suspects,
)
from models.serving.schemas import _ERRORS, ErrorOut
from models.serving.state import ScoringState

log = logging.getLogger("incident_risk.service")

_JSON = TypeAdapter(Any)
#: Most suspects one answer may list.
MAX_TOP = 50

Text = Annotated[str, StringConstraints(min_length=1, max_length=256)]


class SuspectsIn(BaseModel):
    """An incident: one in the store (``incident_id``), or one opening on ``service`` at ``at`` (default now)."""

    model_config = ConfigDict(extra="forbid")

    incident_id: Text | None = None
    service: Text | None = None
    at: AwareDatetime | None = Field(None, description="When the incident opened (with a UTC offset); default now")
    environment: Literal[ENVIRONMENTS] = "production"  # type: ignore[valid-type]
    top: Annotated[int, Field(strict=True, ge=1, le=MAX_TOP)] = 5

    @model_validator(mode="after")
    def _one_incident(self) -> SuspectsIn:
        if (self.incident_id is None) == (self.service is None):
            raise ValueError("give exactly one of incident_id (an incident in the store) or service")
        return self


def context_for(snap: ScoringContext, dependencies: Dependencies | None = None) -> SuspectContext:
    """The suspects context of a snapshot: its history, feature index and champion, under the model's attribution."""
    return build_suspect_context(
        snap.history,
        snap.index,
        snap.bundle.scorer,
        snap.bundle.attribution_config,
        dependencies=dependencies,
        info={**snap.bundle.info.as_dict(), "store_version": snap.store_version},
    )


class SuspectContexts:
    """The suspects context of the current snapshot, rebuilt off the request path when the snapshot moves."""

    def __init__(self, dependencies: Path | None = None) -> None:
        self.dependencies_path = dependencies
        self.current: SuspectContext | None = None
        self.error: str | None = None
        self._lock = threading.Lock()

    def on_swap(self, snap: ScoringContext) -> None:
        with self._lock:
            try:
                deps = load_dependencies(self.dependencies_path) if self.dependencies_path else None
                self.current = context_for(snap, deps)
                self.error = None
            except Exception as exc:  # keep the previous context; /v1/incidents answers 503 until one exists
                self.error = f"{type(exc).__name__}: {exc}"
                log.warning("suspects context not rebuilt: %s", self.error)


#: The service's errors plus 404: an unknown incident or service (named in ``detail``).
_SUSPECT_ERRORS: dict[int | str, dict[str, Any]] = {**_ERRORS, 404: {"model": ErrorOut}}


def _bad(exc: SuspectsError, prefix: Sequence[str] = ("body",)) -> HTTPException:
    return HTTPException(exc.status, [{"loc": [*prefix, exc.field], "msg": exc.message, "type": "value_error"}])


def _field_error(path: str, message: str) -> HTTPException:
    return HTTPException(422, [{"loc": ["body", *path.split(".")], "msg": message, "type": "value_error"}])


def _dig(payload: Any, path: str) -> Any:
    value = payload
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            raise _field_error(path, "missing")
        value = value[key]
    return value


def _text(payload: Any, path: str) -> str:
    value = _dig(payload, path)
    if not isinstance(value, str) or not value.strip() or len(value) > 256:
        raise _field_error(path, "expected a non-empty string of at most 256 characters")
    return value.strip()


def parse_pagerduty(payload: Any) -> dict[str, Any]:
    """The incident of a PagerDuty v3 ``incident.triggered`` webhook: id, service (the service summary, as the
    PagerDuty connector maps it), opening time, title and link. Any other event type is refused."""
    if not isinstance(payload, dict):
        raise _field_error("event", "expected a PagerDuty v3 webhook object with an 'event'")
    event_type = _text(payload, "event.event_type")
    if event_type != "incident.triggered":
        raise _field_error("event.event_type", f"only incident.triggered is answered, got {event_type!r}")
    occurred = _text(payload, "event.occurred_at")
    try:
        at = datetime.fromisoformat(occurred.replace("Z", "+00:00"))
    except ValueError:
        raise _field_error("event.occurred_at", f"not an ISO 8601 time: {occurred!r}") from None
    if at.tzinfo is None:
        raise _field_error("event.occurred_at", "needs a UTC offset")
    data = _dig(payload, "event.data")
    html = data.get("html_url") if isinstance(data, dict) else None
    return {
        "incident_id": _text(payload, "event.data.id"),
        "service": _text(payload, "event.data.service.summary"),
        "at": at,
        "title": data.get("title") if isinstance(data, dict) and isinstance(data.get("title"), str) else None,
        "url": html if isinstance(html, str) else None,
    }


def incidents_router(state: ScoringState, protected: Sequence[Any], dependencies: Path | None = None) -> APIRouter:
    """The incident routes, behind the same auth as ``/v1/score``; builds its context on every snapshot swap."""
    contexts = SuspectContexts(dependencies)
    state.on_swap(contexts.on_swap)
    router = APIRouter(dependencies=list(protected), tags=["incidents"])

    def current() -> SuspectContext:
        ctx = contexts.current
        if ctx is None:
            raise HTTPException(503, f"no suspects context yet ({contexts.error or state.last_error or 'starting'})")
        return ctx

    def json_response(payload: Any) -> Response:
        return Response(_JSON.dump_json(payload), media_type="application/json")

    @router.post("/v1/incidents/suspects", responses=_SUSPECT_ERRORS)
    async def incident_suspects_route(body: SuspectsIn) -> Response:
        """Rank the recent changes that may have caused an incident: a share each, plus "no recent change"."""
        ctx = current()
        try:
            if body.incident_id is not None:
                return json_response(incident_suspects(ctx, body.incident_id, body.top))
            assert body.service is not None
            return json_response(suspects(ctx, body.service, body.at, body.environment, body.top))
        except SuspectsError as exc:
            raise _bad(exc) from None

    @router.post("/v1/webhooks/pagerduty", responses=_SUSPECT_ERRORS)
    async def pagerduty_webhook(payload: Any = Body(...)) -> Response:
        """A PagerDuty v3 ``incident.triggered`` webhook: answers with the suspects; the incident is not stored."""
        incident = parse_pagerduty(payload)
        ctx = current()
        try:
            info = {k: incident[k] for k in ("incident_id", "service", "title", "url")}
            return json_response(suspects(ctx, incident["service"], incident["at"], incident=info))
        except SuspectsError as exc:
            path = {"service": "event.data.service.summary", "at": "event.occurred_at"}.get(exc.field, exc.field)
            raise HTTPException(
                exc.status, [{"loc": ["body", *path.split(".")], "msg": exc.message, "type": "value_error"}]
            ) from None

    return router
