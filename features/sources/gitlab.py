"""GitLab deployments: the REST list (``GET /projects/:id/deployments``) and deployment webhooks.

REST records carry their final status; webhook deliveries (one per status change) are folded
by ``deployment_id`` so the latest status wins and the first one dates the deploy.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from features.history.schema import RECORD_COLUMN
from features.sources.base import ParsedFile, SourceKind, dig
from features.sources.normalize import EnvironmentOptions, compare_stats, environment, status_or_other
from features.sources.records import earliest, load_tool_records, obj, pick, raw_of, repo_from_url, text, to_utc

KIND = "gitlab_deployments"

#: GitLab deployment statuses -> canonical. ``created``/``blocked`` (waiting for a runner or an
#: approval) are not finished yet, so they count as running; ``skipped`` never deployed.
STATUSES = {
    "success": "success",
    "failed": "failure",
    "canceled": "canceled",
    "cancelled": "canceled",
    "skipped": "canceled",
    "running": "running",
    "created": "running",
    "blocked": "running",
}
TERMINAL = {"success", "failure", "canceled"}


class GitLabOptions(EnvironmentOptions):
    """Keys of a ``gitlab_deployments`` source."""

    #: project (path with namespace, default) | environment | a dotted path in the record
    service_field: str = "project"


def _matches(rec: dict[str, Any]) -> bool:
    if rec.get("object_kind") == "deployment":
        return True
    return "iid" in rec and "sha" in rec and "status" in rec and isinstance(rec.get("environment"), dict)


def _project(rec: dict[str, Any]) -> str | None:
    if isinstance(rec.get("project"), dict) and rec["project"].get("path_with_namespace"):
        return text(rec["project"]["path_with_namespace"])
    for path in (("deployable", "pipeline", "web_url"), ("deployable", "commit", "web_url"), ("deployable", "web_url")):
        url = dig(rec, *path)
        if isinstance(url, str) and "/-/" in url:
            return repo_from_url(url)
    return None


def _stats(rec: dict[str, Any]) -> dict[str, Any]:
    """Line counts from ``stats`` (commit ``with_stats``) or a ``compare`` object, when exported."""
    stats = rec.get("stats") if isinstance(rec.get("stats"), dict) else dig(rec, "deployable", "commit", "stats")
    out = compare_stats(rec.get("compare"))
    if isinstance(stats, dict):
        out.setdefault("lines_added", stats.get("additions"))
        out.setdefault("lines_deleted", stats.get("deletions"))
    return {k: v for k, v in out.items() if v is not None}


def _rest_row(n: int, rec: dict[str, Any], options: GitLabOptions, other: Counter[str]) -> dict[str, Any]:
    raw_status = text(rec.get("status"))
    status = status_or_other(STATUSES, raw_status, other)
    env = obj(rec.get("environment"))
    env_raw = text(env.get("name"))
    tier = text(env.get("tier"))
    deployable = obj(rec.get("deployable"))
    sha = text(rec.get("sha")) or text(dig(deployable, "commit", "id"))
    values = {
        "deploy_id": text(rec.get("id")),
        "service": _service(options.service_field, rec, env_raw),
        "environment": _environment(tier, env_raw, options),
        "environment_raw": env_raw,
        "commit_sha": sha,
        "commit_shas": sha,
        "ref": text(rec.get("ref")),
        "status": status,
        "status_raw": raw_status,
        "created_at": to_utc(rec.get("created_at")),
        "started_at": to_utc(deployable.get("started_at")),
        "finished_at": to_utc(deployable.get("finished_at")) if status in TERMINAL else None,
        "author": text(dig(rec, "user", "username")),
        "updated_at": to_utc(rec.get("updated_at")),
        "url": text(deployable.get("web_url")),
        **_stats(rec),
    }
    return {RECORD_COLUMN: n, **values, "raw": raw_of([rec])}


def _webhook_row(
    items: list[tuple[int, dict[str, Any]]], options: GitLabOptions, other: Counter[str]
) -> dict[str, Any]:
    events = sorted(items, key=lambda x: (str(to_utc(x[1].get("status_changed_at"))), x[0]))
    last = events[-1][1]
    raw_status = text(last.get("status"))
    status = status_or_other(STATUSES, raw_status, other)
    times = [(text(r.get("status")), to_utc(r.get("status_changed_at"))) for _, r in events]
    commit_url = text(last.get("commit_url"))
    sha = commit_url.rstrip("/").split("/")[-1] if commit_url else text(last.get("short_sha"))
    env_raw = text(last.get("environment"))
    tier = text(last.get("environment_tier"))
    values = {
        "deploy_id": text(last.get("deployment_id")),
        "service": _service(options.service_field, last, env_raw),
        "environment": _environment(tier, env_raw, options),
        "environment_raw": env_raw,
        "commit_sha": sha,
        "commit_shas": sha,
        "ref": text(last.get("ref")),
        "status": status,
        "status_raw": raw_status,
        "created_at": earliest(at for _, at in times),
        "started_at": earliest(at for st, at in times if st == "running"),
        "finished_at": times[-1][1] if status in TERMINAL else None,
        "author": text(dig(last, "user", "username")),
        "updated_at": times[-1][1],
        "url": text(last.get("deployable_url")),
    }
    return {RECORD_COLUMN: events[0][0], **values, "raw": raw_of([r for _, r in events])}


def _environment(tier: str | None, env_raw: str | None, options: GitLabOptions) -> str | None:
    """GitLab's deployment tier, when it is a canonical one, beats guessing from the environment name."""
    if tier and tier.lower() in ("production", "staging", "testing", "development"):
        return tier.lower()
    return environment(env_raw, options.environment_map)


def _service(field: str, rec: dict[str, Any], env_raw: str | None) -> str | None:
    if field == "project":
        return _project(rec)
    if field == "environment":
        return env_raw
    return text(pick(rec, field))


def parse_gitlab(path: Path, display: str, options: GitLabOptions) -> ParsedFile:
    """REST deployments map one to one; webhook deliveries fold by ``deployment_id``."""
    tool = load_tool_records(
        path,
        display,
        kind=KIND,
        table="deploys",
        matches=_matches,
        expected="GitLab deployments (REST objects with id/iid/sha/status/environment{name}, or deployment webhooks "
        "with object_kind 'deployment')",
        envelope_keys=("deployments", "items"),
    )
    rows: list[dict[str, Any]] = []
    hooks: dict[str, list[tuple[int, dict[str, Any]]]] = defaultdict(list)
    for n, rec in tool.records:
        if rec.get("object_kind") == "deployment":
            hooks[text(rec.get("deployment_id")) or f"#record{n}"].append((n, rec))
        elif "iid" in rec and ("sha" in rec or "status" in rec):  # a deployment, even if a field is missing
            rows.append(_rest_row(n, rec, options, tool.other))
        else:
            tool.other["skipped:not a deployment"] += 1
    rows.extend(_webhook_row(items, options, tool.other) for items in hooks.values())
    return tool.result(rows)


GITLAB_DEPLOYMENTS = SourceKind(
    name=KIND,
    table="deploys",
    description="GitLab deployments: REST GET /projects/:id/deployments pages and deployment webhooks",
    options=GitLabOptions,
    parse=parse_gitlab,
)
