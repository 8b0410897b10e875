"""Normalisation shared by the vendor connectors: environments, statuses, severities, causes, change size.

Tools name the same things differently ("prod", "Production", "PRD"; "P1", "Highest",
"urgency: high"). Mapping them in one place keeps the connectors consistent and lets users
override the defaults per source (``environment_map``, ``priority_map``).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import Field

from features.sources.base import KindOptions
from features.sources.records import adf_text, as_bool, json_object, pick, text

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
