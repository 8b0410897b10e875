"""Benchmark: how well attribution recovers the simulator's true incident causes, per rule set.

For each rule set, on ``features.simulation.simulator`` histories (whose ``incident_truth`` names the deploy or
flag flip behind every change-caused incident):

- link precision: share of incident -> change links that name the true cause;
- link recall: share of change-caused incidents linked to their true cause;
- window precision: the same precision over time-window links only (explicit links are exact);
- background linked: incidents with no change behind them that got a link anyway;
- deploy-label precision / recall: ``failed`` against the simulator's ``caused_incident`` over
  mature production deploys (what the trainer learns from);
- seconds: wall time of ``attribute`` (the history is already in memory).

    .venv/bin/python benchmarks/attribution.py                         # 180 days, 60 services, seeds 0-2
    .venv/bin/python benchmarks/attribution.py --days 365 --services 2000 --seeds 1   # ~1M deploys
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# Run as a script, this file's directory comes first on sys.path and benchmarks/features.py would
# shadow the ``features`` package; drop that entry so the project's package is imported.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import pandas as pd  # noqa: E402

from features.labels.attribution import Attribution, AttributionConfig, attribute  # noqa: E402
from features.simulation.simulator import SimulatedHistory, SimulationConfig, simulate  # noqa: E402

RULE_SETS: dict[str, AttributionConfig] = {
    "default (explicit + 24 h window, service, flips, rollbacks)": AttributionConfig(),
    "DevLake (no window, project scope, deploys only)": AttributionConfig.devlake(),
    "default window only (cause fields ignored)": AttributionConfig(use_explicit=False),
    "default, 6 h window": AttributionConfig(max_lag=pd.Timedelta(hours=6)),
    "default, deploys only (no flips)": AttributionConfig(include_toggles=False),
    "DevLake window + cause fields": AttributionConfig(
        max_lag=None, scope="project", include_toggles=False, rollback_marks_failed=False
    ),
}


@dataclass(frozen=True)
class Score:
    links: int
    link_precision: float
    link_recall: float
    window_precision: float
    background_linked: int
    background: int
    label_precision: float
    label_recall: float
    immature: int
    seconds: float


def score(sim: SimulatedHistory, result: Attribution, seconds: float) -> Score:
    """Links and deploy labels against the simulator's truth."""
    truth = sim.incident_truth
    links = result.links[result.links["incident_id"].notna()]
    joined = links.merge(truth, on="incident_id", how="left")
    right = joined["change_id"].eq(joined["cause_id"]).fillna(False).to_numpy(dtype=bool)
    window = joined["method"].eq("time_window").to_numpy(dtype=bool)
    caused = truth["cause_kind"].ne("background").to_numpy(dtype=bool)
    background_ids = truth.loc[~caused, "incident_id"]

    labels = result.deploy_labels
    labels = labels[labels["eligible"] & labels["mature"]].merge(sim.deploy_truth, on="deploy_id", how="left")
    predicted = labels["failed"].to_numpy(dtype=bool)
    actual = labels["caused_incident"].fillna(False).to_numpy(dtype=bool)
    return Score(
        links=len(links),
        link_precision=_ratio(right.sum(), len(links)),
        link_recall=_ratio(right.sum(), caused.sum()),
        window_precision=_ratio((right & window).sum(), window.sum()),
        background_linked=int(links["incident_id"].isin(background_ids).sum()),
        background=int((~caused).sum()),
        label_precision=_ratio((predicted & actual).sum(), predicted.sum()),
        label_recall=_ratio((predicted & actual).sum(), actual.sum()),
        immature=int((~result.deploy_labels["mature"] & result.deploy_labels["eligible"]).sum()),
        seconds=seconds,
    )


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den else float("nan")


def run(days: int, services: int, seeds: list[int]) -> pd.DataFrame:
    rows = []
    for seed in seeds:
        t0 = time.perf_counter()
        sim = simulate(SimulationConfig(days=days, services=services, seed=seed))
        h = sim.history
        print(
            f"seed {seed}: {len(h.deploys):,} deploys, {len(h.toggle_events):,} toggle events, "
            f"{len(h.incidents):,} incidents ({time.perf_counter() - t0:.1f} s to simulate)",
            file=sys.stderr,
        )
        for name, config in RULE_SETS.items():
            t = time.perf_counter()
            result = attribute(h, config)
            s = score(sim, result, time.perf_counter() - t)
            rows.append({"rule set": name, "seed": seed, **s.__dict__})
    return pd.DataFrame(rows)


def markdown(frame: pd.DataFrame) -> str:
    """Mean over seeds per rule set, as a markdown table."""
    g = frame.groupby("rule set", sort=False)
    mean = g.mean(numeric_only=True)
    lines = [
        "| rule set | links | link precision | link recall | window precision | background linked "
        "| deploy-label precision | deploy-label recall | s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in mean.iterrows():
        lines.append(
            f"| {name} | {r['links']:.0f} | {r['link_precision']:.3f} | {r['link_recall']:.3f} "
            f"| {r['window_precision']:.3f} | {r['background_linked']:.0f} / {r['background']:.0f} "
            f"| {r['label_precision']:.3f} | {r['label_recall']:.3f} | {r['seconds']:.2f} |"
        )
    spread = g["link_precision"].agg(["min", "max"])
    lines.append("")
    lines.append(
        "link precision range over seeds: "
        + "; ".join(f"{str(n).split(' (')[0]} {a:.3f}-{b:.3f}" for n, (a, b) in spread.iterrows())
    )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=180)
    parser.add_argument("--services", type=int, default=60)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args(argv)
    frame = run(args.days, args.services, args.seeds)
    print(f"Attribution vs simulator truth ({args.days} days, {args.services} services, seeds {args.seeds}; means)\n")
    print(markdown(frame))


if __name__ == "__main__":
    main()
