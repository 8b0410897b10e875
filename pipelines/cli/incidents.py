"""``incident-risk suspects`` (what changed before this incident, ranked) and ``incident-risk links`` (attribution's
incident -> change links and the unlinked incidents, for analysts).

Exit codes: 0 answered, 2 bad input (unknown incident or service, a time in the future, bad options),
4 no champion or store to rank with.
"""

from __future__ import annotations

import enum
import io
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import pandas as pd
import typer
from rich.console import Console
from rich.table import Table

from pipelines.console import LOG_WIDTH, make_console
from pipelines.settings import HomeOption, prepare_runtime, resolve_settings

EXIT_BAD_INPUT = 2
EXIT_UNAVAILABLE = 4


class Format(enum.StrEnum):
    table = "table"
    json = "json"


class LinkFormat(enum.StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


class Rules(enum.StrEnum):
    default = "default"
    devlake = "devlake"
    both = "both"


def _fail(command: str, message: str, code: int) -> NoReturn:
    print(f"incident-risk {command}: {message}", file=sys.stderr)
    raise typer.Exit(code)


def render_suspects(answer: dict[str, Any]) -> Table:
    """The suspects as a table: share, change, lag, prior risk, rollback, who, link; the background in the caption."""
    inc = answer["incident"]
    title = f"Suspects for {inc.get('incident_id') or 'an incident'} on {inc['service']} at {inc['at']}"
    table = Table(
        title=title,
        caption=(
            f"no recent change: {answer['background_share']:.1%}; {answer['candidates']} changes in the last "
            f"{answer['lookback_hours']:g} h; top answer: {answer['top_answer']}"
        ),
    )
    for name, justify in [
        ("share", "right"),
        ("change", "left"),
        ("service", "left"),
        ("lag", "right"),
        ("prior", "right"),
        ("why (top factors)", "left"),
        ("rolled back", "left"),
        ("who", "left"),
        ("url", "left"),
    ]:
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for s in answer["suspects"]:
        why = s["why"]
        factors = ", ".join(f"{f['feature']} {'+' if f['direction'] == 'up' else '-'}" for f in why["risk_factors"][:3])
        table.add_row(
            f"{s['share']:.1%}",
            f"{s['change_kind']} {s['change_id']} ({why['action']})",
            s["service"] + ("" if s["scope"] == "own" else " (dependency)"),
            f"{why['lag_minutes']:.0f} min",
            f"{why['prior_risk']:.3f}",
            factors or why["prior_from"],
            why["rolled_back_by"] or "-",
            s["who"] or "-",
            s["url"] or "-",
        )
    return table


def _write(text: str, out: Path | None) -> None:
    if out is None:
        typer.echo(text, nl=False)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    typer.echo(f"wrote {out}", err=True)


def suspects_command(
    incident_id: str | None = typer.Argument(None, help="An incident in the store (or use --service)."),
    service: str | None = typer.Option(None, "--service", help="The service of an incident that is just opening."),
    at: str | None = typer.Option(None, "--at", help="When it opened, ISO 8601 with offset (default now)."),
    environment: str = typer.Option("production", "--environment"),
    fmt: Format = typer.Option(Format.table, "--format", help="table or json."),
    top: int = typer.Option(5, "--top", min=1, max=50, help="How many suspects to list."),
    dependencies: Path | None = typer.Option(
        None, "--dependencies", help="dependencies.yaml or a Backstage catalog-info.yaml (default: own service only)."
    ),
    home: Path | None = HomeOption,
    model: str = typer.Option("incident-risk", "--model", help="Registered model name."),
) -> None:
    """Rank the recent changes that may have caused an incident, each with a share and why."""
    from models.scoring.suspects import SuspectsError, incident_suspects, load_dependencies, suspects
    from models.serving.incidents import context_for
    from models.serving.state import ScoringState, ServiceConfig

    if (incident_id is None) == (service is None):
        _fail("suspects", "give exactly one of INCIDENT_ID or --service", EXIT_BAD_INPUT)
    when: datetime | None = None
    try:
        when = datetime.fromisoformat(at.replace("Z", "+00:00")) if at else None
        deps = load_dependencies(dependencies) if dependencies else None
    except ValueError as exc:
        _fail("suspects", f"--at/--dependencies: {exc}", EXIT_BAD_INPUT)
    settings = resolve_settings(home)
    prepare_runtime(settings)
    state = ScoringState(ServiceConfig(store_dir=settings.store_dir, model_name=model))
    try:
        state.refresh()
    except Exception as exc:
        _fail("suspects", f"no usable {model}@champion or store ({exc})", EXIT_UNAVAILABLE)
    assert state.snapshot is not None
    ctx = context_for(state.snapshot, deps)
    try:
        if incident_id is not None:
            answer = incident_suspects(ctx, incident_id, top)
        else:
            assert service is not None
            answer = suspects(ctx, service, when, environment, top)
    except SuspectsError as exc:
        _fail("suspects", str(exc), EXIT_BAD_INPUT)
    if fmt is Format.json:
        typer.echo(json.dumps(answer, indent=2, default=str))
    else:
        make_console().print(render_suspects(answer))


def links_command(
    rules: Rules = typer.Option(
        Rules.default, "--rules", help="default (the project's attribution), devlake, or both side by side."
    ),
    max_lag: float | None = typer.Option(None, "--max-lag", help="Attribution window in hours (overrides the rules')."),
    fmt: LinkFormat = typer.Option(LinkFormat.table, "--format", help="table, csv or json."),
    out: Path | None = typer.Option(None, "--out", help="Write to FILE instead of the terminal."),
    home: Path | None = HomeOption,
) -> None:
    """Every incident -> change link attribution made (method, matched field, lag) and the unlinked incidents."""
    from features.history.store import HistoryStore
    from features.labels.links import export_links

    settings = resolve_settings(home)
    try:
        history = HistoryStore(settings.store_dir).read_history()
    except Exception as exc:
        _fail("links", f"cannot read the history store at {settings.store_dir} ({exc})", EXIT_UNAVAILABLE)
    names = ["default", "devlake"] if rules is Rules.both else [rules.value]
    try:
        parts = [export_links(history, name, max_lag) for name in names]
    except ValueError as exc:
        _fail("links", str(exc), EXIT_BAD_INPUT)
    links = pd.concat([p[0] for p in parts], ignore_index=True)
    unlinked = pd.concat([p[1] for p in parts], ignore_index=True)
    if fmt is LinkFormat.csv:
        both = pd.concat([links.assign(linked=True), unlinked.assign(linked=False)], ignore_index=True)
        _write(both.to_csv(index=False), out)
    elif fmt is LinkFormat.json:
        body = {
            "rules": rules.value,
            "links": json.loads(links.to_json(orient="records", date_format="iso")),
            "unlinked": json.loads(unlinked.to_json(orient="records", date_format="iso")),
        }
        _write(json.dumps(body, indent=2), out)
    else:
        table = Table(title=f"Incident -> change links ({rules.value} rules)")
        for name in ("rules", "incident", "service", "change", "method", "matched on", "lag h"):
            table.add_column(name)
        for r in links.to_dict("records"):
            table.add_row(
                r["rules"],
                r["incident_id"],
                str(r["incident_service"]),
                f"{r['change_kind']} {r['change_id']}",
                r["method"],
                str(r["matched_on"]),
                f"{r['lag_hours']:.2f}",
            )
        for r in unlinked.to_dict("records"):
            table.add_row(r["rules"], r["incident_id"], str(r["incident_service"]), "-", "unlinked", r["reason"], "-")
        table.caption = f"{len(links)} links, {len(unlinked)} incidents unlinked"
        if out is None:
            make_console().print(table)
        else:
            buffer = io.StringIO()
            Console(file=buffer, width=LOG_WIDTH).print(table)
            _write(buffer.getvalue(), out)


def register(app: typer.Typer) -> None:
    """Add ``suspects`` and ``links`` to the CLI."""
    app.command("suspects")(suspects_command)
    app.command("links")(links_command)
