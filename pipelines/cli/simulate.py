"""``incident-risk simulate``: write a simulated organisation's exports, upcoming deploys and ground truth."""

from __future__ import annotations

import json
import time
from enum import StrEnum
from pathlib import Path

import typer
from rich.console import Console

from features.simulation.export import GROUND_TRUTH_DIR, UPCOMING_FILE, write_exports
from features.simulation.simulator import SimulationConfig, simulate

#: Runs expected to produce more deploys than this show a progress spinner.
_BIG_RUN = 100_000


class ExportStyle(StrEnum):
    generic = "generic"
    tools = "tools"


def register(app: typer.Typer) -> None:
    """Add the ``simulate`` command to ``app``."""

    @app.command("simulate")
    def simulate_command(
        out: Path = typer.Option(
            ...,
            "--out",
            help="Directory to write sources.yaml, the exports, upcoming.csv and "
            "ground_truth/ into (created if missing).",
        ),  # fmt: skip
        days: int = typer.Option(180, "--days", min=1, help="Days of history to simulate."),
        services: int = typer.Option(60, "--services", min=1, help="Number of services in the organisation."),
        seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives byte-identical files."),
        style: ExportStyle = typer.Option(
            ExportStyle.generic,
            "--style",
            help="generic: CSV/JSON lines for the generic connector; tools: "
            "GitHub/LaunchDarkly/PagerDuty API records (gzip JSON) for their connectors.",
        ),  # fmt: skip
        start: str = typer.Option("2026-01-05", "--start", help="First day of the history (UTC, YYYY-MM-DD)."),
        drift: str | None = typer.Option(
            None, "--drift", help="Change the true hazard from --drift-at-day: toggles, shipping or squad."
        ),
        drift_at_day: int | None = typer.Option(None, "--drift-at-day", min=0, help="Day the drift starts (0: first)."),
    ) -> None:
        """Simulate deploy, toggle and incident history with a known ground truth."""
        from features.simulation.drift import drifted_config

        console = Console()
        config = SimulationConfig(days=days, services=services, seed=seed, start=start)
        if (drift is None) != (drift_at_day is None):
            raise typer.BadParameter("--drift and --drift-at-day go together")
        if drift is not None and drift_at_day is not None:
            try:
                config = drifted_config(config, drift, drift_at_day)
            except ValueError as exc:
                raise typer.BadParameter(str(exc)) from None
        expected = int(days * services * config.deploys_per_service_day)
        began = time.perf_counter()
        if expected > _BIG_RUN:
            with console.status("simulating") as status:
                sim = simulate(config, progress=lambda step: status.update(f"simulating: {step}"))
                status.update("writing exports")
                sources = write_exports(sim, out, style.value)
        else:
            sim = simulate(config)
            sources = write_exports(sim, out, style.value)
        h = sim.history
        kinds = sim.incident_truth["cause_kind"].value_counts()
        console.print(
            f"simulated {len(h.deploys):,} deploys, {len(h.toggle_events):,} toggle events, "
            f"{len(h.incidents):,} incidents ({kinds.get('deploy', 0):,} deploy-, {kinds.get('toggle', 0):,} "
            f"toggle-caused, {kinds.get('background', 0):,} background) and {len(sim.upcoming):,} upcoming deploys "
            f"in {time.perf_counter() - began:.1f} s"
        )
        if config.hazard_change is not None:
            truth = config.hazard_change.describe(start)  # type: ignore[attr-defined]
            (out / GROUND_TRUTH_DIR / "drift.json").write_text(json.dumps(truth, indent=2))
            console.print(f"drift:        {truth['kind']} from day {truth['at_day']} ({truth['at_iso']})")
        console.print(f"sources:      {sources}")
        console.print(f"upcoming:     {out / UPCOMING_FILE}")
        console.print(f"ground truth: {out / GROUND_TRUTH_DIR}/ (for evaluation only; not a source)")
