"""Code tests of sources.yaml: every mistake is one line naming the file, key and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from features.sources.base import SourceError
from features.sources.config import load_sources_config
from features.sources.generic import GenericOptions
from features.sources.kinds import source_kinds

GOOD = """\
sources:
  - name: changes
    table: deploys
    format: csv
    path: changes.csv
    columns:
      deploy_id: _id
      created_at: date
    timestamp_format: unix_s
    timezone: UTC
    defaults: {service: qt, environment: production, status: success}
    label: bug
    extra_features: [ns, nd]
"""


def _load(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "sources.yaml"
    path.write_text(text)
    (tmp_path / "changes.csv").write_text("_id,date\n1,2\n")
    return load_sources_config(path, source_kinds())


def test_documented_example_loads(tmp_path: Path) -> None:
    config = _load(tmp_path, GOOD)
    (source,) = config.sources
    assert source.table == "deploys" and source.id_prefix == "changes"
    assert isinstance(source.options, GenericOptions)
    assert source.options.extra_features == ["ns", "nd"]
    assert source.paths == (tmp_path.resolve() / "changes.csv",)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            ("    label: bug\n", "    label: bug\n    colums: {}\n"),
            r"line 13: sources\[0\]\.colums: unknown key 'colums'",
        ),
        (("table: deploys", "table: deploy"), r"line 3: sources\[0\]\.table: Input should be"),
        (("    format: csv\n", ""), r"sources\[0\]\.format: required key is missing"),
        (
            ("      created_at: date", "      created: date"),
            r"sources\[0\]\.columns: .*'created'.* not columns of deploys",
        ),
        (("name: changes", "name: bad name!"), r"sources\[0\]\.name: String should match"),
        (("kind", "kind"), None),
    ],
)
def test_config_errors_name_file_key_and_line(tmp_path: Path, edit: tuple[str, str], message: str | None) -> None:
    text = GOOD.replace(*edit)
    if message is None:
        text = GOOD.replace("    table: deploys", "    kind: nosuchkind\n    table: deploys")
        message = r"line 3: sources\[0\]\.kind: unknown kind 'nosuchkind'"
    with pytest.raises(SourceError, match=message) as info:
        _load(tmp_path, text)
    assert str(info.value).startswith(str(tmp_path / "sources.yaml"))
    assert "\n" not in str(info.value)


def test_invalid_yaml_and_missing_sources(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"line 3: invalid YAML"):
        _load(tmp_path, "sources:\n  - name: [unclosed\n")
    with pytest.raises(SourceError, match="expected a top-level 'sources:' list"):
        _load(tmp_path, "other: 1\n")
    with pytest.raises(SourceError, match="config file not found"):
        load_sources_config(tmp_path / "nope.yaml", source_kinds())
