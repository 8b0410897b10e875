"""Load generator for ``benchmarks/serving.py``, run in its own process.

The generator must not share a process with anything large: an earlier version ran inside the
benchmark process, which also held the simulated history and the trained model, and its own full
garbage collections (100+ ms over millions of objects) showed up as the server's p99. Here the heap
is small and frozen after setup, as it would be in a native tool.

    .venv/bin/python -m benchmarks.loadgen --port 8000 --path /v1/score --bodies b.json paced --rate 100 --seconds 30
"""

from __future__ import annotations

import argparse
import gc
import http.client
import json
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class Result:
    target: str
    mode: str
    clients: int
    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float]

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        data = sorted(self.latencies_ms)
        return data[min(len(data) - 1, int(q * len(data)))]


def post(
    conn: http.client.HTTPConnection, port: int, path: str, body: bytes
) -> tuple[http.client.HTTPConnection, bool]:
    """One keep-alive POST; on a broken connection, a fresh one for the next request. True when 200."""
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        return conn, response.status == 200
    except (OSError, http.client.HTTPException):
        return http.client.HTTPConnection("127.0.0.1", port, timeout=30), False


def run_threads(worker: Callable[[int], None], count: int, barrier: threading.Barrier) -> float:
    """Run ``worker(k)`` on ``count`` threads released together by ``barrier``; seconds from release to done."""
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(count)]
    for t in threads:
        t.start()
    barrier.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    return time.perf_counter() - started


def closed_loop(
    target: str, port: int, path: str, bodies: list[bytes], clients: int, total: int, time_limit: float
) -> Result:
    """``clients`` threads, one keep-alive connection each, ``total`` requests in all (or until the limit)."""
    lat: list[list[float]] = [[] for _ in range(clients)]
    errs = [0] * clients
    deadline = time.monotonic() + time_limit
    barrier = threading.Barrier(clients + 1)

    def worker(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        barrier.wait()
        for i in range(k, total, clients):
            if time.monotonic() > deadline:
                break
            t0 = time.perf_counter()
            conn, ok = post(conn, port, path, bodies[i % len(bodies)])
            lat[k].append((time.perf_counter() - t0) * 1000)
            errs[k] += not ok
        conn.close()

    seconds = run_threads(worker, clients, barrier)
    all_lat = [x for part in lat for x in part]
    return Result(target, "closed", clients, len(all_lat), sum(errs), seconds, all_lat)


def paced(target: str, port: int, path: str, bodies: list[bytes], rate: float, seconds: float) -> Result:
    """Open loop: request i is due at start + i / rate; latency counts from when it was due."""
    n = int(rate * seconds)
    workers = 4
    lat: list[list[float]] = [[] for _ in range(workers)]
    errs = [0] * workers
    start = time.perf_counter() + 0.2
    barrier = threading.Barrier(workers + 1)

    def worker(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        barrier.wait()
        for i in range(k, n, workers):
            due = start + i / rate
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            conn, ok = post(conn, port, path, bodies[i % len(bodies)])
            lat[k].append((time.perf_counter() - due) * 1000)
            errs[k] += not ok
        conn.close()

    run_threads(worker, workers, barrier)
    all_lat = [x for part in lat for x in part]
    return Result(target, f"paced {rate:g}/s", workers, len(all_lat), sum(errs), time.perf_counter() - start, all_lat)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--bodies", type=Path, required=True, help="JSON list of request bodies (strings)")
    parser.add_argument("--target", default="server")
    modes = parser.add_subparsers(dest="mode", required=True)
    closed = modes.add_parser("closed", help="keep-alive clients, each sending as soon as the last answer came")
    closed.add_argument("--clients", type=int, required=True)
    closed.add_argument("--total", type=int, required=True)
    closed.add_argument("--time-limit", type=float, default=60.0)
    open_loop = modes.add_parser("paced", help="open loop at a fixed rate")
    open_loop.add_argument("--rate", type=float, required=True)
    open_loop.add_argument("--seconds", type=float, required=True)
    args = parser.parse_args()

    bodies = [b.encode() for b in json.loads(args.bodies.read_text())]
    gc.collect()
    gc.freeze()
    if args.mode == "closed":
        result = closed_loop(args.target, args.port, args.path, bodies, args.clients, args.total, args.time_limit)
    else:
        result = paced(args.target, args.port, args.path, bodies, args.rate, args.seconds)
    json.dump(asdict(result), sys.stdout)


if __name__ == "__main__":
    main()
