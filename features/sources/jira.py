"""Jira issues as incidents: search/board pages (``{"issues": [...]}``), issue arrays, and
``jira:issue_*`` webhooks. Which issues are incidents is configurable: issue type names,
labels, or a small JQL-like filter (type names are whatever the site uses, localised or not).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import field_validator

from features.history.schema import RECORD_COLUMN
from features.sources.base import ParsedFile, SourceKind, dig
from features.sources.normalize import (
    JIRA_PRIORITIES,
    IncidentOptions,
    environment,
    explicit_causes,
    not_change_related,
    note_other,
    severity,
)
from features.sources.records import adf_text, load_tool_records, obj, pick, raw_of, text, to_utc

KIND = "jira_incidents"
#: Jira status categories (stable keys, unlike localised status names) -> incident status.
CATEGORIES = {"new": "open", "indeterminate": "acknowledged", "done": "resolved"}

Predicate = Callable[[dict[str, Any]], bool]


class JiraOptions(IncidentOptions):
    """Keys of a ``jira_incidents`` source."""

    #: issue type names that are incidents (case-insensitive); default ["Incident"] unless ``filter``
    issue_types: list[str] | None = None
    #: when set, an issue must also carry at least one of these labels
    labels: list[str] | None = None
    #: JQL-like selection, e.g. ``issuetype in (Incident, Bug) AND labels = production``; replaces
    #: issue_types/labels. Operators: = != ~ in, not in, is EMPTY, is not EMPTY; AND, OR, NOT, ( ).
    filter: str | None = None
    #: component (first component, default) | project | label:<prefix> | a dotted path in the issue
    service_field: str = "component"
    #: dotted path of a custom severity field (e.g. fields.customfield_10040); else the priority
    severity_field: str | None = None

    @field_validator("filter")
    @classmethod
    def _parses(cls, value: str | None) -> str | None:
        if value is not None:
            compile_filter(value)
        return value


# --------------------------------------------------------------------------------------------
# The filter language

_TOKEN = re.compile(r'\s*(?:"([^"]*)"|\'([^\']*)\'|(\()|(\))|(,)|(!=|=|~)|([^\s(),=!~"\']+))')
_ALIASES = {"type": "issuetype", "component": "components", "label": "labels", "category": "statuscategory"}


def _tokens(source: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    source = source.strip()
    while pos < len(source):
        m = _TOKEN.match(source, pos)
        if not m or m.end() == pos:
            raise ValueError(f"filter: cannot read {source[pos : pos + 20]!r}")
        pos = m.end()
        dq, sq, lp, rp, comma, op, word = m.groups()
        if dq is not None or sq is not None:
            out.append(("str", dq if dq is not None else sq or ""))
        elif lp:
            out.append(("(", lp))
        elif rp:
            out.append((")", rp))
        elif comma:
            out.append((",", comma))
        elif op:
            out.append(("op", op))
        elif word is not None:
            out.append(("word", word))
    return out


def issue_values(issue: dict[str, Any], field: str) -> list[str]:
    """Lower-cased values of a field of an issue, for filtering (multi-valued fields are lists)."""
    fields = obj(issue.get("fields"))
    name = _ALIASES.get(field.lower(), field.lower())
    if name == "issuetype":
        values: list[Any] = [dig(fields, "issuetype", "name")]
    elif name == "labels":
        values = list(fields.get("labels") or [])
    elif name == "components":
        values = [c.get("name") for c in fields.get("components") or [] if isinstance(c, dict)]
    elif name == "statuscategory":
        values = [dig(fields, "status", "statusCategory", "key"), dig(fields, "status", "statusCategory", "name")]
    elif name == "project":
        values = [dig(fields, "project", "key"), dig(fields, "project", "name")]
    elif name == "key":
        values = [issue.get("key")]
    else:
        raw = fields.get(field, fields.get(name))
        values = raw if isinstance(raw, list) else [raw]
    return [t.lower() for t in (text(v) for v in values) if t]


def compile_filter(source: str) -> Predicate:
    """Parse the filter into a predicate over issues; raises ValueError naming the problem."""
    toks = _tokens(source)
    pos = 0

    def peek(offset: int = 0) -> tuple[str, str] | None:
        return toks[pos + offset] if pos + offset < len(toks) else None

    def word(expected: str) -> bool:
        t = peek()
        return t is not None and t[0] == "word" and t[1].lower() == expected

    def take() -> tuple[str, str]:
        nonlocal pos
        if pos >= len(toks):
            raise ValueError(f"filter: unexpected end of {source!r}")
        pos += 1
        return toks[pos - 1]

    def value() -> str:
        kind, val = take()
        if kind not in ("word", "str"):
            raise ValueError(f"filter: expected a value, got {val!r}")
        return val.lower()

    def values() -> list[str]:
        if take()[0] != "(":
            raise ValueError("filter: expected '(' after in")
        out = [value()]
        while peek() and peek()[0] == ",":  # type: ignore[index]
            take()
            out.append(value())
        if take()[0] != ")":
            raise ValueError("filter: expected ')' to close the list")
        return out

    def term() -> Predicate:
        if word("not"):
            take()
            inner = term()
            return lambda i: not inner(i)
        if peek() and peek()[0] == "(":  # type: ignore[index]
            take()
            inner = disjunction()
            if take()[0] != ")":
                raise ValueError("filter: expected ')'")
            return inner
        kind, field = take()
        if kind not in ("word", "str"):
            raise ValueError(f"filter: expected a field name, got {field!r}")
        if word("not") and peek(1) and peek(1)[1].lower() == "in":  # type: ignore[index]
            take()
            take()
            wanted = set(values())
            return lambda i: not set(issue_values(i, field)) & wanted
        if word("in"):
            take()
            wanted_in = set(values())
            return lambda i: bool(set(issue_values(i, field)) & wanted_in)
        if word("is"):
            take()
            negate = word("not")
            if negate:
                take()
            if value() not in ("empty", "null"):
                raise ValueError("filter: expected EMPTY after is")
            return (lambda i: bool(issue_values(i, field))) if negate else (lambda i: not issue_values(i, field))
        op_kind, op = take()
        if op_kind != "op":
            raise ValueError(f"filter: expected an operator after {field!r}, got {op!r}")
        target = value()
        if op == "=":
            return lambda i: target in issue_values(i, field)
        if op == "!=":
            return lambda i: target not in issue_values(i, field)
        return lambda i: any(target in v for v in issue_values(i, field))

    def conjunction() -> Predicate:
        parts = [term()]
        while word("and"):
            take()
            parts.append(term())
        return lambda i: all(p(i) for p in parts)

    def disjunction() -> Predicate:
        parts = [conjunction()]
        while word("or"):
            take()
            parts.append(conjunction())
        return lambda i: any(p(i) for p in parts)

    if not toks:
        raise ValueError("filter: empty")
    predicate = disjunction()
    if pos != len(toks):
        raise ValueError(f"filter: unexpected {toks[pos][1]!r}")
    return predicate


def selection(options: JiraOptions) -> Predicate:
    """Which issues are incidents, from ``filter`` or ``issue_types``/``labels``."""
    if options.filter:
        return compile_filter(options.filter)
    types = {t.lower() for t in (options.issue_types or ["Incident"])}
    labels = {x.lower() for x in options.labels} if options.labels else None
    return lambda i: (
        bool(set(issue_values(i, "issuetype")) & types)
        and (labels is None or bool(set(issue_values(i, "labels")) & labels))
    )


# --------------------------------------------------------------------------------------------


def _unwrap(rec: Any) -> Any:
    if isinstance(rec, dict) and "webhookEvent" in rec and isinstance(rec.get("issue"), dict):
        return rec["issue"]
    return rec


def _matches(rec: dict[str, Any]) -> bool:
    rec = _unwrap(rec)
    return isinstance(rec, dict) and "key" in rec and isinstance(rec.get("fields"), dict)


def _browse_url(issue: dict[str, Any]) -> str | None:
    self_url, key = text(issue.get("self")), text(issue.get("key"))
    m = re.match(r"^(https?://[^/]+(?:/jira)?)/rest/", self_url or "")
    return f"{m.group(1)}/browse/{key}" if m and key else self_url


def _service(issue: dict[str, Any], field: str) -> str | None:
    fields = issue["fields"]
    if field == "component":
        return text(dig(fields, "components", 0, "name"))
    if field == "project":
        return text(dig(fields, "project", "key"))
    if field.startswith("label:"):
        prefix = field[len("label:") :]
        for label in fields.get("labels") or []:
            if isinstance(label, str) and label.startswith(prefix) and label[len(prefix) :]:
                return label[len(prefix) :]
        return None
    return text(pick(issue, field))


def parse_jira(path: Path, display: str, options: JiraOptions) -> ParsedFile:
    """One incident per selected issue; other issues are skipped and counted by issue type."""
    tool = load_tool_records(
        path,
        display,
        kind=KIND,
        table="incidents",
        matches=_matches,
        expected="Jira issues (id, key, fields{issuetype, status, priority, created, resolutiondate}), an "
        '{"issues": [...]} search page, or jira:issue_* webhooks',
        envelope_keys=("issues",),
    )
    selected = selection(options)
    rows: list[dict[str, Any]] = []
    for n, original in tool.records:
        issue = _unwrap(original)
        if not _matches(issue):
            tool.other["skipped:not an issue"] += 1
            continue
        if not selected(issue):
            tool.other[f"skipped:{text(dig(issue, 'fields', 'issuetype', 'name')) or 'no issue type'}"] += 1
            continue
        fields = issue["fields"]
        category = text(dig(fields, "status", "statusCategory", "key"))
        status = CATEGORIES.get((category or "").lower())
        resolved = to_utc(fields.get("resolutiondate"))
        if status is None:
            note_other(tool.other, category)
            status = "resolved" if resolved is not None else "open"
        prio = text(dig(fields, "priority", "name"))
        sev_raw = text(pick(issue, options.severity_field)) if options.severity_field else None
        sev = (
            severity(sev_raw, options.priority_map)
            if sev_raw
            else severity(prio, options.priority_map, words=JIRA_PRIORITIES)
        )
        labels = fields.get("labels") if isinstance(fields.get("labels"), list) else []
        comments = [
            adf_text(c.get("body")) for c in dig(fields, "comment", "comments", default=[]) if isinstance(c, dict)
        ]
        rows.append(
            {
                RECORD_COLUMN: n,
                "incident_id": text(issue.get("key")) or text(issue.get("id")),
                "title": text(fields.get("summary")),
                "service": _service(issue, options.service_field),
                "environment": environment(options.environment, options.environment_map),
                "severity": sev,
                "priority": prio,
                "status": status,
                "status_raw": text(dig(fields, "status", "name")),
                "created_at": to_utc(fields.get("created")),
                # an issue reopened without clearing its resolution keeps a stale resolutiondate
                "resolved_at": resolved if status == "resolved" else None,
                "updated_at": to_utc(fields.get("updated")),
                "url": _browse_url(issue),
                "not_change_related": not_change_related(issue, labels, options),
                **explicit_causes(
                    issue,
                    [fields],
                    [fields.get("summary"), adf_text(fields.get("description")), *comments],
                    options.root_cause_field,
                ),
                "raw": raw_of([original]),
            }
        )
    return tool.result(rows)


JIRA_INCIDENTS = SourceKind(
    name=KIND,
    table="incidents",
    description="Jira issues selected as incidents (issue types, labels or a JQL-like filter): search pages, webhooks",
    options=JiraOptions,
    parse=parse_jira,
)
