"""Faults around training: the MLflow server unreachable from the start, or killed mid-run.

Unreachable: the flow retries with backoff, then fails with one clear line, before training.
Killed mid-run (a TCP proxy in front of a real ``mlflow server`` SIGKILLs it the moment the client
sends a chosen registry request): training fails clearly, and once the server is back on the same
backend, no model version is half-registered (every version is READY and loads) and no alias
points at a missing or unloadable model.

The history store (issue 19): SIGKILL at each step of an ingest's commit, concurrent ingests, a
full disk during the commit, and hostile inputs (truncated, binary, UTF-16, deeply nested, a YAML
bomb, paths and symlinks leading out of the config directory). Each leaves the store's content
unchanged or converges on a re-run; docs/reliability.md has the table.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
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


# ---------------------------------------------------------------------------------------------
# The history store under faults and hostile inputs (issue 19). Each case asserts the store's
# content hash is unchanged, or that a re-run converges to the uninterrupted result: no record is
# lost. The figures are in docs/reliability.md.


#: Runs ``incident-risk ingest`` in this process after arming one fault: SIGKILL itself at a hook point.
KILL_DRIVER = """
import os, signal, sys
from features.history import store as st
from features.sources import config as cfg

def die():
    os.kill(os.getpid(), signal.SIGKILL)

point = os.environ.get("FAULT_POINT", "")
if point == "reading":  # the second export file is being parsed
    parse, calls = cfg.SourceConfig.parse, []
    def parse_then_die(self, path):
        calls.append(path)
        if len(calls) >= 2:
            die()
        return parse(self, path)
    cfg.SourceConfig.parse = parse_then_die
elif point == "table-written":  # the first new table file is on disk, the manifest not yet
    write = st.HistoryStore._write_table
    def write_then_die(self, *args):
        write(self, *args)
        die()
    st.HistoryStore._write_table = write_then_die
elif point == "manifest-aside":  # the new manifest is written aside and fsynced, not yet renamed
    def aside_then_die(path, data):
        tmp = path.with_name("." + path.name + ".killed.tmp")
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        die()
    st._atomic_write = aside_then_die
elif point == "manifest-replaced":  # the new manifest is in place, old files not yet cleaned
    st.HistoryStore._remove_unreferenced = lambda self, keep: die()

from pipelines.cli.main import main
sys.argv = ["incident-risk", "ingest", "--config", sys.argv[1], "--quiet"]
main()
"""


def content_hash(store_dir: Path) -> str:
    """A hash of every table's and the quarantine's content, read through the manifest."""
    from features.history.schema import TABLES
    from features.history.store import HistoryStore

    store = HistoryStore(store_dir)
    manifest = store.manifest()
    digest = hashlib.sha256()
    frames = {name: store.read(name, manifest) for name in TABLES}
    frames["quarantine"] = store.read_quarantine(manifest)
    for name, frame in frames.items():
        digest.update(f"{name}:{','.join(map(str, frame.columns))}:{len(frame)}".encode())
        digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def record_count(store_dir: Path) -> int:
    """Rows in the three tables plus quarantined records: what an ingest may never lose."""
    from features.history.schema import TABLES
    from features.history.store import HistoryStore

    store = HistoryStore(store_dir)
    manifest = store.manifest()
    return sum(len(store.read(name, manifest)) for name in TABLES) + len(store.read_quarantine(manifest))


def _ingest_env(home: Path, tmp: Path, **extra: str) -> dict[str, str]:
    from prefect.settings import PREFECT_API_URL

    return base_env(tmp) | {
        "INCIDENT_RISK_HOME": str(home),
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),  # the session's server: no temporary one per run
        "PYTHONPATH": str(REPO),
        **extra,
    }


def _start_ingest(config: Path, home: Path, tmp: Path, **extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", KILL_DRIVER, str(config)],
        env=_ingest_env(home, tmp, **extra),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _ingest_ok(config: Path, home: Path, tmp: Path) -> None:
    proc = _start_ingest(config, home, tmp)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, (out + err)[-3000:]


@pytest.fixture(scope="module")
def fault_exports(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two small generic-style exports (sources.yaml each): a first ingest and a later, larger one."""
    from features.simulation.export import write_exports
    from features.simulation.simulator import SimulationConfig, simulate

    root = tmp_path_factory.mktemp("fault-exports")
    small = write_exports(simulate(SimulationConfig(days=15, services=6, seed=1)), root / "small", "generic")
    big = write_exports(simulate(SimulationConfig(days=40, services=12, seed=2)), root / "big", "generic")
    return small, big


@pytest.fixture(scope="module")
def fault_base(prefect_harness: None, fault_exports: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory):
    """A home after the small ingest, and a reference home after the small then the big ingest."""
    small, big = fault_exports
    tmp = tmp_path_factory.mktemp("fault-base")
    base = tmp / "base"
    _ingest_ok(small, base, tmp)
    reference = tmp / "reference"
    shutil.copytree(base, reference)
    _ingest_ok(big, reference, tmp)
    return base, reference


@pytest.mark.parametrize("point", ["reading", "table-written", "manifest-aside", "manifest-replaced"])
def test_sigkill_at_each_commit_step_leaves_old_or_new_store_and_the_rerun_converges(
    fault_exports: tuple[Path, Path], fault_base: tuple[Path, Path], tmp_path: Path, point: str
):
    _, big = fault_exports
    base, reference = fault_base
    before, after = content_hash(base / "store"), content_hash(reference / "store")
    home = tmp_path / "home"
    shutil.copytree(base, home)
    proc = _start_ingest(big, home, tmp_path, FAULT_POINT=point)
    proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL, f"the ingest was not killed at {point}"
    state = content_hash(home / "store")
    expected = after if point == "manifest-replaced" else before  # the manifest rename is the commit
    assert state == expected, f"after a kill at {point} the store is neither as before nor as after"
    _ingest_ok(big, home, tmp_path)  # the lock died with the killed process
    assert content_hash(home / "store") == after
    assert record_count(home / "store") == record_count(reference / "store")  # 0 records lost


def _renamed(config: Path, suffix: str) -> Path:
    """The same exports under other source names (so other ids): a distinct source per ingest."""
    text = re.sub(r"(?m)^(  - name: )(\S+)", rf"\g<1>\g<2>-{suffix}", config.read_text())
    out = config.with_name(f"sources-{suffix}.yaml")
    out.write_text(text)
    return out


def test_concurrent_ingests_into_one_home_serialise_and_lose_nothing(
    fault_exports: tuple[Path, Path], fault_base: tuple[Path, Path], tmp_path: Path
):
    small, big = fault_exports
    base, _ = fault_base
    configs = [_renamed(big, "a"), _renamed(big, "b"), _renamed(small, "c")]
    sequential = tmp_path / "sequential"
    shutil.copytree(base, sequential)
    for config in configs:
        _ingest_ok(config, sequential, tmp_path)
    home = tmp_path / "concurrent"
    shutil.copytree(base, home)
    procs = [_start_ingest(config, home, tmp_path) for config in configs]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, (out + err)[-3000:]
    assert content_hash(home / "store") == content_hash(sequential / "store")
    from features.history.store import HistoryStore

    assert HistoryStore(home / "store").manifest().version == 4  # base + one commit per ingest


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs, or a skip saying why the machine cannot mount one."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except OSError as exc:
        pytest.skip(f"cannot run mount to make a small disk ({exc})")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root or CAP_SYS_ADMIN): {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True, timeout=30, check=False)


def test_disk_full_during_the_commit_fails_clearly_and_commits_nothing(
    fault_exports: tuple[Path, Path], fault_base: tuple[Path, Path], small_disk: Path, tmp_path: Path
):
    _, big = fault_exports
    base, reference = fault_base
    home = small_disk / "home"
    shutil.copytree(base, home)
    before = content_hash(home / "store")
    # leave less room than the big ingest's new table files need (the whole reference store)
    need = sum(p.stat().st_size for p in (reference / "store").rglob("*.parquet"))
    free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * max(0, free - need // 4))
    proc = _start_ingest(big, home, tmp_path)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, (out + err)[-3000:]
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err[-3000:]
    assert "could not write store version 2 (No space left on device)" in errors[0], errors
    assert "nothing was committed, the store is still at version 1" in errors[0]
    assert "Traceback" not in err
    assert content_hash(home / "store") == before
    assert not list((home / "store").rglob("v000002-*")) and not list((home / "store").rglob("*.tmp"))
    filler.unlink()  # room again: the re-run converges
    _ingest_ok(big, home, tmp_path)
    assert content_hash(home / "store") == content_hash(reference / "store")


def _nested_yaml(d: Path) -> None:
    (d / "sources.yaml").write_text("sources:\n" + "  - " + "[" * 5000 + "]" * 5000 + "\n")


def _yaml_bomb(d: Path) -> None:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    (d / "sources.yaml").write_text("\n".join(lines) + "\n" + (d / "sources.yaml").read_text())


def _symlink_out(d: Path) -> None:
    outside = d.parent / "outside.csv"
    outside.write_text((d / "deploys.csv").read_text())
    (d / "deploys.csv").unlink()
    (d / "deploys.csv").symlink_to(outside)


def _symlink_loop(d: Path) -> None:
    (d / "deploys.csv").unlink()
    (d / "deploys.csv").symlink_to(d / "deploys.csv")


def _escape(d: Path) -> None:
    (d.parent / "outside.csv").write_text((d / "deploys.csv").read_text())
    (d / "sources.yaml").write_text(
        (d / "sources.yaml").read_text().replace("path: deploys.csv", "path: ../outside.csv")
    )


HOSTILE = {
    "truncated JSON": (
        lambda d: (d / "incidents.jsonl").write_text('{"id": "x", "created_at": "2026-01-0'),
        "incidents.jsonl: line 1: invalid JSON",
    ),
    "binary CSV": (
        lambda d: (d / "deploys.csv").write_bytes(bytes(range(256)) * 8),
        "deploys.csv: line 2: not valid UTF-8 (byte 128)",
    ),
    "UTF-16 CSV": (
        lambda d: (d / "deploys.csv").write_bytes((d / "deploys.csv").read_text().encode("utf-16")),
        "deploys.csv: file is UTF-16 encoded; save it as UTF-8",
    ),
    "deeply nested JSON": (
        lambda d: (d / "incidents.jsonl").write_text("[" * 100_000 + "]" * 100_000 + "\n"),
        "incidents.jsonl: line 1: JSON nested too deeply to read",
    ),
    "YAML bomb": (_yaml_bomb, "YAML aliases (*name), more than 50: refused"),
    "deeply nested YAML": (_nested_yaml, "sources.yaml: YAML nested too deeply to read"),
    "path escaping the config directory": (
        _escape,
        "sources[0].path: '../outside.csv' leads outside the config directory",
    ),
    "symlink out of the config directory": (_symlink_out, "sources[0].path: 'deploys.csv' leads outside the config"),
    "symlink loop": (_symlink_loop, "sources[0].path: 'deploys.csv': cannot be resolved"),
    "directory instead of a file": (
        lambda d: ((d / "deploys.csv").unlink(), (d / "deploys.csv").mkdir()),
        "deploys.csv: is a directory, expected a file",
    ),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_input_fails_with_one_clear_line_and_the_store_is_unchanged(
    prefect_harness: None, fault_exports: tuple[Path, Path], tmp_path: Path, case: str
):
    from typer.testing import CliRunner

    from pipelines.cli.main import build_app

    small, _ = fault_exports
    exports = tmp_path / "exports"
    shutil.copytree(small.parent, exports, ignore=shutil.ignore_patterns("ground_truth"))
    home = tmp_path / "home"
    runner, app = CliRunner(), build_app()
    config = exports / "sources.yaml"
    first = runner.invoke(app, ["ingest", "--config", str(config), "--home", str(home), "-q"])
    assert first.exit_code == 0, first.output
    before = content_hash(home / "store")
    damage, message = HOSTILE[case]
    damage(exports)
    result = runner.invoke(app, ["ingest", "--config", str(config), "--home", str(home)])
    assert result.exit_code == 1, result.output[-3000:]
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.output[-3000:]
    assert content_hash(home / "store") == before
