"""The prediction log under a real server (``incident-risk serve`` in a subprocess): SIGKILL loses at most one
flush interval and leaves only whole files; SIGTERM (graceful shutdown) loses nothing."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from models.monitoring.predlog import predictions_dir, read_predictions
from tests.helpers.scoring import home_with_champion
from tests.integration.test_service_load import LAUNCH, free_port, wait_ready

NAME = "incident-risk-test-predlog-kill"
FLUSH = 1.0
#: Scheduling slack on a busy 2-core machine: writing one flush's Parquet file can take a second there.
SLACK = 2.0


@pytest.fixture(scope="module")
def served_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("predlog-kill")
    home_with_champion(home, NAME)
    return home


def _start(home: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", LAUNCH, "serve", "--host", "127.0.0.1", "--port", str(port), "--model", NAME,
         "--log-flush-seconds", str(FLUSH)],
        env={**os.environ, "INCIDENT_RISK_HOME": str(home)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    wait_ready(port, proc)
    return proc, port


def _score_for(port: int, seconds: float, prefix: str) -> list[tuple[str, float]]:
    """(deploy id, monotonic time the 200 arrived) of requests sent one after another for ``seconds``."""
    done = []
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    stop = time.monotonic() + seconds
    i = 0
    while time.monotonic() < stop:
        body = json.dumps({"service": "reviews-svc", "deploy_id": f"{prefix}:{i}", "lines_added": i % 300})
        conn.request("POST", "/v1/score", body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        assert response.status == 200
        done.append((f"{prefix}:{i}", time.monotonic()))
        i += 1
    conn.close()
    return done


def _logged(home: Path, prefix: str) -> set[str]:
    root = predictions_dir(home)
    for f in root.glob("day=*/*.parquet"):
        pq.read_metadata(f)  # every visible file is whole
    log = read_predictions(root)
    return {d for d in log["deploy_id"].astype(str) if d.startswith(prefix + ":")}


@pytest.mark.integration
def test_sigkill_loses_at_most_one_flush_interval_and_never_corrupts_the_log(served_home: Path) -> None:
    proc, port = _start(served_home)
    try:
        sent = _score_for(port, 6 * FLUSH, "kill")
        killed_at = time.monotonic()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    logged = _logged(served_home, "kill")
    ids = {d for d, _ in sent}
    assert logged <= ids and len(sent) > 20
    # everything answered more than one interval (plus scheduling slack) before the kill is in the log
    old_enough = {d for d, at in sent if at < killed_at - FLUSH - SLACK}
    assert old_enough and old_enough <= logged, f"lost {len(old_enough - logged)} of {len(old_enough)}"
    lost = ids - logged
    assert all(at >= killed_at - FLUSH - SLACK for d, at in sent if d in lost)


@pytest.mark.integration
def test_sigterm_flushes_everything_at_shutdown(served_home: Path) -> None:
    proc, port = _start(served_home)
    try:
        sent = _score_for(port, 0.5, "term")
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert _logged(served_home, "term") == {d for d, _ in sent}
