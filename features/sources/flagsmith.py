"""Flagsmith: audit-log records (``GET /api/v1/audit/``, audit-log webhooks) and the environment
webhook (``FLAG_UPDATED`` / ``FLAG_DELETED``).

Audit records say what happened only in their ``log`` message, so the message templates
Flagsmith writes (api/audit/constants.py) are matched here. Records without an ``id`` (the
webhooks) get a deterministic id built from what identifies the change, so re-ingesting the
same file never duplicates events.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from features.history.schema import RECORD_COLUMN
from features.sources.base import ParsedFile, SourceKind, dig
from features.sources.normalize import EnvironmentOptions, environment, flag_service, note_other
from features.sources.records import load_tool_records, obj, raw_of, text, to_utc

KIND = "flagsmith_audit"

#: (raw action name, canonical action, regex of the log message capturing the flag [and environment]).
AUDIT_MESSAGES: list[tuple[str, str | None, re.Pattern[str]]] = [
    ("feature_created", "created", re.compile(r"^New Flag / Remote Config created: (?P<flag>.+)$")),
    ("feature_deleted", "deleted", re.compile(r"^Flag / Remote Config Deleted: (?P<flag>.+)$")),
    ("feature_updated", "other", re.compile(r"^Flag / Remo(?:te|ve) Config updated: (?P<flag>.+)$")),
    (
        "segment_rules_updated",
        "targeting_changed",
        re.compile(r"^Segment rules updated for flag: (?P<flag>.+?)(?: in environment: (?P<env>.+))?$"),
    ),
    (
        "feature_state_updated",
        "other",
        re.compile(r"^Flag state / Remote Config value updated for feature: (?P<flag>.+)$", re.IGNORECASE),
    ),
    (
        "feature_state_went_live",
        "other",
        re.compile(
            r"^Scheduled change to Flag state / Remote config value went live for feature: (?P<flag>.+?) by",
            re.IGNORECASE,
        ),
    ),
    (
        "override_updated",
        "targeting_changed",
        re.compile(
            r"^Flag state / Remote config value (?:updated|deleted) for feature '(?P<flag>.+?)' and "
            r"(?:identity|segment) '.*'$",
            re.IGNORECASE,
        ),
    ),
    # not about one flag: skipped
    ("segment_changed", None, re.compile(r"^(?:New Segment created|Segment updated): ")),
    ("environment_changed", None, re.compile(r"^(?:New Environment created|Environment updated): ")),
    ("change_request", None, re.compile(r"^Change Request: .+ (?:created|approved|committed)$")),
]
#: ``related_object_type`` values that are never about a flag.
NON_FLAG_OBJECTS = {
    "SEGMENT",
    "ENVIRONMENT",
    "CHANGE_REQUEST",
    "EDGE_IDENTITY",
    "IDENTITY",
    "PROJECT",
    "ORGANISATION",
    "ORGANIZATION",
    "USER",
    "GROUP",
}


class FlagsmithOptions(EnvironmentOptions):
    """Keys of a ``flagsmith_audit`` source."""

    #: where the service comes from: the project name (default), the flag key prefix, or nowhere
    service_from: Literal["project", "flag_prefix", "none"] = "project"
    flag_prefix_separator: str = "_"


def _unwrap(rec: Any) -> Any:
    """Newer audit-log webhooks wrap the record: {"data": {...}, "event_type": "AUDIT_LOG_CREATED"}."""
    if isinstance(rec, dict) and rec.get("event_type") == "AUDIT_LOG_CREATED" and isinstance(rec.get("data"), dict):
        return rec["data"]
    return rec


def _is_audit(rec: dict[str, Any]) -> bool:
    return "log" in rec and ("created_date" in rec or "related_object_type" in rec)


def _is_flag_webhook(rec: dict[str, Any]) -> bool:
    return str(rec.get("event_type", "")).startswith("FLAG_") and isinstance(rec.get("data"), dict)


def _matches(rec: dict[str, Any]) -> bool:
    rec = _unwrap(rec)
    return isinstance(rec, dict) and (_is_audit(rec) or _is_flag_webhook(rec))


def parse_flagsmith(path: Path, display: str, options: FlagsmithOptions) -> ParsedFile:
    """One toggle event per flag audit record or flag webhook; other records skipped and counted."""
    tool = load_tool_records(
        path,
        display,
        kind=KIND,
        table="toggle_events",
        matches=_matches,
        expected="Flagsmith audit-log records (created_date, log, related_object_type, project, environment) "
        "or environment webhooks (event_type FLAG_UPDATED/FLAG_DELETED with data.new_state)",
        envelope_keys=("results",),
    )
    rows: list[dict[str, Any]] = []
    for n, original in tool.records:
        rec = _unwrap(original)
        values: dict[str, Any] | None
        if _is_flag_webhook(rec):
            values = _webhook(rec)
        elif _is_audit(rec):
            values = _audit(rec)
        else:
            values = None
        if values is None:
            label = text(rec.get("related_object_type")) or text(rec.get("event_type")) or "unrecognised"
            tool.other[f"skipped:{label}"] += 1
            continue
        if values["action"] == "other":
            note_other(tool.other, values["action_raw"])
        env_raw = values.pop("env_raw")
        values["environment"] = environment(env_raw, options.environment_map)
        values["environment_raw"] = env_raw
        values["service"] = flag_service(
            values.get("flag_key"), values.get("project"), options.service_from, options.flag_prefix_separator
        )
        rows.append({RECORD_COLUMN: n, **values, "raw": raw_of([original])})
    return tool.result(rows)


def _audit(rec: dict[str, Any]) -> dict[str, Any] | None:
    log = text(rec.get("log")) or ""
    object_type = (text(rec.get("related_object_type")) or "").upper()
    found = next(((name, act, pat.match(log)) for name, act, pat in AUDIT_MESSAGES if pat.match(log)), None)
    if found is None:
        if object_type in NON_FLAG_OBJECTS:
            return None
        found = (f"{object_type.lower() or 'audit'}_unrecognised", "other", None)
    raw_action, action, m = found
    if action is None or (object_type in NON_FLAG_OBJECTS and m is None):
        return None
    groups = m.groupdict() if m else {}
    env_obj = rec.get("environment")
    env_name = text(dig(env_obj, "name")) if isinstance(env_obj, dict) else None
    author = obj(rec.get("author"))
    record_id = text(rec.get("id")) or "audit:{}:{}:{}".format(
        object_type or "?",
        text(rec.get("related_object_id")) or text(rec.get("related_object_uuid")) or "?",
        text(rec.get("created_date")) or "?",
    )
    return {
        "event_id": record_id,
        "flag_key": (groups.get("flag") or "").strip() or None,
        "project": text(dig(rec, "project", "name")) if isinstance(rec.get("project"), dict) else None,
        "env_raw": groups.get("env") or env_name,
        "action": action,
        "action_raw": raw_action,
        "occurred_at": to_utc(rec.get("created_date")),
        "actor": text(author.get("email")) or text(rec.get("api_key")) or None,
        "comment": log or None,
    }


def _webhook(rec: dict[str, Any]) -> dict[str, Any]:
    data = rec["data"]
    new = data.get("new_state") if isinstance(data.get("new_state"), dict) else None
    old = data.get("previous_state") if isinstance(data.get("previous_state"), dict) else None
    state = new or old or {}
    feature = obj(state.get("feature"))
    event_type = text(rec.get("event_type")) or ""
    new_enabled = new.get("enabled") if new and isinstance(new.get("enabled"), bool) else None
    if event_type == "FLAG_DELETED" or new is None:
        action, raw_action = "deleted", event_type
    elif old is None:
        action, raw_action = "created", event_type
    elif new_enabled is not None and new_enabled != old.get("enabled"):
        action, raw_action = ("enabled" if new_enabled else "disabled"), event_type
    elif new.get("feature_segment") or new.get("identity") or new.get("identity_identifier"):
        action, raw_action = "targeting_changed", event_type
    elif _variants(new) != _variants(old):
        action, raw_action = "variants_changed", event_type
    else:
        action, raw_action = "other", event_type
    when = text(data.get("timestamp"))
    env_id = text(dig(state, "environment", "id"))
    return {
        "event_id": f"{event_type}:{text(feature.get('id')) or text(feature.get('name'))}:{env_id}:{when}",
        "flag_key": text(feature.get("name")),
        "project": text(dig(feature, "project", "name")),
        "env_raw": text(dig(state, "environment", "name")),
        "action": action,
        "action_raw": raw_action,
        "occurred_at": to_utc(data.get("timestamp")),
        "actor": text(data.get("changed_by")),
        "new_enabled": new_enabled if action != "deleted" else None,
    }


def _variants(state: dict[str, Any] | None) -> list[tuple[str, str]]:
    values = (state or {}).get("multivariate_feature_state_values") or []
    return sorted(
        (text(dig(v, "multivariate_feature_option", "value")) or "", str(v.get("percentage_allocation")))
        for v in values
        if isinstance(v, dict)
    )


FLAGSMITH_AUDIT = SourceKind(
    name=KIND,
    table="toggle_events",
    description="Flagsmith audit log (GET /api/v1/audit/, audit webhooks) and FLAG_UPDATED environment webhooks",
    options=FlagsmithOptions,
    parse=parse_flagsmith,
)
