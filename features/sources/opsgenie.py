"""Opsgenie incidents (``GET /v1/incidents`` pages ``{"data": [...]}``, or single incidents)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from features.history.schema import RECORD_COLUMN
from features.sources.base import ParsedFile, SourceKind, dig
from features.sources.normalize import (
    IncidentOptions,
    environment,
    explicit_causes,
    lookup,
    not_change_related,
    note_other,
    severity,
)
from features.sources.records import load_tool_records, obj, pick, raw_of, text, to_utc

KIND = "opsgenie_incidents"
#: Opsgenie incident statuses; ``closed`` follows ``resolved`` and is resolved too.
STATUSES = {"open": "open", "acknowledged": "acknowledged", "resolved": "resolved", "closed": "resolved"}


class OpsgenieOptions(IncidentOptions):
    """Keys of an ``opsgenie_incidents`` source."""

    #: impacted_service (first of impactedServices, default) | owner_team | a dotted path
    service_field: str = "impacted_service"


def _matches(rec: dict[str, Any]) -> bool:
    return "tinyId" in rec and "message" in rec and ("createdAt" in rec or "status" in rec)


def parse_opsgenie(path: Path, display: str, options: OpsgenieOptions) -> ParsedFile:
    """One canonical incident per Opsgenie incident."""
    tool = load_tool_records(
        path,
        display,
        kind=KIND,
        table="incidents",
        matches=_matches,
        expected="Opsgenie incidents (id, tinyId, message, status, priority, impactedServices, createdAt), "
        'or a {"data": [...]} page',
        envelope_keys=("data",),
        skipped="not an incident",
    )
    rows: list[dict[str, Any]] = []
    for n, rec in tool.records:
        raw_status = text(rec.get("status"))
        status = lookup(STATUSES, raw_status)
        # impactEndDate is set when the incident is resolved; updatedAt moves on later edits
        end = to_utc(rec.get("impactEndDate")) or to_utc(rec.get("updatedAt"))
        if status is None:
            note_other(tool.other, raw_status)
            status = "resolved" if rec.get("impactEndDate") else "open"
        tags: list[Any] = rec["tags"] if isinstance(rec.get("tags"), list) else []
        props = obj(rec.get("extraProperties"))
        if options.service_field == "impacted_service":
            service = text(dig(rec, "impactedServices", 0))
        elif options.service_field == "owner_team":
            service = text(rec.get("ownerTeam"))
        else:
            service = text(pick(rec, options.service_field))
        rows.append(
            {
                RECORD_COLUMN: n,
                "incident_id": text(rec.get("id")),
                "title": text(rec.get("message")),
                "service": service,
                "environment": environment(options.environment, options.environment_map),
                "severity": severity(rec.get("priority"), options.priority_map),
                "priority": text(rec.get("priority")),
                "status": status,
                "status_raw": raw_status,
                "created_at": to_utc(rec.get("createdAt")) or to_utc(rec.get("impactStartDate")),
                "resolved_at": end if status == "resolved" else None,
                "updated_at": to_utc(rec.get("updatedAt")),
                "url": text(dig(rec, "links", "web")),
                "not_change_related": not_change_related(rec, tags, options),
                **explicit_causes(
                    rec,
                    [props, rec.get("details")],
                    [rec.get("message"), rec.get("description")],
                    options.root_cause_field,
                ),
                "raw": raw_of([rec]),
            }
        )
    return tool.result(rows)


OPSGENIE_INCIDENTS = SourceKind(
    name=KIND,
    table="incidents",
    description='Opsgenie incidents: GET /v1/incidents pages ({"data": [...]})',
    options=OpsgenieOptions,
    parse=parse_opsgenie,
)
