"""Faults around training: the MLflow server unreachable from the start, or killed mid-run.

Unreachable: the flow retries with backoff, then fails with one clear line, before training.
Killed mid-run (a TCP proxy in front of a real ``mlflow server`` SIGKILLs it the moment the client
sends a chosen registry request): training fails clearly, and once the server is back on the same
backend, no model version is half-registered (every version is READY and loads) and no alias
points at a missing or unloadable model.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.paths import REPO
from tests.integration.test_servers_e2e import Server, base_env, free_port, mlflow_server

pytestmark = [pytest.mark.slow, pytest.mark.flow]

BIN = Path(sys.executable).parent


class KillingProxy:
    """Forwards TCP to ``upstream``; when a client chunk contains ``trigger``, kills ``server`` first."""

    def __init__(self, upstream_port: int, server: Server, trigger: bytes) -> None:
        self.upstream_port, self.server, self.trigger = upstream_port, server, trigger
        self.fired = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        self.listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)

        def pump(src: socket.socket, dst: socket.socket, inspect: bool) -> None:
            with contextlib.suppress(OSError):
                while chunk := src.recv(65536):
                    if inspect and not self.fired.is_set() and self.trigger in chunk:
                        self.fired.set()
                        self.server.kill()  # the server dies with the request in flight
                        break
                    dst.sendall(chunk)
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

        threading.Thread(target=pump, args=(upstream, client, False), daemon=True).start()
        pump(client, upstream, True)

    def close(self) -> None:
        self._stop.set()
        self.listener.close()


@pytest.fixture(scope="module")
def trained_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from features.history.store import HistoryStore
    from features.simulation.simulator import SimulationConfig, simulate

    home = tmp_path_factory.mktemp("store-home")
    h = simulate(SimulationConfig(days=45, services=8, seed=3)).history
    store = HistoryStore(home / "store")
    with store.lock():
        store.commit({"deploys": h.deploys, "toggle_events": h.toggle_events, "incidents": h.incidents}, None, 0)
    return home


#: The training flow with a two-candidate grid (the CLI's full grid costs a minute here, and the
#: faults are in the tracking steps after it); exits 1 with the error line as the CLI does.
SMALL_TRAIN = """
import sys
from models.training.config import CandidateGrid, TrainConfig
from pipelines.settings import prepare_runtime, resolve_settings
settings = resolve_settings(None)
prepare_runtime(settings)
from pipelines.flows.train import TrainingError, TrainOptions, run_training
grid = (CandidateGrid("logreg", (("C", (0.1,)),)), CandidateGrid("hgb", (("max_iter", (40,)),)))
try:
    run_training(settings, TrainOptions(train=TrainConfig(candidates=grid, n_splits=3, permutation_repeats=1)))
except TrainingError as exc:
    print(f"error: {exc}")
    sys.exit(1)
"""


def _train(
    home: Path, tracking_uri: str, api_url: str, tmp: Path, small: bool = False
) -> subprocess.CompletedProcess[str]:
    env = base_env(tmp) | {
        "INCIDENT_RISK_HOME": str(home),
        "MLFLOW_TRACKING_URI": tracking_uri,
        "PREFECT_API_URL": api_url,
    }
    command = [sys.executable, "-c", SMALL_TRAIN] if small else [str(BIN / "incident-risk"), "train"]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False, cwd=REPO)


def test_unreachable_tracking_server_is_retried_with_backoff_then_fails_clearly(
    prefect_harness: None, trained_store: Path, tmp_path: Path
):
    from prefect.settings import PREFECT_API_URL

    dead = free_port()  # nothing listens there
    home = tmp_path / "home"
    shutil.copytree(trained_store, home)
    started = time.monotonic()
    result = _train(home, f"http://127.0.0.1:{dead}", str(PREFECT_API_URL.value()), tmp_path)
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"MLflow tracking server http://127.0.0.1:{dead} unreachable after 4 attempts" in result.stdout
    assert elapsed >= 7  # backoff 1 + 2 + 4 s between the attempts
    assert "candidate" not in result.stdout  # it failed before spending time on training


@contextlib.contextmanager
def _mlflow(tmp: Path, backend: str, port: int | None = None) -> Iterator[Server]:
    server = mlflow_server(tmp, backend, port)
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.mark.parametrize(
    "trigger",
    # Killing at b"/api/2.0/mlflow/model-versions/create" passes too (nothing registered); it costs
    # another ~80 s on CI, and this later point is the harder case: a registered, unaliased version.
    [b"/api/2.0/mlflow/registered-models/alias"],
    ids=["killed-at-alias"],
)
def test_server_killed_mid_run_leaves_no_half_registered_version_nor_dangling_alias(
    prefect_harness: None, trained_store: Path, tmp_path: Path, trigger: bytes, monkeypatch: pytest.MonkeyPatch
):
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException
    from prefect.settings import PREFECT_API_URL

    from models.registry.artifacts import MODEL_NAME, load_model

    backend = f"sqlite:///{tmp_path / 'mlflow.db'}"
    home = tmp_path / "home"
    shutil.copytree(trained_store, home)
    with _mlflow(tmp_path, backend) as server:
        port = int(server.health.split(":")[2].split("/")[0])
        proxy = KillingProxy(port, server, trigger)
        try:
            result = _train(home, f"http://127.0.0.1:{proxy.port}", str(PREFECT_API_URL.value()), tmp_path, small=True)
        finally:
            proxy.close()
        assert proxy.fired.is_set(), "the run never reached the request the server was to die at"
        assert server.proc is not None and server.proc.poll() is not None  # really dead
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    assert "failed while logging the run" in result.stdout, result.stdout[-3000:]

    # the server comes back on the same backend and artifact store: what did the dead run leave?
    with _mlflow(tmp_path, backend) as server:
        uri = server.health.removesuffix("/health")
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # load_model resolves models:/ URIs through the env
        client = MlflowClient(uri)
        try:
            versions = client.search_model_versions(f"name='{MODEL_NAME}'")
        except MlflowException:
            versions = []
        for mv in versions:
            assert mv.status == "READY", f"v{mv.version} is {mv.status}"
            load_model(f"models:/{MODEL_NAME}/{mv.version}")  # its artifacts are all there
        for mv in versions:
            for alias in mv.aliases:
                assert alias in ("champion", "challenger")
                load_model(f"models:/{MODEL_NAME}@{alias}")
        if b"model-versions/create" in trigger:
            assert versions == []  # the server died before it registered anything
        else:
            assert len(versions) == 1 and versions[0].aliases == []  # registered, loadable, never aliased
