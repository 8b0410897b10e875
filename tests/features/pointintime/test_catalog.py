"""Code tests of the feature catalog: the computed frame, the docs and the feature-set version follow it."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import pytest

from features.history.schema import EXTRA_PREFIX
from features.labels.attribution import AttributionConfig, attribute
from features.pointintime.catalog import (
    CATALOG,
    FEATURE_SET_VERSION,
    catalog_fingerprint,
    catalog_markdown,
    catalog_names,
    with_catalog,
)
from features.pointintime.compute import KEY_COLUMNS, FeatureConfig, build_features, feature_columns
from features.simulation.simulator import SimulationConfig, simulate
from tests.helpers.paths import REPO


@pytest.fixture(scope="module")
def computed() -> pd.DataFrame:
    history = simulate(SimulationConfig(days=20, services=5, seed=4)).history
    labels = attribute(history, AttributionConfig()).deploy_labels
    entities = history.deploys.assign(extra_tests=range(len(history.deploys)))
    return build_features(entities, history, labels, FeatureConfig())


def _dtype(values: pd.Series) -> str:
    return "float64" if values.dtype == "float64" else "string" if pd.api.types.is_string_dtype(values) else "?"


def test_compute_features_returns_the_catalog_in_order_with_its_dtypes(computed: pd.DataFrame) -> None:
    columns = [c for c in computed.columns if c not in KEY_COLUMNS and not c.startswith(EXTRA_PREFIX)]
    assert tuple(columns) == catalog_names()
    assert {s.name: _dtype(computed[s.name]) for s in CATALOG} == {s.name: s.dtype for s in CATALOG}
    numeric, categorical = feature_columns(computed)
    assert set(categorical) == {s.name for s in CATALOG if s.dtype == "string"}
    assert [c for c in numeric if c.startswith(EXTRA_PREFIX)] == ["extra_tests", "extra_tests_missing"]


def test_catalog_entries_are_unique_and_documented() -> None:
    assert len(set(catalog_names())) == len(CATALOG)
    assert all(s.doc and s.window for s in CATALOG)


def test_feature_set_version_is_derived_from_names_dtypes_and_windows() -> None:
    assert f"pit-{catalog_fingerprint(CATALOG)}" == FEATURE_SET_VERSION
    first = CATALOG[0]
    for changed in (replace(first, name="lines_plus"), replace(first, dtype="string"), replace(first, window="7d")):
        assert catalog_fingerprint((changed, *CATALOG[1:])) != catalog_fingerprint(CATALOG)
    reworded = replace(first, doc="another wording")
    assert catalog_fingerprint((reworded, *CATALOG[1:])) == catalog_fingerprint(CATALOG)


def test_docs_features_md_carries_the_current_catalog() -> None:
    doc = (REPO / "docs" / "features.md").read_text(encoding="utf-8")
    assert catalog_markdown() in doc, "regenerate with: python -m features.pointintime.catalog"
    assert with_catalog(doc) == doc
    for spec in CATALOG:
        assert f"| `{spec.name}` |" in doc
