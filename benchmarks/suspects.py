"""Benchmark: how often the incident suspects name the simulator's true cause, against the baselines, and latency.

Per seed, on a ``features.simulation.simulator`` history (whose ``incident_truth`` names the deploy
or flip behind every change-caused incident):

1. a champion (``hgb``) is trained on the deploys matured by the cutoff (the first two thirds of
   the days), and the suspect model (lag densities, background rate, flip priors, rollback ratio)
   is learned from the history before the cutoff only;
2. every incident after the cutoff is asked about as it opens (``as_of`` = its time: no rollback
   known yet), through ``models.scoring.suspects`` exactly as the service does;
3. top-1, top-3 and mean reciprocal rank of the true cause among change-caused incidents, against
   baselines computed in the same run on the same incidents: "latest change of the service"
   (deploy or flip), "latest production deploy of the service", and DevLake's rule as the project
   ships it (``AttributionConfig.devlake()``: latest production deploy before the incident in the
   whole project); plus ablations (no prior, no lag shape) and the question asked 1 h after the
   incident opened (rollbacks by then are known);
4. background incidents: share whose top answer is "no recent change".

Latency: ``POST /v1/incidents/suspects`` in process (TestClient) on the seed-0 180 x 60 history
(the committed sample is that simulation), after one warm-up pass over the questions.

    .venv/bin/python benchmarks/suspects.py                       # 180 days, 60 services, seeds 0-2
    .venv/bin/python benchmarks/suspects.py --seeds 1 --days 60   # quick
    .venv/bin/python benchmarks/suspects.py --first-seed 1 --seeds 1 --no-latency --save out/   # seeds apart,
    .venv/bin/python benchmarks/suspects.py --aggregate out/                                   # then together
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from features.labels.attribution import AttributionConfig, attribute  # noqa: E402
from features.labels.suspects import LagDensity, latest_change, learn_suspect_model, rank_suspects  # noqa: E402
from features.pointintime.compute import FeatureConfig  # noqa: E402
from features.simulation.simulator import SimulatedHistory, SimulationConfig, simulate  # noqa: E402
from models.scoring.context import ModelBundle, ModelInfo, build_feature_index, make_bundle  # noqa: E402
from models.scoring.suspects import SuspectContext, build_suspect_context  # noqa: E402
from models.training.config import TrainConfig  # noqa: E402
from models.training.dataset import build_training_table  # noqa: E402
from models.training.estimators import RiskModel  # noqa: E402
from models.training.train import LABEL, make_classifier  # noqa: E402

HGB = {"learning_rate": 0.08, "max_leaf_nodes": 15, "max_iter": 150, "min_samples_leaf": 40, "l2_regularization": 1.0}
HOUR_US = 3_600_000_000
METHODS = (
    "posterior",
    "posterior, no prior",
    "posterior, no lag shape",
    "posterior, asked 1 h later",
    "posterior, squad-mates as dependencies",
    "oracle prior (the simulator's true risk)",
    "latest change",
    "latest deploy (service)",
    "DevLake (project)",
)


@dataclass
class Setup:
    sim: SimulatedHistory
    ctx: SuspectContext
    bundle: ModelBundle
    cutoff: pd.Timestamp
    seconds: dict[str, float]


def setup(days: int, services: int, seed: int) -> Setup:
    secs: dict[str, float] = {}
    t = time.perf_counter()
    sim = simulate(SimulationConfig(days=days, services=services, seed=seed))
    h = sim.history
    secs["simulate"] = time.perf_counter() - t
    start = h.deploys["created_at"].min()
    cutoff = start + pd.Timedelta(days=int(days * 2 / 3))
    attribution = AttributionConfig()
    features = FeatureConfig()

    t = time.perf_counter()
    table = build_training_table(h, attribution, features, as_of=cutoff).sorted()
    clf = make_classifier("hgb", HGB, table, TrainConfig())  # type: ignore[arg-type]
    model = RiskModel(clf, n_splits=3).fit(table.frame[table.features], table.frame[LABEL].to_numpy(dtype=np.int64))
    secs["train champion"] = time.perf_counter() - t

    t = time.perf_counter()
    past = attribute(h, attribution, as_of=cutoff)
    suspect_model = learn_suspect_model(h, past)
    full = attribute(h, attribution)
    bundle = make_bundle(model, ModelInfo("benchmark", "1"), {"feature_config": None})
    index = build_feature_index(h, full.deploy_labels, features)
    ctx = build_suspect_context(h, index, bundle.scorer, full, model=suspect_model)
    secs["learn + index"] = time.perf_counter() - t
    return Setup(sim, ctx, bundle, cutoff, secs)


def _rank_of(ids: list[str], truth: str) -> int | None:
    return ids.index(truth) + 1 if truth in ids else None


def evaluate(s: Setup) -> tuple[pd.DataFrame, dict[str, Any]]:
    """One row per (incident, method): the true cause's rank (None: not among the answers)."""
    h, ctx = s.sim.history, s.ctx
    inc = h.incidents.merge(s.sim.incident_truth, on="incident_id")
    inc = inc[inc["created_at"] >= s.cutoff].sort_values("created_at")
    devlake = attribute(h, AttributionConfig.devlake()).links
    devlake_cause = devlake.set_index("incident_id")["change_id"]
    d = h.deploys
    shipped = d[d["environment"].eq("production") & d["status"].isin(["success", "rolled_back"])]
    shipped = shipped.assign(t=shipped["finished_at"].fillna(shipped["created_at"])).sort_values("t")
    flat = replace(ctx.model, lags={k: _flat() for k in ctx.model.lags})
    squads = d.dropna(subset=["squad"]).drop_duplicates("service", keep="last").groupby("squad")["service"].apply(list)
    mates = {svc: tuple(m for m in members if m != svc) for members in squads for svc in members}
    squad_ctx = replace(ctx, dependencies=mates)
    true_p = pd.concat(
        [
            s.sim.deploy_truth.set_index("deploy_id")["p_incident"],
            s.sim.toggle_truth.set_index("event_id")["p_incident"],
        ]
    )
    lookback = int(ctx.model.config.lookback / pd.Timedelta(microseconds=1))
    rows: list[dict[str, Any]] = []
    background_top = []
    t = time.perf_counter()
    for r in inc.itertuples():
        at = int(r.created_at.value // 1000)
        pos, own = ctx.changes.window(r.service, at, lookback, ctx.dependencies)
        prior = _priors(ctx, pos)
        full = rank_suspects(ctx.changes, pos, own, prior, ctx.model, at)
        if r.cause_kind == "background":
            background_top.append(full.top_is_background)
            continue
        dpos, down = squad_ctx.changes.window(r.service, at, lookback, mates)
        dprior = _priors(ctx, dpos)
        oracle = true_p.reindex(ctx.changes.change_id[pos]).to_numpy(dtype=np.float64)
        answers = {
            "posterior": full,
            "posterior, squad-mates as dependencies": rank_suspects(ctx.changes, dpos, down, dprior, ctx.model, at),
            "oracle prior (the simulator's true risk)": rank_suspects(ctx.changes, pos, own, oracle, ctx.model, at),
            "posterior, no prior": rank_suspects(ctx.changes, pos, own, np.full(len(pos), 0.05), ctx.model, at),
            "posterior, no lag shape": rank_suspects(ctx.changes, pos, own, prior, flat, at),
            "posterior, asked 1 h later": rank_suspects(ctx.changes, pos, own, prior, ctx.model, at, at + HOUR_US),
        }
        for name, ranking in answers.items():
            rank = _rank_of([str(ctx.changes.change_id[p]) for p in ranking.positions], r.cause_id)
            rows.append({"incident_id": r.incident_id, "kind": r.cause_kind, "method": name, "rank": rank})
        latest = latest_change(ctx.changes, pos, own)
        before = shipped[shipped["service"].eq(r.service) & (shipped["t"] < r.created_at)]
        latest_deploy = str(before["deploy_id"].iloc[-1]) if len(before) else None
        dl = devlake_cause.get(r.incident_id)
        for name, guess in (
            ("latest change", latest),
            ("latest deploy (service)", latest_deploy),
            ("DevLake (project)", dl),
        ):
            rows.append(
                {
                    "incident_id": r.incident_id,
                    "kind": r.cause_kind,
                    "method": name,
                    "rank": 1 if guess == r.cause_id else None,
                }
            )
    extra = {
        "questions": len(inc),
        "seconds_per_question": (time.perf_counter() - t) / max(len(inc), 1),
        "background_incidents": len(background_top),
        "background_top_no_recent_change": float(np.mean(background_top)) if background_top else float("nan"),
        "cause_outside_own_service": float(
            (~inc.loc[inc["cause_kind"].ne("background")].apply(lambda x: _same_service(h, x), axis=1)).mean()
        ),
    }
    return pd.DataFrame(rows), extra


def _priors(ctx: SuspectContext, positions: np.ndarray) -> np.ndarray:
    """The champion's point-in-time score of each candidate deploy (NaN for flips), as the service computes it."""
    kinds, ids = ctx.changes.kind[positions], ctx.changes.change_id[positions]
    scores = [ctx.prior(str(i)).probability if k == "deploy" else np.nan for k, i in zip(kinds, ids, strict=True)]
    return np.array(scores, dtype=np.float64)


def _flat() -> LagDensity:
    """A lag density with no shape: equal likelihood for every lag in the look-back window."""
    grid = np.linspace(np.log(1e-3), np.log(24 * 30), 512)
    return LagDensity(grid, np.exp(grid), 0, "flat")  # g(log L) / L = 1 per hour


def _same_service(h: Any, row: Any) -> bool:
    if row["cause_kind"] == "deploy":
        svc = h.deploys.loc[h.deploys["deploy_id"].eq(row["cause_id"]), "service"]
    else:
        svc = h.toggle_events.loc[h.toggle_events["event_id"].eq(row["cause_id"]), "service"]
    return bool(len(svc)) and svc.iloc[0] == row["service"]


def summarise(ranks: pd.DataFrame) -> pd.DataFrame:
    out = []
    for method in METHODS:
        m = ranks[ranks["method"].eq(method)]
        rank = m["rank"].astype("Float64")
        out.append(
            {
                "method": method,
                "incidents": len(m),
                "top1": float((rank == 1).fillna(False).mean()),
                "top3": float((rank <= 3).fillna(False).mean()),
                "mrr": float((1.0 / rank).fillna(0.0).mean()),
            }
        )
    return pd.DataFrame(out)


def latency(s: Setup, n: int = 400) -> dict[str, float]:
    """p50/p99 of ``POST /v1/incidents/suspects`` in process, the snapshot installed directly."""
    from fastapi.testclient import TestClient

    from models.scoring.context import make_scoring_context
    from models.serving.app import create_app
    from models.serving.state import ScoringState, ServiceConfig

    class _State(ScoringState):
        """The benchmark's champion and history installed as the snapshot; the route's context builds on swap."""

        def _refresh(self) -> bool:
            if self.snapshot is not None:
                return False
            snap = make_scoring_context(s.bundle, s.sim.history, 0)
            self.snapshot = snap
            for hook in self._on_swap:
                hook(snap)
            return True

    config = ServiceConfig(store_dir=Path("/nonexistent"), refresh_seconds=3600)
    app = create_app(config, _State(config))
    inc = s.sim.history.incidents
    rng = np.random.default_rng(0)
    rows = inc.iloc[rng.integers(0, len(inc), n)]
    bodies = [{"service": r.service, "at": r.created_at.isoformat()} for r in rows.itertuples()]
    times = []
    with TestClient(app) as client:
        for body in bodies:  # warm-up: the champion's scores of past deploys are cached per snapshot
            assert client.post("/v1/incidents/suspects", json=body).status_code == 200
        for body in bodies:
            t = time.perf_counter()
            r = client.post("/v1/incidents/suspects", json=body)
            times.append(time.perf_counter() - t)
            assert r.status_code == 200, r.text
    ms = np.array(times) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)), "max_ms": float(ms.max())}


def report(both: pd.DataFrame) -> None:
    """The all-seeds summary, the ratio to the better baseline, and per cause kind."""
    print(f"\n## all seeds ({both['seed'].nunique()})")
    summary = summarise(both)
    print(summary.round(3).to_string(index=False))
    base = summary[summary["method"].isin(["latest change", "latest deploy (service)", "DevLake (project)"])]
    best = base["top1"].max()
    post = summary.set_index("method").loc["posterior"]
    ratio = post["top1"] / best
    print(f"posterior top-1 / best baseline top-1 = {ratio:.3f} (bar 1.3); top-3 {post['top3']:.3f} (bar 0.85)")
    for kind in ("deploy", "toggle"):
        k = summarise(both[both["kind"].eq(kind)])
        print(f"\n{kind}-caused incidents only:")
        print(k.round(3).to_string(index=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=180)
    parser.add_argument("--services", type=int, default=60)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--no-latency", action="store_true")
    parser.add_argument("--save", type=Path, help="Write each seed's ranks to DIR/ranks-<seed>.csv.")
    parser.add_argument("--aggregate", type=Path, help="Only summarise the ranks saved in DIR (seeds run apart).")
    args = parser.parse_args()
    pd.set_option("display.width", 160)
    if args.aggregate:
        report(pd.concat([pd.read_csv(f) for f in sorted(args.aggregate.glob("ranks-*.csv"))], ignore_index=True))
        return
    all_ranks = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        s = setup(args.days, args.services, seed)
        ranks, extra = evaluate(s)
        ranks = ranks.assign(seed=seed)
        all_ranks.append(ranks)
        if args.save:
            args.save.mkdir(parents=True, exist_ok=True)
            ranks.to_csv(args.save / f"ranks-{seed}.csv", index=False)
        print(f"\n## seed {seed}: {args.days} days x {args.services} services, {len(s.sim.history.deploys)} deploys")
        print({k: round(v, 1) for k, v in s.seconds.items()}, {k: round(v, 4) for k, v in extra.items()})
        print(summarise(ranks).round(3).to_string(index=False), flush=True)
        if seed == args.first_seed and not args.no_latency:
            print("latency POST /v1/incidents/suspects:", {k: round(v, 2) for k, v in latency(s).items()}, flush=True)
    report(pd.concat(all_ranks, ignore_index=True))


if __name__ == "__main__":
    main()
