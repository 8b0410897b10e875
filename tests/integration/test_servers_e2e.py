"""incident-risk against real servers: an MLflow tracking server and a Prefect server, both on
PostgreSQL, driven through the CLI in subprocesses (simulate -> ingest -> train -> promote ->
serve -> score -> score-batch -> deploy -> a worker runs a deployment).

Where no PostgreSQL answers on 127.0.0.1:5432 the same test runs on SQLite backends, says so
(a warning, and ``sqlite-fallback`` in the test id), and still starts and checks both servers.
The test owns every process it starts (own process groups) and always stops them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pandas as pd
import pytest

from tests.helpers.paths import REPO

BIN = Path(sys.executable).parent
PG_HOST, PG_PORT = "127.0.0.1", 5432

pytestmark = pytest.mark.slow  # runs on SQLite where no PostgreSQL answers, so not marked postgres


def postgres_answers() -> bool:
    try:
        with socket.create_connection((PG_HOST, PG_PORT), timeout=1):
            return True
    except OSError:
        return False


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """The backend kind is part of the test id, so a report shows which one ran."""
    if "backend_kind" in metafunc.fixturenames:
        metafunc.parametrize("backend_kind", ["postgres" if postgres_answers() else "sqlite-fallback"], scope="module")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Backends:
    kind: str
    mlflow_uri: str  # backend store of the MLflow server
    prefect_url: str  # database of the Prefect server
    mlflow_db: str | None = None  # PostgreSQL database names, to check what landed there
    prefect_db: str | None = None


def _pg(sql: str, db: str = "postgres", fetch: bool = False) -> list[tuple]:
    import psycopg2

    conn = psycopg2.connect(host=PG_HOST, port=PG_PORT, user="postgres", dbname=db)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql)
            return list(cur.fetchall()) if fetch else []
    finally:
        conn.close()


@contextlib.contextmanager
def backends(kind: str, tmp: Path) -> Iterator[Backends]:
    """Fresh, uniquely named PostgreSQL databases (dropped after), or SQLite files."""
    if kind == "postgres":
        suffix = uuid.uuid4().hex[:10]
        mlflow_db, prefect_db = f"ir_test_mlflow_{suffix}", f"ir_test_prefect_{suffix}"
        for db in (mlflow_db, prefect_db):
            _pg(f'CREATE DATABASE "{db}"')
        try:
            yield Backends(
                kind,
                f"postgresql+psycopg2://postgres@{PG_HOST}:{PG_PORT}/{mlflow_db}",
                f"postgresql+asyncpg://postgres@{PG_HOST}:{PG_PORT}/{prefect_db}",
                mlflow_db,
                prefect_db,
            )
        finally:
            for db in (mlflow_db, prefect_db):
                _pg(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    else:
        warnings.warn(
            "no PostgreSQL on 127.0.0.1:5432: running the server test on SQLite backends instead", stacklevel=2
        )
        print("servers e2e: SQLite backends (no PostgreSQL answers on 127.0.0.1:5432)", file=sys.stderr)
        yield Backends(kind, f"sqlite:///{tmp / 'mlflow.db'}", f"sqlite+aiosqlite:///{tmp / 'prefect.db'}")


class Server:
    """A server process in its own process group, stopped with the whole group."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], log: Path, health: str) -> None:
        self.name, self.command, self.env, self.log, self.health = name, command, env, log, health
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 180.0) -> Server:
        handle = open(self.log, "ab")  # noqa: SIM115 - kept open for the child's lifetime
        self.proc = subprocess.Popen(
            self.command, env=self.env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO
        )
        handle.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.health, timeout=2).status_code == 200:
                    return self
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer {self.health} within {timeout:.0f} s:\n{self.tail()}")

    def kill(self) -> None:
        """SIGKILL the whole group at once (a crash, not a shutdown)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill()
        # workers of the group that outlived the leader
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def base_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env.update(
        {
            "PREFECT_HOME": str(tmp / "prefect-client"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_LOGGING_LEVEL": "WARNING",
            "DO_NOT_TRACK": "1",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            # fail in seconds, not minutes, when a server is gone (docs/deploy.md)
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
            "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
            "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
        }
    )
    return env


def mlflow_server(tmp: Path, backend_uri: str, port: int | None = None) -> Server:
    port = port or free_port()
    artifacts = tmp / "server-artifacts"
    artifacts.mkdir(exist_ok=True)
    command = [
        str(BIN / "mlflow"), "server", "--backend-store-uri", backend_uri, "--artifacts-destination", str(artifacts),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    return Server("mlflow server", command, base_env(tmp), tmp / "mlflow-server.log", f"http://127.0.0.1:{port}/health")


def prefect_server(tmp: Path, database_url: str) -> Server:
    port = free_port()
    env = base_env(tmp) | {
        "PREFECT_HOME": str(tmp / "prefect-server"),
        "PREFECT_API_DATABASE_CONNECTION_URL": database_url,
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
    }
    command = [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    return Server("prefect server", command, env, tmp / "prefect-server.log", f"http://127.0.0.1:{port}/api/health")


@dataclass
class Stack:
    backends: Backends
    mlflow: Server
    prefect: Server
    env: dict[str, str]
    home: Path
    tmp: Path

    @property
    def tracking_uri(self) -> str:
        return self.env["MLFLOW_TRACKING_URI"]

    @property
    def api_url(self) -> str:
        return self.env["PREFECT_API_URL"]


@pytest.fixture(scope="module")
def stack(backend_kind: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("servers")
    with backends(backend_kind, tmp) as b:
        ml = mlflow_server(tmp, b.mlflow_uri)
        pf = prefect_server(tmp, b.prefect_url)
        try:
            ml.start()
            pf.start()
            home = tmp / "home"
            env = base_env(tmp) | {
                "MLFLOW_TRACKING_URI": ml.health.removesuffix("/health"),
                "PREFECT_API_URL": pf.health.removesuffix("/health"),
                "INCIDENT_RISK_HOME": str(home),
            }
            yield Stack(b, ml, pf, env, home, tmp)
        finally:
            ml.stop()
            pf.stop()


def cli(stack: Stack, *args: str, ok: tuple[int, ...] = (0,), timeout: float = 600) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(BIN / "incident-risk"), *args], env=stack.env, cwd=REPO, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode in ok, (
        f"incident-risk {' '.join(args)} -> {result.returncode}\n{result.stdout}\n{result.stderr}"
    )
    return result


def test_whole_chain_runs_against_mlflow_and_prefect_servers(stack: Stack):
    from mlflow import MlflowClient

    sim = stack.tmp / "sim"
    cli(stack, "simulate", "--out", str(sim), "--days", "45", "--services", "8", "--style", "generic", "--seed", "3")
    cli(stack, "ingest", "--config", str(sim / "sources.yaml"), "--quiet")
    metrics_file = stack.tmp / "metrics.json"
    cli(stack, "train", "--metrics-out", str(metrics_file))
    trained = json.loads(metrics_file.read_text())
    version = str(trained["model_version"])
    cli(stack, "promote", version, "--reason", "servers e2e")

    client = MlflowClient(stack.tracking_uri)
    run = client.get_run(trained["run_id"])
    assert run.info.status == "FINISHED"
    # artifacts live in the server's store, not on this client's disk
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/"), run.info.artifact_uri
    assert (stack.tmp / "server-artifacts").is_dir() and any((stack.tmp / "server-artifacts").rglob("model.skops"))
    champion = client.get_model_version_by_alias("incident-risk", "champion")
    assert str(champion.version) == version and champion.status == "READY"
    assert str(client.get_model_version_by_alias("incident-risk", "challenger").version) == version

    port = free_port()
    serve = Server(
        "incident-risk serve",
        [str(BIN / "incident-risk"), "serve", "--port", str(port), "--refresh-seconds", "1"],
        stack.env,
        stack.tmp / "serve.log",
        f"http://127.0.0.1:{port}/readyz",
    )
    try:
        serve.start(timeout=120)
        upcoming = pd.read_csv(sim / "upcoming.csv")
        service = str(upcoming["service"].iloc[0])
        scored = cli(
            stack, "score", "--url", f"http://127.0.0.1:{port}", "--service", service, "--lines-added", "120",
            "--lines-deleted", "30", "--files", "7", "--at", str(upcoming["created_at"].iloc[0]), "--json",
            "--fail-closed", ok=(0, 3),  # planned right after the history ends: not stale, so never exit 4
        )  # fmt: skip
        answer = json.loads(scored.stdout)
        assert 0 <= answer["probability"] <= 1 and str(answer["model"]["version"]) == version
    finally:
        serve.stop()

    scores = stack.tmp / "scores.parquet"
    cli(stack, "score-batch", "--input", str(sim / "upcoming.csv"), "--out", str(scores))
    assert len(pd.read_parquet(scores)) > 0

    # the deployments, registered on the server, and one of them run by a process worker
    cli(stack, "deploy", "--file", str(REPO / "prefect.yaml"))
    (stack.home / "sources.yaml").symlink_to(sim / "sources.yaml")
    out = stack.tmp / "dora-by-worker.csv"
    cli_prefect = [str(BIN / "prefect"), "deployment", "run", "scheduled-dora/weekly", "--param", f"out_path={out}"]
    subprocess.run(cli_prefect, env=stack.env, cwd=REPO, check=True, capture_output=True, timeout=120)
    worker = subprocess.run(
        [str(BIN / "prefect"), "worker", "start", "--pool", "incident-risk", "--run-once"],
        env=stack.env, cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.is_file(), (
        f"the worker did not run the DORA deployment:\n{worker.stdout[-3000:]}\n{worker.stderr[-3000:]}"
    )

    api = stack.api_url
    deployments = {d["name"]: d for d in httpx.post(f"{api}/deployments/filter", json={}, timeout=30).json()}
    assert set(deployments) == {"hourly", "nightly", "every-15-minutes", "weekly", "monday-digest", "daily"}
    assert all(d["schedules"] and d["work_pool_name"] == "incident-risk" for d in deployments.values())
    assert deployments["nightly"]["parameters"]["window_days"] == 180
    states = {}
    for name in ("ingest", "train", "score-batch", "scheduled-dora"):
        body = {"flows": {"name": {"any_": [name]}}}
        runs = httpx.post(f"{api}/flow_runs/filter", json=body, timeout=30).json()
        # the server's scheduler may already have queued future runs of the deployments: not ours
        states[name] = sorted({r["state_type"] for r in runs} - {"SCHEDULED"})
    assert all(s == ["COMPLETED"] for s in states.values()), states

    if stack.backends.kind == "postgres":  # and it all landed in PostgreSQL
        assert _pg("SELECT count(*) FROM runs", stack.backends.mlflow_db, fetch=True)[0][0] >= 2
        assert _pg("SELECT count(*) FROM model_versions", stack.backends.mlflow_db, fetch=True)[0][0] == 1
        assert _pg("SELECT count(*) FROM flow_run", stack.backends.prefect_db, fetch=True)[0][0] >= 4
        assert _pg("SELECT count(*) FROM deployment", stack.backends.prefect_db, fetch=True)[0][0] == 6
