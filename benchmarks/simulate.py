"""Benchmark: simulate about a million deploys and write them (generic style); prints the numbers.

Run from the repo root: .venv/bin/python -m benchmarks.simulate [--services 4000 --days 180] [--out DIR]
(as a module, so the sibling benchmarks/features.py does not shadow the ``features`` package).
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from features.simulation.export import write_exports
from features.simulation.simulator import SimulationConfig, simulate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--services", type=int, default=4000)
    parser.add_argument("--days", type=int, default=180)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="where to write exports (default: a temp dir)")
    parser.add_argument("--no-write", action="store_true", help="time simulate() only")
    args = parser.parse_args()

    config = SimulationConfig(days=args.days, services=args.services, seed=args.seed)
    began = time.perf_counter()
    sim = simulate(config)
    sim_s = time.perf_counter() - began
    h = sim.history
    n = len(h.deploys)
    print(f"config: services={args.services} days={args.days} seed={args.seed}")
    print(
        f"simulate: {sim_s:.1f} s for {n:,} deploys ({n / sim_s:,.0f} deploys/s), "
        f"{len(h.toggle_events):,} toggle events, {len(h.incidents):,} incidents"
    )
    if not args.no_write:
        with tempfile.TemporaryDirectory() as tmp:
            out = args.out or Path(tmp)
            began = time.perf_counter()
            write_exports(sim, out, "generic")
            write_s = time.perf_counter() - began
            size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
            print(f"write_exports(generic): {write_s:.1f} s, {size / 1e6:,.0f} MB")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB")


if __name__ == "__main__":
    main()
