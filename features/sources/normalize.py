"""Normalisation shared by the vendor connectors: environments, statuses, severities, causes.

Tools name the same things differently ("prod", "Production", "PRD"; "P1", "Highest",
"urgency: high"). Mapping them in one place keeps the connectors consistent and lets users
override the defaults per source (``environment_map``, ``priority_map``).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import Field

from features.history.schema import MAX_RAW, RECORD_COLUMN
from features.sources.base import (
    KindOptions,
    ParsedFile,
    SourceError,
    frame_from_rows,
    read_json_records,
    reject_rows,
    to_raw,
)

Environment = Literal["production", "staging", "testing", "development", "other"]
Severity = Literal["sev1", "sev2", "sev3", "sev4", "sev5"]

# --------------------------------------------------------------------------------------------
# Option mix-ins


class EnvironmentOptions(KindOptions):
    """``environment_map``: raw environment name (case-insensitive) -> canonical environment."""

    environment_map: dict[str, Environment] = Field(default_factory=dict)


class IncidentOptions(EnvironmentOptions):
    """Keys every incident connector shares: explicit causes, the not-change marker, severity."""

    #: dotted path to a field holding the cause (a sha, or text with "root cause: <sha>")
    root_cause_field: str | None = None
    #: a label/tag that marks an incident as not caused by any change
    not_change_related_label: str | None = None
    #: dotted path to a field that is truthy when the incident is not change related
    not_change_related_field: str | None = None
    #: raw priority/severity name (case-insensitive) -> sev1..sev5, over the built-in table
    priority_map: dict[str, Severity] = Field(default_factory=dict)
    #: environment of every incident of this source when the tool has none (e.g. production)
    environment: str | None = None


# --------------------------------------------------------------------------------------------
# Records and files


def require_shape(
    records: list[tuple[int, Any]], display: str, kind: str, matches: Callable[[dict[str, Any]], bool], expected: str
) -> None:
    """Refuse a file of the wrong kind: records exist but none has the fields this kind needs."""
    objects = [r for _, r in records if isinstance(r, dict)]
    if records and not any(matches(r) for r in objects):
        keys = sorted(objects[0])[:12] if objects else []
        found = f"first record has keys {keys}" if objects else "no record is a JSON object"
        raise SourceError(f"{display}: does not look like a {kind} export: expected {expected}; {found}")


def non_object_rejects(table: str, kind: str, display: str, records: list[tuple[int, Any]]) -> pd.DataFrame:
    """Quarantine rows for records that are not JSON objects (nothing to map)."""
    rows = [(n, "record", "not a JSON object", rec) for n, rec in records if not isinstance(rec, dict)]
    return reject_rows(table, kind, display, rows)


def parsed(
    table: str,
    rows: list[dict[str, Any]],
    *,
    rejects: pd.DataFrame | None = None,
    other: Counter[str] | None = None,
    records_read: int | None = None,
) -> ParsedFile:
    """A ``ParsedFile`` from mapped rows (timestamps are already UTC ``pd.Timestamp`` or raw text)."""
    frame = frame_from_rows(rows)
    out = ParsedFile(table=table, frame=frame, other_counts=dict(sorted((other or Counter()).items())))
    if rejects is not None:
        out.rejects = rejects
    out.records_read = records_read
    return out


@dataclass
class ToolRecords:
    """A vendor export after the checks every connector makes, so each one only maps its records."""

    table: str
    #: the JSON-object records left to map, with their record numbers
    records: list[tuple[int, dict[str, Any]]]
    #: quarantine rows for the records that are not JSON objects
    rejects: pd.DataFrame
    #: counts for the ``other_counts`` of the result (``skipped:...`` and unknown raw values)
    other: Counter[str] = field(default_factory=Counter)
    #: every record read, objects or not (``records_read``)
    read: int = 0

    def result(self, rows: list[dict[str, Any]]) -> ParsedFile:
        """The ``ParsedFile`` of the mapped rows, with these rejects and counts."""
        return parsed(self.table, rows, rejects=self.rejects, other=self.other, records_read=self.read)


def load_tool_records(
    path: Path,
    display: str,
    *,
    kind: str,
    table: str,
    matches: Callable[[dict[str, Any]], bool],
    expected: str,
    envelope_keys: tuple[str, ...] = (),
    skipped: str | None = None,
    expand: Callable[[Any], list[Any]] | None = None,
) -> ToolRecords:
    """Read an export, refuse it if it is of another kind, quarantine non-objects.

    ``expand`` splits a record into several (GraphQL pages); with ``skipped``, objects that do
    not ``match`` are dropped here and counted as ``skipped:<skipped>``.
    """
    records = read_json_records(path, display, envelope_keys)
    if expand is not None:
        records = [(n, r) for n, rec in records for r in expand(rec)]
    require_shape(records, display, kind, matches, expected)
    out = ToolRecords(table, [], non_object_rejects(table, kind, display, records), read=len(records))
    for n, rec in records:
        if not isinstance(rec, dict):
            continue
        if skipped is not None and not matches(rec):
            out.other[f"skipped:{skipped}"] += 1
            continue
        out.records.append((n, rec))
    return out


def raw_of(records: list[Any]) -> str:
    """``raw`` for a row built from one record, or from several (folded webhook deliveries).

    Folded rows keep every delivery; if that is too long, the bulky repository/sender objects
    that each webhook repeats are dropped first.
    """
    if len(records) == 1:
        return to_raw(records[0])
    text = to_raw(records)
    if len(text) <= MAX_RAW:
        return text
    bulky = {"repository", "sender", "organization", "installation", "enterprise", "project"}
    slim = [{k: v for k, v in r.items() if k not in bulky} if isinstance(r, dict) else r for r in records]
    return to_raw(slim)


def row(record_no: int, record: Any, **values: Any) -> dict[str, Any]:
    """A mapped row: canonical values (``None`` dropped later by conform) plus record and raw."""
    out = {RECORD_COLUMN: record_no, **values}
    out.setdefault("raw", to_raw(record))
    return out


# --------------------------------------------------------------------------------------------
# Values


def obj(value: Any) -> dict[str, Any]:
    """``value`` if it is a JSON object, else an empty one (tool fields are often null)."""
    return value if isinstance(value, dict) else {}


def text(value: Any) -> str | None:
    """A field's display text: strings as-is, {name|value|summary|displayName} objects, numbers."""
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
    if isinstance(value, Mapping):
        for key in ("value", "name", "summary", "displayName", "key", "login", "emailAddress", "email"):
            if isinstance(value.get(key), (str, int)) and not isinstance(value.get(key), bool):
                return text(value[key])
        return None
    if isinstance(value, list):
        return text(value[0]) if value else None
    return str(value)


def pick(record: Any, path: str) -> Any:
    """The value at a dotted ``path`` (``fields.components.0.name``); a list of ``{name, value}``
    objects can be stepped into by name (``custom_fields.root_cause``)."""
    cur = record
    for step in path.split("."):
        if isinstance(cur, Mapping):
            cur = cur.get(step)
        elif isinstance(cur, list):
            if step.lstrip("-").isdigit():
                i = int(step)
                cur = cur[i] if -len(cur) <= i < len(cur) else None
            else:
                named = [
                    x for x in cur if isinstance(x, Mapping) and step in (x.get("name"), x.get("key"), x.get("id"))
                ]
                cur = named[0].get("value") if named else None
        else:
            return None
        if cur is None:
            return None
    return cur


def to_utc(value: Any) -> Any:
    """An ISO 8601 value as a UTC ``pd.Timestamp``; unparseable or naive text is returned
    unchanged so that ``conform`` quarantines it with its reason."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, pd.Timestamp):
        return value.tz_convert("UTC") if value.tzinfo else value
    if isinstance(value, str):
        try:
            ts = pd.Timestamp(value.strip())
        except (ValueError, TypeError):
            return value
        if ts is pd.NaT or ts.tzinfo is None:
            return value
        return ts.tz_convert("UTC")
    return value


def epoch_ms(value: Any) -> Any:
    """Epoch milliseconds (number or numeric text) as a UTC ``pd.Timestamp``; else unchanged."""
    if value is None or isinstance(value, bool):
        return None if value is None else value
    try:
        number = float(value)
    except (TypeError, ValueError):
        return value
    if number != number or abs(number) > 1e14:
        return value
    return pd.Timestamp(int(number), unit="ms", tz="UTC")


def latest(values: Iterable[Any]) -> Any:
    """The latest of some timestamps (ignoring missing and unparsed ones)."""
    stamps = [v for v in values if isinstance(v, pd.Timestamp) and v.tzinfo is not None]
    return max(stamps) if stamps else None


def earliest(values: Iterable[Any]) -> Any:
    stamps = [v for v in values if isinstance(v, pd.Timestamp) and v.tzinfo is not None]
    return min(stamps) if stamps else None


def as_bool(value: Any) -> bool | None:
    """Loose truthiness of a tool field ("true", "yes", 1, a non-empty option); None if absent."""
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value != 0
    if isinstance(value, str):
        s = value.strip().lower()
        return s not in ("", "false", "no", "0", "n", "off", "none")
    if isinstance(value, Mapping):
        inner = text(value)
        return as_bool(inner) if inner is not None else bool(value)
    if isinstance(value, list):
        return bool(value)
    return bool(value)


def repo_from_url(url: Any) -> str | None:
    """``owner/name`` of a repository URL (GitHub, GitLab with groups, Bitbucket), API or web."""
    if not isinstance(url, str) or not url.strip():
        return None
    m = re.match(r"^[a-z]+://[^/]+/(.*)$", url.strip())
    path = m.group(1) if m else url.strip()
    path = path.split("/-/")[0]
    path = re.sub(r"^(api/v\d+/)?repos/", "", path)
    path = re.sub(r"^(?:addon|commits?|deployments?|pipelines?)/.*$", "", path)
    parts = [p for p in path.split("/") if p]
    for stop in ("commit", "commits", "deployments", "addon", "pipelines", "jobs", "tree", "src"):
        if stop in parts:
            parts = parts[: parts.index(stop)]
    if parts and parts[-1].endswith(".git"):
        parts[-1] = parts[-1][:-4]
    return "/".join(parts) or None


def camelize_keys(obj: Any) -> Any:
    """Lower-case the first letter of every key (``CommitOid`` -> ``commitOid``, ``ID`` -> ``id``):
    DevLake re-serialises GitHub GraphQL nodes with Go's PascalCase names."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            key = (
                k.lower()
                if isinstance(k, str) and k.isupper()
                else (k[:1].lower() + k[1:] if isinstance(k, str) else k)
            )
            out[key] = camelize_keys(v)
        return out
    if isinstance(obj, list):
        return [camelize_keys(v) for v in obj]
    return obj


def json_object(value: Any) -> dict[str, Any]:
    """A free-form payload that may be an object or a JSON string of one (GitHub ``payload``)."""
    if isinstance(value, dict):
        return value
    if isinstance(value, str) and value.strip().startswith("{"):
        try:
            obj = json.loads(value)
        except json.JSONDecodeError:
            return {}
        return obj if isinstance(obj, dict) else {}
    return {}


def adf_text(doc: Any) -> str:
    """Plain text of a Jira description/comment: a string (API v2) or Atlassian Document Format."""
    if doc is None:
        return ""
    if isinstance(doc, str):
        return doc
    if isinstance(doc, dict):
        own = str(doc["text"]) if isinstance(doc.get("text"), str) else ""
        return " ".join([own, *(adf_text(c) for c in doc.get("content") or [])]).strip()
    if isinstance(doc, list):
        return " ".join(adf_text(c) for c in doc)
    return ""


# --------------------------------------------------------------------------------------------
# Environments

_PRODUCTION = {"production", "prod", "prd", "live", "prodution"}
_STAGING = {"staging", "stage", "stg", "preprod", "uat", "preproduction", "pre"}
_TESTING = {"testing", "test", "tests", "qa", "tst", "integration", "ci"}
_DEVELOPMENT = {"development", "dev", "develop", "local", "sandbox", "devel"}


def environment(raw: Any, overrides: Mapping[str, str] | None = None) -> str | None:
    """Canonical environment of a raw name: production|staging|testing|development|other.

    Matching is by word (``prod-eu-1`` is production, ``pre-production`` is staging); a name
    that matches nothing is ``other`` (the raw name is kept in ``environment_raw``).
    """
    name = text(raw)
    if name is None:
        return None
    if overrides:
        lowered = {k.strip().lower(): v for k, v in overrides.items()}
        if name.strip().lower() in lowered:
            return lowered[name.strip().lower()]
    tokens = [t for t in re.split(r"[^a-z0-9]+", name.lower()) if t]
    joined = "".join(tokens)
    if joined.startswith("preprod") or joined.startswith("preproduction"):
        return "staging"
    for group, label in (
        (_PRODUCTION, "production"),
        (_STAGING, "staging"),
        (_TESTING, "testing"),
        (_DEVELOPMENT, "development"),
    ):
        if any(t in group for t in tokens):
            return label
    return "other"


# --------------------------------------------------------------------------------------------
# Statuses


def lookup(table: Mapping[str, str], raw: Any) -> str | None:
    """Case- and separator-insensitive lookup (``IN PROGRESS`` = ``in_progress``)."""
    name = text(raw)
    if name is None:
        return None
    return table.get(re.sub(r"[\s-]+", "_", name.strip().lower()))


def note_other(counter: Counter[str], raw: Any) -> None:
    counter[text(raw) or "(missing)"] += 1


#: Deploy statuses as the deploy tools write them (GitHub, GitLab, Bitbucket, Bamboo, DevLake) and
#: the usual CI words; the table any export without a connector of its own is read with.
DEPLOY_STATUS_WORDS = {
    "success": "success",
    "successful": "success",
    "succeeded": "success",
    "ok": "success",
    "passed": "success",
    "pass": "success",
    "done": "success",
    "completed": "success",
    "deployed": "success",
    "failure": "failure",
    "failed": "failure",
    "fail": "failure",
    "error": "failure",
    "errored": "failure",
    "canceled": "canceled",
    "cancelled": "canceled",
    "aborted": "canceled",
    "abort": "canceled",
    "stopped": "canceled",
    "skipped": "canceled",
    "running": "running",
    "in_progress": "running",
    "pending": "running",
    "queued": "running",
    "started": "running",
    "rolled_back": "rolled_back",
    "rollback": "rolled_back",
    "rolledback": "rolled_back",
    "reverted": "rolled_back",
}

#: Incident statuses as the incident tools write them (PagerDuty, Opsgenie, Jira, DevLake).
INCIDENT_STATUS_WORDS = {
    "open": "open",
    "opened": "open",
    "new": "open",
    "triggered": "open",
    "firing": "open",
    "todo": "open",
    "acknowledged": "acknowledged",
    "ack": "acknowledged",
    "acked": "acknowledged",
    "investigating": "acknowledged",
    "in_progress": "acknowledged",
    "identified": "acknowledged",
    "monitoring": "acknowledged",
    "resolved": "resolved",
    "closed": "resolved",
    "done": "resolved",
    "fixed": "resolved",
    "mitigated": "resolved",
}


def status_table(words: Mapping[str, str], overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """``words`` with a source's ``status_map`` on top, keyed the way ``lookup`` looks names up."""
    table = dict(words)
    for raw, canonical in (overrides or {}).items():
        table[re.sub(r"[\s-]+", "_", raw.strip().lower())] = canonical
    return table


def status_or_other(table: Mapping[str, str], raw: str | None, other: Counter[str]) -> str | None:
    """``lookup`` of a raw status; one the table does not know is ``other`` and counted, not lost."""
    status = lookup(table, raw)
    if raw and status is None:
        note_other(other, raw)
        return "other"
    return status


def incident_status(table: Mapping[str, str], raw: str | None, resolved: Any, other: Counter[str]) -> str:
    """``lookup`` of a raw incident status; an unknown one is counted and read from ``resolved``."""
    status = lookup(table, raw)
    if status is None:
        note_other(other, raw)
        status = "resolved" if resolved is not None else "open"
    return status


def flag_service(flag: str | None, project: str | None, service_from: str, separator: str) -> str | None:
    """Service of a flag event without a service tag: its project, its key's prefix, or none."""
    if service_from == "project":
        return project
    if service_from == "flag_prefix" and flag:
        return flag.split(separator, 1)[0] or None
    return None


# --------------------------------------------------------------------------------------------
# Severity

#: P1..P5 (PagerDuty, Opsgenie), SEV1..SEV5 / S1..S5, and plain words.
_SEVERITY_WORDS = {
    "critical": "sev1",
    "blocker": "sev1",
    "urgent": "sev1",
    "highest": "sev1",
    "high": "sev2",
    "major": "sev2",
    "medium": "sev3",
    "moderate": "sev3",
    "normal": "sev3",
    "low": "sev4",
    "minor": "sev4",
    "lowest": "sev5",
    "trivial": "sev5",
    "info": "sev5",
    "informational": "sev5",
}

#: Jira's built-in priorities: the current scheme and the older Blocker..Trivial one.
JIRA_PRIORITIES = {
    "highest": "sev1",
    "high": "sev2",
    "medium": "sev3",
    "low": "sev4",
    "lowest": "sev5",
    "blocker": "sev1",
    "critical": "sev2",
    "major": "sev3",
    "minor": "sev4",
    "trivial": "sev5",
}


def severity(
    raw: Any, overrides: Mapping[str, str] | None = None, words: Mapping[str, str] | None = None
) -> str | None:
    """sev1..sev5 of a priority/severity name: P1..P5, SEV-1, S1, 1..5, or a word; None if unknown."""
    name = text(raw)
    if name is None:
        return None
    key = name.strip().lower()
    if overrides:
        lowered = {k.strip().lower(): v for k, v in overrides.items()}
        if key in lowered:
            return lowered[key]
    m = re.fullmatch(r"(?:p|sev|s|severity|priority)?[\s_-]*([1-5])", key)
    if m:
        return f"sev{m.group(1)}"
    table = words if words is not None else _SEVERITY_WORDS
    return table.get(key)


# --------------------------------------------------------------------------------------------
# Explicit causes

#: The Four Keys convention: "root cause: <sha>" anywhere in the incident text.
ROOT_CAUSE_RE = re.compile(r"root[\s_-]*cause\s*[:=]?\s*([0-9a-f]{7,40})\b", re.IGNORECASE)
_SHA_RE = re.compile(r"^[0-9a-fA-F]{7,40}$")

CAUSE_FIELDS = ("caused_by_deploy_id", "caused_by_commit_sha", "caused_by_flag_key")


def root_cause_sha(*texts: Any) -> str | None:
    """The first "root cause: <sha>" (7-40 hex, case-insensitive) in the given texts, lower-cased."""
    for t in texts:
        if isinstance(t, str):
            m = ROOT_CAUSE_RE.search(t)
            if m:
                return m.group(1).lower()
    return None


def explicit_causes(
    record: Mapping[str, Any], containers: Iterable[Any], texts: Iterable[Any], root_cause_field: str | None
) -> dict[str, Any]:
    """caused_by_* from, in order: ``caused_by_*`` keys (on the record or in ``containers``, e.g.
    custom fields), the configured ``root_cause_field``, then "root cause: <sha>" in ``texts``."""
    out: dict[str, Any] = {}
    places = [record, *[c for c in containers if c is not None]]
    for name in CAUSE_FIELDS:
        for place in places:
            value = pick(place, name) if isinstance(place, (Mapping, list)) else None
            if text(value):
                out[name] = text(value)
                break
    if "caused_by_commit_sha" not in out and root_cause_field:
        value = pick(record, root_cause_field)
        value_text = adf_text(value) if isinstance(value, dict) and "content" in value else text(value)
        if value_text:
            sha = value_text.strip() if _SHA_RE.match(value_text.strip()) else root_cause_sha(value_text)
            if sha:
                out["caused_by_commit_sha"] = sha.lower()
    if "caused_by_commit_sha" not in out:
        sha = root_cause_sha(*texts)
        if sha:
            out["caused_by_commit_sha"] = sha
    return out


def not_change_related(record: Mapping[str, Any], labels: Iterable[Any], options: IncidentOptions) -> bool | None:
    """True/False when a marker is configured (label present, or field truthy); None otherwise."""
    if options.not_change_related_label is None and options.not_change_related_field is None:
        return None
    marked = False
    if options.not_change_related_label is not None:
        wanted = options.not_change_related_label.strip().lower()
        marked = any((text(x) or "").lower() == wanted for x in labels)
    if not marked and options.not_change_related_field is not None:
        marked = bool(as_bool(pick(record, options.not_change_related_field)))
    return marked


# --------------------------------------------------------------------------------------------
# Change size

_INFRA_PATTERNS = (
    re.compile(r"\.(tf|tfvars|hcl)$"),
    re.compile(r"(^|/)terraform/"),
    re.compile(r"(^|/)(k8s|kubernetes|manifests?|helm|charts?|kustomize|deploy|deployment|infra|ansible)/"),
    re.compile(r"(^|/)(chart|values|kustomization|skaffold)(-[\w.-]+)?\.ya?ml$"),
    re.compile(r"(^|/)\.github/workflows/"),
    re.compile(r"(^|/)\.gitlab-ci\.ya?ml$"),
    re.compile(r"(^|/)bitbucket-pipelines\.yml$"),
    re.compile(r"(^|/)jenkinsfile$"),
    re.compile(r"(^|/)\.circleci/"),
    re.compile(r"(^|/)(docker-compose[\w.-]*\.ya?ml|dockerfile(\.[\w.-]+)?|[\w.-]+\.dockerfile)$"),
    re.compile(r"(^|/)(serverless\.ya?ml|cloudformation/|[\w.-]+\.cfn\.(ya?ml|json)|pulumi\.[\w.-]+\.ya?ml)"),
)


def touches_infra(paths: Iterable[Any]) -> bool | None:
    """Whether any changed path is infrastructure or deploy config (Terraform, Kubernetes/Helm,
    CI workflows, Dockerfiles...); None when no path is known."""
    names = [p.lower() for p in paths if isinstance(p, str) and p]
    if not names:
        return None
    return any(pat.search(n) for n in names for pat in _INFRA_PATTERNS)


def diff_line_counts(diff: Any) -> tuple[int, int]:
    """(added, deleted) lines of a unified diff text (GitLab compare ``diffs[].diff``)."""
    if not isinstance(diff, str):
        return 0, 0
    added = deleted = 0
    for line in diff.splitlines():
        if line.startswith("+") and not line.startswith("+++"):
            added += 1
        elif line.startswith("-") and not line.startswith("---"):
            deleted += 1
    return added, deleted


def compare_stats(compare: Any) -> dict[str, Any]:
    """Change size of a ``compare`` object: GitHub (files[].additions/deletions, commits,
    total_commits) or GitLab (diffs[].diff, commits). Only the keys it can tell."""
    if not isinstance(compare, Mapping):
        return {}
    out: dict[str, Any] = {}
    files = compare.get("files")
    diffs = compare.get("diffs")
    paths: list[Any] = []
    if isinstance(files, list):
        file_objs = [f for f in files if isinstance(f, Mapping)]
        out["lines_added"] = sum(int(f.get("additions") or 0) for f in file_objs)
        out["lines_deleted"] = sum(int(f.get("deletions") or 0) for f in file_objs)
        out["files_changed"] = len(file_objs)
        paths = [f.get("filename") for f in file_objs] + [f.get("previous_filename") for f in file_objs]
    elif isinstance(diffs, list):
        diff_objs = [d for d in diffs if isinstance(d, Mapping)]
        counts = [diff_line_counts(d.get("diff")) for d in diff_objs]
        out["lines_added"] = sum(a for a, _ in counts)
        out["lines_deleted"] = sum(d for _, d in counts)
        out["files_changed"] = len(diff_objs)
        paths = [d.get("new_path") for d in diff_objs] + [d.get("old_path") for d in diff_objs]
    commits = compare.get("commits")
    if isinstance(compare.get("total_commits"), int):
        out["commit_count"] = compare["total_commits"]
    elif isinstance(commits, list):
        out["commit_count"] = len(commits)
    if isinstance(commits, list):
        shas = [text(c.get("sha") or c.get("id")) for c in commits if isinstance(c, Mapping)]
        if any(shas):
            out["commit_shas"] = " ".join(s for s in shas if s)
    infra = touches_infra(paths)
    if infra is not None:
        out["touches_infra"] = infra
    return out


#: Keys of GitHub's free-form deployment ``payload`` that our simulator (and users) write.
PAYLOAD_KEYS = {
    "lines_added": "lines_added",
    "lines_deleted": "lines_deleted",
    "files_changed": "files_changed",
    "commit_count": "commit_count",
    "touches_infra": "touches_infra",
    "is_rollback": "is_rollback",
    "reverts_deployment_id": "reverts_deploy_id",
    "reverts_deploy_id": "reverts_deploy_id",
    "squad": "squad",
    "tribe": "tribe",
    "service": "service",
}


def payload_fields(payload: Any) -> dict[str, Any]:
    """Canonical values carried in a deployment payload object (see ``PAYLOAD_KEYS``)."""
    obj = json_object(payload)
    out: dict[str, Any] = {}
    for key, canon in PAYLOAD_KEYS.items():
        value = obj.get(key)
        if value is not None and value != "":
            out[canon] = text(value) if canon in ("reverts_deploy_id", "squad", "tribe", "service") else value
    return out
