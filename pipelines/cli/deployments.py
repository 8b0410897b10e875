"""``incident-risk deploy``: check prefect.yaml, make sure the work pool exists, register the deployments.

Registration itself is Prefect's own ``prefect --no-prompt deploy --all``, run from the file's
directory (which the worker will run the flows from). Deployments only make sense on a Prefect
server that outlives the command, so ``PREFECT_API_URL`` must be set.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import typer

from pipelines.console import make_console
from pipelines.settings import HomeOption, prepare_runtime, resolve_settings


def _prefect_executable() -> str:
    beside = Path(sys.executable).with_name("prefect")
    return str(beside) if beside.exists() else (shutil.which("prefect") or "prefect")


def ensure_work_pool(name: str, pool_type: str = "process") -> bool:
    """Create the work pool if the server has none of that name; True when it was created."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(name)
            return False
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(name=name, type=pool_type))
            return True


def deploy(
    file: Path = typer.Option(
        Path("prefect.yaml"),
        "--file",
        "-f",
        exists=True,
        dir_okay=False,
        help="The prefect.yaml declaring the deployments.",
    ),  # fmt: skip
    check: bool = typer.Option(False, "--check", help="Only validate the file (no server needed)."),
    name: list[str] = typer.Option([], "--name", "-n", help="Deploy only these (flow/deployment); default all."),
    home: Path | None = HomeOption,
) -> None:
    """Validate prefect.yaml against the flows' parameter schemas and register its scheduled deployments."""
    settings = resolve_settings(home)
    prepare_runtime(settings)
    from pipelines.flows.deployments import validate_prefect_yaml

    console = make_console()
    try:
        checks = validate_prefect_yaml(file)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(code=2) from None
    bad = False
    for c in checks:
        status = "[green]ok[/green]" if not c.problems else "[red]invalid[/red]"
        console.print(
            f"{status} {c.flow_name or '?'}/{c.name}: {', '.join(c.schedules) or 'no schedule'} -> {c.work_pool}"
        )
        for problem in c.problems:
            console.print(f"    {problem}")
        bad |= bool(c.problems)
    if bad:
        raise typer.Exit(code=2)
    if check:
        return
    if not os.environ.get("PREFECT_API_URL"):
        console.print(
            "[red]error:[/red] set PREFECT_API_URL to the Prefect server (deployments need one that persists)"
        )
        raise typer.Exit(code=2)
    for pool in sorted({c.work_pool for c in checks if c.work_pool}):
        if ensure_work_pool(pool):
            console.print(f"created process work pool {pool!r}")
    command = [_prefect_executable(), "--no-prompt", "deploy", "--prefect-file", str(file.resolve())]
    wanted = name or [f"{c.flow_name}/{c.name}" for c in checks]
    for item in wanted:
        command += ["--name", item]
    result = subprocess.run(command, cwd=file.resolve().parent, check=False)
    if result.returncode != 0:
        console.print(f"[red]error:[/red] prefect deploy exited with {result.returncode}")
        raise typer.Exit(code=1)
    console.print(f"registered {len(wanted)} deployment(s) on {os.environ['PREFECT_API_URL']}")


def register(app: typer.Typer) -> None:
    """Add ``deploy`` to the CLI."""
    app.command()(deploy)
