"""PagerDuty incidents: REST ``GET /incidents`` pages (``{"incidents": [...]}``), v3 webhooks
(``{"event": {...}}``) and legacy v2 webhooks (``{"messages": [{"incident": {...}}]}``).

v3 webhook deliveries are folded per incident: triggered dates it, acknowledged/resolved date
those steps, annotations (notes) and custom-field updates can name the cause.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import Field

from features.history.schema import RECORD_COLUMN
from features.sources.base import ParsedFile, SourceKind, dig, reject_rows
from features.sources.normalize import (
    IncidentOptions,
    Severity,
    environment,
    explicit_causes,
    incident_status,
    lookup,
    not_change_related,
    severity,
)
from features.sources.records import earliest, latest, load_tool_records, obj, parsed, pick, raw_of, text, to_utc

KIND = "pagerduty_incidents"
STATUSES = {"triggered": "open", "acknowledged": "acknowledged", "resolved": "resolved"}
#: v3 webhook event types that set the status by themselves.
EVENT_STATUS = {
    "incident.triggered": "triggered",
    "incident.acknowledged": "acknowledged",
    "incident.unacknowledged": "triggered",
    "incident.reopened": "triggered",
    "incident.resolved": "resolved",
}

#: Without a priority, urgency is all PagerDuty says: high pages someone now, low can wait.
URGENCY_SEVERITY: dict[str, Severity] = {"high": "sev2", "low": "sev4"}


class PagerDutyOptions(IncidentOptions):
    """Keys of a ``pagerduty_incidents`` source."""

    #: service (service summary, default) | service_id | team | escalation_policy | a dotted path
    service_field: str = "service"
    #: severity of an incident without a priority, by urgency
    urgency_severity: dict[str, Severity] = Field(default_factory=lambda: dict(URGENCY_SEVERITY))


def _is_rest(rec: dict[str, Any]) -> bool:
    return (rec.get("type") in ("incident", None) and "incident_number" in rec) or (
        rec.get("type") == "incident" and "status" in rec and "created_at" in rec
    )


def _is_v3(rec: dict[str, Any]) -> bool:
    return isinstance(rec.get("event"), dict) and "event_type" in rec["event"]


def _is_v2(rec: dict[str, Any]) -> bool:
    return isinstance(rec.get("incident"), dict) and isinstance(rec.get("event"), str)


def _matches(rec: dict[str, Any]) -> bool:
    return _is_rest(rec) or _is_v3(rec) or _is_v2(rec)


def _service(inc: dict[str, Any], field: str) -> str | None:
    if field == "service":
        return text(dig(inc, "service", "summary")) or text(dig(inc, "service", "name"))
    if field == "service_id":
        return text(dig(inc, "service", "id"))
    if field == "team":
        return text(dig(inc, "teams", 0, "summary"))
    if field == "escalation_policy":
        return text(dig(inc, "escalation_policy", "summary"))
    return text(pick(inc, field))


def _severity(inc: dict[str, Any], options: PagerDutyOptions) -> str | None:
    prio = text(dig(inc, "priority", "summary")) or text(dig(inc, "priority", "name"))
    return severity(prio, options.priority_map) or lookup(options.urgency_severity, inc.get("urgency"))


def _common(inc: dict[str, Any], options: PagerDutyOptions, texts: list[Any]) -> dict[str, Any]:
    custom = inc.get("custom_fields")
    return {
        "incident_id": text(inc.get("id")),
        "title": text(inc.get("title")) or text(inc.get("summary")),
        "service": _service(inc, options.service_field),
        "environment": environment(options.environment, options.environment_map),
        "severity": _severity(inc, options),
        "priority": text(dig(inc, "priority", "summary")) or text(dig(inc, "priority", "name")),
        "urgency": text(inc.get("urgency")),
        "url": text(inc.get("html_url")),
        "not_change_related": not_change_related(inc, [], options),
        **explicit_causes(
            inc,
            [custom, dig(inc, "body", "details")],
            [inc.get("title"), inc.get("description"), text(dig(inc, "body", "details")), *texts],
            options.root_cause_field,
        ),
    }


def _rest_row(
    n: int, inc: dict[str, Any], original: Any, options: PagerDutyOptions, other: Counter[str]
) -> dict[str, Any]:
    logs = [e for e in inc.get("log_entries") or [] if isinstance(e, dict)]
    acks = [to_utc(a.get("at")) for a in inc.get("acknowledgements") or [] if isinstance(a, dict)]
    acks += [to_utc(e.get("created_at")) for e in logs if e.get("type") == "acknowledge_log_entry"]
    raw_status = text(inc.get("status"))
    resolved = to_utc(inc.get("resolved_at"))
    if resolved is None and raw_status == "resolved":
        resolved = to_utc(inc.get("last_status_change_at")) or latest(
            to_utc(e.get("created_at")) for e in logs if e.get("type") == "resolve_log_entry"
        )
    status = incident_status(STATUSES, raw_status, resolved, other)
    notes = [e.get("content") or e.get("summary") for e in logs if e.get("type") == "annotate_log_entry"]
    return {
        RECORD_COLUMN: n,
        **_common(inc, options, notes),
        "status": status,
        "status_raw": raw_status,
        "created_at": to_utc(inc.get("created_at")),
        "acknowledged_at": earliest(acks),
        "resolved_at": resolved if status == "resolved" else None,
        "updated_at": to_utc(inc.get("updated_at")) or to_utc(inc.get("last_status_change_at")),
        "raw": raw_of([original]),
    }


def _v3_incident_id(event: dict[str, Any]) -> str | None:
    data = obj(event.get("data"))
    if data.get("type") == "incident" or event.get("resource_type") == "incident" and "status" in data:
        return text(data.get("id"))
    return text(dig(data, "incident", "id"))


def _v3_row(
    items: list[tuple[int, dict[str, Any]]], options: PagerDutyOptions, other: Counter[str], display: str
) -> tuple[dict[str, Any] | None, list[tuple[int, str, str, object]]]:
    events = sorted(items, key=lambda x: (str(to_utc(x[1]["event"].get("occurred_at"))), x[0]))
    states = [(e["event"], e["event"].get("data") or {}) for _, e in events]
    incident_states = [d for ev, d in states if isinstance(d, dict) and d.get("type") == "incident"]
    inc: dict[str, Any] = {}
    for d in incident_states:
        inc.update({k: v for k, v in d.items() if v is not None})
    times = {
        t: [to_utc(ev.get("occurred_at")) for ev, _ in states if ev.get("event_type") == t]
        for t in ("incident.triggered", "incident.acknowledged", "incident.resolved")
    }
    raw_status = text(inc.get("status"))
    if raw_status is None:
        raw_status = next(
            (EVENT_STATUS[ev["event_type"]] for ev, _ in reversed(states) if ev.get("event_type") in EVENT_STATUS), None
        )
    resolved = to_utc(inc.get("resolved_at")) or latest(times["incident.resolved"])
    status = incident_status(STATUSES, raw_status, resolved, other)
    created = to_utc(inc.get("created_at")) or earliest(times["incident.triggered"])
    notes = [dig(d, "content") for ev, d in states if ev.get("event_type") == "incident.annotated"]
    custom = [
        f
        for _, d in states
        if isinstance(d, dict) and isinstance(d.get("custom_fields"), list)
        for f in d["custom_fields"]
    ]
    if custom and "custom_fields" not in inc:
        inc["custom_fields"] = custom
    first = events[0][0]
    if not inc.get("id"):
        inc["id"] = _v3_incident_id(events[0][1]["event"])
    if created is None:
        kinds = sorted({text(ev.get("event_type")) or "?" for ev, _ in states})
        reason = (
            f"webhook events {kinds} do not give the incident's creation time; include its "
            "incident.triggered delivery in the same file"
        )
        return None, [(n, "created_at", reason, inc.get("id")) for n, _ in events]
    return {
        RECORD_COLUMN: first,
        **_common(inc, options, notes),
        "status": status,
        "status_raw": raw_status,
        "created_at": created,
        "acknowledged_at": earliest(times["incident.acknowledged"]),
        "resolved_at": resolved if status == "resolved" else None,
        "updated_at": latest(to_utc(ev.get("occurred_at")) for ev, _ in states),
        "raw": raw_of([e for _, e in events]),
    }, []


def parse_pagerduty(path: Path, display: str, options: PagerDutyOptions) -> ParsedFile:
    """REST and v2 incidents map one to one; v3 webhook events fold per incident id."""
    tool = load_tool_records(
        path,
        display,
        kind=KIND,
        table="incidents",
        matches=_matches,
        expected="PagerDuty incidents (id, incident_number, status, created_at, service), an "
        '{"incidents": [...]} page, or v3 webhooks {"event": {"event_type": "incident.*", ...}}',
        envelope_keys=("incidents", "messages"),
    )
    rows: list[dict[str, Any]] = []
    hooks: dict[str, list[tuple[int, dict[str, Any]]]] = defaultdict(list)
    for n, rec in tool.records:
        if _is_v3(rec):
            event = rec["event"]
            if event.get("resource_type") not in (None, "incident") or not str(event.get("event_type")).startswith(
                "incident."
            ):
                tool.other[f"skipped:{text(event.get('event_type'))}"] += 1
                continue
            hooks[_v3_incident_id(event) or f"#record{n}"].append((n, rec))
        elif _is_v2(rec):
            rows.append(_rest_row(n, rec["incident"], rec, options, tool.other))
        elif _is_rest(rec):
            rows.append(_rest_row(n, rec, rec, options, tool.other))
        else:
            tool.other["skipped:not an incident"] += 1
    bad: list[tuple[int, str, str, object]] = []
    for items in hooks.values():
        values, problems = _v3_row(items, options, tool.other, display)
        if values is not None:
            rows.append(values)
        bad.extend(problems)
    rejects = [tool.rejects, reject_rows("incidents", KIND, display, bad)]
    return parsed(
        "incidents",
        rows,
        rejects=pd.concat([r for r in rejects if len(r)] or rejects[:1]),
        other=tool.other,
        records_read=tool.read,
    )


PAGERDUTY_INCIDENTS = SourceKind(
    name=KIND,
    table="incidents",
    description="PagerDuty incidents: REST GET /incidents pages, v3 webhook events (folded per incident), v2 webhooks",
    options=PagerDutyOptions,
    parse=parse_pagerduty,
)
