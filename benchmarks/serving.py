"""Benchmark: single-deploy scoring over loopback, our service vs ``mlflow models serve``, same model.

Simulates a history (``features.simulation.simulator``), commits it to a fresh store, trains and registers a
champion with the project's own training pipeline (``run_training``, one candidate), then starts

- ``incident-risk serve`` (uvicorn, one process), asked with raw deploy fields: it builds the
  point-in-time features from the store, scores, explains;
- ``mlflow models serve --env-manager local -m models:/incident-risk@champion`` (one uvicorn worker),
  asked with the ready-made feature row of the same deploy (``dataframe_split``): model only,

and measures, on the same machine in the same run: closed-loop p50/p99/throughput at 1, 8 and 32
concurrent keep-alive clients (fixed request counts, time limits), an open-loop paced run at 100
requests/s for 30 s (latency from the scheduled send time, so queueing is counted), and a
20,000-request soak of our service with the server's RSS before and after. Every load runs in its
own small ``benchmarks.loadgen`` process, apart from this one's large heap. Prints a markdown
table. Loopback only.

    .venv/bin/python -m benchmarks.serving                  # hgb champion (default)
    .venv/bin/python -m benchmarks.serving --kind logreg --quick
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Run as a script, this file's directory comes first on sys.path and shadows nothing of ours, but keep
# the project root importable when run from elsewhere.
_ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(_ROOT))

from benchmarks.loadgen import Result  # noqa: E402
from models.monitoring.predlog import FLUSH_SECONDS  # noqa: E402

LAUNCH = "import typer; from pipelines.cli.serve import register; app = typer.Typer(); register(app); app()"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return -1


def stop(procs: list[subprocess.Popen]) -> None:
    """Terminate the servers a benchmark started, killing any that ignore it."""
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()


def wait_ready(port: int, path: str, proc: subprocess.Popen, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server on {port} exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"server on {port} not ready")


def run_load(target: str, port: int, path: str, bodies_file: Path, *mode: str) -> Result:
    """One load run in a fresh ``benchmarks.loadgen`` process (see there for why not in this one)."""
    command = [sys.executable, "-m", "benchmarks.loadgen", "--port", str(port), "--path", path]
    command += ["--bodies", str(bodies_file), "--target", target, *mode]
    done = subprocess.run(command, cwd=_ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed ({done.returncode}): {done.stderr[-2000:]}")
    return Result(**json.loads(done.stdout))


def closed_loop(
    target: str, port: int, path: str, bodies_file: Path, clients: int, total: int, time_limit: float
) -> Result:
    return run_load(
        target,
        port,
        path,
        bodies_file,
        "closed",
        "--clients",
        str(clients),
        "--total",
        str(total),
        "--time-limit",
        str(time_limit),
    )


def paced(target: str, port: int, path: str, bodies_file: Path, rate: float, seconds: float) -> Result:
    return run_load(target, port, path, bodies_file, "paced", "--rate", str(rate), "--seconds", str(seconds))


def prepare(home: Path, kind: str, days: int, services: int) -> tuple[list[bytes], list[bytes]]:
    """Simulated store + trained champion; returns (our request bodies, MLflow request bodies)."""
    from features.history.store import HistoryStore
    from features.labels.attribution import attribute
    from features.pointintime.compute import build_features
    from features.simulation.simulator import SimulationConfig, simulate
    from models.training.config import CandidateGrid, TrainConfig
    from pipelines.flows.train import TrainOptions, run_training
    from pipelines.settings import prepare_runtime, resolve_settings

    settings = resolve_settings(home)
    prepare_runtime(settings)
    sim = simulate(SimulationConfig(days=days, services=services, seed=7))
    store = HistoryStore(settings.store_dir)
    h = sim.history
    with store.lock():
        store.commit({"deploys": h.deploys, "toggle_events": h.toggle_events, "incidents": h.incidents}, None, 0)
    grid = {
        "hgb": CandidateGrid(
            "hgb",
            (
                ("learning_rate", (0.1,)),
                ("max_leaf_nodes", (15,)),
                ("max_iter", (150,)),
                ("min_samples_leaf", (40,)),
                ("l2_regularization", (1.0,)),
            ),
        ),
        "logreg": CandidateGrid("logreg", (("C", (0.3,)), ("class_weight", (None,)))),
    }[kind]
    options = TrainOptions(train=TrainConfig(candidates=(grid,), permutation_repeats=1))
    outcome = run_training(
        settings, options, progress=lambda m: print(f"  train: {m}", file=sys.stderr), orchestrate=False
    )
    if not outcome.promoted:
        from mlflow import MlflowClient

        MlflowClient().set_registered_model_alias("incident-risk", "champion", outcome.model_version)
    print(f"  champion: incident-risk v{outcome.model_version} ({kind})", file=sys.stderr)

    upcoming = sim.upcoming
    ours = []
    for row in upcoming.to_dict("records"):
        body = {
            k: row[k]
            for k in ("service", "author", "lines_added", "lines_deleted", "files_changed", "commit_count")
            if row.get(k) is not None and str(row.get(k)) != "<NA>"
        }
        for k in ("lines_added", "lines_deleted", "files_changed", "commit_count"):
            if k in body:
                body[k] = int(body[k])
        ours.append(json.dumps(body).encode())
    from models.registry.artifacts import load_model

    model = load_model("models:/incident-risk@champion")
    columns = [*model.classifier_.numeric_, *model.classifier_.categorical_]
    labels = attribute(h, options.attribution).deploy_labels
    features = build_features(upcoming, h, labels, options.features)[columns]
    theirs = []
    for i in range(len(features)):
        row = [None if (isinstance(v, float) and v != v) else v for v in features.iloc[i].tolist()]
        theirs.append(json.dumps({"dataframe_split": {"columns": columns, "data": [row]}}).encode())
    return ours, theirs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", choices=("hgb", "logreg"), default="hgb")
    parser.add_argument("--days", type=int, default=180)
    parser.add_argument("--services", type=int, default=60)
    parser.add_argument("--quick", action="store_true", help="Smaller counts (a smoke run, not for the record).")
    parser.add_argument(
        "--no-prediction-log", dest="prediction_log", action="store_false", help="Serve with the prediction log off."
    )
    args = parser.parse_args()
    scale = 0.2 if args.quick else 1.0

    home = Path(tempfile.mkdtemp(prefix="incident-risk-bench-"))
    os.environ["INCIDENT_RISK_HOME"] = str(home)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    print(f"preparing {home} ...", file=sys.stderr)
    ours_bodies, mlflow_bodies = prepare(home, args.kind, args.days, args.services)
    bodies_files = {"ours": home / "bodies-ours.json", "mlflow": home / "bodies-mlflow.json"}
    bodies_files["ours"].write_text(json.dumps([b.decode() for b in ours_bodies]))
    bodies_files["mlflow"].write_text(json.dumps([b.decode() for b in mlflow_bodies]))
    env = {
        **os.environ,
        "INCIDENT_RISK_HOME": str(home),
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "1",
        # mlflow models serve runs `uvicorn` by name: the venv's bin must be on PATH
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    port_ours, port_mlflow = free_port(), free_port()
    procs: list[subprocess.Popen] = []
    try:
        ours = subprocess.Popen(
            [
                sys.executable,
                "-c",
                LAUNCH,
                "serve",
                "--port",
                str(port_ours),
                *(() if args.prediction_log else ("--no-log-predictions",)),
            ],  # fmt: skip
            env=env,
            cwd=_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append(ours)
        mlflow_bin = str(Path(sys.executable).parent / "mlflow")
        theirs = subprocess.Popen(
            [
                mlflow_bin,
                "models",
                "serve",
                "--env-manager",
                "local",
                "-m",
                "models:/incident-risk@champion",
                "-h",
                "127.0.0.1",
                "-p",
                str(port_mlflow),
                "-w",
                "1",
            ],
            env=env,
            cwd=home,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append(theirs)
        wait_ready(port_ours, "/readyz", ours)
        wait_ready(port_mlflow, "/ping", theirs)
        print("servers ready", file=sys.stderr)

        results: list[Result] = []
        targets = [
            ("incident-risk", port_ours, "/v1/score", bodies_files["ours"], 1.0),
            ("mlflow models serve", port_mlflow, "/invocations", bodies_files["mlflow"], 0.25),
        ]
        for name, port, path, bodies, share in targets:
            closed_loop(name, port, path, bodies, 4, int(400 * scale) + 8, 60)  # warm-up
            for clients in (1, 8, 32):
                total = int((2000 if clients == 1 else 4000) * share * scale)
                results.append(closed_loop(name, port, path, bodies, clients, total, 60))
                print(f"  {name} c={clients}: {results[-1].throughput:.0f}/s", file=sys.stderr)
            results.append(paced(name, port, path, bodies, 100.0, 30.0 * scale))

        soak_n = int(20000 * scale)
        before = rss_kib(ours.pid)
        soak = closed_loop("incident-risk", port_ours, "/v1/score", bodies_files["ours"], 8, soak_n, 300)
        after = rss_kib(ours.pid)
        # Records logged in the last flush interval are still in memory when the soak ends: that is
        # the log's bounded buffer, not growth. Read RSS again once it has flushed, then soak again:
        # a leak keeps growing in the second soak, a steady state does not.
        time.sleep(FLUSH_SECONDS + 2.0)
        flushed = rss_kib(ours.pid)
        closed_loop("incident-risk", port_ours, "/v1/score", bodies_files["ours"], 8, soak_n, 300)
        time.sleep(FLUSH_SECONDS + 2.0)
        second = rss_kib(ours.pid)
    finally:
        stop(procs)

    print(
        f"\n### Serving benchmark ({args.kind} champion, {args.days} days x {args.services} services, "
        f"{os.cpu_count()} cores, one server process each)\n"
    )
    print("| target | load | clients | requests | errors | p50 ms | p99 ms | requests/s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r.target} | {r.mode} | {r.clients} | {r.requests} | {r.errors} | {r.pct(0.5):.2f} | "
            f"{r.pct(0.99):.2f} | {r.throughput:.0f} |"
        )
    ratio = {
        c: next(r for r in results if r.target == "incident-risk" and r.clients == c and r.mode == "closed").throughput
        / max(
            next(
                r for r in results if r.target != "incident-risk" and r.clients == c and r.mode == "closed"
            ).throughput,
            1e-9,
        )
        for c in (1, 8, 32)
    }
    print("\nthroughput ratio (ours / MLflow): " + ", ".join(f"c={c}: {v:.1f}x" for c, v in ratio.items()))
    print(
        f"soak: {soak.requests} requests, {soak.errors} errors, p99 {soak.pct(0.99):.2f} ms, "
        f"server RSS {before / 1024:.1f} -> {after / 1024:.1f} MiB ({(after - before) / 1024:+.1f} MiB)"
    )
    print(
        f"after the log's last flush: {flushed / 1024:.1f} MiB ({(flushed - before) / 1024:+.1f} MiB); "
        f"a second soak of {soak_n} requests, flushed: {second / 1024:.1f} MiB ({(second - flushed) / 1024:+.1f} MiB)"
    )
    print(f"median of soak latencies: {statistics.median(soak.latencies_ms):.2f} ms")


if __name__ == "__main__":
    main()
