"""Mistakes a command can see from its arguments, its config or the store are refused before
Prefect or the scoring stack start: one line naming the problem and the fix, non-zero exit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from features.history.ingest import prepare_file
from features.history.store import HistoryStore
from features.sources.generic import GenericOptions, parse_generic
from pipelines.cli.main import build_app

GATE = ["score", "--service", "api", "--lines-added", "10", "--lines-deleted", "2", "--files", "1"]


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records every start of an ingest flow, a training flow or local scoring; a check that works
    refuses before any of them."""
    import pipelines.cli.gate
    import pipelines.flows.ingest
    import pipelines.flows.train

    calls: list[str] = []

    def ingest(*args: Any, **kwargs: Any) -> Any:
        calls.append("ingest flow")
        raise AssertionError("the ingest flow started")

    def training(*args: Any, **kwargs: Any) -> Any:
        calls.append("training flow")
        raise pipelines.flows.train.TrainingError("training flow started")

    def score_local(*args: Any, **kwargs: Any) -> Any:
        calls.append("local scoring")
        raise ConnectionError("local scoring started")

    monkeypatch.setattr(pipelines.flows.ingest, "run_ingest", ingest)
    monkeypatch.setattr(pipelines.flows.train, "run_training", training)
    monkeypatch.setattr(pipelines.cli.gate, "_score_local", score_local)
    return calls


def _one_error_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    return lines[0]


def test_bad_sources_yaml_is_one_line_before_the_flow(tmp_path: Path, started: list[str]) -> None:
    config = tmp_path / "sources.yaml"
    config.write_text("sources:\n  - name: ci\n    kind: githb_deployments\n    path: x.json\n")
    result = CliRunner().invoke(build_app(), ["ingest", "--config", str(config), "--home", str(tmp_path / "h")])
    assert result.exit_code == 1
    line = _one_error_line(result.output)
    assert line.startswith("error: ") and "line 3" in line and "unknown kind 'githb_deployments'" in line
    assert "github_deployments" in line and "docs/sources.md" in line
    assert started == []
    assert not (tmp_path / "h" / "store").exists()


def test_a_glob_matching_nothing_is_refused_before_the_flow(tmp_path: Path, started: list[str]) -> None:
    config = tmp_path / "sources.yaml"
    config.write_text("sources:\n  - name: ci\n    kind: github_deployments\n    path: exports/*.json\n")
    result = CliRunner().invoke(build_app(), ["ingest", "--config", str(config), "--home", str(tmp_path / "h")])
    assert result.exit_code == 1 and "no file matches" in _one_error_line(result.output)
    assert started == []


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--at", "yesterday"], ["--at 'yesterday' is not an ISO 8601 time", "--at 2026-03-02T14:00:00Z"]),
        (["--at", "2026-03-02T14:00:00"], ["has no UTC offset", "--at 2026-03-02T14:00:00Z"]),
        (
            ["--environment", "prod"],
            [
                "--environment 'prod' is not an environment",
                "production, staging, testing, development, other",
                "did you mean --environment production?",
            ],
        ),  # fmt: skip
        (["--environment", "blue"], ["use one of production, staging"]),
    ],
)
def test_gate_arguments_are_checked_before_scoring(
    tmp_path: Path, started: list[str], args: list[str], expected: list[str]
) -> None:
    result = CliRunner().invoke(build_app(), [*GATE, *args, "--home", str(tmp_path)])
    assert result.exit_code == 2
    line = _one_error_line(result.output)
    assert line.startswith("incident-risk score: bad arguments: ")
    for text in expected:
        assert text in line
    assert "validation error" not in line and "pydantic" not in line
    assert started == []


def test_good_gate_arguments_pass_the_checks(tmp_path: Path, started: list[str]) -> None:
    args = [*GATE, "--at", "2026-03-02T14:00:00+01:00", "--environment", "staging", "--home", str(tmp_path)]
    result = CliRunner().invoke(build_app(), [*args, "--fail-closed"])
    assert started == ["local scoring"] and result.exit_code == 4


def _store_with_deploys(home: Path, deploys: int, failed_every: int | None) -> None:
    """A store of ``deploys`` production deploys two days apart, every ``failed_every``-th one
    named as the cause of an incident an hour later."""
    home.mkdir(parents=True, exist_ok=True)
    start = pd.Timestamp("2026-01-01T10:00:00Z")
    times = [start + pd.Timedelta(days=2 * i) for i in range(deploys)]
    deploy_csv = "id,service,environment,status,created_at\n" + "".join(
        f"d{i},api,prod,ok,{t.isoformat()}\n" for i, t in enumerate(times)
    )
    causes = [i for i in range(deploys) if failed_every and i % failed_every == 0]
    incident_csv = "id,service,status,created_at,caused_by_deploy_id\n" + "".join(
        f"i{i},api,resolved,{(times[i] + pd.Timedelta(hours=1)).isoformat()},d{i}\n" for i in causes
    )
    tables = {}
    for name, text in (("deploys", deploy_csv), ("incidents", incident_csv)):
        path = home / f"{name}.csv"
        path.write_text(text)
        options = GenericOptions(table=name, format="csv", columns={f"{name[:-1]}_id": "id"})  # type: ignore[arg-type]
        prepared = prepare_file(
            parse_generic(path, path.name, options), source="ci", file=path.name, id_prefix="ci", defaults={},
            service_map={},
        )  # fmt: skip
        assert prepared.rejects.empty
        tables[name] = prepared.rows
    store = HistoryStore(home / "store")
    with store.lock():
        store.commit(tables, None, expected_version=0)


def test_training_on_too_few_matured_rows_says_the_count_and_the_option(tmp_path: Path, started: list[str]) -> None:
    _store_with_deploys(tmp_path, 20, failed_every=3)
    result = CliRunner().invoke(build_app(), ["train", "--home", str(tmp_path)])
    assert result.exit_code == 1
    line = _one_error_line(result.output)
    assert "the training period has" in line and "training needs at least 50" in line
    assert "--min-train-rows" in line
    train_rows = int(line.split("the training period has ")[1].split()[0])
    assert 0 < train_rows < 20
    assert started == []

    # lowering the bound lets the same store through the check, and training starts
    lowered = CliRunner().invoke(build_app(), ["train", "--home", str(tmp_path), "--min-train-rows", str(train_rows)])
    assert started == ["training flow"], lowered.output
    assert "training flow started" in lowered.output


def test_training_needs_both_outcomes_and_a_store(tmp_path: Path, started: list[str]) -> None:
    _store_with_deploys(tmp_path / "quiet", 30, failed_every=None)
    result = CliRunner().invoke(build_app(), ["train", "--home", str(tmp_path / "quiet"), "--min-train-rows", "5"])
    assert result.exit_code == 1 and "have no failures; a model needs both outcomes" in _one_error_line(result.output)
    empty = CliRunner().invoke(build_app(), ["train", "--home", str(tmp_path / "none")])
    assert empty.exit_code == 1
    assert "holds no deploys; run `incident-risk ingest --config sources.yaml` first" in _one_error_line(empty.output)
    assert started == []


def test_min_train_rows_is_documented() -> None:
    from tests.helpers.paths import REPO

    assert "--min-train-rows" in (REPO / "docs" / "training.md").read_text()
    help_text = CliRunner().invoke(build_app(), ["train", "--help"]).output
    assert "--min-train-rows" in help_text
