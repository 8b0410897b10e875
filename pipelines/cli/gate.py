"""``incident-risk score``: the CI gate. Scores one deploy (remote service or local champion), exit code by threshold.

The exit codes are the contract with CI pipelines (docs/ci-gate.md). Remote mode (``--url``) imports
only the standard library, typer and this module (no pandas, scikit-learn, MLflow or Prefect), so a
CI step pays for the request, not for the data stack (``tests/pipelines/test_ci_gate.py`` checks).
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
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
    """POST to a running service; raises ConnectionError when it cannot answer, ValueError on a 4xx.

    The standard library's client, not httpx: remote mode must start fast in a CI step.
    """
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        url.rstrip("/") + "/v1/score", data=json.dumps(body).encode(), headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (the user's URL)
            return dict(json.loads(response.read()))
    except urllib.error.HTTPError as exc:
        text = exc.read().decode("utf-8", "replace")
        if exc.code in (401, 403):
            raise PermissionError(f"{url} refused the token ({exc.code})") from None
        if 400 <= exc.code < 500:
            raise ValueError(text[:2000]) from None
        raise ConnectionError(f"{url} answered {exc.code}: {text[:300]}") from None
    except (OSError, ValueError) as exc:  # URLError, timeouts, refused connections, a non-JSON answer
        raise ConnectionError(f"cannot reach {url} ({type(exc).__name__}: {exc})") from None


def _score_local(
    body: dict[str, Any], home: Path | None, model: str, alias: str, max_data_age_hours: float
) -> dict[str, Any]:
    """Load the champion and the store once (``load_scoring_context``), then score (and advise) as the service does."""
    from models.monitoring.predlog import append_now, predictions_dir
    from models.scoring.advice import AdviceConfig
    from models.scoring.context import load_scoring_context
    from models.scoring.explain import TOP_FACTORS
    from models.scoring.upcoming import now_utc
    from models.serving.app import log_record, score_payload
    from models.serving.schemas import DeployIn

    deploy = DeployIn.model_validate(body)  # a ValidationError is a ValueError: exit 2
    settings = resolve_settings(home)
    prepare_runtime(settings)
    try:
        context = load_scoring_context(settings.store_dir, model, alias)
    except Exception as exc:
        raise ConnectionError(f"no usable {model}@{alias} ({exc})") from None
    payload = score_payload(context, deploy, now_utc(), TOP_FACTORS, max_data_age_hours, AdviceConfig())
    append_now(predictions_dir(settings.home), [log_record(context, deploy, payload, "gate")])
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
    if "advice" in result:
        lines.extend(_render_advice(result["advice"] or []))
    return "\n".join(lines)


def _render_advice(advice: list[dict[str, Any]]) -> list[str]:
    """The advice under the score: one line per action, best first (the model's prediction, not a promise)."""
    if not advice:
        return ["advice: no action lowers the predicted risk materially (docs/advice.md)"]
    lines = ["advice (predicted by the model; docs/advice.md says which actions the simulator confirmed):"]
    for a in advice:
        lines.append(f"  * {a['detail']}: probability {a['probability']:.3f} ({a['change']:+.3f})")
    return lines


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
    advice: bool = typer.Option(False, "--advice", help="Also print what would make the deploy safer."),
    url: str | None = typer.Option(None, "--url", help="A running service; without it the champion loads here."),
    token: str | None = typer.Option(None, "--token", help=f"Bearer token (default ${TOKEN_ENV})."),
    timeout: float = typer.Option(5.0, "--timeout", min=0.1, help="Seconds to wait for the service."),
    fail_open: bool = typer.Option(
        True,
        "--fail-open/--fail-closed",
        help="When the scorer is unavailable: exit 0 with a warning (open) or exit 4 (closed).",
    ),
    max_data_age_hours: float | None = typer.Option(
        None,
        "--max-data-age-hours",
        min=0.0,
        help="Flag the score stale when the store's newest event is older than this before the scored time "
        "(default: the service's setting; locally 72). Stale with --fail-closed exits 4.",
    ),
    home: Path | None = HomeOption,
    model: str = typer.Option("incident-risk", "--model", help="Registered model name (local mode)."),
) -> None:
    """Gate a deploy on its risk: exit 0 below the threshold, 3 above, 2 bad arguments, 4 unavailable or stale."""
    from pipelines.cli.checks import environment_name, planned_at

    try:  # the arguments first: a mistake is one line, before anything else is imported
        environment = environment_name(environment)
        at = planned_at(at)
    except ValueError as exc:
        _warn(f"bad arguments: {exc}")
        raise typer.Exit(EXIT_BAD_ARGS) from None

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
            "planned_at": at,
            "advice": advice or None,
        }
        body = {k: v for k, v in body.items() if v is not None and v != {}}
        if url:
            result = _score_remote(url, body, token or os.environ.get(TOKEN_ENV), timeout)
        else:
            from models.scoring.context import DEFAULT_MAX_DATA_AGE_HOURS

            max_age = DEFAULT_MAX_DATA_AGE_HOURS if max_data_age_hours is None else max_data_age_hours
            result = _score_local(body, home, model, "champion", max_age)
    except ValueError as exc:  # our checks, the local schema (pydantic's errors are ValueErrors) or the service's 4xx
        _warn(f"bad arguments: {exc}")
        raise typer.Exit(EXIT_BAD_ARGS) from None
    except (ConnectionError, PermissionError) as exc:
        _unavailable(str(exc), fail_open)
        return

    if max_data_age_hours is not None and url:  # the caller's limit wins over the service's
        age = result.get("data_age_hours")
        result["stale_history"] = age is None or age > max_data_age_hours
    above = result["probability"] > fail_above if fail_above is not None else result["band"] == "high"
    print(json.dumps(result, indent=2) if json_out else _render(result, fail_above))
    if result.get("stale_history"):
        age = result.get("data_age_hours")
        why = "the store is empty" if age is None else f"the store's newest event is {age:.0f} h before the ship time"
        message = f"stale history: {why}, so recent deploys and incidents are missing from the score"
        if not fail_open:
            _unavailable(message, fail_open)
        _warn(f"WARNING: {message}; gating on it anyway (fail-open)")
    raise typer.Exit(EXIT_ABOVE if above else EXIT_OK)


def register(app: typer.Typer) -> None:
    """Add ``score`` (the CI gate) to the CLI."""
    app.command()(score)
