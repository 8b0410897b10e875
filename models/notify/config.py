"""Slack settings: credentials (from the environment only), channel routing per squad, the alert rule.

The routing file (YAML) says where messages go and when a score alerts::

    default_channel: "#deploy-risk"        # where a squad without a channel is told
    squads: {payments-falcon: "#falcon"}   # overrides the catalog's slack.com/channel annotation
    alert_bands: [high]                    # bands that alert
    min_probability: 0.4                   # and/or: a probability at or above this alerts
    deploy_url: "https://github.com/acme/{service}/deployments"   # {service}, {deploy_id}, {commit_sha}
    mlflow_url: "http://mlflow:5000"       # links to the model's run

The bot token or webhook URL is a secret: it is read from ``SLACK_BOT_TOKEN`` /
``SLACK_WEBHOOK_URL``, never from a file, and never printed (``repr`` masks it).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from models.training.estimators import BANDS

TOKEN_ENV = "SLACK_BOT_TOKEN"
WEBHOOK_ENV = "SLACK_WEBHOOK_URL"
API_URL_ENV = "SLACK_API_URL"
SLACK_API_URL = "https://slack.com/api/"


class NotifyConfigError(ValueError):
    """A routing file or Slack setting that cannot be used: one line naming the file and key."""


@dataclass(frozen=True)
class SlackConfig:
    """How to reach Slack: a bot token (``chat.postMessage``, any channel) or an incoming webhook."""

    token: str | None = field(default=None, repr=False)
    webhook_url: str | None = field(default=None, repr=False)
    base_url: str = SLACK_API_URL
    timeout_seconds: float = 5.0
    max_retries: int = 3  # per kind of failure (429, 5xx, refused connection)

    def __post_init__(self) -> None:
        if self.token and self.webhook_url:
            raise NotifyConfigError(f"set one of {TOKEN_ENV} or {WEBHOOK_ENV}, not both")
        if self.timeout_seconds <= 0 or self.max_retries < 0:
            raise NotifyConfigError("timeout_seconds must be positive and max_retries at least 0")

    @property
    def enabled(self) -> bool:
        return bool(self.token or self.webhook_url)

    @property
    def mode(self) -> str:
        return "bot token" if self.token else "webhook" if self.webhook_url else "off"

    def __repr__(self) -> str:  # the secret never reaches a log line
        return f"SlackConfig(mode={self.mode!r}, base_url={self.base_url!r}, timeout_seconds={self.timeout_seconds})"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SlackConfig:
        env = os.environ if env is None else env
        return cls(
            token=env.get(TOKEN_ENV) or None,
            webhook_url=env.get(WEBHOOK_ENV) or None,
            base_url=env.get(API_URL_ENV) or SLACK_API_URL,
        )


@dataclass(frozen=True)
class Routing:
    """Which channel hears about a squad: the file's mapping, else the catalog's, else the default."""

    default_channel: str = "#deploy-risk"
    squads: Mapping[str, str] = field(default_factory=dict)

    def channel(
        self, squad: str | None, tribe: str | None, catalog: Mapping[str, str], service_channel: str | None = None
    ) -> str:
        """The file's mapping of the squad (or tribe), else the service's own annotation, else the
        catalog's channel of the squad (or tribe), else the default channel."""
        teams = [t for t in (squad, tribe) if t]
        mapped = next((self.squads[t] for t in teams if t in self.squads), None)
        from_catalog = next((catalog[t] for t in teams if t in catalog), None)
        return _channel(mapped or service_channel or from_catalog or self.default_channel)


def _channel(name: str) -> str:
    """Slack accepts channel ids (C0123) and names (#deploys); a bare name gets its ``#``."""
    name = name.strip().lstrip("#")
    return name if _is_channel_id(name) else f"#{name}"


def _is_channel_id(name: str) -> bool:
    return name[:1] in "CGD" and name.isalnum() and name.isupper()


@dataclass(frozen=True)
class AlertRule:
    """When a score alerts: its band is one of ``bands``, or its probability is at least ``min_probability``."""

    bands: tuple[str, ...] = ("high",)
    min_probability: float | None = None

    def __post_init__(self) -> None:
        unknown = [b for b in self.bands if b not in BANDS]
        if unknown:
            raise NotifyConfigError(f"alert_bands: unknown band {unknown[0]!r}; expected some of {', '.join(BANDS)}")
        if self.min_probability is not None and not 0.0 < self.min_probability <= 1.0:
            raise NotifyConfigError("min_probability: must be in (0, 1]")

    def fires(self, band: str, probability: float) -> bool:
        if band in self.bands:
            return True
        return self.min_probability is not None and probability >= self.min_probability


@dataclass(frozen=True)
class Links:
    """Where a message links to: the deploy (a URL template) and the model's MLflow run."""

    deploy_url: str | None = None
    mlflow_url: str | None = None

    def deploy(self, service: str | None, deploy_id: str | None, commit_sha: str | None) -> str | None:
        if not self.deploy_url:
            return None
        values = {"service": service or "", "deploy_id": deploy_id or "", "commit_sha": commit_sha or ""}
        return self.deploy_url.format(**values)

    def run(self, run_id: str | None) -> str | None:
        """The MLflow UI's page of a run (its direct route, which needs no experiment id)."""
        if not self.mlflow_url or not run_id:
            return None
        return f"{self.mlflow_url.rstrip('/')}/#/runs/{run_id}"


@dataclass(frozen=True)
class NotifyConfig:
    """Everything alerts and the digest need; ``slack`` is off when no secret is set."""

    slack: SlackConfig = field(default_factory=SlackConfig)
    routing: Routing = field(default_factory=Routing)
    rule: AlertRule = field(default_factory=AlertRule)
    links: Links = field(default_factory=Links)
    queue_size: int = 1000
    stack_window_hours: float = 24.0

    def __post_init__(self) -> None:
        if self.queue_size < 1:
            raise NotifyConfigError("queue_size: must be at least 1")


_KEYS = ("default_channel", "squads", "alert_bands", "min_probability", "deploy_url", "mlflow_url", "queue_size")


def load_notify_config(path: Path | None, slack: SlackConfig | None = None) -> NotifyConfig:
    """The routing file at ``path`` (None: defaults) with Slack credentials from the environment."""
    slack = slack if slack is not None else SlackConfig.from_env()
    if path is None:
        return NotifyConfig(slack=slack)
    display = str(path)
    try:
        data: Any = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise NotifyConfigError(f"{display}: cannot read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise NotifyConfigError(f"{display}: {where}invalid YAML") from None
    if not isinstance(data, dict):
        raise NotifyConfigError(f"{display}: expected a mapping of keys")
    unknown = sorted(set(data) - set(_KEYS))
    if unknown:
        raise NotifyConfigError(f"{display}: unknown key {unknown[0]!r}; expected some of {', '.join(_KEYS)}")
    if any(k in str(v) for v in data.values() for k in ("xoxb-", "hooks.slack.com")):
        raise NotifyConfigError(f"{display}: holds a Slack secret; set {TOKEN_ENV} or {WEBHOOK_ENV} instead")
    squads = data.get("squads") or {}
    if not isinstance(squads, dict) or not all(isinstance(v, str) and v.strip() for v in squads.values()):
        raise NotifyConfigError(f"{display}: squads: expected a mapping of squad -> channel name")
    bands = data.get("alert_bands", ["high"])
    if not isinstance(bands, list):
        raise NotifyConfigError(f"{display}: alert_bands: expected a list of bands")
    try:
        rule = AlertRule(tuple(str(b) for b in bands), _float(data.get("min_probability"), "min_probability"))
        deploy_url = data.get("deploy_url")
        if deploy_url is not None:
            Links(str(deploy_url)).deploy("s", "d", "c")  # an unknown {placeholder} fails here, not at send time
        return NotifyConfig(
            slack=slack,
            routing=Routing(str(data.get("default_channel", "#deploy-risk")), {str(k): v for k, v in squads.items()}),
            rule=rule,
            links=Links(deploy_url, data.get("mlflow_url")),
            queue_size=int(data.get("queue_size", 1000)),
        )
    except (NotifyConfigError, KeyError, ValueError) as exc:
        msg = f"deploy_url: unknown placeholder {exc}" if isinstance(exc, KeyError) else str(exc)
        raise NotifyConfigError(f"{display}: {msg}") from None


def _float(value: Any, key: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise NotifyConfigError(f"{key}: expected a number")
    return float(value)
