"""The Backstage catalog reader: entities -> catalog rows, refs normalised, skips counted, bad YAML named."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from features.history.ingest import prepare_file
from features.history.schema import CATALOG
from features.sources.backstage import BackstageOptions, catalog_services, normalize_ref, parse_catalog
from features.sources.base import SourceError
from features.sources.config import load_sources_config
from features.sources.kinds import source_kinds
from tests.helpers.paths import FIXTURES

DIR = FIXTURES / "backstage"


def _catalog(path: Path, **options: str) -> pd.DataFrame:
    parsed = parse_catalog(path, path.name, BackstageOptions(**options))
    prepared = prepare_file(parsed, source="catalog", file=path.name, id_prefix="cat", defaults={}, service_map={})
    rows = prepared.rows
    assert rows["entity_ref"].str.startswith("cat:").all()  # keys namespaced by source, like every table
    return rows.assign(entity_ref=rows["entity_ref"].str.removeprefix("cat:"))


def test_refs_normalise_like_backstage() -> None:
    assert normalize_ref("group:default/payments", "group") == ("group", "payments")
    assert normalize_ref("payments", "group") == ("group", "payments")
    assert normalize_ref("user:jane", "group") == ("user", "jane")
    assert normalize_ref("component:other/cart", "component") == ("component", "other/cart")
    assert normalize_ref("", "group") is None


def test_multi_document_yaml_maps_components_systems_groups_and_counts_skips() -> None:
    parsed = parse_catalog(DIR / "catalog-info.yaml", "catalog-info.yaml", BackstageOptions())
    assert parsed.other_counts == {"skipped kind API": 1, "skipped kind User": 1, "skipped kind Location": 1}
    rows = _catalog(DIR / "catalog-info.yaml")
    by_ref = rows.set_index("entity_ref")
    assert sorted(by_ref.index) == [
        "component:default/cart-api",
        "component:default/checkout-api",
        "component:default/ledger-writer",
        "group:default/payments",
        "group:default/payments-falcon",
        "group:default/payments-otter",
        "system:default/ledger",
    ]
    checkout = by_ref.loc["component:default/checkout-api"]
    assert checkout["owner"] == "payments-falcon" and checkout["system"] == "ledger"
    assert checkout["depends_on"] == "cart-api ledger-writer"  # the resource is not a service
    assert by_ref.loc["group:default/payments-falcon", "parent"] == "payments"
    assert by_ref.loc["group:default/payments-falcon", "slack_channel"] == "squad-falcon"
    assert by_ref.loc["component:default/cart-api", "owner"] == "user:jane.doe"
    assert str(rows["updated_at"].dtype) == "datetime64[us, UTC]"


def test_catalog_services_frame_for_the_dependency_map() -> None:
    services = catalog_services(_catalog(DIR / "catalog-info.yaml")).set_index("service")
    assert list(services.columns[:4]) == ["owner", "system", "lifecycle", "depends_on"]
    assert services.loc["checkout-api", "depends_on"] == ["cart-api", "ledger-writer"]
    assert services.loc["ledger-writer", "depends_on"] == []
    assert services.loc["checkout-api", "squad"] == "payments-falcon"
    assert services.loc["checkout-api", "tribe"] == "payments"
    assert services.loc["ledger-writer", "squad"] == "payments-otter"  # from its system's owner
    assert pd.isna(services.loc["cart-api", "squad"])  # a user owns it


def test_api_json_and_a_record_without_a_name_is_quarantined() -> None:
    path = DIR / "entities.json"
    parsed = parse_catalog(path, "entities.json", BackstageOptions())
    assert parsed.other_counts == {"skipped kind Resource": 1}
    (reject,) = parsed.rejects.itertuples(index=False)
    assert (reject.record, reject.field) == (5, "metadata.name")
    assert "entities.json document 5" in reject.reason
    services = catalog_services(_catalog(path)).set_index("service")
    teams = services.loc["search-api", ["squad", "tribe", "slack_channel"]].tolist()
    assert teams == ["growth-heron", "growth", "growth"]


def test_directory_of_files_including_backstage_upstream_examples(tmp_path: Path) -> None:
    shutil.copytree(DIR, tmp_path / "catalog")
    rows = _catalog(tmp_path / "catalog")
    refs = set(rows["entity_ref"])
    assert {"component:default/artist-lookup", "group:default/team-a", "component:default/search-api"} <= refs
    artist = rows.set_index("entity_ref").loc["component:default/artist-lookup"]
    assert artist["owner"] == "team-a" and artist["system"] == "artist-engagement-portal"
    assert pd.isna(artist["depends_on"])


def test_bad_yaml_names_the_file_document_and_line(tmp_path: Path) -> None:
    path = tmp_path / "catalog-info.yaml"
    path.write_text("kind: Group\nmetadata: {name: a}\n---\nkind: Component\nmetadata: [unclosed\n")
    with pytest.raises(SourceError, match=r"catalog-info.yaml: document 2, line \d+: invalid YAML"):
        parse_catalog(path, "catalog-info.yaml", BackstageOptions())


def test_sources_yaml_entry_and_override_option(tmp_path: Path) -> None:
    shutil.copy(DIR / "catalog-info.yaml", tmp_path / "catalog-info.yaml")
    (tmp_path / "sources.yaml").write_text(
        "sources:\n  - name: catalog\n    kind: backstage_catalog\n"
        "    path: catalog-info.yaml\n    ownership: override\n"
    )
    (source,) = load_sources_config(tmp_path / "sources.yaml", source_kinds()).sources
    assert source.table == CATALOG.name
    assert set(source.parse(source.paths[0]).frame["ownership"]) == {"override"}
    (tmp_path / "sources.yaml").write_text(
        "sources:\n  - name: catalog\n    kind: backstage_catalog\n    path: catalog-info.yaml\n    ownership: maybe\n"
    )
    with pytest.raises(SourceError, match=r"sources\[0\]\.ownership"):
        load_sources_config(tmp_path / "sources.yaml", source_kinds())
