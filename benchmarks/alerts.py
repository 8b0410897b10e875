"""Benchmark: /v1/score latency with Slack alerts off and on (healthy, slow, rate-limited, down Slack).

Simulates a small history (with its Backstage catalog), trains a logistic-regression champion,
then runs ``incident-risk serve`` once per scenario and loads ``/v1/score`` from a separate
``benchmarks.loadgen`` process. With alerts on, the rule alerts on every band, so every request
queues a message (the worst case); the Slack stand-in (``stub`` below, its own process on
loopback) answers ok, or after 2 s, or 429 with ``Retry-After: 1``, or is not there at all. The
alert counters come from the server's /metrics. Loopback only.

    .venv/bin/python -m benchmarks.alerts            # 60 days x 20 services, 1,000 requests per run
    .venv/bin/python -m benchmarks.alerts --quick
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(_ROOT))

from benchmarks.loadgen import Result  # noqa: E402
from benchmarks.serving import LAUNCH, closed_loop, free_port, paced, stop, wait_ready  # noqa: E402

SCENARIOS = ("off", "ok", "slow", "rate-limited", "down")


def stub(port: int, mode: str) -> None:
    """A Slack stand-in answering chat.postMessage: ok, slow (2 s), or 429 with Retry-After."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length", "0") or 0))
            if mode == "slow":
                time.sleep(2.0)
            status, body = (
                (429, b'{"ok":false,"error":"ratelimited"}') if mode == "rate-limited" else (200, b'{"ok":true}')
            )
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            if status == 429:
                self.send_header("Retry-After", "1")
            self.end_headers()
            self.wfile.write(body)

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


def prepare(home: Path, days: int, services: int) -> list[bytes]:
    from features.history.store import HistoryStore
    from features.simulation.simulator import SimulationConfig, simulate
    from models.training.config import CandidateGrid, TrainConfig
    from pipelines.flows.train import TrainOptions, run_training
    from pipelines.settings import prepare_runtime, resolve_settings

    settings = resolve_settings(home)
    prepare_runtime(settings)
    sim = simulate(SimulationConfig(days=days, services=services, seed=7))
    h = sim.history
    store = HistoryStore(settings.store_dir)
    with store.lock():
        tables = {"deploys": h.deploys, "toggle_events": h.toggle_events, "incidents": h.incidents}
        store.commit({**tables, "catalog": h.catalog}, None, 0)
    grid = CandidateGrid("logreg", (("C", (0.3,)), ("class_weight", (None,))))
    options = TrainOptions(train=TrainConfig(candidates=(grid,), permutation_repeats=1))
    outcome = run_training(
        settings, options, progress=lambda m: print(f"  train: {m}", file=sys.stderr), orchestrate=False
    )
    if not outcome.promoted:
        from mlflow import MlflowClient

        MlflowClient().set_registered_model_alias("incident-risk", "champion", outcome.model_version)
    bodies = []
    for row in sim.upcoming.to_dict("records"):
        body = {"service": row["service"], "author": row["author"]}
        for k in ("lines_added", "lines_deleted", "files_changed", "commit_count"):
            if row.get(k) is not None and str(row[k]) != "<NA>":
                body[k] = int(row[k])
        bodies.append(json.dumps(body).encode())
    return bodies


def alert_counts(port: int) -> dict[str, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", "/metrics")
    out = {}
    for line in conn.getresponse().read().decode().splitlines():
        if line.startswith("incident_risk_alerts_total{"):
            out[line.split('"')[1]] = float(line.split()[-1])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    s = sub.add_parser("stub")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--mode", choices=("ok", "slow", "rate-limited"), required=True)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--services", type=int, default=20)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.command == "stub":
        stub(args.port, args.mode)
        return
    scale = 0.3 if args.quick else 1.0
    home = Path(tempfile.mkdtemp(prefix="incident-risk-bench-alerts-"))
    os.environ["INCIDENT_RISK_HOME"] = str(home)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    print(f"preparing {home} ...", file=sys.stderr)
    bodies_file = home / "bodies.json"
    bodies_file.write_text(json.dumps([b.decode() for b in prepare(home, args.days, args.services)]))
    (home / "notify.yaml").write_text("alert_bands: [low, medium, high]\ndefault_channel: '#deploy-risk'\n")
    base_env = {
        **os.environ,
        "INCIDENT_RISK_HOME": str(home),
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "1",
    }
    rows: list[tuple[str, Result, Result, dict[str, float]]] = []
    for scenario in SCENARIOS:
        procs: list[subprocess.Popen] = []
        env = dict(base_env)
        try:
            if scenario != "off":
                slack_port = free_port()
                if scenario != "down":
                    procs.append(
                        subprocess.Popen(
                            [
                                sys.executable,
                                "-m",
                                "benchmarks.alerts",
                                "stub",
                                "--port",
                                str(slack_port),
                                "--mode",
                                scenario,
                            ],
                            cwd=_ROOT,
                        )
                    )
                env["SLACK_BOT_TOKEN"] = "xoxb-benchmark"
                env["SLACK_API_URL"] = f"http://127.0.0.1:{slack_port}/api/"
            port = free_port()
            command = [sys.executable, "-c", LAUNCH, "serve", "--port", str(port)]
            if scenario != "off":
                command += ["--notify-config", str(home / "notify.yaml")]
            server = subprocess.Popen(command, env=env, cwd=_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(server)
            wait_ready(port, "/readyz", server)
            closed_loop(scenario, port, "/v1/score", bodies_file, 2, 100, 60)  # warm-up
            closed = closed_loop(scenario, port, "/v1/score", bodies_file, 1, int(1000 * scale), 120)
            rate = paced(scenario, port, "/v1/score", bodies_file, 50.0, 20.0 * scale)
            counts = alert_counts(port) if scenario != "off" else {}
            rows.append((scenario, closed, rate, counts))
            print(
                f"  {scenario}: p50 {closed.pct(0.5):.2f} ms, p99 {closed.pct(0.99):.2f} ms, {counts}", file=sys.stderr
            )
        finally:
            stop(procs)
    print(f"\n### /v1/score with Slack alerts off and on ({args.days} days x {args.services} services, logreg, "
          f"{os.cpu_count()} cores shared, every score alerting)\n")  # fmt: skip
    print(
        "| Slack | closed-loop p50 ms | p99 ms | req/s | paced 50/s p50 ms | p99 ms | errors "
        "| alerts queued / sent / failed / dropped |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for scenario, closed, rate, c in rows:
        counts = [f"{c.get(k, 0):.0f}" for k in ("queued", "sent", "failed", "dropped")]
        alerts = "alerts off" if scenario == "off" else " / ".join(counts)
        print(
            f"| {scenario} | {closed.pct(0.5):.2f} | {closed.pct(0.99):.2f} | {closed.throughput:.0f} | "
            f"{rate.pct(0.5):.2f} | {rate.pct(0.99):.2f} | {closed.errors + rate.errors} | {alerts} |"
        )


if __name__ == "__main__":
    main()
