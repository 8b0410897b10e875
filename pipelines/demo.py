"""The main job on the embedded sample: every stage that exists, in order, with a summary."""

from __future__ import annotations

import time
from pathlib import Path

from pipelines.console import make_console
from pipelines.ingest_flow import print_error, run_ingest
from pipelines.settings import Settings


def run_demo(settings: Settings, sample_dir: Path) -> int:
    """Ingest the sample, then the later stages; returns the process exit code."""
    console = make_console()
    started = time.perf_counter()
    config = sample_dir / "sources.yaml"
    console.print(f"[bold]incident-risk demo[/bold]: home {settings.home}")
    console.print(f"1/1 ingest {config}")
    report = run_ingest(config, settings.store_dir)
    if not report.ok:
        print_error(report.error or "ingest failed")
        return 1
    report.render(console)
    console.print(f"\nDone in {time.perf_counter() - started:.0f} s. Store: {settings.store_dir}")
    console.print(f"Look next: mlflow ui --backend-store-uri {settings.mlflow_tracking_uri}")
    return 0
