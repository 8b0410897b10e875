"""LaunchDarkly audit log: ``GET /api/v2/auditlog`` pages, arrays of entries, and webhook payloads
(a webhook payload is an audit-log entry).

Only entries that touch a flag (a ``proj/P:env/E:flag/F`` resource) become toggle events;
environment, project, segment, member... entries are skipped and counted.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from features.history.schema import RECORD_COLUMN
from features.sources.base import ParsedFile, SourceKind
from features.sources.normalize import EnvironmentOptions, environment, flag_service, note_other
from features.sources.records import epoch_ms, load_tool_records, obj, raw_of, text

KIND = "launchdarkly_auditlog"

#: Flag actions (``accesses[].action``) -> canonical toggle action.
ACTIONS = {
    "updateOn": "enabled",
    "updateOff": "disabled",
    "updateRules": "targeting_changed",
    "updateTargets": "targeting_changed",
    "updateContextTargets": "targeting_changed",
    "updatePrerequisites": "targeting_changed",
    "updateFallthrough": "rollout_changed",
    "updateFallthroughVariation": "rollout_changed",
    "updateRollout": "rollout_changed",
    "updateOffVariation": "rollout_changed",
    "createFlag": "created",
    "cloneFlag": "created",
    "updateArchived": "archived",
    "archiveFlag": "archived",
    "deleteFlag": "deleted",
    "updateVariations": "variants_changed",
}
#: When one entry records several accesses, the most consequential one names the event.
PRECEDENCE = [
    "deleted",
    "archived",
    "created",
    "enabled",
    "disabled",
    "rollout_changed",
    "targeting_changed",
    "variants_changed",
    "other",
]

_RESOURCE = re.compile(r"(?:^|:)(proj|env|flag)/([^:]*)")


class LaunchDarklyOptions(EnvironmentOptions):
    """Keys of a ``launchdarkly_auditlog`` source."""

    #: where the service comes from when the entry carries no ``service:<name>`` flag tag
    service_from: Literal["project", "flag_prefix", "none"] = "project"
    #: flag tag prefix naming the service (tags such as ``service:checkout``)
    service_tag_prefix: str = "service:"
    #: flag_prefix: the flag key up to this separator is the service (``checkout-new-ui`` -> checkout)
    flag_prefix_separator: str = "-"


def parse_resource(resource: Any) -> dict[str, str]:
    """``proj/P:env/E:flag/F`` -> {proj, env, flag}; resource tags (``proj/P;tag``) are dropped."""
    if not isinstance(resource, str):
        return {}
    return {kind: value.split(";")[0] for kind, value in _RESOURCE.findall(resource) if value}


def _matches(rec: dict[str, Any]) -> bool:
    return "_id" in rec and ("accesses" in rec or "titleVerb" in rec) and ("date" in rec or "kind" in rec)


def _flag_access(rec: dict[str, Any]) -> tuple[str | None, dict[str, str], list[str]]:
    """(chosen raw action, parsed flag resource, every raw action) of an entry."""
    accesses = [a for a in rec.get("accesses") or [] if isinstance(a, dict)]
    flagged = [(text(a.get("action")), parse_resource(a.get("resource"))) for a in accesses]
    flagged = [(act, res) for act, res in flagged if "flag" in res]
    actions = [act for act, _ in flagged if act] or [t for a in accesses if (t := text(a.get("action")))]
    if flagged:
        best = min(flagged, key=lambda x: PRECEDENCE.index(ACTIONS.get(x[0] or "", "other")))
        return best[0], best[1], actions
    for resource in (rec.get("target") or {}).get("resources") or []:
        res = parse_resource(resource)
        if "flag" in res:
            best_action = min(actions, key=lambda a: PRECEDENCE.index(ACTIONS.get(a, "other"))) if actions else None
            return best_action, res, actions
    return None, {}, actions


def _tags(rec: dict[str, Any]) -> list[str]:
    tags: list[Any] = []
    for place in (rec, rec.get("currentVersion"), rec.get("previousVersion")):
        if isinstance(place, dict) and isinstance(place.get("tags"), list):
            tags.extend(place["tags"])
    return [t for t in tags if isinstance(t, str)]


def _actor(rec: dict[str, Any]) -> str | None:
    member = obj(rec.get("member"))
    name = " ".join(x for x in (text(member.get("firstName")), text(member.get("lastName"))) if x)
    return (
        text(member.get("email"))
        or name
        or text((rec.get("subject") or {}).get("name"))
        or text((rec.get("token") or {}).get("name"))
        or text((rec.get("app") or {}).get("name"))
    )


def parse_launchdarkly(path: Path, display: str, options: LaunchDarklyOptions) -> ParsedFile:
    """One toggle event per audit entry that touches a flag; ``date`` is epoch milliseconds."""
    tool = load_tool_records(
        path,
        display,
        kind=KIND,
        table="toggle_events",
        matches=_matches,
        expected="LaunchDarkly audit-log entries (_id, date, kind, accesses[{action, resource}]), a "
        '{"_links", "items"} page, or a webhook payload',
        envelope_keys=("items",),
    )
    rows: list[dict[str, Any]] = []
    for n, rec in tool.records:
        raw_action, res, _ = _flag_access(rec)
        if not res:
            tool.other[f"skipped:{text(rec.get('kind')) or 'no flag resource'}"] += 1
            continue
        action = ACTIONS.get(raw_action or "")
        if action is None:
            action = "other"
            note_other(tool.other, raw_action)
        env_raw = res.get("env")
        env_raw = None if env_raw in ("*", "~") else env_raw
        flag = res["flag"]
        rows.append(
            {
                RECORD_COLUMN: n,
                "event_id": text(rec.get("_id")),
                "flag_key": flag,
                "project": res.get("proj"),
                "environment": environment(env_raw, options.environment_map),
                "environment_raw": env_raw,
                "service": _service(flag, res.get("proj"), _tags(rec), options),
                "action": action,
                "action_raw": raw_action,
                "occurred_at": epoch_ms(rec.get("date")),
                "actor": _actor(rec),
                "new_enabled": True if raw_action == "updateOn" else False if raw_action == "updateOff" else None,
                "comment": text(rec.get("comment")),
                "url": text(((rec.get("_links") or {}).get("site") or {}).get("href")),
                "raw": raw_of([rec]),
            }
        )
    return tool.result(rows)


def _service(flag: str, project: str | None, tags: list[str], options: LaunchDarklyOptions) -> str | None:
    prefix = options.service_tag_prefix
    for tag in tags:
        if tag.startswith(prefix) and tag[len(prefix) :].strip():
            return tag[len(prefix) :].strip()
    return flag_service(flag, project, options.service_from, options.flag_prefix_separator)


LAUNCHDARKLY_AUDITLOG = SourceKind(
    name=KIND,
    table="toggle_events",
    description="LaunchDarkly audit log: GET /api/v2/auditlog pages, entry arrays and webhook payloads",
    options=LaunchDarklyOptions,
    parse=parse_launchdarkly,
)
