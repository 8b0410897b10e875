"""Benchmark: point-in-time features for every deploy vs a DuckDB SQL formulation of the window counts.

Generates canonical frames with numpy (deploys, toggle events, incidents, labels), builds the full
feature table with ``features.pointintime.compute.build_features``, computes the same window counts with
DuckDB window functions (``RANGE BETWEEN w PRECEDING AND 1 PRECEDING`` over microseconds, i.e.
``[t - w, t)``), asserts both agree, and prints a markdown table. Each size runs in a fresh
subprocess so its peak RSS (``ru_maxrss``) is its own.

    .venv/bin/python benchmarks/features.py                      # 100k, 300k, 1M deploys
    .venv/bin/python benchmarks/features.py --sizes 1000000      # one size

DuckDB is a benchmark-only dependency and is imported only here.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

# Run as a script, this file's directory comes first on sys.path and its name would shadow the
# ``features`` package; drop that entry so the project's package is imported.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402

from features.history.schema import (  # noqa: E402
    DEPLOYS,
    FLIP_ACTIONS,  # noqa: E402
    INCIDENTS,
    TOGGLE_EVENTS,
    History,
    empty_table,
)
from features.pointintime.compute import DAY, HOUR, MINUTE, FeatureConfig, build_features  # noqa: E402
from features.pointintime.windows import Queries, count_window, sort_events  # noqa: E402

#: Window counts compared against DuckDB: column -> (table, width in microseconds).
COUNTS: dict[str, tuple[str, int]] = {
    "toggle_flips_1h": ("flip", HOUR),
    "toggle_flips_24h": ("flip", DAY),
    "toggle_flips_7d": ("flip", 7 * DAY),
    "toggle_flips_recent": ("flip", 30 * MINUTE),
    "service_deploys_24h": ("deploy", DAY),
    "service_deploys_7d": ("deploy", 7 * DAY),
    "service_incidents_7d": ("incident", 7 * DAY),
    "service_incidents_30d": ("incident", 30 * DAY),
}


@dataclass(frozen=True)
class Size:
    deploys: int
    toggles: int
    incidents: int
    services: int = 2000
    authors: int = 20000
    days: int = 730
    seed: int = 0


def _strings(prefix: str, codes: np.ndarray, n_names: int, null_mask: np.ndarray | None = None) -> pd.Series:
    """A canonical string column from integer codes (dictionary-encoded, then decoded by Arrow)."""
    names = pa.array([f"{prefix}{i:05d}" for i in range(n_names)])
    mask = null_mask
    indices = pa.array(codes.astype(np.int32), mask=mask)
    return pd.Series(pd.array(pa.DictionaryArray.from_arrays(indices, names).cast(pa.string()), dtype="string"))


def _ids(prefix: str, n: int) -> pd.Series:
    numbers = pa.array(np.arange(n)).cast(pa.string())
    joined = pc.binary_join_element_wise(pa.scalar(prefix), numbers, "")
    return pd.Series(pd.array(joined, dtype="string"))


def _enum(values: tuple[str, ...], codes: np.ndarray) -> pd.Series:
    arr = pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32)), pa.array(list(values)))
    return pd.Series(pd.array(arr.cast(pa.string()), dtype="string"))


def _utc(us: np.ndarray) -> pd.Series:
    return pd.Series(pd.to_datetime(us, unit="us", utc=True)).dt.as_unit("us")


def generate(size: Size) -> tuple[History, pd.DataFrame]:
    """Canonical history plus deploy labels, random but fixed by the seed."""
    rng = np.random.default_rng(size.seed)
    start = int(pd.Timestamp("2024-01-01", tz="UTC").value // 1000)
    span = size.days * DAY
    # Deploys: busy services deploy more (Zipf-like), times uniform, whole seconds (ties happen).
    weights = 1.0 / np.arange(1, size.services + 1) ** 0.8
    svc = rng.choice(size.services, size=size.deploys, p=weights / weights.sum())
    t = start + rng.integers(0, span // 1_000_000, size.deploys) * 1_000_000
    n = size.deploys
    deploys = empty_table(DEPLOYS).reindex(range(n))
    deploys["deploy_id"] = _ids("gh:", n)
    deploys["source"] = _enum(("gh",), np.zeros(n, dtype=np.int32))
    deploys["service"] = _strings("svc-", svc, size.services)
    deploys["environment"] = _enum(("production", "staging"), (rng.random(n) < 0.2).astype(np.int32))
    deploys["status"] = _enum(("success", "failure", "canceled"), rng.choice(3, n, p=[0.9, 0.07, 0.03]))
    deploys["created_at"] = _utc(t)
    deploys["author"] = _strings("dev-", rng.integers(0, size.authors, n), size.authors, rng.random(n) < 0.02)
    for col, scale in (("lines_added", 200), ("lines_deleted", 80), ("files_changed", 8), ("commit_count", 3)):
        values = rng.geometric(1 / scale, n).astype(np.int64)
        deploys[col] = pd.array(np.where(rng.random(n) < 0.05, 0, values), dtype="Int64")
        deploys.loc[rng.random(n) < 0.03, col] = pd.NA
    deploys["touches_infra"] = pd.array(rng.random(n) < 0.1, dtype="boolean")
    deploys["is_rollback"] = pd.array(rng.random(n) < 0.02, dtype="boolean")
    squad = svc % 300
    deploys["squad"] = _strings("squad-", squad, 300)
    deploys["tribe"] = _strings("tribe-", squad % 30, 30)
    deploys["extra_complexity"] = pd.array(rng.gamma(2.0, 3.0, n), dtype="Float64")

    m = size.toggles
    flags_per_service = 20
    flag = rng.integers(0, size.services * flags_per_service, m)
    actions = ("created", "enabled", "disabled", "targeting_changed", "rollout_changed", "variants_changed", "archived")
    action = rng.choice(len(actions), m, p=[0.05, 0.25, 0.2, 0.2, 0.2, 0.08, 0.02])
    toggles = empty_table(TOGGLE_EVENTS).reindex(range(m))
    toggles["event_id"] = _ids("ld:", m)
    toggles["source"] = _enum(("ld",), np.zeros(m, dtype=np.int32))
    toggles["flag_key"] = _strings("flag-", flag, size.services * flags_per_service)
    toggles["environment"] = _enum(("production", "staging"), (rng.random(m) < 0.2).astype(np.int32))
    toggles["service"] = _strings("svc-", flag // flags_per_service, size.services, rng.random(m) < 0.05)
    toggles["action"] = _enum(actions, action)
    toggles["occurred_at"] = _utc(start - 60 * DAY + rng.integers(0, (span + 60 * DAY) // 1_000_000, m) * 1_000_000)
    toggles["actor"] = _strings("dev-", rng.integers(0, size.authors, m), size.authors)
    toggles["new_enabled"] = pd.arrays.BooleanArray(action == 1, mask=~np.isin(action, [1, 2]))

    k = size.incidents
    incidents = empty_table(INCIDENTS).reindex(range(k))
    incidents["incident_id"] = _ids("pd:", k)
    incidents["source"] = _enum(("pd",), np.zeros(k, dtype=np.int32))
    incidents["service"] = _strings("svc-", rng.choice(size.services, k, p=weights / weights.sum()), size.services)
    incidents["environment"] = _enum(("production",), np.zeros(k, dtype=np.int32))
    incidents["status"] = _enum(("resolved",), np.zeros(k, dtype=np.int32))
    incidents["created_at"] = _utc(start + rng.integers(0, span // 1_000_000, k) * 1_000_000)

    labels = pd.DataFrame(
        {
            "deploy_id": deploys["deploy_id"],
            "failed": rng.random(n) < 0.08,
            "matured_at": _utc(t + 7 * DAY + rng.integers(0, DAY, n)),
        }
    )
    return History(deploys, toggles, incidents), labels


def duckdb_counts(history: History, threads: int | None = None) -> pd.DataFrame:
    """The window counts as one DuckDB query: union events with entities, RANGE windows per service."""
    import duckdb  # benchmark-only dependency

    con = duckdb.connect()
    if threads:
        con.execute(f"SET threads = {threads}")
    con.register("deploys", history.deploys[["deploy_id", "service", "environment", "created_at"]])
    con.register("toggles", history.toggle_events[["service", "environment", "action", "occurred_at"]])
    con.register("incidents", history.incidents[["service", "environment", "created_at"]])
    flips = ", ".join(f"'{a}'" for a in FLIP_ACTIONS)
    windows = ",\n".join(
        f"coalesce(sum(is_{kind}) OVER (PARTITION BY service ORDER BY ts "
        f"RANGE BETWEEN {width} PRECEDING AND 1 PRECEDING), 0) AS {name}"
        for name, (kind, width) in COUNTS.items()
    )
    sql = f"""
    WITH ev AS (
        SELECT row_number() OVER () - 1 AS entity, service, epoch_us(created_at) AS ts,
               0 AS is_flip, 0 AS is_deploy, 0 AS is_incident FROM deploys
        UNION ALL
        SELECT NULL, service, epoch_us(occurred_at), 1, 0, 0 FROM toggles
        WHERE service IS NOT NULL AND action IN ({flips}) AND (environment IS NULL OR environment = 'production')
        UNION ALL
        SELECT NULL, service, epoch_us(created_at), 0, 1, 0 FROM deploys WHERE environment = 'production'
        UNION ALL
        SELECT NULL, service, epoch_us(created_at), 0, 0, 1 FROM incidents
        WHERE service IS NOT NULL AND (environment IS NULL OR environment = 'production')
    )
    SELECT entity, {windows}
    FROM ev QUALIFY entity IS NOT NULL
    ORDER BY entity
    """
    return con.execute(sql).df()


def kernel_flip_counts(history: History) -> tuple[float, dict[str, np.ndarray]]:
    """Time just the sorted-array kernels for the 1 h / 24 h / 7 d flip counts (inputs prepared untimed)."""
    tog = history.toggle_events
    flip = (
        tog["action"].isin(FLIP_ACTIONS)
        & tog["service"].notna()
        & (tog["environment"].isna() | tog["environment"].eq("production"))
    ).to_numpy(dtype=bool)
    codes, _ = pd.factorize(pd.concat([history.deploys["service"], tog["service"][flip]], ignore_index=True))
    q_svc, ev_svc = codes[: len(history.deploys)].astype(np.int64), codes[len(history.deploys) :].astype(np.int64)
    q_t = history.deploys["created_at"].dt.tz_localize(None).to_numpy().view(np.int64)
    ev_t = tog["occurred_at"][flip].dt.tz_localize(None).to_numpy().view(np.int64)
    t0 = time.perf_counter()
    events = sort_events(ev_svc, ev_t)
    q = Queries.of(q_svc, q_t)
    out = q.restore(
        {
            f"toggle_flips_{k}": count_window(events, q.groups, q.times, w)
            for k, w in (("1h", HOUR), ("24h", DAY), ("7d", 7 * DAY))
        }
    )
    return time.perf_counter() - t0, out


def _rss_now_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run_one(size: Size) -> dict[str, float]:
    """Generate, build features, run DuckDB, compare; times in seconds, memory in MB."""
    t0 = time.perf_counter()
    history, labels = generate(size)
    gen_s = time.perf_counter() - t0
    rss_data = _rss_now_mb()
    config = FeatureConfig()
    t0 = time.perf_counter()
    features = build_features(history.deploys, history, labels, config)
    ours_s = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kernel_s, kernel = kernel_flip_counts(history)
    for name, values in kernel.items():
        assert np.array_equal(values, features[name].to_numpy()), name
    t0 = time.perf_counter()
    sql = duckdb_counts(history)
    duck_s = time.perf_counter() - t0
    assert len(sql) == len(features) and (sql["entity"].to_numpy() == np.arange(len(features))).all()
    for name in COUNTS:
        ours = features[name].to_numpy()
        theirs = sql[name].to_numpy(dtype=np.float64)
        bad = np.flatnonzero(ours != theirs)
        assert not len(bad), f"{name}: {len(bad)} rows differ; first {bad[:5]}: {ours[bad[:5]]} vs {theirs[bad[:5]]}"
    return {
        **asdict(size),
        "feature_columns": features.shape[1],
        "generate_s": gen_s,
        "ours_s": ours_s,
        "duckdb_s": duck_s,
        "kernel_s": kernel_s,
        "peak_rss_mb": peak_mb,
        "data_rss_mb": rss_data,
    }


def _markdown(rows: list[dict[str, float]]) -> str:
    head = (
        "| deploys | toggle events | incidents | build_features (s) | DuckDB window counts (s) | DuckDB / ours "
        "| peak RSS (MB) | RSS of data (MB) | ours µs per deploy | kernels only: 1h/24h/7d flips (s) |"
        "\n|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in rows:
        lines.append(
            f"| {r['deploys']:,} | {r['toggles']:,} | {r['incidents']:,} | {r['ours_s']:.2f} | {r['duckdb_s']:.2f} "
            f"| {r['duckdb_s'] / r['ours_s']:.1f}x | {r['peak_rss_mb']:.0f} | {r['data_rss_mb']:.0f} "
            f"| {1e6 * r['ours_s'] / r['deploys']:.2f} | {r['kernel_s']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,300000,1000000", help="deploy counts (toggles 3x, incidents 5%%)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(run_one(Size(**json.loads(args.child)))))
        return
    rows = []
    for deploys in (int(s) for s in args.sizes.split(",")):
        size = Size(deploys=deploys, toggles=3 * deploys, incidents=deploys // 20)
        out = subprocess.run(
            [sys.executable, __file__, "--child", json.dumps(asdict(size))],
            check=True,
            capture_output=True,
            text=True,
            env=os.environ,
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"done {deploys:,}: ours {rows[-1]['ours_s']:.2f}s duckdb {rows[-1]['duckdb_s']:.2f}s", file=sys.stderr)
    print(f"machine: {os.cpu_count()} cores; DuckDB default threads\n")
    print(_markdown(rows))


if __name__ == "__main__":
    main()
