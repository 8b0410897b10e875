"""Apache DevLake incoming-webhook bodies: deployments (incl. multi-repo) and incidents/issues.

Teams that already push to DevLake's webhook (``POST /plugins/webhook/:id/deployments`` and
``/issues``) can save the same bodies as JSON lines and ingest them here unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from features.history.schema import RECORD_COLUMN
from features.sources.base import ParsedFile, SourceKind
from features.sources.normalize import (
    IncidentOptions,
    environment,
    explicit_causes,
    incident_status,
    lookup,
    not_change_related,
    note_other,
    severity,
)
from features.sources.records import ToolRecords, load_tool_records, pick, raw_of, repo_from_url, text, to_utc

KIND = "devlake_webhook"

#: ``result`` -> canonical; DevLake documents SUCCESS as the default when absent.
RESULTS = {"success": "success", "failure": "failure", "failed": "failure", "abort": "canceled", "aborted": "canceled"}
DEFAULT_RESULT = "SUCCESS"
#: DevLake documents PRODUCTION as the default environment when absent.
DEFAULT_ENVIRONMENT = "PRODUCTION"
ISSUE_STATUSES = {"todo": "open", "in_progress": "acknowledged", "done": "resolved"}


class DevLakeOptions(IncidentOptions):
    """Keys of a ``devlake_webhook`` source."""

    #: which webhook the bodies were posted to: deployments (default) or issues
    table: Literal["deploys", "incidents"] = "deploys"
    #: deploys: repository (owner/name from repo_url, default) | repo_id | a dotted path in the body;
    #: incidents: component (default) | a dotted path in the body
    service_field: str | None = None
    #: incidents: the issue ``type`` values that are incidents (case-insensitive)
    incident_types: list[str] = Field(default_factory=lambda: ["INCIDENT"])


def _is_deployment(rec: dict[str, Any]) -> bool:
    return "pipeline_id" in rec or "deployment_commits" in rec or ("commit_sha" in rec and "start_time" in rec)


def _is_issue(rec: dict[str, Any]) -> bool:
    return "issue_key" in rec and ("created_date" in rec or "status" in rec)


def parse_devlake(path: Path, display: str, options: DevLakeOptions) -> ParsedFile:
    """Deploy bodies: one canonical deploy per (body, repo/commit entry); issue bodies: incidents."""
    if options.table == "deploys":
        deploys = load_tool_records(
            path,
            display,
            kind=KIND,
            table="deploys",
            matches=_is_deployment,
            expected="DevLake deployment webhook bodies (pipeline_id, repo_url, commit_sha or deployment_commits, "
            "start_time, result)",
            skipped="not a deployment body",
        )
        return _deploys(deploys, options)
    issues = load_tool_records(
        path,
        display,
        kind=KIND,
        table="incidents",
        matches=_is_issue,
        expected="DevLake issue webhook bodies (issue_key, title, type, status, created_date)",
    )
    return _incidents(issues, options)


def _deploys(tool: ToolRecords, options: DevLakeOptions) -> ParsedFile:
    rows: list[dict[str, Any]] = []
    field = options.service_field or "repository"
    for n, rec in tool.records:
        raw_result = text(rec.get("result"))
        status = lookup(RESULTS, raw_result or DEFAULT_RESULT)
        if status is None:
            status = "other"
            note_other(tool.other, raw_result)
        env_raw = text(rec.get("environment")) or DEFAULT_ENVIRONMENT
        entries = [e for e in rec.get("deployment_commits") or [] if isinstance(e, dict)] or [rec]
        pipeline = text(rec.get("pipeline_id"))
        for entry in entries:
            sha = text(entry.get("commit_sha"))
            repo_url = text(entry.get("repo_url")) or text(rec.get("repo_url"))
            if field == "repository":
                service = repo_from_url(repo_url)
            elif field == "repo_id":
                service = text(entry.get("repo_id")) or text(rec.get("repo_id"))
            else:
                service = text(pick(entry, field)) or text(pick(rec, field))
            rows.append(
                {
                    RECORD_COLUMN: n,
                    "deploy_id": f"{pipeline}:{repo_url or ''}:{sha or ''}" if pipeline else None,
                    "service": service,
                    "environment": environment(env_raw, options.environment_map),
                    "environment_raw": env_raw,
                    "commit_sha": sha,
                    "commit_shas": sha,
                    "ref": text(entry.get("ref_name")) or text(rec.get("ref_name")),
                    "status": status,
                    "status_raw": raw_result,
                    "created_at": to_utc(rec.get("create_time")) or to_utc(rec.get("start_time")),
                    "started_at": to_utc(rec.get("start_time")),
                    "finished_at": to_utc(rec.get("end_time")),
                    "raw": raw_of([rec]),
                }
            )
    return tool.result(rows)


def _incidents(tool: ToolRecords, options: DevLakeOptions) -> ParsedFile:
    rows: list[dict[str, Any]] = []
    wanted = {t.lower() for t in options.incident_types}
    for n, rec in tool.records:
        issue_type = text(rec.get("type")) or ""
        if not _is_issue(rec) or issue_type.lower() not in wanted:
            tool.other[f"skipped:{issue_type or 'not an issue body'}"] += 1
            continue
        raw_status = text(rec.get("status"))
        resolved = to_utc(rec.get("resolution_date"))
        status = incident_status(ISSUE_STATUSES, raw_status, resolved, tool.other)
        field = options.service_field or "component"
        sev_raw = text(rec.get("severity")) or text(rec.get("priority"))
        rows.append(
            {
                RECORD_COLUMN: n,
                "incident_id": text(rec.get("issue_key")),
                "title": text(rec.get("title")),
                "service": text(pick(rec, field)),
                "environment": environment(options.environment, options.environment_map),
                "severity": severity(sev_raw, options.priority_map),
                "priority": text(rec.get("priority")),
                "status": status,
                "status_raw": text(rec.get("original_status")) or raw_status,
                "created_at": to_utc(rec.get("created_date")),
                "resolved_at": resolved if status == "resolved" else None,
                "updated_at": to_utc(rec.get("updated_date")),
                "url": text(rec.get("url")),
                "not_change_related": not_change_related(rec, [], options),
                **explicit_causes(rec, [], [rec.get("title"), rec.get("description")], options.root_cause_field),
                "raw": raw_of([rec]),
            }
        )
    return tool.result(rows)


DEVLAKE_WEBHOOK = SourceKind(
    name=KIND,
    table=None,
    description="Apache DevLake webhook bodies: deployments incl. multi-repo deployment_commits, or issues (table:)",
    options=DevLakeOptions,
    parse=parse_devlake,
)
