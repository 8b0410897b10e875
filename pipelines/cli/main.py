"""The ``incident-risk`` command line: one entry point for every stage of the pipeline."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from pipelines.console import make_console
from pipelines.settings import HomeOption, prepare_runtime, resolve_settings


def ingest(
    config: Path = typer.Option(..., "--config", "-c", help="sources.yaml declaring the exports to read."),
    home: Path | None = HomeOption,
    json_out: Path | None = typer.Option(None, "--json", help="Also write the ingest report as JSON to this file."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only errors."),
    task_runner: str = typer.Option(
        "threads", "--task-runner", help="How export files are parsed: threads, dask or sequential."
    ),
    dask_address: str | None = typer.Option(
        None, "--dask-address", help="Scheduler of an existing Dask cluster; implies --task-runner dask."
    ),
) -> None:
    """Read every source in a sources.yaml into the canonical history store.

    Exits 1 when a file or the config cannot be read (nothing written), 3 when a source yields no
    rows at all (its quarantine is stored: see `incident-risk quarantine --source NAME`).
    """
    from pipelines.cli.checks import CheckError, check_sources_config, refuse

    settings = resolve_settings(home)
    try:
        check_sources_config(config)  # before Prefect starts: a config mistake is one line, at once
    except CheckError as exc:
        refuse(exc, code=1)
    prepare_runtime(settings)  # before Prefect is imported: it reads its settings once, at import
    from pipelines.flows.ingest import print_error, run_ingest
    from pipelines.flows.runners import RunnerConfig

    try:
        runner = RunnerConfig.from_env("dask" if dask_address else task_runner, dask_address=dask_address)
    except ValueError as exc:
        print_error(str(exc))
        raise typer.Exit(code=2) from None
    report = run_ingest(config, settings.store_dir, quiet=quiet, runner=runner)
    if json_out is not None:
        json_out.write_text(json.dumps(report.as_dict(), indent=2))
    if not report.ok:
        print_error(report.error or "ingest failed")
        raise typer.Exit(code=1)
    if not quiet:
        report.render(make_console())
    if report.empty_sources:
        print_error(report.empty_sources_line())
        raise typer.Exit(code=3)


def sources() -> None:
    """List the source kinds (connectors) sources.yaml can use."""
    from features.sources.kinds import source_kinds

    console = make_console()
    for name, kind in sorted(source_kinds().items()):
        table = kind.table or "any table"
        console.print(f"[bold]{name:24}[/bold] {table:14} {kind.description}")


def demo(
    home: Path | None = HomeOption,
    sample: Path = typer.Option(Path("data/sample"), "--sample", help="Directory holding the sample's sources.yaml."),
) -> None:
    """Run the whole main job on the embedded sample data and say where to look next."""
    settings = resolve_settings(home)
    prepare_runtime(settings)  # before Prefect is imported: it reads its settings once, at import
    from pipelines.flows.demo import run_demo

    code = run_demo(settings, sample)
    raise typer.Exit(code=code)


def build_app(only_gate: bool = False) -> typer.Typer:
    """The CLI with every command; built on call so importing this module does nothing.

    ``only_gate``: just ``score``, whose remote mode must not import the data stack the other
    command modules import (pandas, scikit-learn, MLflow, Prefect).
    """
    app = typer.Typer(
        name="incident-risk",
        help="Score how likely a deploy is to cause an incident, learned from deploy, toggle and incident history.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )
    if only_gate:
        from pipelines.cli import gate as gate_only

        app.callback()(lambda: None)  # keeps `score` a subcommand when it is the only one
        gate_only.register(app)
        return app
    app.command()(demo)
    app.command()(ingest)
    app.command()(sources)
    from pipelines.cli import deployments, digest, dora, gate, incidents, monitor, quarantine, serve, simulate, train

    for module in (simulate, dora, train, serve, gate, deployments, quarantine, incidents, digest, monitor):
        module.register(app)
    return app


def home_from_argv(argv: list[str]) -> Path | None:
    """The ``--home`` a command line names, read before Typer parses it (see ``main``)."""
    for i, arg in enumerate(argv):
        if arg == "--home" and i + 1 < len(argv):
            return Path(argv[i + 1])
        if arg.startswith("--home="):
            return Path(arg.split("=", 1)[1])
    return None


def main() -> None:
    # Prefect reads its settings (home, timeouts, logging) once, at import, and commands import
    # it lazily; preparing the runtime here, before any command runs, keeps every command's
    # Prefect and MLflow state under the incident-risk home whatever it imports first.
    prepare_runtime(resolve_settings(home_from_argv(sys.argv[1:])))
    build_app(only_gate=sys.argv[1:2] == ["score"])()
