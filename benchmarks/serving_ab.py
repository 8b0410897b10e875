"""A/B of the prediction log under ``benchmarks/serving.py``'s paced and soak loads, on a shared machine.

``benchmarks.serving`` runs one configuration at a time, minutes apart; when other work shares the
cores, its p99 moves with the neighbours more than with the code. This starts the servers to compare
side by side on one home and one champion (by default: this checkout with the log on, this checkout
with ``--no-log-predictions``, and optionally another checkout, e.g. main before a change, with the
log on), warms each past several flushes, then runs the 100 requests/s paced load on each in turn,
``--rounds`` times in rotating order (so all see the same neighbours), and the 20,000-request soak
on each with its RSS before and after. Prints markdown tables with the load average before each run.

    .venv/bin/python -m benchmarks.serving_ab
    .venv/bin/python -m benchmarks.serving_ab --baseline /path/to/main/checkout
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(_ROOT))

from benchmarks.serving import LAUNCH, closed_loop, free_port, paced, prepare, rss_kib, stop, wait_ready  # noqa: E402


def load_average() -> str:
    return " / ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path, help="Another checkout to serve with the log on (e.g. main).")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=30.0, help="Length of each paced run.")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="incident-risk-ab-"))
    os.environ["INCIDENT_RISK_HOME"] = str(home)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    ours, _ = prepare(home, "hgb", 180, 60)
    bodies = home / "bodies.json"
    bodies.write_text(json.dumps([b.decode() for b in ours]))
    env = {
        **os.environ,
        "INCIDENT_RISK_HOME": str(home),
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "1",
    }
    servers: dict[str, tuple[Path, list[str]]] = {"log on": (_ROOT, []), "log off": (_ROOT, ["--no-log-predictions"])}
    if args.baseline is not None:
        servers["baseline, log on"] = (args.baseline.resolve(), [])
    procs: list[subprocess.Popen] = []
    running: dict[str, tuple[int, subprocess.Popen]] = {}
    try:
        for name, (root, extra) in servers.items():
            port = free_port()
            proc = subprocess.Popen(
                [sys.executable, "-c", LAUNCH, "serve", "--port", str(port), *extra],
                env={**env, "PYTHONPATH": str(root)},
                cwd=root,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            procs.append(proc)
            running[name] = (port, proc)
        for port, proc in running.values():
            wait_ready(port, "/readyz", proc)
        for name, (port, _) in running.items():
            closed_loop(name, port, "/v1/score", bodies, 8, 6000, 180)  # warm-up past several flushes
        print("| round | server | load average before | paced 100/s p50 ms | p99 ms | errors |", flush=True)
        print("|---|---|---|---:|---:|---:|", flush=True)
        names = list(running)
        for i in range(args.rounds):
            for name in names[i % len(names) :] + names[: i % len(names)]:
                port, _ = running[name]
                load_before = load_average()
                r = paced(name, port, "/v1/score", bodies, 100.0, args.seconds)
                row = f"| {i + 1} | {name} | {load_before} | {r.pct(0.5):.2f} | {r.pct(0.99):.2f} | {r.errors} |"
                print(row, flush=True)
        print("\n| server | load average before | soak errors | RSS before → after MiB |", flush=True)
        print("|---|---|---:|---|", flush=True)
        for name, (port, proc) in running.items():
            before_load, before = load_average(), rss_kib(proc.pid)
            soak = closed_loop(name, port, "/v1/score", bodies, 8, 20000, 300)
            after = rss_kib(proc.pid)
            change = f"{before / 1024:.1f} → {after / 1024:.1f} ({(after - before) / 1024:+.1f})"
            print(f"| {name} | {before_load} | {soak.errors} | {change} |", flush=True)
    finally:
        stop(procs)


if __name__ == "__main__":
    main()
