"""Unleash event log (``GET /api/admin/events``, ``/api/admin/events?project=``, event search).

Every event type Unleash documents is listed below: feature events map to a canonical
action (or explicitly to ``other``); events about strategies, projects, users, tags, addons,
environments or segments are not flag changes and are skipped (counted as ``skipped:<type>``).
Types Unleash adds later still parse: feature ones become ``other``, the rest are skipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from features.history.schema import RECORD_COLUMN
from features.sources.base import ParsedFile, SourceKind
from features.sources.normalize import EnvironmentOptions, environment, flag_service, note_other
from features.sources.records import load_tool_records, obj, raw_of, text, to_utc

KIND = "unleash_events"

#: Feature event types -> canonical action. ``feature-strategy-update`` is refined below.
ACTIONS = {
    "feature-created": "created",
    "feature-import": "created",  # state import: the flag is (re)created from the imported file
    "feature-deleted": "deleted",
    "feature-archived": "archived",
    "feature-environment-enabled": "enabled",
    "feature-environment-disabled": "disabled",
    "feature-strategy-add": "targeting_changed",
    "feature-strategy-remove": "targeting_changed",
    "feature-strategy-update": "targeting_changed",
    "feature-variants-updated": "variants_changed",
    "feature-environment-variants-updated": "variants_changed",
}
#: Feature events that change no serving behaviour (metadata, tags, staleness, revival, ...).
OTHER_TYPES = {
    "feature-updated",  # legacy (v3) whole-toggle update; refined when data says enabled changed
    "feature-revived",
    "feature-metadata-updated",
    "feature-project-change",
    "feature-tagged",
    "feature-untagged",
    "feature-tag-import",
    "feature-stale-on",
    "feature-stale-off",
    "feature-potentially-stale-on",
    "feature-type-updated",
    "feature-dependency-added",
    "feature-dependency-removed",
    "feature-dependencies-removed",
    "feature-completed",
    "feature-uncompleted",
    "feature-favorited",
    "feature-unfavorited",
}
#: Documented events that are not about one flag: skipped.
SKIPPED_TYPES = {
    "drop-features",
    "drop-feature-tags",
    "strategy-created",
    "strategy-updated",
    "strategy-deleted",
    "strategy-deprecated",
    "strategy-reactivated",
    "strategy-import",
    "drop-strategies",
    "context-field-created",
    "context-field-updated",
    "context-field-deleted",
    "project-created",
    "project-updated",
    "project-deleted",
    "project-import",
    "drop-projects",
    "tag-created",
    "tag-deleted",
    "tag-import",
    "drop-tags",
    "tag-type-created",
    "tag-type-updated",
    "tag-type-deleted",
    "tag-type-import",
    "drop-tag-types",
    "addon-config-created",
    "addon-config-updated",
    "addon-config-deleted",
    "user-created",
    "user-updated",
    "user-deleted",
    "environment-import",
    "drop-environments",
    "segment-created",
    "segment-updated",
    "segment-deleted",
    "suggest-change-created",
}


class UnleashOptions(EnvironmentOptions):
    """Keys of an ``unleash_events`` source."""

    #: where the service comes from when the event has no service tag
    service_from: Literal["project", "flag_prefix", "none"] = "project"
    #: a tag of this type names the service (Unleash tags are {type, value})
    service_tag_type: str = "service"
    #: ...or a simple tag whose value starts with this prefix (``service:checkout``)
    service_tag_prefix: str = "service:"
    flag_prefix_separator: str = "-"


def _matches(rec: dict[str, Any]) -> bool:
    return "type" in rec and "createdAt" in rec and ("featureName" in rec or "createdBy" in rec)


def _flag(rec: dict[str, Any], kind: str) -> str | None:
    data = obj(rec.get("data"))
    if kind == "feature-import":
        return text(data.get("name"))
    if kind == "feature-tag-import":
        return text(data.get("featureName"))
    return text(rec.get("featureName"))


def _action(kind: str, rec: dict[str, Any]) -> str:
    data = obj(rec.get("data"))
    pre = obj(rec.get("preData"))
    if kind == "feature-strategy-update":
        new = (data.get("parameters") or {}).get("rollout") if isinstance(data.get("parameters"), dict) else None
        old = (pre.get("parameters") or {}).get("rollout") if isinstance(pre.get("parameters"), dict) else None
        if new is not None and str(new) != str(old):
            return "rollout_changed"
    if (
        kind == "feature-updated"
        and isinstance(data.get("enabled"), bool)
        and pre.get("enabled") != data["enabled"]
        and pre
    ):
        return "enabled" if data["enabled"] else "disabled"
    return ACTIONS.get(kind, "other")


def parse_unleash(path: Path, display: str, options: UnleashOptions) -> ParsedFile:
    """One toggle event per feature event; other events are skipped and counted."""
    tool = load_tool_records(
        path,
        display,
        kind=KIND,
        table="toggle_events",
        matches=_matches,
        expected="Unleash events (id, type, createdBy, createdAt, featureName, project, environment), "
        'or a {"version", "events"} response',
        envelope_keys=("events",),
    )
    rows: list[dict[str, Any]] = []
    for n, rec in tool.records:
        kind = text(rec.get("type")) or ""
        known_feature = kind in ACTIONS or kind in OTHER_TYPES
        if kind in SKIPPED_TYPES or not (known_feature or (kind.startswith("feature-") and rec.get("featureName"))):
            tool.other[f"skipped:{kind or '(missing type)'}"] += 1
            continue
        action = _action(kind, rec)
        if action == "other":
            note_other(tool.other, kind)
        flag = _flag(rec, kind)
        env_raw = text(rec.get("environment"))
        project = text(rec.get("project")) or text(
            (rec.get("data") or {}).get("project") if isinstance(rec.get("data"), dict) else None
        )
        rows.append(
            {
                RECORD_COLUMN: n,
                "event_id": text(rec.get("id")),
                "flag_key": flag,
                "project": project,
                "environment": environment(env_raw, options.environment_map),
                "environment_raw": env_raw,
                "service": _service(flag, project, rec.get("tags"), options),
                "action": action,
                "action_raw": kind,
                "occurred_at": to_utc(rec.get("createdAt")),
                "actor": text(rec.get("createdBy")),
                "new_enabled": True if action == "enabled" else False if action == "disabled" else None,
                "raw": raw_of([rec]),
            }
        )
    return tool.result(rows)


def _service(flag: str | None, project: str | None, tags: Any, options: UnleashOptions) -> str | None:
    for tag in tags if isinstance(tags, list) else []:
        if not isinstance(tag, dict):
            continue
        value = text(tag.get("value"))
        if value and text(tag.get("type")) == options.service_tag_type:
            return value
        if value and value.startswith(options.service_tag_prefix) and value[len(options.service_tag_prefix) :]:
            return value[len(options.service_tag_prefix) :]
    return flag_service(flag, project, options.service_from, options.flag_prefix_separator)


UNLEASH_EVENTS = SourceKind(
    name=KIND,
    table="toggle_events",
    description="Unleash event log: GET /api/admin/events responses (every documented event type mapped)",
    options=UnleashOptions,
    parse=parse_unleash,
)
