"""Benchmark: how often the incident suspects name the simulator's true cause, against the baselines, and latency.

Per seed, on a ``features.simulation.simulator`` history (whose ``incident_truth`` names the deploy
or flip behind every change-caused incident):

1. a champion (``hgb``, or ``--kind logreg``; ``--train-max`` keeps only the latest matured deploys)
   is trained on the deploys matured by the cutoff (the first two thirds of the days), and the suspect
   model (lag densities, background rate, flip priors, rollback ratio) is learned from the history
   before the cutoff only;
2. every incident after the cutoff (or a seeded random ``--sample``) is asked about as it opens
   (``as_of`` = its time: no rollback known yet), through ``models.scoring.suspects`` exactly as the
   service does;
3. top-1, top-3 and mean reciprocal rank of the true cause among change-caused incidents, against
   baselines computed in the same run on the same incidents: "latest change of the service"
   (deploy or flip; deploys at their finish, and with deploys still rolling out counted), "latest
   production deploy of the service", and DevLake's rule as the project ships it
   (``AttributionConfig.devlake()``: latest production deploy before the incident in the whole
   project); ablations (no prior, no lag shape, deploys counted from their finish, asked 1 h later,
   squad-mates as dependencies); and oracle rows from the simulator's truth: its true risk as prior,
   its true risk and lag law (own service), and the Bayes ceiling (true risk, lag laws and second
   incidents on squad-mates);
4. background incidents: per method, the share whose top answer is "no recent change".

Latency: ``POST /v1/incidents/suspects`` in process (TestClient) on the first seed's history, after
one warm-up pass over the questions. Each seed's peak RSS and run facts are printed (and saved).

    .venv/bin/python benchmarks/suspects.py                       # 180 days, 60 services, seeds 0-2
    .venv/bin/python benchmarks/suspects.py --deploys-per-service-day 6 --no-latency --save out6/
    .venv/bin/python benchmarks/suspects.py --days 180 --services 4000 --seeds 1 --no-latency \
        --train-max 200000 --sample 3000 --save out1m/                                     # ~1.07M deploys
    .venv/bin/python benchmarks/suspects.py --first-seed 1 --seeds 1 --no-latency --save out/   # seeds apart,
    .venv/bin/python benchmarks/suspects.py --aggregate out/                                   # then together
"""

from __future__ import annotations

import argparse
import json
import resource
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
from features.labels.suspects import (  # noqa: E402
    ChangeIndex,
    LagDensity,
    SuspectConfig,
    SuspectModel,
    change_times,
    latest_change,
    learn_suspect_model,
    rank_suspects,
    rollbacks_of,
)
from features.pointintime.compute import FeatureConfig  # noqa: E402
from features.simulation.simulator import (  # noqa: E402
    SimulatedHistory,
    SimulationConfig,
    _incident_lag,
    _lognormal_seconds,
    simulate,
)
from models.scoring.context import ModelBundle, ModelInfo, build_feature_index, make_bundle  # noqa: E402
from models.scoring.suspects import SuspectContext, build_suspect_context  # noqa: E402
from models.training.config import TrainConfig  # noqa: E402
from models.training.dataset import build_training_table  # noqa: E402
from models.training.estimators import RiskModel  # noqa: E402
from models.training.train import LABEL, TrainingTable, make_classifier  # noqa: E402

HGB = {"learning_rate": 0.08, "max_leaf_nodes": 15, "max_iter": 150, "min_samples_leaf": 40, "l2_regularization": 1.0}
LOGREG = {"C": 1.0}
HOUR_US = 3_600_000_000
BASELINES = (
    "latest change",
    "latest change, in-flight deploys included",
    "latest deploy (service)",
    "DevLake (project)",
)
METHODS = (
    "posterior",
    "posterior, no prior",
    "posterior, no lag shape",
    "posterior, deploys from their finish (before this change)",
    "posterior, asked 1 h later",
    "posterior, squad-mates as dependencies",
    "oracle prior (the simulator's true risk)",
    "oracle prior and lag, own service",
    "oracle prior and lag, own service and squad-mates (Bayes ceiling)",
    *BASELINES,
)


@dataclass
class Setup:
    sim: SimulatedHistory
    config: SimulationConfig
    ctx: SuspectContext
    finished: SuspectModel  # the same learning with deploys counted from their finish (the ablation)
    finished_changes: ChangeIndex
    bundle: ModelBundle
    cutoff: pd.Timestamp
    seconds: dict[str, float]
    training_rows: int


def _train_champion(table: TrainingTable, kind: str, train_max: int | None) -> tuple[RiskModel, int]:
    """The benchmark's champion: ``hgb`` (or ``logreg``) on the matured deploys, optionally only the latest
    ``train_max`` of them in time order (a 1M-deploy run on a shared machine)."""
    frame = table.frame if train_max is None else table.frame.tail(train_max)
    sub = replace(table, frame=frame.reset_index(drop=True))
    clf = make_classifier(kind, HGB if kind == "hgb" else LOGREG, sub, TrainConfig())  # type: ignore[arg-type]
    model = RiskModel(clf, n_splits=3).fit(frame[table.features], frame[LABEL].to_numpy(dtype=np.int64))
    return model, len(frame)


def setup(
    days: int,
    services: int,
    seed: int,
    deploys_per_service_day: float | None = None,
    kind: str = "hgb",
    train_max: int | None = None,
) -> Setup:
    secs: dict[str, float] = {}
    t = time.perf_counter()
    config = SimulationConfig(days=days, services=services, seed=seed)
    if deploys_per_service_day is not None:
        config = replace(config, deploys_per_service_day=deploys_per_service_day)
    sim = simulate(config)
    h = sim.history
    secs["simulate"] = time.perf_counter() - t
    start = h.deploys["created_at"].min()
    cutoff = start + pd.Timedelta(days=int(days * 2 / 3))
    attribution = AttributionConfig()
    features = FeatureConfig()

    t = time.perf_counter()
    table = build_training_table(h, attribution, features, as_of=cutoff).sorted()
    model, rows = _train_champion(table, kind, train_max)
    secs["train champion"] = time.perf_counter() - t

    t = time.perf_counter()
    past = attribute(h, attribution, as_of=cutoff)
    suspect_model = learn_suspect_model(h, past)
    finished = learn_suspect_model(h, past, SuspectConfig(deploy_time="finished"))
    full = attribute(h, attribution)
    bundle = make_bundle(model, ModelInfo("benchmark", "1"), {"feature_config": None})
    index = build_feature_index(h, full.deploy_labels, features)
    ctx = build_suspect_context(h, index, bundle.scorer, full, model=suspect_model)
    finished_changes = ChangeIndex.build(change_times(h, deploy_time="finished"), rollbacks_of(full, h))
    secs["learn + index"] = time.perf_counter() - t
    return Setup(sim, config, ctx, finished, finished_changes, bundle, cutoff, secs, rows)


def _rank_of(ids: list[str], truth: str) -> int | None:
    return ids.index(truth) + 1 if truth in ids else None


@dataclass(frozen=True)
class Oracle:
    """The simulator's own law of causes: each change's true risk, its lag laws and the squads.

    A deploy causes an incident on its own service after ``f1`` (from its creation: the simulator's clock),
    and, with ``second_share``, one more on a uniformly drawn service of its squad (itself included) after
    ``f2``; a flip only the first. Ranking by ``p x (f1 on its own service + second_share / squad size x f2)`` is
    the Bayes-optimal ranking from risk and lag; it leaves out only what other incidents tell (a change that
    already caused one cannot cause another on its own service)."""

    p: pd.Series
    f1: LagDensity
    f2: LagDensity
    second_share: float
    background_rate: float  # per service-hour
    squad_of: dict[str, str]
    squad_size: dict[str, int]
    mates: dict[str, tuple[str, ...]]
    changes: ChangeIndex  # every production change, deploys at their creation

    @classmethod
    def build(cls, s: SimulatedHistory, config: SimulationConfig, full_changes: pd.DataFrame) -> Oracle:
        rng = np.random.default_rng(12)
        n = 200_000
        lag1 = _incident_lag(rng, n)
        lag2 = lag1 + _lognormal_seconds(rng, n, 30 * 60, 0.8, 5 * 60, 6 * 3600)
        d = s.history.deploys
        squads = d.dropna(subset=["squad"]).drop_duplicates("service", keep="last").set_index("service")["squad"]
        members = squads.groupby(squads).apply(lambda x: tuple(str(v) for v in x.index))
        squad_of = {str(k): str(v) for k, v in squads.items()}
        created = d.set_index(d["deploy_id"].astype("string"))["created_at"]
        ch = full_changes.copy()
        is_deploy = ch["change_kind"].eq("deploy")
        ch.loc[is_deploy, "time"] = ch.loc[is_deploy, "change_id"].map(created)
        return cls(
            p=pd.concat(
                [
                    s.deploy_truth.set_index("deploy_id")["p_incident"],
                    s.toggle_truth.set_index("event_id")["p_incident"],
                ]
            ),
            f1=LagDensity.fit(lag1 / 3600.0, "truth"),
            f2=LagDensity.fit(lag2 / 3600.0, "truth"),
            second_share=config.second_incident_share,
            background_rate=config.background_incidents_per_service_day / 24.0,
            squad_of=squad_of,
            squad_size={str(k): len(v) for k, v in members.items()},
            mates={svc: tuple(m for m in members[squad_of[svc]] if m != svc) for svc in squad_of},
            changes=ChangeIndex.build(ch),
        )

    def rank(self, service: str, at: int, lookback: int, with_mates: bool) -> tuple[list[str], bool]:
        """(change ids by true intensity, whether the background's intensity beats the first)."""
        c = self.changes
        deps = {service: self.mates.get(service, ())} if with_mates else None
        pos, own = c.window(service, at, lookback, deps)
        p = self.p.reindex(c.change_id[pos]).fillna(0.0).to_numpy(dtype=np.float64)
        lag = (at - c.time[pos]) / 3.6e9
        second = np.zeros(len(pos))
        if with_mates:
            size = self.squad_size.get(self.squad_of.get(service, ""), 1)
            is_base_deploy = (c.kind[pos] == "deploy") & (c.action[pos] == "deploy")
            second = np.where(is_base_deploy, self.second_share / max(size, 1) * self.f2(lag), 0.0)
        w = p * (np.where(own, self.f1(lag), 0.0) + second)
        order = np.lexsort((-c.time[pos], -w))
        top_bg = len(w) == 0 or self.background_rate >= float(w.max())
        return [str(i) for i in c.change_id[pos][order]], top_bg


def evaluate(s: Setup, sample: int | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """One row per (incident, method): the true cause's rank (None: not among the answers) and whether the top
    answer was "no recent change". ``sample``: ask a seeded random sample of the incidents after the cutoff."""
    h, ctx = s.sim.history, s.ctx
    inc = h.incidents.merge(s.sim.incident_truth, on="incident_id")
    inc = inc[inc["created_at"] >= s.cutoff]
    asked_all = len(inc)
    if sample is not None and len(inc) > sample:
        inc = inc.sample(sample, random_state=s.config.seed)
    inc = inc.sort_values("created_at")
    t = time.perf_counter()
    devlake = attribute(h, AttributionConfig.devlake()).links
    devlake_cause = devlake.set_index("incident_id")["change_id"]
    d = h.deploys
    shipped = d[d["environment"].eq("production") & d["status"].isin(["success", "rolled_back"])]
    shipped = shipped.assign(t=shipped["finished_at"].fillna(shipped["created_at"])).sort_values("t")
    by_service = {
        str(k): (g["t"].to_numpy(dtype="datetime64[us]").astype(np.int64), g["deploy_id"].to_numpy(dtype=object))
        for k, g in shipped.groupby("service", sort=False)
    }
    flat = replace(ctx.model, lags={k: _flat() for k in ctx.model.lags})
    squads = d.dropna(subset=["squad"]).drop_duplicates("service", keep="last").groupby("squad")["service"].apply(list)
    mates = {svc: tuple(m for m in members if m != svc) for members in squads for svc in members}
    oracle = Oracle.build(s.sim, s.config, change_times(h))
    fin, fin_model = s.finished_changes, s.finished
    lookback = int(ctx.model.config.lookback / pd.Timedelta(microseconds=1))
    cause_service = pd.concat(
        [
            d.set_index(d["deploy_id"].astype("string"))["service"],
            h.toggle_events.set_index(h.toggle_events["event_id"].astype("string"))["service"],
        ]
    )
    secs_setup = time.perf_counter() - t
    rows: list[dict[str, Any]] = []
    t = time.perf_counter()
    for r in inc.itertuples():
        at = int(r.created_at.value // 1000)
        pos, own = ctx.changes.window(r.service, at, lookback, ctx.dependencies)
        prior = _priors(ctx.changes, ctx, pos)
        fpos, fown = fin.window(r.service, at, lookback)
        dpos, down = ctx.changes.window(r.service, at, lookback, mates)
        true_p = oracle.p.reindex(ctx.changes.change_id[pos]).to_numpy(dtype=np.float64)
        answers = {
            "posterior": rank_suspects(ctx.changes, pos, own, prior, ctx.model, at),
            "posterior, no prior": rank_suspects(ctx.changes, pos, own, np.full(len(pos), 0.05), ctx.model, at),
            "posterior, no lag shape": rank_suspects(ctx.changes, pos, own, prior, flat, at),
            "posterior, deploys from their finish (before this change)": rank_suspects(
                fin, fpos, fown, _priors(fin, ctx, fpos), fin_model, at
            ),
            "posterior, asked 1 h later": rank_suspects(ctx.changes, pos, own, prior, ctx.model, at, at + HOUR_US),
            "posterior, squad-mates as dependencies": rank_suspects(
                ctx.changes, dpos, down, _priors(ctx.changes, ctx, dpos), ctx.model, at
            ),
            "oracle prior (the simulator's true risk)": rank_suspects(ctx.changes, pos, own, true_p, ctx.model, at),
        }
        for name, ranking in answers.items():
            index = fin if "finish" in name else ctx.changes
            ids = [str(index.change_id[p]) for p in ranking.positions]
            rows.append(_row(r, name, ids, ranking.top_is_background))
        for name, with_mates in (
            ("oracle prior and lag, own service", False),
            ("oracle prior and lag, own service and squad-mates (Bayes ceiling)", True),
        ):
            ids, top_bg = oracle.rank(r.service, at, lookback, with_mates)
            rows.append(_row(r, name, ids, top_bg))
        times, deploy_ids = by_service.get(str(r.service), (np.array([], dtype=np.int64), np.array([], dtype=object)))
        k = int(np.searchsorted(times, at, side="left"))
        dl = devlake_cause.get(r.incident_id)
        for name, guess in (
            ("latest change", latest_change(fin, fpos, fown)),
            ("latest change, in-flight deploys included", latest_change(ctx.changes, pos, own)),
            ("latest deploy (service)", str(deploy_ids[k - 1]) if k else None),
            ("DevLake (project)", None if dl is None or pd.isna(dl) else str(dl)),
        ):
            rows.append(_row(r, name, [] if guess is None else [guess], guess is None))
    n = max(len(inc), 1)
    changed = inc[inc["cause_kind"].ne("background")]
    extra = {
        "incidents_after_cutoff": asked_all,
        "questions": len(inc),
        "seconds_per_question": (time.perf_counter() - t) / n,
        "evaluation_setup_seconds": secs_setup,
        "cause_outside_own_service": float(
            changed["cause_id"].astype("string").map(cause_service).ne(changed["service"]).fillna(True).mean()
        )
        if len(changed)
        else float("nan"),
    }
    return pd.DataFrame(rows), extra


def _row(r: Any, method: str, ids: list[str], top_background: bool) -> dict[str, Any]:
    rank = _rank_of(ids, r.cause_id) if r.cause_kind != "background" else None
    return {
        "incident_id": r.incident_id,
        "kind": r.cause_kind,
        "method": method,
        "rank": rank,
        "top_background": bool(top_background),
    }


def _priors(changes: ChangeIndex, ctx: SuspectContext, positions: np.ndarray) -> np.ndarray:
    """The champion's point-in-time score of each candidate deploy (NaN for flips), as the service computes it."""
    kinds, ids = changes.kind[positions], changes.change_id[positions]
    scores = [ctx.prior(str(i)).probability if k == "deploy" else np.nan for k, i in zip(kinds, ids, strict=True)]
    return np.array(scores, dtype=np.float64)


def _flat() -> LagDensity:
    """A lag density with no shape: equal likelihood for every lag in the look-back window."""
    grid = np.linspace(np.log(1e-3), np.log(24 * 30), 512)
    return LagDensity(grid, np.exp(grid), 0, "flat")  # g(log L) / L = 1 per hour


def summarise(ranks: pd.DataFrame) -> pd.DataFrame:
    """Top-1, top-3 and MRR over change-caused incidents; the share of background incidents answered
    "no recent change"."""
    out = []
    for method in METHODS:
        m = ranks[ranks["method"].eq(method)]
        if m.empty:
            continue
        caused = m[m["kind"].ne("background")]
        rank = caused["rank"].astype("Float64")
        bg = m.loc[m["kind"].eq("background"), "top_background"].astype(bool)
        out.append(
            {
                "method": method,
                "incidents": len(caused),
                "top1": float((rank == 1).fillna(False).mean()),
                "top3": float((rank <= 3).fillna(False).mean()),
                "mrr": float((1.0 / rank).fillna(0.0).mean()),
                "background": len(bg),
                "bg_no_recent_change": float(bg.mean()) if len(bg) else float("nan"),
            }
        )
    return pd.DataFrame(out)


def peak_rss_mb() -> float:
    """This process's peak resident set (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


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
    base = summary[summary["method"].isin(BASELINES)]
    best = base["top1"].max()
    post = summary.set_index("method").loc["posterior"]
    ratio = post["top1"] / best
    print(f"posterior top-1 / best baseline top-1 = {ratio:.3f} (bar 1.3); top-3 {post['top3']:.3f} (bar 0.85)")
    per_seed = both.groupby("seed").apply(
        lambda g: summarise(g).set_index("method").loc[["posterior", "latest change"], ["top1", "top3"]].stack()
    )
    print("\nper seed:")
    print(per_seed.round(3).to_string())
    for kind in ("deploy", "toggle"):
        k = summarise(both[both["kind"].isin([kind, "background"])])
        print(f"\n{kind}-caused incidents only:")
        print(k.round(3).to_string(index=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=180)
    parser.add_argument("--services", type=int, default=60)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument(
        "--deploys-per-service-day",
        type=float,
        default=None,
        help=f"The simulator's deploy rate (default {SimulationConfig().deploys_per_service_day}).",
    )
    parser.add_argument("--kind", choices=("hgb", "logreg"), default="hgb", help="The champion's model family.")
    parser.add_argument("--train-max", type=int, help="Train on only the latest N matured deploys (time order).")
    parser.add_argument("--sample", type=int, help="Ask a seeded random sample of N incidents after the cutoff.")
    parser.add_argument("--no-latency", action="store_true")
    parser.add_argument("--save", type=Path, help="Write each seed's ranks to DIR/ranks-<seed>.csv (and run facts).")
    parser.add_argument("--aggregate", type=Path, help="Only summarise the ranks saved in DIR (seeds run apart).")
    args = parser.parse_args()
    pd.set_option("display.width", 200)
    pd.set_option("display.max_colwidth", 70)
    if args.aggregate:
        report(pd.concat([pd.read_csv(f) for f in sorted(args.aggregate.glob("ranks-*.csv"))], ignore_index=True))
        return
    all_ranks = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        s = setup(args.days, args.services, seed, args.deploys_per_service_day, args.kind, args.train_max)
        ranks, extra = evaluate(s, args.sample)
        ranks = ranks.assign(seed=seed)
        all_ranks.append(ranks)
        facts = {
            "seed": seed,
            "days": args.days,
            "services": args.services,
            "deploys_per_service_day": s.config.deploys_per_service_day,
            "deploys": len(s.sim.history.deploys),
            "champion": args.kind,
            "training_rows": s.training_rows,
            **{f"seconds {k}": round(v, 1) for k, v in s.seconds.items()},
            **{k: round(v, 4) if isinstance(v, float) else v for k, v in extra.items()},
            "suspect_model": s.ctx.model.as_dict(),
        }
        print(f"\n## seed {seed}: {args.days} days x {args.services} services, {len(s.sim.history.deploys)} deploys")
        print(json.dumps({k: v for k, v in facts.items() if k != "suspect_model"}))
        print(summarise(ranks).round(3).to_string(index=False), flush=True)
        if seed == args.first_seed and not args.no_latency:
            facts["latency"] = latency(s)
            print("latency POST /v1/incidents/suspects:", {k: round(v, 2) for k, v in facts["latency"].items()})
        facts["peak_rss_mb"] = round(peak_rss_mb(), 1)
        print("peak RSS MB:", facts["peak_rss_mb"], flush=True)
        if args.save:
            args.save.mkdir(parents=True, exist_ok=True)
            ranks.to_csv(args.save / f"ranks-{seed}.csv", index=False)
            (args.save / f"facts-{seed}.json").write_text(json.dumps(facts, indent=1, default=str) + "\n")
    report(pd.concat(all_ranks, ignore_index=True))


if __name__ == "__main__":
    main()
