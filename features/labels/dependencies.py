"""The optional dependency map (service -> the services it depends on) the incident suspects widen to.

Two formats: ``dependencies.yaml`` (``services: {checkout: [payments, cart]}``, or the mapping at top
level) and a Backstage catalog (``catalog-info.yaml``: multi-document YAML, ``spec.dependsOn`` of
``kind: Component`` entities, ``component:[namespace/]`` prefixes stripped). Only ``dependsOn`` of
components is read here; the catalog's ownership is read by ``features/sources/backstage.py``.
Parsing is a pure function of the text; every bad record raises a ``ValueError`` naming the file,
the record and the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

Dependencies = Mapping[str, tuple[str, ...]]


def _name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: expected a service name, got {value!r}")
    return value.strip()


def parse_dependencies_yaml(text: str, source: str = "dependencies.yaml") -> dict[str, tuple[str, ...]]:
    """``{service: [dependency, ...]}`` from a dependencies.yaml (optionally under a ``services:`` key)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"{source}: not valid YAML ({exc})") from None
    if data is None:
        return {}
    if isinstance(data, dict) and set(data) == {"services"}:
        data = data["services"]
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a mapping of service -> list of services it depends on")
    out: dict[str, tuple[str, ...]] = {}
    for service, deps in data.items():
        name = _name(service, f"{source}: service key {service!r}")
        if deps is None:
            deps = []
        if not isinstance(deps, list):
            raise ValueError(f"{source}: service {name!r}: field 'depends_on' must be a list, got {deps!r}")
        out[name] = tuple(_name(d, f"{source}: service {name!r}, dependency #{i + 1}") for i, d in enumerate(deps))
    return out


def _strip_ref(ref: Any, where: str) -> str:
    """``component:default/payments`` -> ``payments`` (kind and namespace dropped)."""
    text = _name(ref, where)
    kind, sep, rest = text.partition(":")
    if sep and kind.lower() != "component":
        raise ValueError(f"{where}: only component references are supported, got {text!r}")
    name = rest if sep else text
    return name.rsplit("/", 1)[-1]


def parse_backstage_catalog(text: str, source: str = "catalog-info.yaml") -> dict[str, tuple[str, ...]]:
    """``{component: [dependency, ...]}`` from the ``spec.dependsOn`` of a catalog's Component entities."""
    try:
        documents = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        raise ValueError(f"{source}: not valid YAML ({exc})") from None
    out: dict[str, tuple[str, ...]] = {}
    for number, doc in enumerate(documents, start=1):
        if doc is None:
            continue
        where = f"{source}: document {number}"
        if not isinstance(doc, dict):
            raise ValueError(f"{where}: expected an entity mapping")
        if str(doc.get("kind", "")).lower() != "component":
            continue
        metadata = doc.get("metadata")
        if not isinstance(metadata, dict):
            raise ValueError(f"{where}: field 'metadata.name' is missing")
        name = _name(metadata.get("name"), f"{where}: field 'metadata.name'")
        spec = doc.get("spec") or {}
        if not isinstance(spec, dict):
            raise ValueError(f"{where} ({name}): field 'spec' must be a mapping")
        deps = spec.get("dependsOn") or []
        if not isinstance(deps, list):
            raise ValueError(f"{where} ({name}): field 'spec.dependsOn' must be a list")
        refs = [_strip_ref(d, f"{where} ({name}): field 'spec.dependsOn[{i}]'") for i, d in enumerate(deps)]
        out[name] = tuple(dict.fromkeys((*out.get(name, ()), *refs)))
    return out


def load_dependencies(path: Path) -> dict[str, tuple[str, ...]]:
    """Read a dependency map; a file holding ``apiVersion: backstage.io/...`` entities is a Backstage catalog."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the dependency map ({exc.strerror})") from None
    if "backstage.io/" in text and "kind:" in text:
        return parse_backstage_catalog(text, str(path))
    return parse_dependencies_yaml(text, str(path))


def depends_on(dependencies: Dependencies | None, service: str) -> tuple[str, ...]:
    """The services ``service`` depends on (none without a map), itself excluded."""
    if not dependencies:
        return ()
    return tuple(d for d in dependencies.get(service, ()) if d != service)
