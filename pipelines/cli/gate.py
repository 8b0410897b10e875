"""``incident-risk score``: the CI gate. Scores one deploy (remote service or local champion), exit code by threshold.

The exit codes are the contract with CI pipelines (docs/ci-gate.md).
"""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import typer

from pipelines.settings import HomeOption, prepare_runtime, resolve_settings

EXIT_OK = 0


EXIT_BAD_ARGS = 2


EXIT_ABOVE = 3


EXIT_UNAVAILABLE = 4


TOKEN_ENV = "INCIDENT_RISK_TOKEN"


def _parse_extra(values: list[str]) -> dict[str, float]:
    out = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--extra {item!r}: expected NAME=NUMBER")
        name = name.strip()
        out[name if name.startswith("extra_") else f"extra_{name}"] = float(value)
    return out


def _warn(message: str) -> None:
    print(f"incident-risk score: {message}", file=sys.stderr)


def _unavailable(message: str, fail_open: bool) -> None:
    if fail_open:
        _warn(f"WARNING: {message}; not gating (fail-open)")
        raise typer.Exit(EXIT_OK)
    _warn(f"ERROR: {message} (fail-closed)")
    raise typer.Exit(EXIT_UNAVAILABLE)


def _score_remote(url: str, body: dict[str, Any], token: str | None, timeout: float) -> dict[str, Any]:
    """POST to a running service; raises ConnectionError when it cannot answer, ValueError on a 4xx."""
    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        response = httpx.post(url.rstrip("/") + "/v1/score", json=body, headers=headers, timeout=timeout)
    except httpx.HTTPError as exc:
        raise ConnectionError(f"cannot reach {url} ({type(exc).__name__}: {exc})") from None
    if response.status_code in (401, 403):
        raise PermissionError(f"{url} refused the token ({response.status_code})")
    if 400 <= response.status_code < 500:
        raise ValueError(response.text[:2000])
    if response.status_code != 200:
        raise ConnectionError(f"{url} answered {response.status_code}: {response.text[:300]}")
    return dict(response.json())


def _score_local(body: dict[str, Any], home: Path | None, model: str, alias: str) -> dict[str, Any]:
    """Load the champion and the store once, then score exactly as the service does."""
    from models.monitoring.predlog import append_now, predictions_dir
    from models.scoring.upcoming import now_utc
    from models.serving.app import ServiceConfig, log_record, score_payload
    from models.serving.schemas import DeployIn
    from models.serving.state import ScoringState

    settings = resolve_settings(home)
    prepare_runtime(settings)
    state = ScoringState(ServiceConfig(store_dir=settings.store_dir, model_name=model, alias=alias))
    try:
        state.refresh()
    except Exception as exc:
        raise ConnectionError(f"no usable {model}@{alias} ({exc})") from None
    assert state.snapshot is not None
    deploy = DeployIn.model_validate(body)
    payload = score_payload(state.snapshot, deploy, now_utc(), 6)
    append_now(predictions_dir(settings.home), [log_record(state.snapshot, deploy, payload, "gate")])
    return payload


def _render(result: dict[str, Any], threshold: float | None) -> str:
    lines = [
        f"{result.get('service')}: probability {result['probability']:.3f}, band {result['band']} "
        f"(model {result['model']['name']} v{result['model']['version']})"
    ]
    if threshold is not None:
        lines.append(f"threshold: fail above {threshold}")
    for f in result.get("factors", []):
        arrow = "+" if f["direction"] == "up" else "-"
        lines.append(f"  {arrow} {f['feature']} = {f['value']} ({f['contribution']:+.3f})")
    flags = {k: v for k, v in result.get("flags", {}).items() if v}
    if flags:
        lines.append(f"notes: {json.dumps(flags)}")
    return "\n".join(lines)


def score(
    service: str = typer.Option(..., "--service", help="Service being deployed."),
    lines_added: int = typer.Option(..., "--lines-added", min=0),
    lines_deleted: int = typer.Option(..., "--lines-deleted", min=0),
    files: int = typer.Option(..., "--files", min=0, help="Files changed."),
    author: str | None = typer.Option(None, "--author"),
    commits: int | None = typer.Option(None, "--commits", min=0, help="Commits in the deploy."),
    commit_sha: str | None = typer.Option(None, "--commit-sha"),
    environment: str = typer.Option("production", "--environment"),
    touches_infra: bool | None = typer.Option(None, "--touches-infra/--no-touches-infra"),
    rollback: bool | None = typer.Option(None, "--rollback/--no-rollback"),
    squad: str | None = typer.Option(None, "--squad"),
    tribe: str | None = typer.Option(None, "--tribe"),
    at: str | None = typer.Option(None, "--at", help="Planned ship time, ISO 8601 with offset (default now)."),
    extra: list[str] = typer.Option([], "--extra", help="Extra change metric NAME=NUMBER (repeatable)."),
    fail_above: float | None = typer.Option(
        None,
        "--fail-above",
        min=0.0,
        max=1.0,
        help="Exit 3 when the probability is above this. Default: when the band is 'high'.",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the full response as JSON."),
    url: str | None = typer.Option(None, "--url", help="A running service; without it the champion loads here."),
    token: str | None = typer.Option(None, "--token", help=f"Bearer token (default ${TOKEN_ENV})."),
    timeout: float = typer.Option(5.0, "--timeout", min=0.1, help="Seconds to wait for the service."),
    fail_open: bool = typer.Option(
        True,
        "--fail-open/--fail-closed",
        help="When the scorer is unavailable: exit 0 with a warning (open) or exit 4 (closed).",
    ),
    home: Path | None = HomeOption,
    model: str = typer.Option("incident-risk", "--model", help="Registered model name (local mode)."),
) -> None:
    """Gate a deploy on its risk: exit 0 below the threshold, 3 above, 2 bad arguments, 4 unavailable."""
    from pydantic import ValidationError

    from models.serving.schemas import DeployIn

    try:
        body: dict[str, Any] = {
            "service": service,
            "environment": environment,
            "author": author,
            "lines_added": lines_added,
            "lines_deleted": lines_deleted,
            "files_changed": files,
            "commit_count": commits,
            "commit_sha": commit_sha,
            "touches_infra": touches_infra,
            "is_rollback": rollback,
            "squad": squad,
            "tribe": tribe,
            "extra": _parse_extra(extra),
            "planned_at": datetime.fromisoformat(at.replace("Z", "+00:00")).isoformat() if at else None,
        }
        body = {k: v for k, v in body.items() if v is not None and v != {}}
        DeployIn.model_validate(body)  # the service's own checks, before any network or model work
    except (ValueError, ValidationError) as exc:
        _warn(f"bad arguments: {exc}")
        raise typer.Exit(EXIT_BAD_ARGS) from None

    try:
        if url:
            result = _score_remote(url, body, token or os.environ.get(TOKEN_ENV), timeout)
        else:
            result = _score_local(body, home, model, "champion")
    except ValueError as exc:
        _warn(f"the service refused the request: {exc}")
        raise typer.Exit(EXIT_BAD_ARGS) from None
    except (ConnectionError, PermissionError) as exc:
        _unavailable(str(exc), fail_open)
        return

    above = result["probability"] > fail_above if fail_above is not None else result["band"] == "high"
    print(json.dumps(result, indent=2) if json_out else _render(result, fail_above))
    raise typer.Exit(EXIT_ABOVE if above else EXIT_OK)


def register(app: typer.Typer) -> None:
    """Add ``score`` (the CI gate) to the CLI."""
    app.command()(score)
