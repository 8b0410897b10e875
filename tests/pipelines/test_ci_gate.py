"""The CI gate (``incident-risk score``) and the batch scoring command, end to end.

Exit codes are the contract: 0 below the threshold, 3 above, 2 bad arguments, 4 unavailable
(``--fail-closed``; ``--fail-open`` exits 0 with a warning).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from models.serving.app import ServiceConfig
from pipelines.cli.gate import EXIT_ABOVE, EXIT_BAD_ARGS, EXIT_OK, EXIT_UNAVAILABLE
from pipelines.cli.main import build_app
from tests.helpers.paths import REPO
from tests.helpers.scoring import home_with_champion, simulated
from tests.helpers.service import free_port, running_service

NAME = "incident-risk-test-gate"
ARGS = [
    "score",
    "--service",
    "reviews-svc",
    "--lines-added",
    "120",
    "--lines-deleted",
    "30",
    "--files",
    "4",
    "--author",
    "guido.turing",
    "--model",
    NAME,
]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gate-home")
    home_with_champion(path, NAME)
    return path


@pytest.fixture(scope="module")
def url(home: Path) -> Iterator[str]:
    config = ServiceConfig(store_dir=home / "store", model_name=NAME, refresh_seconds=3600, tokens=("s3cret",))
    with running_service(config) as base:
        yield base


def _cli() -> typer.Typer:
    return build_app()


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(_cli(), list(args))
    return result.exit_code, result.stdout, result.stderr


def test_remote_gate_exit_codes_follow_the_threshold(url: str) -> None:
    code, out, _ = run(*ARGS, "--url", url, "--token", "s3cret", "--json", "--fail-above", "1.0")
    assert code == EXIT_OK
    body = json.loads(out)
    assert 0 < body["probability"] < 1 and body["model"]["name"] == NAME
    code, out, _ = run(*ARGS, "--url", url, "--token", "s3cret", "--fail-above", "0.0")
    assert code == EXIT_ABOVE and "probability" in out and "fail above 0.0" in out
    p = body["probability"]
    assert run(*ARGS, "--url", url, "--token", "s3cret", "--fail-above", str(p))[0] == EXIT_OK  # not above itself


def test_local_gate_scores_like_the_service(url: str, home: Path) -> None:
    planned = ["--at", "2026-02-04T10:00:00Z"]
    remote = json.loads(run(*ARGS, *planned, "--url", url, "--token", "s3cret", "--json", "--fail-above", "1")[1])
    code, out, _ = run(*ARGS, *planned, "--home", str(home), "--json", "--fail-above", "1")
    assert code == EXIT_OK
    local = json.loads(out)
    assert local["probability"] == remote["probability"] and local["factors"] == remote["factors"]
    from models.monitoring.predlog import predictions_dir, read_predictions

    logged = read_predictions(predictions_dir(home)).query("caller == 'gate'")
    assert len(logged) >= 1 and logged["probability"].iloc[-1] == local["probability"]


@pytest.mark.parametrize(
    "extra",
    [
        ["--lines-added", "-5"],
        ["--environment", "moon"],
        ["--at", "tomorrow"],
        ["--extra", "tests"],
        ["--fail-above", "1.5"],
    ],
)
def test_bad_arguments_exit_2_before_scoring(extra: list[str]) -> None:
    code, _, _ = run(*ARGS, *extra, "--url", "http://127.0.0.1:9")
    assert code == EXIT_BAD_ARGS


def test_unreachable_service_fails_open_or_closed() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    code, _, err = run(*ARGS, "--url", dead, "--timeout", "1")
    assert code == EXIT_OK and "WARNING" in err and "fail-open" in err
    code, _, err = run(*ARGS, "--url", dead, "--timeout", "1", "--fail-closed")
    assert code == EXIT_UNAVAILABLE and "fail-closed" in err


def test_wrong_token_and_missing_champion_are_unavailable(url: str, home: Path) -> None:
    assert run(*ARGS, "--url", url, "--token", "wrong", "--fail-closed")[0] == EXIT_UNAVAILABLE
    args = [a if a != NAME else "no-such-model" for a in ARGS]
    assert run(*args, "--home", str(home), "--fail-closed")[0] == EXIT_UNAVAILABLE
    assert run(*args, "--home", str(home))[0] == EXIT_OK


@pytest.mark.flow
def test_score_batch_writes_scores_and_logs_a_summary(prefect_harness: None, home: Path, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    upcoming = simulated().upcoming.head(12)
    columns = [
        "deploy_id",
        "service",
        "created_at",
        "author",
        "lines_added",
        "lines_deleted",
        "files_changed",
        "touches_infra",
        "squad",
    ]
    frame = upcoming[columns].astype(str).replace({"<NA>": ""})
    frame["created_at"] = upcoming["created_at"].map(lambda t: t.isoformat())
    bad = pd.DataFrame(
        [
            {"deploy_id": "bad-1", "service": "", "lines_added": "-3"},
            {"deploy_id": "", "service": "fresh-svc", "created_at": "", "lines_added": "7"},
        ]
    )
    source = tmp_path / "upcoming.csv"
    pd.concat([frame, bad], ignore_index=True).to_csv(source, index=False)
    out = tmp_path / "scores.parquet"
    summary_file = tmp_path / "summary.json"
    result = CliRunner().invoke(
        _cli(),
        [
            "score-batch",
            "--input",
            str(source),
            "--out",
            str(out),
            "--home",
            str(home),
            "--model",
            NAME,
            "--json",
            str(summary_file),
        ],
    )
    assert result.exit_code == 0, result.output
    scores = pd.read_parquet(out)
    summary = json.loads(summary_file.read_text())
    assert summary["n_input"] == 14 and summary["n_scored"] == 13 and summary["n_rejected"] == 1
    assert len(scores) == 13 and scores["probability"].between(0, 1).all()
    assert set(scores["band"]) <= {"low", "medium", "high"} and sum(summary["bands"].values()) == 13
    assert scores["deploy_id"].iloc[-1] == "upcoming:14" and json.loads(scores["top_factors"].iloc[0])
    assert (scores["model_name"] == NAME).all()
    advice = [json.loads(a) for a in scores["advice"]]  # the advice columns, default actions only
    assert all(a["action"] == "next_business_morning" for row in advice for a in row)
    assert [row[0]["action"] if row else None for row in advice] == scores["best_action"].replace(
        {pd.NA: None}
    ).tolist()
    run_data = MlflowClient().get_run(summary["run_id"]).data
    assert run_data.metrics["n_scored"] == 13 and run_data.params["model_name"] == NAME
    from models.monitoring.predlog import predictions_dir, read_predictions

    logged = read_predictions(predictions_dir(home)).query("caller == 'score-batch'")
    assert len(logged) == 13 and logged["has_deploy_id"].sum() == 12  # "upcoming:14" was made up: a request
    assert set(logged["probability"].round(12)) == set(scores["probability"].round(12))


SATURDAY_NIGHT = ["--at", "2026-02-07T23:30:00Z"]


def test_gate_advice_prints_under_the_score_and_keeps_it(url: str, home: Path) -> None:
    remote = ["--url", url, "--token", "s3cret", "--fail-above", "1"]
    plain = json.loads(run(*ARGS, *SATURDAY_NIGHT, *remote, "--json")[1])
    code, out, _ = run(*ARGS, *SATURDAY_NIGHT, *remote, "--json", "--advice")
    advised = json.loads(out)
    assert code == EXIT_OK and advised["probability"] == plain["probability"] and "advice" not in plain
    assert isinstance(advised["advice"], list)
    assert all(a["action"] == "next_business_morning" for a in advised["advice"])  # the default set only
    local = json.loads(run(*ARGS, *SATURDAY_NIGHT, "--home", str(home), "--json", "--advice", "--fail-above", "1")[1])
    assert local["advice"] == advised["advice"] and local["probability"] == plain["probability"]
    code, text, _ = run(*ARGS, *SATURDAY_NIGHT, *remote, "--advice")
    lines = text.splitlines()
    assert lines[0].startswith("reviews-svc: probability") and lines[-1].startswith(("advice", "  * "))
    assert "advice" not in run(*ARGS, *SATURDAY_NIGHT, *remote)[1]


def test_gate_renders_each_action_under_the_score() -> None:
    from pipelines.cli.gate import _render

    result = {
        "service": "checkout",
        "probability": 0.31,
        "band": "high",
        "model": {"name": "m", "version": "3"},
        "factors": [],
        "flags": {},
        "advice": [
            {"action": "next_business_morning", "detail": "ship at the next business morning", "probability": 0.2,
             "change": -0.11},
            {"action": "split", "detail": "split into 2 smaller deploys", "probability": 0.25, "change": -0.06},
        ],
    }  # fmt: skip
    lines = _render(result, None).splitlines()
    assert lines[0].startswith("checkout: probability 0.310")
    assert lines[-2:] == [
        "  * ship at the next business morning: probability 0.200 (-0.110)",
        "  * split into 2 smaller deploys: probability 0.250 (-0.060)",
    ]
    assert _render({**result, "advice": []}, None).splitlines()[-1].startswith("advice: no action lowers")


def test_batch_advice_columns_are_the_service_advice_and_leave_scores_alone(home: Path) -> None:
    from models.scoring.advice import ACTIONS, AdviceConfig
    from models.scoring.context import load_scoring_context
    from models.serving.schemas import DeployIn
    from pipelines.flows.score_batch import score_deploys

    everything = AdviceConfig(actions=ACTIONS, min_drop=0.0, min_relative_drop=0.0, name_authors=True)
    context = load_scoring_context(home / "store", NAME, "champion")
    valid = simulated().upcoming.head(8).reset_index(drop=True)
    plain = score_deploys.fn(valid, context, AdviceConfig(actions=()))
    scores = score_deploys.fn(valid, context, everything)
    assert scores["probability"].tolist() == plain["probability"].tolist()
    assert plain["advice"].map(len).sum() == 0 and plain["best_action"].isna().all()
    assert scores["advice"].map(len).sum() > 0
    best_actions = scores["best_action"].astype(object).where(scores["best_action"].notna(), None).tolist()
    for advice, probability, best in zip(scores["advice"], scores["probability"], best_actions, strict=True):
        probs = [a["probability"] for a in advice]
        assert probs == sorted(probs) and all(p < probability for p in probs)
        assert best == (advice[0]["action"] if advice else None)
    # the same advice as the service gives for the same deploy (one code path)
    from models.serving.app import score_payload

    first = valid.iloc[0]
    body = {
        "service": first["service"],
        "author": first["author"],
        "lines_added": int(first["lines_added"]),
        "lines_deleted": int(first["lines_deleted"]),
        "files_changed": int(first["files_changed"]),
        "commit_count": int(first["commit_count"]),
        "touches_infra": bool(first["touches_infra"]),
        "is_rollback": bool(first["is_rollback"]),
        "commit_sha": first["commit_sha"],
        "deploy_id": first["deploy_id"],
        "planned_at": first["created_at"].isoformat(),
        "advice": True,
    }
    served = score_payload(context, DeployIn.model_validate(body), first["created_at"], 6, 72.0, everything)
    assert served["probability"] == pytest.approx(scores["probability"].iloc[0], abs=1e-9)
    assert [a["action"] for a in served["advice"]] == [a["action"] for a in scores["advice"].iloc[0]]


def test_stale_history_exits_4_only_when_failing_closed(url: str, home: Path) -> None:
    """The test store's history ends weeks before now: a score at now misses every recent event."""
    remote = [*ARGS, "--url", url, "--token", "s3cret", "--fail-above", "1"]
    code, _, err = run(*remote, "--fail-closed")
    assert code == EXIT_UNAVAILABLE and "stale history" in err and "fail-closed" in err
    code, _, err = run(*remote)
    assert code == EXIT_OK and "WARNING: stale history" in err
    code, out, _ = run(*remote, "--fail-closed", "--json", "--max-data-age-hours", "1000000")
    assert code == EXIT_OK and json.loads(out)["stale_history"] is False
    code, _, err = run(*ARGS, "--home", str(home), "--fail-above", "1", "--fail-closed")
    assert code == EXIT_UNAVAILABLE and "stale history" in err
    local = [*ARGS, "--home", str(home), "--fail-above", "1", "--fail-closed", "--json"]
    code, out, _ = run(*local, "--max-data-age-hours", "1000000")
    assert code == EXIT_OK and json.loads(out)["stale_history"] is False


HEAVY = ("pandas", "numpy", "sklearn", "mlflow", "prefect", "pyarrow", "fastapi", "httpx")  # typer needs pydantic


def test_remote_gate_imports_no_data_stack(url: str, tmp_path: Path) -> None:
    """``score --url`` in a fresh interpreter, through the real entry point: only the request's needs load."""
    script = (
        "import json, sys\n"
        f"sys.argv = ['incident-risk', *{[*ARGS, '--url', url, '--token', 's3cret', '--fail-above', '1']!r}]\n"
        "from pipelines.cli.main import main\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    code = exc.code\n"
        f"print(json.dumps({{'code': code, 'heavy': [m for m in {HEAVY!r} if m in sys.modules]}}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "INCIDENT_RISK_HOME": str(tmp_path / "home")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"code": EXIT_OK, "heavy": []}, done.stderr
    assert "probability" in done.stdout
