"""Where incident-risk keeps its state, and which tracking and orchestration servers it uses.

Everything lives under one home directory (``--home``, else ``INCIDENT_RISK_HOME``, else
``./.incident-risk``). ``MLFLOW_TRACKING_URI`` and ``PREFECT_API_URL``, when set, win, so a team
can point every command at real servers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import typer

HOME_ENV = "INCIDENT_RISK_HOME"
DEFAULT_HOME = Path(".incident-risk")


@dataclass(frozen=True)
class Settings:
    """Resolved locations for one invocation; passed explicitly to whatever needs them."""

    home: Path
    mlflow_tracking_uri: str
    prefect_api_url: str | None

    @property
    def store_dir(self) -> Path:
        return self.home / "store"

    @property
    def artifact_root(self) -> Path:
        return self.home / "mlartifacts"

    @property
    def prefect_home(self) -> Path:
        return self.home / "prefect"


def resolve_settings(home: Path | None = None) -> Settings:
    """Settings from an explicit ``--home``, the environment, or the defaults."""
    chosen = home if home is not None else Path(os.environ.get(HOME_ENV) or DEFAULT_HOME)
    chosen = chosen.expanduser().resolve()
    uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{chosen / 'mlflow.db'}"
    return Settings(home=chosen, mlflow_tracking_uri=uri, prefect_api_url=os.environ.get("PREFECT_API_URL") or None)


def prepare_runtime(settings: Settings) -> None:
    """Create the home and point MLflow and Prefect at it, unless servers were configured.

    Called by each CLI command before Prefect or MLflow is imported: Prefect reads its settings
    once, at import, so they are set here rather than passed around.
    """
    settings.home.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_TRACKING_URI", settings.mlflow_tracking_uri)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "300")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    if settings.prefect_api_url is None:
        os.environ.setdefault("PREFECT_HOME", str(settings.prefect_home))


HomeOption = typer.Option(
    None,
    "--home",
    envvar=HOME_ENV,
    help="State directory (store, MLflow database, artifacts). Default ./.incident-risk",
    show_default=False,
)
