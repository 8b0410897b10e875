"""Bamboo deployment results (``GET /rest/api/latest/deploy/environment/{id}/results``).

The endpoint is per deployment environment and its results name neither the environment nor
the service, so both come from the source's options (or ``defaults``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from features.history.schema import RECORD_COLUMN
from features.sources.base import ParsedFile, SourceKind, dig
from features.sources.normalize import EnvironmentOptions, environment, lookup, note_other
from features.sources.records import epoch_ms, load_tool_records, obj, pick, raw_of, text

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
    tool = load_tool_records(
        path,
        display,
        kind=KIND,
        table="deploys",
        matches=_matches,
        expected="Bamboo deployment results (objects with id, deploymentState, lifeCycleState, deploymentVersion)",
        envelope_keys=("results",),
        skipped="not a deployment result",
    )
    rows: list[dict[str, Any]] = []
    for n, rec in tool.records:
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
            note_other(tool.other, raw_status)
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
                RECORD_COLUMN: n,
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
    return tool.result(rows)


BAMBOO_DEPLOYS = SourceKind(
    name=KIND,
    table="deploys",
    description="Bamboo deployment results: GET /rest/api/latest/deploy/environment/{id}/results (one environment)",
    options=BambooOptions,
    parse=parse_bamboo,
)
