"""Bamboo deployment results (``GET /rest/api/latest/deploy/environment/{id}/results``).

The endpoint is per deployment environment and its results name neither the environment nor
the service, so both come from the source's options (or ``defaults``).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from features.sources.base import ParsedFile, SourceKind, dig, read_json_records
from features.sources.normalize import (
    EnvironmentOptions,
    environment,
    epoch_ms,
    lookup,
    non_object_rejects,
    note_other,
    obj,
    parsed,
    pick,
    raw_of,
    require_shape,
    text,
)

KIND = "bamboo_deploys"

#: ``lifeCycleState`` values that mean the deploy has not finished, whatever ``deploymentState`` says.
UNFINISHED = {"pending", "queued", "in_progress"}
#: ``deploymentState`` of a finished deploy -> canonical. REPLACED/SKIPPED never ran to the end.
STATES = {
    "success": "success",
    "failed": "failure",
    "replaced": "canceled",
    "skipped": "canceled",
    "not_built": "canceled",
    "in_progress": "running",
    "queued": "running",
    "pending": "running",
}


class BambooOptions(EnvironmentOptions):
    """Keys of a ``bamboo_deploys`` source."""

    #: the Bamboo deployment environment this export belongs to (e.g. "Production")
    environment: str | None = None
    #: plan (the build plan key of the released artifacts, default) | version | a dotted path
    service_field: str = "plan"


def _matches(rec: dict[str, Any]) -> bool:
    return "deploymentState" in rec or ("lifeCycleState" in rec and "deploymentVersion" in rec)


def parse_bamboo(path: Path, display: str, options: BambooOptions) -> ParsedFile:
    """One canonical deploy per deployment result ``id``; epoch-millisecond times become UTC."""
    records = read_json_records(path, display, ("results",))
    require_shape(
        records,
        display,
        KIND,
        _matches,
        "Bamboo deployment results (objects with id, deploymentState, lifeCycleState, deploymentVersion)",
    )
    rejects = non_object_rejects("deploys", KIND, display, records)
    other: Counter[str] = Counter()
    rows: list[dict[str, Any]] = []
    for n, rec in records:
        if not isinstance(rec, dict):
            continue
        if not _matches(rec):
            other["skipped:not a deployment result"] += 1
            continue
        life = text(rec.get("lifeCycleState"))
        state = text(rec.get("deploymentState"))
        life_key = life.strip().lower().replace(" ", "_") if life else None
        if life_key in UNFINISHED:
            status: str | None = "running"
        elif life_key == "not_built":
            status = "canceled"
        else:
            status = lookup(STATES, state)
        raw_status = "/".join(x for x in (life, state) if x) or None
        if raw_status and status is None:
            status = "other"
            note_other(other, raw_status)
        version = obj(rec.get("deploymentVersion"))
        plan = text(dig(version, "items", 0, "planResultKey", "entityKey", "key"))
        if options.service_field == "plan":
            service = plan
        elif options.service_field == "version":
            service = text(version.get("name"))
        else:
            service = text(pick(rec, options.service_field))
        finished = epoch_ms(rec.get("finishedDate"))
        rows.append(
            {
                "_record": n,
                "deploy_id": text(rec.get("id")),
                "service": service,
                "environment": environment(options.environment, options.environment_map),
                "environment_raw": options.environment,
                "ref": text(version.get("planBranchName")),
                "status": status,
                "status_raw": raw_status,
                "created_at": epoch_ms(rec.get("startedDate")) or epoch_ms(rec.get("queuedDate")),
                "started_at": epoch_ms(rec.get("executedDate")),
                "finished_at": finished if status in ("success", "failure", "canceled") else None,
                "raw": raw_of([rec]),
            }
        )
    return parsed("deploys", rows, rejects=rejects, other=other, records_read=len(records))


BAMBOO_DEPLOYS = SourceKind(
    name=KIND,
    table="deploys",
    description="Bamboo deployment results: GET /rest/api/latest/deploy/environment/{id}/results (one environment)",
    options=BambooOptions,
    parse=parse_bamboo,
)
