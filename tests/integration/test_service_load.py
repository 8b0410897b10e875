"""A real server (``incident-risk serve`` in a subprocess, uvicorn on a loopback port) under bounded load.

8 keep-alive clients send 20,000 single-deploy requests (known and unknown services and authors)
after a 1,000-request warm-up; every answer must be a 200 and the server's RSS may not grow by more
than 15 MiB. (Latencies and throughput against MLflow are ``benchmarks/serving.py``.) Traffic goes to
127.0.0.1 only, with fixed counts and a time limit.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.scoring import home_with_champion

NAME = "incident-risk-test-load"
BODIES = [
    json.dumps(body).encode()
    for body in (
        {
            "service": "reviews-svc",
            "author": "guido.turing",
            "lines_added": 120,
            "lines_deleted": 30,
            "files_changed": 4,
        },
        {"service": "never-seen-svc", "author": "new.person", "lines_added": 3, "touches_infra": True},
        {"service": "reviews-svc", "lines_added": 5000, "files_changed": 80, "is_rollback": False},
        {"service": "reviews-svc", "author": "new.person", "planned_at": "2026-06-01T09:30:00+02:00"},
    )
]
LAUNCH = "import typer; from pipelines.cli.serve import register; app = typer.Typer(); register(app); app()"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def wait_ready(port: int, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise TimeoutError("server not ready")


def hammer(port: int, total: int, clients: int, time_limit: float) -> tuple[int, int]:
    """(ok, errors) of ``total`` POSTs over ``clients`` keep-alive connections, stopping at ``time_limit``."""
    counts = {"ok": 0, "errors": 0}
    lock = threading.Lock()
    deadline = time.monotonic() + time_limit

    def worker(n: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        ok = errors = 0
        for i in range(n):
            if time.monotonic() > deadline:
                break
            try:
                conn.request(
                    "POST", "/v1/score", body=BODIES[i % len(BODIES)], headers={"Content-Type": "application/json"}
                )
                response = conn.getresponse()
                response.read()
                ok, errors = (ok + 1, errors) if response.status == 200 else (ok, errors + 1)
            except (OSError, http.client.HTTPException):
                errors += 1
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.close()
        with lock:
            counts["ok"] += ok
            counts["errors"] += errors

    threads = [threading.Thread(target=worker, args=(total // clients,)) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return counts["ok"], counts["errors"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int]]:
    home = tmp_path_factory.mktemp("load-home")
    home_with_champion(home, NAME, "hgb")
    port = free_port()
    env = {**os.environ, "INCIDENT_RISK_HOME": str(home)}
    proc = subprocess.Popen(
        [sys.executable, "-c", LAUNCH, "serve", "--host", "127.0.0.1", "--port", str(port), "--model", NAME],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_ready(port, proc)
        yield port, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_bounded_load_has_no_errors_and_no_memory_growth(server: tuple[int, int]) -> None:
    port, pid = server
    # warm-up past several prediction-log flushes: Arrow's memory pool and the log buffer reach their
    # steady size here, so what the measured run adds is growth, not the first flushes' working set
    ok, errors = hammer(port, 6000, 8, time_limit=120)
    assert (ok, errors) == (6000, 0)
    before = rss_kib(pid)
    ok, errors = hammer(port, 20_000, 8, time_limit=240)
    after = rss_kib(pid)
    assert errors == 0 and ok == 20_000
    assert after - before < 15 * 1024, f"RSS grew {before} -> {after} KiB"
