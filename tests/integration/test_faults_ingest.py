"""An ingest killed (SIGKILL, the whole process group) at several points leaves the store as it
was before or as it is after an uninterrupted ingest, never torn; the rerun then completes and
equals the uninterrupted result."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from features.history.schema import TABLES
from features.history.store import HistoryStore

pytestmark = [pytest.mark.slow, pytest.mark.flow]

BIN = Path(sys.executable).parent
Snapshot = dict[str, pd.DataFrame]


def snapshot(store_dir: Path) -> Snapshot:
    """Every table and the quarantine, read through the manifest (raises if anything is unreadable)."""
    store = HistoryStore(store_dir)
    manifest = store.manifest()
    out = {name: store.read(name, manifest) for name in TABLES}
    out["quarantine"] = store.read_quarantine(manifest)
    return out


def same(a: Snapshot, b: Snapshot) -> bool:
    for name in a:
        try:
            pd.testing.assert_frame_equal(a[name], b[name], check_exact=True)
        except AssertionError:
            return False
    return True


def _env(home: Path, api_url: str) -> dict[str, str]:
    # the session's Prefect test server, so each ingest skips starting a temporary one
    return os.environ | {"INCIDENT_RISK_HOME": str(home), "PREFECT_API_URL": api_url}


def _ingest(config: Path, home: Path, api_url: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(BIN / "incident-risk"), "ingest", "--config", str(config), "--quiet"],
        env=_env(home, api_url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def _finish(proc: subprocess.Popen[bytes]) -> None:
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode(errors="replace")[-3000:]


def _kill(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from features.simulation.export import write_exports
    from features.simulation.simulator import SimulationConfig, simulate

    root = tmp_path_factory.mktemp("exports")
    small = write_exports(simulate(SimulationConfig(days=20, services=10, seed=1)), root / "small", "generic")
    big = write_exports(simulate(SimulationConfig(days=150, services=50, seed=9)), root / "big", "generic")
    return small, big


def _new_files(store_dir: Path, before: set[Path]) -> bool:
    return any(p not in before for sub in TABLES for p in (store_dir / sub).glob("v000002-*"))


def test_killed_ingest_leaves_the_store_before_or_after_and_the_rerun_completes(
    prefect_harness: None, exports: tuple[Path, Path], tmp_path: Path
):
    from prefect.settings import PREFECT_API_URL

    api_url = str(PREFECT_API_URL.value())
    small, big = exports
    base = tmp_path / "base"
    _finish(_ingest(small, base, api_url))
    before = snapshot(base / "store")

    reference = tmp_path / "reference"
    shutil.copytree(base, reference)
    started = time.monotonic()
    _finish(_ingest(big, reference, api_url))
    duration = time.monotonic() - started
    after = snapshot(reference / "store")
    assert not same(before, after)

    outcomes = {}
    # fixed points of the run (start-up, reading the exports), and the moment the commit begins
    # writing version 2's table files (polled every 2 ms), the window a torn store would show in
    for point in (0.3, 0.7, "commit"):
        home = tmp_path / f"killed-{point}"
        shutil.copytree(base, home)
        existing = {p for sub in TABLES for p in (home / "store" / sub).glob("*")}
        proc = _ingest(big, home, api_url)
        if point == "commit":
            deadline = time.monotonic() + 300
            while not _new_files(home / "store", existing) and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.002)
        else:
            time.sleep(float(point) * duration)
        finished_first = proc.poll() is not None
        in_commit = _new_files(home / "store", existing)
        if not finished_first:
            _kill(proc)
        state = snapshot(home / "store")  # the manifest and every file it names are readable
        assert same(state, before) or same(state, after), f"torn store after a kill at {point}"
        outcomes[point] = "finished" if finished_first else ("before" if same(state, before) else "after")
        if point == "commit":
            assert in_commit and not finished_first, "the kill missed the commit"
        _finish(_ingest(big, home, api_url))  # the rerun completes (the lock died with the process)
        assert same(snapshot(home / "store"), after)
    # the early kills really interrupted the ingest; the commit kill landed inside the commit
    assert outcomes[0.3] == "before", outcomes
    assert outcomes["commit"] in ("before", "after"), outcomes
    print(f"ingest kill outcomes: {outcomes} (uninterrupted ingest {duration:.1f} s)")
