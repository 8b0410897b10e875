"""Backstage software catalog: Component, System and Group entities -> the ``catalog`` table.

Reads ``catalog-info.yaml`` files (one or many YAML documents), a directory of them, or the
catalog API's ``GET /api/catalog/entities`` JSON saved to a file (an array, or the
``{"items": [...]}`` page of ``/entities/by-query``). Entity references are normalised the way
Backstage resolves them: ``group:default/payments`` and ``payments`` both name the group
``payments``. Other kinds (User, API, Resource, Location, ...) are skipped and counted; a YAML
document that does not parse fails the file with its name, document number and line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pandas as pd
import yaml

from features.history.ownership import service_teams
from features.history.schema import RECORD_COLUMN, TimestampFormat
from features.sources.base import (
    KindOptions,
    ParsedFile,
    SourceError,
    SourceKind,
    frame_from_rows,
    read_json_records,
    read_text,
    reject_rows,
    to_raw,
)
from features.sources.records import require_shape

TABLE = "catalog"
#: Entity kinds the catalog table keeps; every other kind is skipped and counted.
KINDS = ("component", "system", "group")
DEFAULT_NAMESPACE = "default"
_SUFFIXES = (".yaml", ".yml", ".json", ".jsonl", ".ndjson")


class BackstageOptions(KindOptions):
    ownership: Literal["fill", "override"] = "fill"
    channel_annotation: str = "slack.com/channel"


def normalize_ref(ref: object, default_kind: str) -> tuple[str, str] | None:
    """``[kind:][namespace/]name`` -> (kind, name), the namespace kept only when not ``default``."""
    if not isinstance(ref, str) or not ref.strip():
        return None
    text = ref.strip()
    kind, _, rest = text.partition(":") if ":" in text else (default_kind, "", text)
    namespace, _, name = rest.rpartition("/")
    if not name:
        return None
    full = name if namespace in ("", DEFAULT_NAMESPACE) else f"{namespace}/{name}"
    return kind.lower() or default_kind, full


def _owner(ref: object) -> str | None:
    """A group owner by name; any other owner kind keeps its prefix (``user:jane``)."""
    parsed = normalize_ref(ref, "group")
    if parsed is None:
        return None
    kind, name = parsed
    return name if kind == "group" else f"{kind}:{name}"


def _documents(path: Path, display: str) -> list[tuple[str, int, Any]]:
    """(file shown to the user, document number, entity) for a file or a directory of them."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in _SUFFIXES)
        if not files:
            raise SourceError(f"{display}: no .yaml, .yml or .json files in the directory")
        out: list[tuple[str, int, Any]] = []
        for f in files:
            out.extend(_documents(f, f"{display}/{f.relative_to(path)}"))
        return out
    if path.suffix.lower() in (".json", ".jsonl", ".ndjson") or path.name.lower().endswith(".json.gz"):
        records = read_json_records(path, display, envelope_keys=("items",))
        require_shape(records, display, "backstage_catalog", _is_entity, "entities with apiVersion, kind, metadata")
        return [(display, n, rec) for n, rec in records]
    text = read_text(path, display)
    docs: list[tuple[str, int, Any]] = []
    number = 0
    try:
        for number, doc in enumerate(yaml.safe_load_all(text), start=1):
            if doc is not None:
                docs.append((display, number, doc))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or exc
        raise SourceError(f"{display}: document {number + 1}{where}: invalid YAML ({problem})") from None
    return docs


def _is_entity(record: dict[str, Any]) -> bool:
    return "kind" in record and "metadata" in record and str(record.get("apiVersion", "")).startswith("backstage.io/")


def parse_catalog(path: Path, display: str, options: BackstageOptions) -> ParsedFile:
    """Catalog entities of one file or directory, one row per Component, System or Group."""
    rows: list[dict[str, Any]] = []
    bad: list[tuple[int, str, str, object]] = []
    skipped: dict[str, int] = {}
    for record, (file, number, entity) in enumerate(_documents(path, display), start=1):
        where = f"{file} document {number}"
        if not isinstance(entity, dict):
            bad.append((record, "entity", f"{where}: expected a mapping, got {type(entity).__name__}", entity))
            continue
        kind = entity.get("kind")
        if not isinstance(kind, str) or not kind.strip():
            bad.append((record, "kind", f"{where}: entity has no kind", kind))
            continue
        if kind.strip().lower() not in KINDS:
            label = f"skipped kind {kind.strip()}"
            skipped[label] = skipped.get(label, 0) + 1
            continue
        row = _entity_row(entity, kind.strip().lower(), options)
        if isinstance(row, str):
            bad.append((record, row.split(":", 1)[0], f"{where}: {row}", to_raw(entity)[:200]))
            continue
        row[RECORD_COLUMN] = record
        rows.append(row)
    return ParsedFile(
        table=TABLE,
        frame=frame_from_rows(rows),
        rejects=reject_rows(TABLE, "", display, bad),
        timestamps=TimestampFormat("iso8601", "UTC"),
        other_counts=skipped,
    )


def _entity_row(entity: dict[str, Any], kind: str, options: BackstageOptions) -> dict[str, Any] | str:
    """The catalog row of one entity, or the reason (``field: why``) it cannot be one."""
    metadata = entity.get("metadata")
    spec = entity.get("spec") if entity.get("spec") is not None else {}
    if not isinstance(metadata, dict):
        return "metadata: missing or not a mapping"
    if not isinstance(spec, dict):
        return "spec: not a mapping"
    name = metadata.get("name")
    if not isinstance(name, str) or not name.strip():
        return "metadata.name: missing"
    namespace = metadata.get("namespace") or DEFAULT_NAMESPACE
    annotations = metadata.get("annotations") or {}
    if not isinstance(annotations, dict):
        return "metadata.annotations: not a mapping"
    depends = spec.get("dependsOn") or []
    if not isinstance(depends, list):
        return "spec.dependsOn: not a list"
    components = [ref[1] for ref in (normalize_ref(d, "component") for d in depends) if ref and ref[0] == "component"]
    system = normalize_ref(spec.get("system"), "system")
    parent = normalize_ref(spec.get("parent"), "group")
    local = name.strip() if namespace == DEFAULT_NAMESPACE else f"{namespace}/{name.strip()}"
    channel = annotations.get(options.channel_annotation)
    return {
        "entity_ref": f"{kind}:{namespace}/{name.strip()}",
        "kind": kind,
        "namespace": namespace,
        "name": local,
        "title": metadata.get("title"),
        "type": spec.get("type"),
        "lifecycle": spec.get("lifecycle"),
        "owner": _owner(spec.get("owner")),
        "system": system[1] if system else None,
        "parent": parent[1] if parent else None,
        "depends_on": " ".join(components) or None,
        "slack_channel": str(channel).strip().lstrip("#") if channel else None,
        "ownership": options.ownership,
        "raw": to_raw(entity),
    }


def catalog_services(catalog: pd.DataFrame) -> pd.DataFrame:
    """The catalog's services: service (component name), owner, system, lifecycle, depends_on (list),
    plus squad, tribe and slack_channel as ``features.history.ownership`` resolves them."""
    components = catalog[catalog["kind"] == "component"]
    teams = service_teams(catalog).set_index("service")
    out = pd.DataFrame(
        {
            "service": components["name"].astype("string").to_numpy(),
            "owner": components["owner"].astype("string").to_numpy(),
            "system": components["system"].astype("string").to_numpy(),
            "lifecycle": components["lifecycle"].astype("string").to_numpy(),
            "depends_on": [str(d).split() if isinstance(d, str) else [] for d in components["depends_on"]],
        }
    )
    for column in ("squad", "tribe", "slack_channel"):
        out[column] = out["service"].map(teams[column]).astype("string") if len(teams) else pd.NA
    return out.sort_values("service", kind="stable").reset_index(drop=True)


BACKSTAGE_CATALOG: SourceKind[BackstageOptions] = SourceKind(
    name="backstage_catalog",
    table=TABLE,
    description="Backstage catalog-info.yaml (file or directory) or GET /api/catalog/entities JSON: ownership",
    options=BackstageOptions,
    parse=parse_catalog,
)
