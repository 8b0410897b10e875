"""Writing a simulated history as the files ingest reads, plus the truth only evaluation may read.

Two styles: ``generic`` (CSV + JSON lines mapped by the generic connector) and ``tools`` (gzip
JSON in the record shapes of GitHub REST deployments, the LaunchDarkly audit log and PagerDuty
REST incidents, read by their connectors). Both use the source names of ``features.simulation.simulator``
so the canonical ids ingest produces equal the simulator's. ``ground_truth/`` is never named in
sources.yaml.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import yaml

from features.history.choices import check_choice
from features.simulation.simulator import (
    CATALOG_SOURCE,
    DEPLOY_SOURCE,
    INCIDENT_SOURCE,
    TOGGLE_SOURCE,
    SimulatedHistory,
)

Style = Literal["generic", "tools"]
GROUND_TRUTH_DIR = "ground_truth"
UPCOMING_FILE = "upcoming.csv"
CATALOG_FILE = "backstage/catalog-info.yaml"
#: Columns of upcoming.csv (canonical deploy columns; created_at is the planned time).
UPCOMING_COLUMNS = (
    "deploy_id", "service", "environment", "author", "created_at", "lines_added", "lines_deleted", "files_changed",
    "commit_count", "touches_infra", "is_rollback", "squad", "tribe", "commit_sha", "status",
)  # fmt: skip
#: Generic deploys CSV columns besides the native ``id``.
_DEPLOY_COLUMNS = (
    "service", "environment", "commit_sha", "prev_commit_sha", "ref", "status", "created_at", "started_at",
    "finished_at", "author", "commit_count", "lines_added", "lines_deleted", "files_changed", "is_rollback",
    "reverts_deploy_id", "touches_infra", "squad", "tribe",
)  # fmt: skip
_TOGGLE_COLUMNS = ("flag_key", "project", "environment", "service", "action", "actor", "new_enabled", "comment")
_INCIDENT_COLUMNS = (
    "title", "service", "environment", "severity", "priority", "urgency", "status", "created_at", "acknowledged_at",
    "resolved_at", "caused_by_deploy_id", "caused_by_commit_sha", "caused_by_flag_key", "not_change_related",
)  # fmt: skip
#: Organisation name used in tool URLs and e-mail addresses.
ORG = "acme"


def write_exports(sim: SimulatedHistory, out_dir: Path, style: Style) -> Path:
    """Write the exports, upcoming.csv and ground_truth/; returns the sources.yaml path."""
    check_choice("export style", style, Style)
    out_dir.mkdir(parents=True, exist_ok=True)
    yaml_text = _write_generic(sim, out_dir) if style == "generic" else _write_tools(sim, out_dir)
    yaml_text += _write_catalog(sim.history.catalog, out_dir / CATALOG_FILE)
    _write_upcoming(sim.upcoming, out_dir / UPCOMING_FILE)
    _write_truth(sim, out_dir / GROUND_TRUTH_DIR)
    path = out_dir / "sources.yaml"
    path.write_text(yaml_text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------
# Shared helpers


def iso_z(values: pd.Series) -> np.ndarray:
    """UTC timestamps as ISO 8601 with Z (object array, None where missing); vectorised."""
    naive = values.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy().astype("datetime64[s]")
    text = np.strings.add(np.datetime_as_string(naive, unit="s"), "Z").astype(object)
    text[np.isnat(naive)] = None
    return text


def native_ids(ids: pd.Series, source: str) -> pd.Series:
    """The native ids written to an export: the canonical id minus ``"<source>:"``."""
    prefix = f"{source}:"
    if not ids.str.startswith(prefix).all():
        raise ValueError(f"ids do not all start with {prefix!r}")
    return ids.str.slice(len(prefix))


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as plain Python dicts with None for missing values (JSON-ready)."""
    obj = frame.astype(object)
    obj = obj.where(frame.notna(), None)
    return [{str(k): v for k, v in row.items()} for row in obj.to_dict("records")]


def _write_jsonl(path: Path, frame: pd.DataFrame) -> None:
    """JSON lines (missing values as null), written by pandas' C encoder."""
    frame.to_json(path, orient="records", lines=True, force_ascii=False)


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    """CSV through Arrow (pandas' writer is ~10x slower); booleans as true/false, missing as empty."""
    pacsv.write_csv(pa.Table.from_pandas(frame, preserve_index=False), path)


def _write_upcoming(upcoming: pd.DataFrame, path: Path) -> None:
    frame = upcoming[list(UPCOMING_COLUMNS)].copy()
    frame["created_at"] = iso_z(upcoming["created_at"])
    _write_csv(frame, path)


def _write_truth(sim: SimulatedHistory, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    sim.deploy_truth.to_parquet(out / "deploy_truth.parquet", index=False)
    sim.toggle_truth.to_parquet(out / "toggle_truth.parquet", index=False)
    sim.incident_truth.to_parquet(out / "incident_truth.parquet", index=False)
    if len(sim.upcoming_truth.columns):
        sim.upcoming_truth.to_parquet(out / "upcoming_truth.parquet", index=False)


_HEADER = (
    "# Written by `incident-risk simulate` ({style} style): the exports ingest reads, one source each.\n"
    "# ground_truth/ (each change's true incident probability and the incidents it caused) is\n"
    "# deliberately not a source: only evaluation may read it.\n"
)


# --------------------------------------------------------------------------------------------
# Generic style: CSV + JSON lines


def _write_generic(sim: SimulatedHistory, out: Path) -> str:
    h = sim.history
    deploys = h.deploys[list(_DEPLOY_COLUMNS)].copy()
    for col in ("created_at", "started_at", "finished_at"):
        deploys[col] = iso_z(h.deploys[col])
    deploys.insert(0, "id", native_ids(h.deploys["deploy_id"], DEPLOY_SOURCE))
    _write_csv(deploys, out / "deploys.csv")

    toggles = h.toggle_events[list(_TOGGLE_COLUMNS)].copy()
    toggles.insert(0, "id", native_ids(h.toggle_events["event_id"], TOGGLE_SOURCE))
    toggles["date"] = (h.toggle_events["occurred_at"].dt.tz_convert("UTC").dt.tz_localize(None)
                       .to_numpy().astype("datetime64[ms]").astype(np.int64))  # fmt: skip
    _write_jsonl(out / "toggle_events.jsonl", toggles)

    incidents = h.incidents[list(_INCIDENT_COLUMNS)].copy()
    for col in ("created_at", "acknowledged_at", "resolved_at"):
        incidents[col] = iso_z(h.incidents[col])
    incidents.insert(0, "id", native_ids(h.incidents["incident_id"], INCIDENT_SOURCE))
    _write_jsonl(out / "incidents.jsonl", incidents)

    return (
        _HEADER.format(style="generic")
        + f"""sources:
  - name: {DEPLOY_SOURCE}
    kind: generic
    table: deploys
    format: csv
    path: deploys.csv
    timestamp_format: iso8601   # ISO 8601 in UTC with a trailing Z
    columns:
      deploy_id: id
  - name: {TOGGLE_SOURCE}
    kind: generic
    table: toggle_events
    format: jsonl
    path: toggle_events.jsonl
    timestamp_format: unix_ms   # epoch milliseconds, as LaunchDarkly writes them
    columns:
      event_id: id
      occurred_at: date
  - name: {INCIDENT_SOURCE}
    kind: generic
    table: incidents
    format: jsonl
    path: incidents.jsonl
    timestamp_format: iso8601   # ISO 8601 in UTC with a trailing Z
    columns:
      incident_id: id
"""
    )


# --------------------------------------------------------------------------------------------
# Tools style: GitHub REST deployments, LaunchDarkly audit log, PagerDuty REST incidents

#: Canonical deploy status -> GitHub deployment status states, newest first (GitHub's order).
#: GitHub has no "canceled" state: a canceled deployment ends in ``error``.
_GITHUB_STATES = {"success": ("success", "in_progress"), "failure": ("failure", "in_progress"), "canceled": ("error",)}
#: Canonical toggle action -> (LaunchDarkly access action, titleVerb).
LD_ACTIONS = {
    "created": ("createFlag", "created the flag"),
    "enabled": ("updateOn", "turned on the flag"),
    "disabled": ("updateOff", "turned off the flag"),
    "rollout_changed": ("updateFallthrough", "changed the default rule of the flag"),
    "targeting_changed": ("updateRules", "changed the targeting rules of the flag"),
    "archived": ("archiveFlag", "archived the flag"),
}
_PD_STATUS = {"open": "triggered", "acknowledged": "acknowledged", "resolved": "resolved"}


def _write_tools(sim: SimulatedHistory, out: Path) -> str:
    h = sim.history
    for sub in ("github", "launchdarkly", "pagerduty"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    _write_gz_json(out / "github" / "deployments.json.gz", github_deployments(h.deploys))
    _write_gz_json(out / "launchdarkly" / "auditlog.json.gz", {
        "_links": {"self": {"href": "/api/v2/auditlog", "type": "application/json"}},
        "items": launchdarkly_entries(h.toggle_events),
    })  # fmt: skip
    _write_gz_json(out / "pagerduty" / "incidents.json.gz", pagerduty_incidents(h.incidents))
    return (
        _HEADER.format(style="tools")
        + f"""sources:
  - name: {DEPLOY_SOURCE}
    kind: github_deployments
    path: github/deployments.json.gz     # GET /repos/{{owner}}/{{repo}}/deployments, each with its statuses
  - name: {TOGGLE_SOURCE}
    kind: launchdarkly_auditlog
    path: launchdarkly/auditlog.json.gz  # GET /api/v2/auditlog; the flag's service:<name> tag names the service
  - name: {INCIDENT_SOURCE}
    kind: pagerduty_incidents
    path: pagerduty/incidents.json.gz    # GET /incidents; causes in custom_fields or "root cause: <sha>" titles
    environment: production
    not_change_related_field: custom_fields.not_change_related
"""
    )


def _write_catalog(catalog: pd.DataFrame, path: Path) -> str:
    """The organisation as Backstage ``catalog-info.yaml`` documents; returns its sources.yaml entry."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump_all(backstage_entities(catalog), sort_keys=False), encoding="utf-8")
    return f"""  - name: {CATALOG_SOURCE}
    kind: backstage_catalog
    path: {CATALOG_FILE}   # Backstage entities: squads own services, tribes group squads
"""


def backstage_entities(catalog: pd.DataFrame) -> list[dict[str, Any]]:
    """Backstage entities (Group, System, Component) of a canonical catalog table."""
    out: list[dict[str, Any]] = []
    kinds = {"group": "Group", "system": "System", "component": "Component"}
    for r in _records(catalog):
        metadata: dict[str, Any] = {"name": r["name"]}
        if r["slack_channel"]:
            metadata["annotations"] = {"slack.com/channel": f"#{r['slack_channel']}"}
        spec: dict[str, Any] = {}
        if r["type"]:
            spec["type"] = r["type"]
        if r["lifecycle"]:
            spec["lifecycle"] = r["lifecycle"]
        if r["owner"]:
            spec["owner"] = f"group:default/{r['owner']}"
        if r["system"]:
            spec["system"] = r["system"]
        if r["parent"]:
            spec["parent"] = f"group:default/{r['parent']}"
        if r["kind"] == "group":
            spec["children"] = []
        if r["kind"] == "component":
            spec["dependsOn"] = [f"component:default/{d}" for d in (r["depends_on"] or "").split()]
        entity = {"apiVersion": "backstage.io/v1alpha1", "kind": kinds[r["kind"]], "metadata": metadata, "spec": spec}
        out.append(entity)
    return out


def _write_gz_json(path: Path, payload: Any) -> None:
    data = json.dumps(payload, separators=(",", ":")).encode("utf-8")
    path.write_bytes(gzip.compress(data, compresslevel=6, mtime=0))  # mtime 0: byte-identical reruns


def _user_id(login: str) -> int:
    """A stable GitHub-like numeric user id for a login (no hash randomisation)."""
    return 10_000_000 + int.from_bytes(login.encode()[:6].ljust(6, b"\0"), "big") % 89_999_999


def github_deployments(deploys: pd.DataFrame) -> list[dict[str, Any]]:
    """GitHub REST deployment objects (trimmed) with their ``statuses`` and a ``payload`` of change metrics."""
    frame = deploys.copy()
    for col in ("created_at", "started_at", "finished_at", "updated_at"):
        frame[col] = iso_z(deploys[col])
    frame["native"] = native_ids(deploys["deploy_id"], DEPLOY_SOURCE)
    out = []
    for r in _records(frame):
        repo = f"https://api.github.com/repos/{ORG}/{r['service']}"
        url = f"{repo}/deployments/{r['native']}"
        creator = {"login": r["author"], "id": _user_id(r["author"]), "type": "User"}
        statuses = []
        for k, state in enumerate(_GITHUB_STATES.get(r["status"], ())):
            at = r["started_at"] if state == "in_progress" else r["finished_at"]
            statuses.append({
                "id": int(r["native"]) * 10 + (2 - k), "state": state, "creator": creator,
                "description": "Deployment canceled" if r["status"] == "canceled" else "",
                "environment": r["environment"], "created_at": at, "updated_at": at, "deployment_url": url,
            })  # fmt: skip
        payload = {
            "service": r["service"], "squad": r["squad"], "tribe": r["tribe"],
            "lines_added": r["lines_added"], "lines_deleted": r["lines_deleted"], "files_changed": r["files_changed"],
            "commit_count": r["commit_count"], "touches_infra": r["touches_infra"], "is_rollback": r["is_rollback"],
        }  # fmt: skip
        if r["reverts_deploy_id"]:
            payload["reverts_deployment_id"] = r["reverts_deploy_id"]
        out.append({
            "url": url, "id": int(r["native"]), "sha": r["commit_sha"], "ref": r["ref"], "task": "deploy",
            "payload": payload, "original_environment": r["environment"], "environment": r["environment"],
            "description": "Rollback" if r["is_rollback"] else None, "creator": creator,
            "created_at": r["created_at"], "updated_at": r["updated_at"] or r["created_at"],
            "repository_url": repo, "production_environment": r["environment"] == "production",
            "transient_environment": False, "statuses": statuses,
        })  # fmt: skip
    return out


def launchdarkly_entries(toggles: pd.DataFrame) -> list[dict[str, Any]]:
    """LaunchDarkly audit-log entries (trimmed); the flag's tags carry ``service:<name>``."""
    frame = toggles.copy()
    frame["native"] = native_ids(toggles["event_id"], TOGGLE_SOURCE)
    frame["date"] = toggles["occurred_at"].dt.tz_localize(None).to_numpy().astype("datetime64[ms]").astype(np.int64)
    out = []
    for r in _records(frame):
        action, verb = LD_ACTIONS[r["action"]]
        first, _, last = r["actor"].partition(".")
        email = f"{r['actor']}@{ORG}.example"
        resource = f"proj/{r['project']}:env/{r['environment']}:flag/{r['flag_key']}"
        site = f"/{r['project']}/{r['environment']}/features/{r['flag_key']}"
        entry: dict[str, Any] = {
            "_links": {"site": {"href": site, "type": "text/html"}},
            "_id": r["native"], "date": int(r["date"]), "kind": "flag", "name": r["flag_key"],
            "accesses": [{"action": action, "resource": resource}],
            "member": {"_id": f"{_user_id(r['actor']):024x}", "email": email, "firstName": first.title(),
                       "lastName": last.title()},
            "titleVerb": verb,
            "title": f"[{first.title()} {last.title()}](mailto:{email}) {verb} [{r['flag_key']}]({site})",
            "target": {"name": r["flag_key"], "resources": [resource]},
            "currentVersion": {"key": r["flag_key"], "tags": [f"service:{r['service']}"]},
        }  # fmt: skip
        if r["comment"]:
            entry["comment"] = r["comment"]
        out.append(entry)
    return out


def pagerduty_incidents(incidents: pd.DataFrame) -> list[dict[str, Any]]:
    """PagerDuty REST incident objects (trimmed); explicit causes sit in ``custom_fields``."""
    frame = incidents.copy()
    for col in ("created_at", "acknowledged_at", "resolved_at", "updated_at"):
        frame[col] = iso_z(incidents[col])
    frame["native"] = native_ids(incidents["incident_id"], INCIDENT_SOURCE)
    out = []
    for number, r in enumerate(_records(frame), start=1):
        pid = r["native"]
        svc_id = "P" + f"{_user_id(r['service']):07d}"[-6:]
        custom = [{"name": name, "value": r[name]} for name in ("caused_by_deploy_id", "caused_by_flag_key",
                                                                   "not_change_related") if r[name]]  # fmt: skip
        inc: dict[str, Any] = {
            "id": pid, "type": "incident", "summary": f"[#{number}] {r['title']}",
            "self": f"https://api.pagerduty.com/incidents/{pid}",
            "html_url": f"https://{ORG}.pagerduty.com/incidents/{pid}",
            "incident_number": number, "title": r["title"], "created_at": r["created_at"],
            "status": _PD_STATUS[r["status"]], "urgency": r["urgency"],
            "service": {"id": svc_id, "type": "service_reference", "summary": r["service"]},
            "priority": {"id": f"PPRI{r['priority'][-1]}", "type": "priority_reference", "summary": r["priority"]},
            "last_status_change_at": r["updated_at"], "resolved_at": r["resolved_at"],
            "acknowledgements": [] if r["acknowledged_at"] is None else [
                {"at": r["acknowledged_at"], "acknowledger": {"type": "user_reference", "summary": "on-call"}}],
            "assignments": [], "teams": [],
        }  # fmt: skip
        if custom:
            inc["custom_fields"] = custom
        out.append(inc)
    return out
