"""Hermetic test settings: every test run gets its own Prefect and MLflow homes, no telemetry.

The variables are set in ``pytest_configure``, before any test module imports Prefect or
MLflow (both read them at import or first use). Flow tests share one session-scoped Prefect
test harness, because starting its temporary server costs ~15 s on two busy cores.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

_SESSION_DIR = Path(tempfile.mkdtemp(prefix="incident-risk-tests-"))

HERMETIC_ENV = {
    "PREFECT_HOME": str(_SESSION_DIR / "prefect"),
    "MLFLOW_TRACKING_URI": f"sqlite:///{_SESSION_DIR / 'mlflow.db'}",
    "INCIDENT_RISK_HOME": str(_SESSION_DIR / "home"),
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "DO_NOT_TRACK": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "GIT_PYTHON_REFRESH": "quiet",
    "MPLBACKEND": "Agg",
    "MPLCONFIGDIR": str(_SESSION_DIR / "matplotlib"),
    "XDG_CACHE_HOME": str(_SESSION_DIR / "cache"),
    "XDG_CONFIG_HOME": str(_SESSION_DIR / "config"),
}


def pytest_configure(config: pytest.Config) -> None:
    os.environ.pop("PREFECT_API_URL", None)
    os.environ.update(HERMETIC_ENV)


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_SESSION_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One Prefect test server for the whole session; flow tests request this fixture."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh incident-risk home for one test, with MLflow tracking inside it."""
    path = tmp_path / "home"
    path.mkdir()
    monkeypatch.setenv("INCIDENT_RISK_HOME", str(path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{path / 'mlflow.db'}")
    return path


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The local PostgreSQL server; tests that need it are skipped, loudly, where none answers."""
    if not _port_open("127.0.0.1", 5432):
        pytest.skip("no PostgreSQL server answers on 127.0.0.1:5432 (these tests need one)")
    return "postgresql://postgres@127.0.0.1:5432"
