"""Micro-benchmark of the prediction log (models/monitoring/predlog.py): what it costs the serving path.

The service adds one record per score on the request path and flushes the buffer from a background
thread of the same process every 5 s, so two numbers matter:

- the per-request cost of building and adding a record (``prediction_record`` as ``log_record``
  calls it, then ``PredictionLog.add``), on realistic payloads (the catalog's 51 features);
- the flush of a buffer (500 records: 100 requests/s for 5 s; 4,000: about the soak's rate), its
  wall time and how long it holds the GIL: a foreground thread runs 50 µs units of pure Python
  while the flush runs, and the time those units wait beyond their own length is time the flush held
  the GIL (on a second core, work the flush does without the GIL costs the foreground nothing).
  The longest unit is the worst stall a request would see. Both move with other work on the
  machine (a thread descheduled while it holds the GIL stalls the other); the flush thread's own
  CPU time barely does, and bounds what it can hold.

And, with ``--rss``, the resident memory over repeated buffer-and-flush cycles (no growth wanted).

    .venv/bin/python -m benchmarks.predlog
    .venv/bin/python -m benchmarks.predlog --rss --cycles 60

Uses only the log's public API (``prediction_record``, ``PredictionLog``), so it measures any
version of the module: run it with another checkout first on ``PYTHONPATH`` for a before/after.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
if str(_ROOT) not in sys.path:
    sys.path.append(str(_ROOT))

UNIT_SECONDS = 50e-6


def payloads(n: int) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(score payload, request fields) pairs shaped as the service builds them."""
    import pandas as pd

    from features.pointintime.catalog import CATALOG

    base = pd.Timestamp("2026-03-02T10:00:00Z")
    out = []
    for i in range(n):
        features: dict[str, Any] = {}
        for j, spec in enumerate(CATALOG):
            if spec.dtype == "string":
                features[spec.name] = f"{spec.name}-{i % 17}"
            else:
                features[spec.name] = math.nan if (i + j) % 23 == 0 else float((i * 31 + j) % 97) / 7.0
        payload = {
            "deploy_id": f"deploys:{i}" if i % 2 else None,
            "service": f"svc-{i % 60}",
            "scored_for": (base + pd.Timedelta(seconds=i)).isoformat(),
            "probability": (i % 1000) / 1000.0,
            "band": "low",
            "model": {"name": "incident-risk", "version": "3", "run_id": "r"},
            "features": features,
            "store_version": 7,
        }
        deploy = {"service": payload["service"], "author": f"dev{i % 40}", "commit_sha": f"{i:040x}",
                  "deploy_id": payload["deploy_id"], "squad": None, "tribe": None, "lines_added": i % 300}  # fmt: skip
        out.append((payload, deploy))
    return out


def record_cost(pairs: list[tuple[dict[str, Any], dict[str, Any]]]) -> float:
    """Microseconds per record: built as ``models.serving.app.log_record`` builds it, then added."""
    from models.monitoring.predlog import PredictionLog, prediction_record

    plog = PredictionLog(Path(tempfile.mkdtemp()), flush_seconds=3600)
    start = time.perf_counter()
    for payload, deploy in pairs:
        plog.add(prediction_record(payload, caller="/v1/score", deploy=dict(deploy),
                                   teams=("squad", "tribe"), feature_set_version="pit-1"))  # fmt: skip
    return (time.perf_counter() - start) / len(pairs) * 1e6


def _unit() -> None:
    end = time.perf_counter() + UNIT_SECONDS
    while time.perf_counter() < end:
        pass


def flush_cost(records: list[Any], repeats: int) -> dict[str, float]:
    """Median wall ms of flushing ``records``, the GIL time it took from a busy foreground thread, and
    the longest foreground unit (ms)."""
    from models.monitoring.predlog import PredictionLog

    walls, held, worst, cpu = [], [], [], []
    for _ in range(repeats):
        plog = PredictionLog(Path(tempfile.mkdtemp()), flush_seconds=3600)
        plog.extend(records)
        done = threading.Event()
        times: list[float] = []

        def flush(log: PredictionLog = plog, finished: threading.Event = done) -> None:
            start = time.thread_time()
            log.flush()
            cpu.append(time.thread_time() - start)
            finished.set()

        thread = threading.Thread(target=flush)
        start = time.perf_counter()
        thread.start()
        while not done.is_set():
            a = time.perf_counter()
            _unit()
            times.append(time.perf_counter() - a)
        walls.append(time.perf_counter() - start)
        thread.join()
        held.append(sum(t - UNIT_SECONDS for t in times))
        worst.append(max(times, default=0.0))
        assert plog.pending == 0 and plog.errors == 0
    return {
        "wall_ms": statistics.median(walls) * 1e3,
        "cpu_ms": statistics.median(cpu) * 1e3,
        "gil_ms": statistics.median(held) * 1e3,
        "worst_stall_ms": statistics.median(worst) * 1e3,
    }


def rss_cycles(pairs: list[tuple[dict[str, Any], dict[str, Any]]], cycles: int) -> list[float]:
    """Resident MiB after each buffer-and-flush cycle of ``len(pairs)`` fresh records."""
    from models.monitoring.predlog import PredictionLog, prediction_record

    plog = PredictionLog(Path(tempfile.mkdtemp()), flush_seconds=3600)
    out = []
    for _ in range(cycles):
        for payload, deploy in pairs:
            record = prediction_record(payload, caller="/v1/score", deploy=dict(deploy), feature_set_version="pit-1")
            plog.add(record)
        plog.flush()
        out.append(_rss_mib())
    return out


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return math.nan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--rss", action="store_true", help="Also the resident memory over repeated flush cycles.")
    parser.add_argument("--cycles", type=int, default=40)
    args = parser.parse_args()
    import models.monitoring.predlog as predlog

    print(f"predlog: {predlog.__file__}")
    pairs = payloads(4000)
    record_cost(pairs)  # warm-up
    print(f"record build + add: {min(record_cost(pairs) for _ in range(5)):.2f} µs per request")
    from models.monitoring.predlog import prediction_record

    records = [prediction_record(p, caller="/v1/score", deploy=dict(d), feature_set_version="pit-1") for p, d in pairs]
    print("| records | flush wall ms | flush CPU ms | GIL held ms | worst stall ms |")
    print("|---:|---:|---:|---:|---:|")
    for n in (500, 4000):
        flush_cost(records[:n], 2)  # warm-up
        cost = flush_cost(records[:n], args.repeats)
        print(
            f"| {n} | {cost['wall_ms']:.1f} | {cost['cpu_ms']:.1f} | {cost['gil_ms']:.1f} | "
            f"{cost['worst_stall_ms']:.1f} |"
        )
    if args.rss:
        rss = rss_cycles(pairs, args.cycles)
        tenth = max(1, len(rss) // 10)
        print(f"RSS over {len(rss)} cycles of {len(pairs)} records: after {tenth}: {rss[tenth - 1]:.1f} MiB, "
              f"last: {rss[-1]:.1f} MiB ({rss[-1] - rss[tenth - 1]:+.1f}), max {max(rss):.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
