"""The CI gate (``incident-risk score``) and the batch scoring command, end to end.

Exit codes are the contract: 0 below the threshold, 3 above, 2 bad arguments, 4 unavailable
(``--fail-closed``; ``--fail-open`` exits 0 with a warning).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import typer
import uvicorn
from typer.testing import CliRunner

from models.serving.app import ServiceConfig, create_app
from pipelines.cli.gate import EXIT_ABOVE, EXIT_BAD_ARGS, EXIT_OK, EXIT_UNAVAILABLE
from pipelines.cli.main import build_app
from tests.models.scoring.test_scoring_helpers import fitted, simulated, write_store
from tests.models.scoring.test_scoring_helpers import register as register_model

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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gate-home")
    write_store(path, simulated().history)
    register_model(path, fitted("logreg"), NAME)
    return path


@pytest.fixture(scope="module")
def url(home: Path) -> Iterator[str]:
    """The service on a loopback port, in this process (uvicorn in a thread)."""
    port = _free_port()
    config = ServiceConfig(store_dir=home / "store", model_name=NAME, refresh_seconds=3600, tokens=("s3cret",))
    server = uvicorn.Server(uvicorn.Config(create_app(config), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


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
    dead = f"http://127.0.0.1:{_free_port()}"
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
    run_data = MlflowClient().get_run(summary["run_id"]).data
    assert run_data.metrics["n_scored"] == 13 and run_data.params["model_name"] == NAME
    from models.monitoring.predlog import predictions_dir, read_predictions

    logged = read_predictions(predictions_dir(home)).query("caller == 'score-batch'")
    assert len(logged) == 13 and logged["has_deploy_id"].sum() == 12  # "upcoming:14" was made up: a request
    assert set(logged["probability"].round(12)) == set(scores["probability"].round(12))
