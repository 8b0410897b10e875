"""Benchmark: does the advice truly lower the risk? Judged by the simulator's true hazard, per action kind.

The model is not causal; the simulator is. This simulates an organisation (``features.simulation``),
trains a model on the history before the first cut, and then, at cut times every ``--window-hours``
over the last ``--cut-days``, treats the production deploys planned in the next window as upcoming:
the store as it stood at the cut (events after it removed, unfinished deploys and unresolved
incidents open), the model's score of each deploy, and every action ``models.scoring.advice`` can
evaluate (all kinds on, names on). The advice *given* is each kind's best candidate whose predicted
drop is material (``AdviceConfig`` defaults). For every piece of advice given it asks
``features.simulation.truth.TrueHazard`` the true probability of the deploy as it was and as advised
(a split: 1 - (1 - p_part)^k), in the world as it then unfolded.

Per kind: how often advice was given, the share that truly lowers the risk, the mean true and
predicted reductions. The bar (issue 15): >= 90 % truly lower and mean true reduction >= half the
predicted one. Kinds that fail it are not offered by default (``DEFAULT_ACTIONS``).

It also measures the per-request cost in this process: the score alone, the score plus advice with
the default actions, and with every action, interleaved per deploy, on the full history.

    .venv/bin/python -m benchmarks.advice                       # hgb and logreg, 180 days x 60 services
    .venv/bin/python -m benchmarks.advice --kinds hgb --cut-days 7 --seeds 0
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(_ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from features.history.schema import History  # noqa: E402
from features.labels.attribution import AttributionConfig, attribute  # noqa: E402
from features.pointintime.compute import FeatureConfig  # noqa: E402
from features.simulation.simulator import SimulationConfig, simulate  # noqa: E402
from features.simulation.truth import TrueHazard  # noqa: E402
from models.scoring.advice import (  # noqa: E402
    ACTIONS,
    DEFAULT_ACTIONS,
    AdviceConfig,
    advise,
    build_advice_index,
    evaluate,
)
from models.scoring.context import ModelInfo, build_feature_index, make_bundle  # noqa: E402
from models.scoring.explain import score_deploy  # noqa: E402
from models.scoring.upcoming import UpcomingDeploy, deploys_from_frame  # noqa: E402
from models.training.config import TrainConfig  # noqa: E402
from models.training.dataset import build_training_table  # noqa: E402
from models.training.estimators import RiskModel  # noqa: E402
from models.training.train import LABEL, make_classifier  # noqa: E402

PARAMS: dict[str, dict[str, Any]] = {
    "logreg": {"C": 0.3},
    "hgb": {"learning_rate": 0.05, "max_iter": 200, "max_leaf_nodes": 15, "min_samples_leaf": 40,
            "l2_regularization": 1.0},
}  # fmt: skip
#: The simulated organisation's working day (its hazard's clock: 9-18 UTC, Friday afternoon from 13), configured
#: as a team configures its own; ``--business-hours 9 17 --friday-hour 12`` runs the library defaults instead.
FEATURES = FeatureConfig(business_hours=(9, 18), friday_afternoon_hour=13)
ATTRIBUTION = AttributionConfig()


def known_at(history: History, cut: pd.Timestamp) -> History:
    """The history as the store held it at ``cut``: later events gone, later ends unknown (open, running)."""
    d = history.deploys.loc[history.deploys["created_at"] < cut].copy()
    later = d["finished_at"].notna() & (d["finished_at"] >= cut)
    d.loc[d["started_at"].notna() & (d["started_at"] >= cut), "started_at"] = pd.NaT
    d.loc[later, "finished_at"] = pd.NaT
    d.loc[later, "status"] = "running"
    t = history.toggle_events.loc[history.toggle_events["occurred_at"] < cut].copy()
    i = history.incidents.loc[history.incidents["created_at"] < cut].copy()
    unresolved = i["resolved_at"].notna() & (i["resolved_at"] >= cut)
    unacked = i["acknowledged_at"].notna() & (i["acknowledged_at"] >= cut)
    i.loc[unresolved, "resolved_at"] = pd.NaT
    i.loc[unacked, "acknowledged_at"] = pd.NaT
    i.loc[unresolved, "status"] = np.where(unacked[unresolved], "open", "acknowledged")
    return History(deploys=d, toggle_events=t, incidents=i)


def fit(kind: str, history: History, cut: pd.Timestamp, features: FeatureConfig) -> RiskModel:
    table = build_training_table(history, ATTRIBUTION, features, as_of=cut).sorted()
    clf = make_classifier(kind, PARAMS[kind], table, TrainConfig())  # type: ignore[arg-type]
    return RiskModel(clf, n_splits=4).fit(table.frame[table.features], table.frame[LABEL].to_numpy(dtype=np.int64))


def true_after(truth: TrueHazard, row: Any, variant: UpcomingDeploy, parts: int) -> float:
    p = truth.probability(
        service=str(variant.service),
        author=variant.author,
        at=variant.created_at,
        lines=float((variant.lines_added or 0.0) + (variant.lines_deleted or 0.0)),
        touches_infra=bool(row.touches_infra),
    )
    return 1.0 - (1.0 - p) ** parts


def measure_truth(
    kind: str, sim: Any, truth: TrueHazard, cuts: list[pd.Timestamp], window: pd.Timedelta, features: FeatureConfig
) -> list[dict[str, Any]]:
    """One record per piece of advice given: kind, predicted and true probabilities before and after."""
    model = fit(kind, known_at(sim.history, cuts[0]), cuts[0], features)
    bundle = make_bundle(model, ModelInfo(f"bench-{kind}", "1"), {})
    every = AdviceConfig(actions=ACTIONS, name_authors=True)
    full_labels = attribute(sim.history, ATTRIBUTION).deploy_labels
    deploys = sim.history.deploys
    planned = deploys[
        (deploys["environment"] == "production")
        & (deploys["status"] != "canceled")
        & ~deploys["is_rollback"].fillna(False)
    ]
    out: list[dict[str, Any]] = []
    for cut in cuts:
        hist = known_at(sim.history, cut)
        labels = full_labels[full_labels["matured_at"].notna() & (full_labels["matured_at"] < cut)]
        index = build_feature_index(hist, labels, features)
        events = build_advice_index(hist, features)
        batch = planned[(planned["created_at"] >= cut) & (planned["created_at"] < cut + window)]
        for row, deploy in zip(batch.itertuples(), deploys_from_frame(batch), strict=True):
            deploy = replace(deploy, deploy_id=None)
            current = score_deploy(index, bundle.scorer, deploy).probability
            before = true_after(truth, row, deploy, 1)
            best: dict[str, tuple[Any, float]] = {}
            for cand, p in evaluate(index, bundle.scorer, events, deploy, current, every):
                if every.material(current, p) and (cand.action not in best or p < best[cand.action][1]):
                    best[cand.action] = (cand, p)
            for action, (cand, p) in best.items():
                after = true_after(truth, row, cand.variant, cand.parts)
                out.append(
                    {"model": kind, "action": action, "predicted_before": current, "predicted_after": p,
                     "true_before": before, "true_after": after, "at": deploy.created_at, "ship_at": cand.ship_at,
                     "parts": cand.parts}
                )  # fmt: skip
    return out


def summarise(records: list[dict[str, Any]], n_deploys: int) -> pd.DataFrame:
    frame = pd.DataFrame(records)
    rows = []
    for (model, action), g in frame.groupby(["model", "action"], sort=True):
        true_drop = (g["true_before"] - g["true_after"]).to_numpy()
        pred_drop = (g["predicted_before"] - g["predicted_after"]).to_numpy()
        share = float((true_drop > 0).mean())
        ratio = float(true_drop.mean() / pred_drop.mean())
        rows.append(
            {"model": model, "action": action, "advised": len(g), "of_deploys": n_deploys, "truly_lower": share,
             "mean_true_drop": float(true_drop.mean()), "mean_predicted_drop": float(pred_drop.mean()),
             "true/predicted": ratio, "passes": share >= 0.9 and ratio >= 0.5}
        )  # fmt: skip
    return pd.DataFrame(rows)


def markdown(table: pd.DataFrame) -> str:
    """The table as markdown (numbers to three places), without an extra dependency."""

    def cell(v: Any) -> str:
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(map(str, table.columns)) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


def measure_latency(kind: str, sim: Any, n: int, features: FeatureConfig) -> dict[str, dict[str, float]]:
    """p50/p99 (ms) of score alone, score + default advice, score + every action; interleaved per deploy."""
    t_end = sim.history.deploys["created_at"].max()
    model = fit(kind, sim.history, t_end, features)
    bundle = make_bundle(model, ModelInfo(f"bench-{kind}", "1"), {})
    labels = attribute(sim.history, ATTRIBUTION).deploy_labels
    index = build_feature_index(sim.history, labels, features)
    events = build_advice_index(sim.history, features)
    default, every = AdviceConfig(), AdviceConfig(actions=ACTIONS, name_authors=True)
    pool = deploys_from_frame(sim.upcoming)
    timings: dict[str, list[float]] = defaultdict(list)
    for i in range(n):
        d = pool[i % len(pool)]
        for name, config in (("score", None), ("score + default advice", default), ("score + every action", every)):
            start = time.perf_counter()
            p = score_deploy(index, bundle.scorer, d).probability
            if config is not None:
                advise(index, bundle.scorer, events, d, p, config)
            timings[name].append((time.perf_counter() - start) * 1000)
    return {k: {"p50": float(np.percentile(v, 50)), "p99": float(np.percentile(v, 99))} for k, v in timings.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=180)
    parser.add_argument("--services", type=int, default=60)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--kinds", nargs="+", default=["hgb", "logreg"])
    parser.add_argument("--cut-days", type=int, default=28)
    parser.add_argument("--window-hours", type=float, default=3.0)
    parser.add_argument("--latency-n", type=int, default=1000)
    parser.add_argument("--records", type=Path, help="write every piece of advice given to this CSV")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--latency-only", action="store_true")
    parser.add_argument("--business-hours", type=int, nargs=2, default=list(FEATURES.business_hours))
    parser.add_argument("--friday-hour", type=int, default=FEATURES.friday_afternoon_hour)
    args = parser.parse_args(argv)
    start, stop = args.business_hours
    features = FeatureConfig(business_hours=(start, stop), friday_afternoon_hour=args.friday_hour)
    print(f"feature config: business hours {features.business_hours}, Friday afternoon from {args.friday_hour}")

    if args.latency_only:
        latency(args, features)
        return
    records: list[dict[str, Any]] = []
    n_deploys = 0
    window = pd.Timedelta(hours=args.window_hours)
    for seed in args.seeds:
        config = SimulationConfig(days=args.days, services=args.services, seed=seed)
        started = time.perf_counter()
        sim = simulate(config)
        truth = TrueHazard.of(config, sim)
        end = pd.Timestamp(config.start, tz="UTC").floor("D") + pd.Timedelta(days=config.days)
        cuts = list(pd.date_range(end - pd.Timedelta(days=args.cut_days), end - window, freq=window))
        d = sim.history.deploys
        n_deploys += int(
            ((d["environment"] == "production") & (d["status"] != "canceled") & ~d["is_rollback"].fillna(False)
             & (d["created_at"] >= cuts[0]) & (d["created_at"] < cuts[-1] + window)).sum()
        ) * len(args.kinds)  # fmt: skip
        for kind in args.kinds:
            records += measure_truth(kind, sim, truth, cuts, window, features)
            print(
                f"seed {seed} {kind}: {len(records)} advice so far ({time.perf_counter() - started:.0f} s)", flush=True
            )
    if args.records:
        pd.DataFrame(records).to_csv(args.records, index=False)
    table = summarise(records, n_deploys // max(1, len(args.kinds)))
    print(f"\nDefault actions now: {DEFAULT_ACTIONS}\n")
    print(markdown(table))
    confirmed = sorted(set(table.loc[table["passes"], "action"]))
    print(
        f"\nkinds passing for every model: {[a for a in confirmed if table.loc[table['action'] == a, 'passes'].all()]}"
    )
    not_given = [a for a in ACTIONS if a not in set(table["action"])]
    print(f"kinds never given: {not_given}")

    if not args.skip_latency:
        latency(args, features)


def latency(args: argparse.Namespace, features: FeatureConfig) -> None:
    sim = simulate(SimulationConfig(days=args.days, services=args.services, seed=args.seeds[0]))
    for kind in args.kinds:
        lat = measure_latency(kind, sim, args.latency_n, features)
        print(f"\nper-request cost in process ({kind}, {args.latency_n} deploys, ms):")
        for name, v in lat.items():
            print(f"  {name}: p50 {v['p50']:.2f}, p99 {v['p99']:.2f}")


if __name__ == "__main__":
    main()
