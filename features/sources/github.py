"""GitHub deployments: REST, webhooks (deployment, deployment_status) and GraphQL nodes.

All shapes are first reduced to one intermediate form, then folded by deployment id, so a
file of webhook deliveries (one per status change) yields one deploy whose final status is
the latest status GitHub recorded.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from features.history.schema import RECORD_COLUMN
from features.sources.base import ParsedFile, SourceKind, dig
from features.sources.normalize import EnvironmentOptions, compare_stats, environment, note_other, payload_fields
from features.sources.records import (
    camelize_keys,
    earliest,
    latest,
    load_tool_records,
    obj,
    pick,
    raw_of,
    repo_from_url,
    text,
    to_utc,
)

KIND = "github_deployments"

#: GitHub deployment status states (REST lower-case, GraphQL upper-case) -> canonical status.
STATES = {
    "success": "success",
    "active": "success",
    "failure": "failure",
    "error": "failure",
    "pending": "running",
    "queued": "running",
    "in_progress": "running",
    "waiting": "running",
    "abandoned": "canceled",
    "inactive": "success",
}
#: ``inactive`` only says a later deploy superseded this one; it never decides the outcome.
SUPERSEDED = "inactive"
#: A deployment with no status yet is pending in GitHub's model (it has just been requested).
PENDING = "pending"
#: GitHub's own environment names whose meaning is fixed (the published Pages site is live).
BUILTIN_ENVIRONMENTS = {"github-pages": "production"}
TERMINAL = {"success", "failure", "canceled"}


class GitHubOptions(EnvironmentOptions):
    """Keys of a ``github_deployments`` source."""

    #: repository (owner/name, default) | repository_name | environment | a dotted path in the record
    service_field: str = "repository"


def _expand(record: Any) -> list[Any]:
    """GraphQL responses hold their nodes under data.repository.deployments (nodes or edges)."""
    if not isinstance(record, dict):
        return [record]
    conn = dig(record, "data", "repository", "deployments") or dig(record, "repository", "deployments")
    if conn is None and ("nodes" in record or "edges" in record) and len(record) <= 3:
        conn = record
    if isinstance(conn, dict):
        if isinstance(conn.get("nodes"), list):
            return list(conn["nodes"])
        if isinstance(conn.get("edges"), list):
            return [e.get("node") if isinstance(e, dict) else e for e in conn["edges"]]
    return [record]


def _is_graphql(rec: dict[str, Any]) -> bool:
    return "commitOid" in rec or "databaseId" in rec or ("createdAt" in rec and "latestStatus" in rec)


def _matches(rec: dict[str, Any]) -> bool:
    if isinstance(rec.get("deployment"), dict):
        return True
    camel = camelize_keys(rec)
    if _is_graphql(camel):
        return True
    return "sha" in rec and isinstance(rec.get("environment"), str) and ("id" in rec or "url" in rec)


def _status(state: Any, at: Any) -> tuple[str, Any] | None:
    name = text(state)
    return (name.lower(), to_utc(at)) if name else None


def _from_rest(dep: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    statuses = []
    for st in dep.get("statuses") or record.get("statuses") or []:
        if isinstance(st, dict):
            s = _status(st.get("state"), st.get("created_at") or st.get("updated_at"))
            if s:
                statuses.append(s)
    ds = record.get("deployment_status")
    if isinstance(ds, dict):
        s = _status(ds.get("state"), ds.get("created_at") or ds.get("updated_at"))
        if s:
            statuses.append(s)
    repo = obj(record.get("repository"))
    return {
        "id": text(dep.get("id")),
        "sha": text(dep.get("sha")),
        "ref": text(dep.get("ref")),
        "environment": text(dep.get("environment")) or text(dep.get("original_environment")),
        "production": dep.get("production_environment"),
        "author": text(dig(dep, "creator", "login")),
        "created_at": to_utc(dep.get("created_at")),
        "updated_at": to_utc(dep.get("updated_at")),
        "url": text(dep.get("url")),
        "repository": text(repo.get("full_name")) or repo_from_url(dep.get("repository_url")),
        "payload": dep.get("payload"),
        "statuses": statuses,
        "state": None,
        "compare": record.get("compare") or dep.get("compare"),
    }


def _from_graphql(node: dict[str, Any]) -> dict[str, Any]:
    statuses = []
    for st in dig(node, "statuses", "nodes", default=[]):
        if isinstance(st, dict):
            s = _status(st.get("state"), st.get("createdAt") or st.get("updatedAt"))
            if s:
                statuses.append(s)
    if not statuses and isinstance(node.get("latestStatus"), dict):
        ls = node["latestStatus"]
        s = _status(ls.get("state"), ls.get("createdAt") or ls.get("updatedAt"))
        if s:
            statuses.append(s)
    repo = obj(node.get("repository"))
    return {
        "id": text(node.get("databaseId")) or text(node.get("id")),
        "sha": text(node.get("commitOid")) or text(dig(node, "commit", "oid")),
        "ref": text(dig(node, "ref", "name")) if isinstance(node.get("ref"), dict) else text(node.get("ref")),
        "environment": text(node.get("environment")) or text(node.get("originalEnvironment")),
        "production": None,
        "author": text(dig(node, "creator", "login")),
        "created_at": to_utc(node.get("createdAt")),
        "updated_at": to_utc(node.get("updatedAt")),
        "url": None,
        "repository": text(repo.get("nameWithOwner")) or repo_from_url(repo.get("url")) or text(repo.get("name")),
        "payload": node.get("payload"),
        "statuses": statuses,
        "state": text(node.get("state")),
        "compare": node.get("compare"),
    }


def _reduce(record: dict[str, Any]) -> dict[str, Any] | None:
    if isinstance(record.get("deployment"), dict):
        return _from_rest(record["deployment"], record)
    camel = camelize_keys(record)
    if _is_graphql(camel):
        return _from_graphql(camel)
    if "sha" in record and isinstance(record.get("environment"), str):
        return _from_rest(record, record)
    return None


def _final_status(statuses: list[tuple[str, Any]], state: str | None) -> tuple[str | None, Any, Any]:
    """(raw final state, started_at, finished_at) from the latest non-``inactive`` status."""

    def when(item: tuple[int, tuple[str, Any]]) -> tuple[int, Any, int]:
        i, (_, at) = item
        ok = hasattr(at, "tzinfo")
        return (1 if ok else 0, at.value if ok else 0, i)

    ordered = [s for _, s in sorted(enumerate(statuses), key=when)]
    deciding = [s for s in ordered if s[0] != SUPERSEDED]
    started = earliest(at for st, at in ordered if st == "in_progress")
    if deciding:
        raw, at = deciding[-1]
        finished = at if STATES.get(raw) in TERMINAL else None
        return raw, started, finished
    if ordered:  # only "inactive": GitHub adds it only to deployments that had succeeded
        return ordered[-1][0], started, None
    return (state.lower() if state else PENDING), started, None


def parse_github(path: Path, display: str, options: GitHubOptions) -> ParsedFile:
    """One canonical deploy per deployment id; webhook deliveries and status lists are folded."""
    tool = load_tool_records(
        path,
        display,
        kind=KIND,
        table="deploys",
        matches=_matches,
        expected="GitHub deployments (REST objects with id/sha/environment, deployment or deployment_status webhook "
        "payloads, or GraphQL deployment nodes)",
        envelope_keys=("deployments", "items"),
        expand=_expand,
    )
    groups: dict[str, list[tuple[int, dict[str, Any], dict[str, Any]]]] = defaultdict(list)
    order: list[str] = []
    rows: list[dict[str, Any]] = []
    for n, rec in tool.records:
        reduced = _reduce(rec)
        if reduced is None:
            tool.other["skipped:not a deployment"] += 1
            continue
        key = reduced["id"] or f"#record{n}"
        if key not in groups:
            order.append(key)
        groups[key].append((n, rec, reduced))

    for key in order:
        items = groups[key]
        merged: dict[str, Any] = {}
        statuses: list[tuple[str, Any]] = []
        for _, _, red in sorted(
            items, key=lambda x: (x[2]["updated_at"].value if hasattr(x[2]["updated_at"], "value") else 0, x[0])
        ):
            statuses.extend(red["statuses"])
            merged.update({k: v for k, v in red.items() if v is not None and k != "statuses"})
        raw_state, started, finished = _final_status(statuses, merged.get("state"))
        status = STATES.get(raw_state) if raw_state else None
        if raw_state and status is None:
            status = "other"
            note_other(tool.other, raw_state)
        env_raw = merged.get("environment")
        env = (
            "production"
            if merged.get("production") is True
            else environment(env_raw, {**BUILTIN_ENVIRONMENTS, **options.environment_map})
        )
        payload = payload_fields(merged.get("payload"))
        first_rec = items[-1][1]
        values: dict[str, Any] = {
            "deploy_id": merged.get("id"),
            "service": _service(options.service_field, merged, first_rec),
            "environment": env,
            "environment_raw": env_raw,
            "commit_sha": merged.get("sha"),
            "ref": merged.get("ref"),
            "status": status,
            "status_raw": raw_state,
            "created_at": merged.get("created_at"),
            "started_at": started,
            "finished_at": finished,
            "author": merged.get("author"),
            "updated_at": latest([merged.get("updated_at"), *(at for _, at in statuses)]),
            "url": merged.get("url"),
        }
        values.update(compare_stats(merged.get("compare")))
        values.update(payload)
        if values.get("commit_sha") and not values.get("commit_shas"):
            values["commit_shas"] = values["commit_sha"]
        rows.append({RECORD_COLUMN: items[0][0], **values, "raw": raw_of([r for _, r, _ in items])})
    return tool.result(rows)


def _service(field: str, merged: dict[str, Any], record: dict[str, Any]) -> str | None:
    repo = merged.get("repository")
    if field == "repository":
        return repo
    if field == "repository_name":
        return repo.split("/")[-1] if repo else None
    if field == "environment":
        return merged.get("environment")
    return text(pick(record, field))


GITHUB_DEPLOYMENTS = SourceKind(
    name=KIND,
    table="deploys",
    description="GitHub deployments: REST list (+statuses, compare), deployment/deployment_status webhooks, GraphQL",
    options=GitHubOptions,
    parse=parse_github,
)
