"""The optional dependency map (service -> the services it depends on) the incident suspects widen to.

Two sources: ``dependencies.yaml`` (``services: {checkout: [payments, cart]}``, or the mapping at top
level) and the Backstage catalog table (``spec.dependsOn`` of Component entities, read by
``features/sources/backstage.py``). Both are pure functions of what was read; every bad record of a
dependencies.yaml raises a ``ValueError`` naming the file, the record and the field. Reading the
files is ``models.scoring.suspects.load_dependencies``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd
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


def dependencies_from_catalog(catalog: pd.DataFrame) -> dict[str, tuple[str, ...]]:
    """``{component: [dependency, ...]}`` from the catalog table's components (``depends_on`` holds their
    ``spec.dependsOn`` component names, space-separated, as ``features/sources/backstage.py`` reads them)."""
    components = catalog[catalog["kind"] == "component"]
    out: dict[str, tuple[str, ...]] = {}
    for name, deps in zip(components["name"], components["depends_on"], strict=True):
        refs = str(deps).split() if isinstance(deps, str) else []
        out[str(name)] = tuple(dict.fromkeys((*out.get(str(name), ()), *refs)))
    return out


def depends_on(dependencies: Dependencies | None, service: str) -> tuple[str, ...]:
    """The services ``service`` depends on (none without a map), itself excluded."""
    if not dependencies:
        return ()
    return tuple(d for d in dependencies.get(service, ()) if d != service)
