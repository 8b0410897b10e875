"""Bitbucket Cloud deployments (``GET /2.0/repositories/{workspace}/{repo}/deployments/``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from features.history.schema import RECORD_COLUMN
from features.sources.base import ParsedFile, SourceKind, dig
from features.sources.normalize import EnvironmentOptions, environment, status_or_other
from features.sources.records import load_tool_records, obj, pick, raw_of, repo_from_url, text, to_utc

KIND = "bitbucket_deployments"

#: ``state.name`` (and, for COMPLETED, ``state.status.name``) -> canonical status.
#: UNDEPLOYED is a deployment step that has not run (or was superseded): not an outcome.
STATES = {
    "successful": "success",
    "success": "success",
    "completed": "success",
    "failed": "failure",
    "stopped": "canceled",
    "cancelled": "canceled",
    "canceled": "canceled",
    "in_progress": "running",
    "pending": "running",
    "rolled_back": "rolled_back",
}
TERMINAL = {"success", "failure", "canceled", "rolled_back"}


class BitbucketOptions(EnvironmentOptions):
    """Keys of a ``bitbucket_deployments`` source."""

    #: repository (workspace/repo from the release links, default) | environment | a dotted path
    service_field: str = "repository"
    #: workspace/repo of the export, when the records do not carry links (fields= filtered)
    repository: str | None = None


def _matches(rec: dict[str, Any]) -> bool:
    return (
        (rec.get("type") == "deployment" or "uuid" in rec)
        and isinstance(rec.get("state"), dict)
        and ("environment" in rec or "release" in rec)
    )


def parse_bitbucket(path: Path, display: str, options: BitbucketOptions) -> ParsedFile:
    """One canonical deploy per deployment ``uuid``."""
    tool = load_tool_records(
        path,
        display,
        kind=KIND,
        table="deploys",
        matches=_matches,
        expected="Bitbucket deployments (objects with uuid, state{name}, environment and release)",
        envelope_keys=("values",),
        skipped="not a deployment",
    )
    rows: list[dict[str, Any]] = []
    for n, rec in tool.records:
        state = rec["state"]
        outcome = text(dig(state, "status", "name")) or text(dig(state, "result", "name"))
        raw_status = outcome if text(state.get("name")) in ("COMPLETED", None) and outcome else text(state.get("name"))
        status = status_or_other(STATES, raw_status, tool.other)
        env = obj(rec.get("environment"))
        env_raw = text(env.get("name"))
        env_type = text(dig(env, "environment_type", "name")) or text(dig(env, "category", "name"))
        release = obj(rec.get("release"))
        repo = (
            options.repository
            or repo_from_url(dig(release, "commit", "links", "html", "href"))
            or repo_from_url(release.get("url"))
        )
        sha = text(dig(release, "commit", "hash"))
        if options.service_field == "repository":
            service = repo
        elif options.service_field == "environment":
            service = env_raw
        else:
            service = text(pick(rec, options.service_field))
        started = to_utc(state.get("started_on"))
        rows.append(
            {
                RECORD_COLUMN: n,
                "deploy_id": text(rec.get("uuid")),
                "service": service,
                "environment": _environment(env_raw, env_type, options),
                "environment_raw": env_raw,
                "commit_sha": sha,
                "commit_shas": sha,
                "status": status,
                "status_raw": raw_status,
                "created_at": to_utc(rec.get("created_on")) or started or to_utc(release.get("created_on")),
                "started_at": started,
                "finished_at": to_utc(state.get("completed_on")) if status in TERMINAL else None,
                "updated_at": to_utc(rec.get("last_update_time")),
                "url": text(state.get("url")) or text(release.get("url")),
                "raw": raw_of([rec]),
            }
        )
    return tool.result(rows)


def _environment(name: str | None, env_type: str | None, options: BitbucketOptions) -> str | None:
    """The user's map wins; else Bitbucket's environment type (Test/Staging/Production); else the name."""
    mapped = {k.lower(): v for k, v in options.environment_map.items()}
    if name and name.lower() in mapped:
        return mapped[name.lower()]
    return environment(env_type) if env_type else environment(name)


BITBUCKET_DEPLOYMENTS = SourceKind(
    name=KIND,
    table="deploys",
    description="Bitbucket Cloud deployments: GET /2.0/repositories/{workspace}/{repo}/deployments/ pages",
    options=BitbucketOptions,
    parse=parse_bitbucket,
)
