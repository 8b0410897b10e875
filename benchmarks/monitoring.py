"""Monitoring evidence on simulated drift: when the decay alarm fires, and whether retraining recovers.

For each seed, two simulations that differ only by a change of the true hazard at ``--drift-day``
(features/simulation/drift.py; the undrifted twin shares every random draw):

1. A champion is trained on what was known at ``--train-day`` as the nightly deployment would
   (``recent_table``, its 180-day window, ``fit_models`` with the default ``TrainConfig``) and
   scores every production deploy from then on at its ship time: the prediction log an online
   service would have written.
2. Every ``--check-every`` days the monitor runs as the product's daily deployment with ``retrain:
   true`` would (``run_live``, the default): ``models.monitoring.assess`` of the *current* champion,
   on its own log (scored at ship time by it), labels as known that day, against its own training
   window and baseline. On the undrifted twin it must never fire (the twin only monitors). On a
   drifted run, each check its alarm fires (up to 21 days before the end) a challenger is trained
   as the monitor's retrain trains it (``retrain_options``, ``retrain_table``: at least
   ``--window-days`` of matured deploys, back to the onset placed on that champion's log unless
   ``--fixed-window``; ``fit_models``) and the retrain's gate (``RetrainConfig.gate``, ``--gate``)
   decides through the registry's own ``judge``; a promoted challenger serves from that day and is
   judged from then on, and, as the monitor's follow-ups do (``RetrainConfig.follow_change``; off
   with ``--no-follow``), is retrained from the onset it learnt from on every check, alarm or not,
   while that onset is under ``--follow-days`` (180) old. Reported: the final champion, stale model
   and oracle on the matured deploys after the last retrain, and prequentially (every matured
   post-change deploy scored by the champion live when it shipped).
3. ``--capped``: the benchmark before 2026-12-06 (sixth round). The stale model's log only; on its
   first alarm a challenger is trained, and ``--retrains N``: weekly after it; the gate decides
   (``--gate margin --exact-baseline --no-expected-auc`` for the earlier figures); the stale model,
   the kept champion and the oracle are scored on every deploy after the last retrain.

    .venv/bin/python -m benchmarks.monitoring --seeds 0 1 2 --check-every 2 --window-days 30 --twin-all-days
    .venv/bin/python -m benchmarks.monitoring --seeds 0 --capped --retrains 4 --gate margin \
        --exact-baseline --no-expected-auc
    .venv/bin/python -m benchmarks.monitoring --seeds 0 --kind squad --days 240 --services 40
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd


def _say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


#: The nightly deployment's rolling window (``scheduled_train``): the champion is what it would have trained.
NIGHTLY_WINDOW_DAYS = 180.0


def _stamped(result: Any) -> Any:
    """The model records its training period as the registry's copy does, so the gate (``judge``) reads it."""
    period = {"start": result.split["train_start"], "end": result.split["train_end"]}
    result.model.set_params(metadata={**(result.model.metadata or {}), "training_period": period})
    return result


def _fit(table: Any, options: Any) -> Any:
    """``fit_models``: the training flow's search, calibration and test period, the default ``TrainConfig``."""
    from pipelines.flows.train import fit_models

    return _stamped(fit_models(table, options, lambda _m: None))


def _bundle(result: Any, version: str) -> Any:
    from models.scoring.context import ModelInfo, make_bundle

    return make_bundle(result.model, ModelInfo("benchmark", version, metrics=dict(result.test_metrics)))


def predictions_of(history: Any, labels: pd.DataFrame, bundle: Any, start: pd.Timestamp) -> pd.DataFrame:
    """The log an online service would have written: every production deploy from ``start``, scored at ship time."""
    from models.monitoring.predlog import records_frame
    from models.scoring.context import make_scoring_context
    from models.scoring.explain import batch_features

    deploys = history.deploys
    keep = (deploys["environment"].astype("string") == "production").to_numpy(dtype=bool) & (
        pd.to_datetime(deploys["created_at"], utc=True) >= start
    ).to_numpy()
    entities = deploys[keep].reset_index(drop=True)
    features, _ = batch_features(entities, make_scoring_context(bundle, history, 0, labels))
    p = bundle.model.predict_proba(features)[:, 1]
    bands = bundle.scorer.bands(p)
    cols = list(bundle.scorer.features)
    rows = features[cols].astype(object).where(features[cols].notna(), None).to_dict("records")
    at = pd.to_datetime(entities["created_at"], utc=True)
    records = [
        {
            "prediction_id": f"p{i}",
            "logged_at": at.iloc[i],
            "deploy_id": str(entities["deploy_id"].iloc[i]),
            "has_deploy_id": True,
            "commit_sha": entities["commit_sha"].iloc[i],
            "service": entities["service"].iloc[i],
            "squad": entities["squad"].iloc[i],
            "tribe": entities["tribe"].iloc[i],
            "author": entities["author"].iloc[i],
            "planned_at": at.iloc[i],
            "probability": float(p[i]),
            "band": str(bands[i]),
            "model_name": "benchmark",
            "model_version": bundle.info.version,
            "feature_set_version": "pit-1",
            "store_version": 0,
            "caller": "benchmark",
            "features": json.dumps(rows[i], default=float),
        }
        for i in range(len(entities))
    ]
    return records_frame(records)


def day_block_se(done: pd.DataFrame, end: pd.Timestamp, days: int, n_boot: int, seed: int = 0) -> float:
    """Diagnostic: the window's AUC standard error when whole days are resampled (labels of a day share incidents)."""
    from models.training.evaluation import rank_auc

    t = pd.to_datetime(done["planned_at"], utc=True)
    w = done[((t > end - pd.Timedelta(days=days)) & (t <= end)).to_numpy()]
    if len(w) == 0:
        return float("nan")
    day_of = pd.to_datetime(w["planned_at"], utc=True).dt.floor("D").to_numpy()
    groups = [np.flatnonzero(day_of == d) for d in np.unique(day_of)]
    y, p = w["label"].to_numpy(dtype=np.int64), w["probability"].to_numpy(dtype=np.float64)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        idx = np.concatenate([groups[i] for i in rng.integers(0, len(groups), len(groups))])
        values.append(rank_auc(y[idx], p[idx]))
    return float(np.nanstd(values, ddof=1))


def labels_as_of(final: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    """Labels as known at ``as_of``: a label final by then is the final label (that is what maturity means)."""
    out = final.copy()
    out["mature"] = (pd.to_datetime(out["matured_at"], utc=True) <= as_of).fillna(False)
    return out


def _retrain(args: argparse.Namespace, history: Any, final: pd.DataFrame, sim: Any, preds: pd.DataFrame,
             champion: Any, first_alarm: int, day: Any, reference: Any, alarm_cfg: Any) -> dict[str, Any]:  # fmt: skip
    """Retrain on the first alarm (and weekly after it, ``--retrains``), the gate deciding each time; then
    score the stale model, the champion the gates kept and the oracle on every deploy after the last retrain."""
    from models.monitoring.assess import assess
    from models.scoring.context import make_scoring_context
    from models.scoring.explain import batch_features
    from models.training.evaluation import rank_auc
    from pipelines.flows.monitor import RetrainConfig, retrain_options

    retraining = RetrainConfig(window_days=args.window_days, from_onset=not args.fixed_window, gate_rule=args.gate)

    current, current_name, gates = champion, "stale", []
    last = first_alarm
    for k in range(args.retrains):
        rday = first_alarm + 7 * k
        if rday > args.days - 21:
            break
        options = retrain_options(day(rday), config=retraining)
        # the onset as the monitor would place it that day (None when the stale model's alarm is quiet)
        onset = assess(preds, labels_as_of(final, day(rday)), history.deploys, reference, alarm_cfg, day(rday)).onset
        table, challenger, verdict = _challenge(history, options, retraining, onset, current_name, current.model)
        decision = verdict.decision
        gates.append(
            {
                "day": rday,
                "promote": decision.promote,
                "reason": decision.reason,
                "onset": None if onset is None else str(onset),
                "rows_from": str(pd.to_datetime(table.frame["created_at"], utc=True).min()),
                "train_rows": challenger.n_train,
                "test_rows": challenger.n_test,
                "chosen": challenger.chosen.name,
            }
        )
        _say(f"retrain day {rday}: onset {onset}, {challenger.n_train} rows; {decision.reason}")
        if decision.promote:
            current, current_name = challenger, f"retrained day {rday}"
        last = rday
    after = preds[pd.to_datetime(preds["planned_at"], utc=True) > day(last)]
    lab = final.set_index("deploy_id").reindex(after["deploy_id"].astype(str))
    keep = (lab["eligible"].fillna(False) & lab["mature"].fillna(False)).to_numpy(dtype=bool)
    ids = after["deploy_id"].astype(str).to_numpy()[keep]
    y = lab["failed"].to_numpy(dtype=bool)[keep].astype(int)
    stale_p = after["probability"].to_numpy()[keep]
    sub = history.deploys.set_index("deploy_id").loc[ids].reset_index()
    feats, _ = batch_features(sub, make_scoring_context(_bundle(current, "2"), history, 0, final))
    kept_p = current.model.predict_proba(feats)[:, 1]
    truth = sim.deploy_truth.set_index("deploy_id").loc[ids, "p_incident"].to_numpy()
    oracle, stale, kept = rank_auc(y, truth), rank_auc(y, stale_p), rank_auc(y, kept_p)
    _say(f"after retraining: oracle {oracle:.3f}, stale {stale:.3f}, {current_name} {kept:.3f}")
    return {
        "first_day": first_alarm,
        "last_day": last,
        "window_days": args.window_days,
        "from_onset": retraining.from_onset,
        "gates": gates,
        "champion": current_name,
        "eval_deploys": int(len(y)),
        "eval_failures": int(y.sum()),
        "oracle_auc": oracle,
        "stale_auc": stale,
        "champion_auc": kept,
        "stale_share_of_oracle": stale / oracle,
        "champion_share_of_oracle": kept / oracle,
    }


def _challenge(
    history: Any, options: Any, retraining: Any, onset: pd.Timestamp | None, champion_name: str, champion_model: Any
) -> tuple[Any, Any, Any]:
    """A retrain as the monitor trains it (``retrain_table``, ``fit_models``) and the gate's ``judge`` against
    the champion on the test deploys after both training ends: (table, challenger, verdict)."""
    from models.registry.gate import ChampionInfo, judge
    from models.training.train import EFFORT, LABEL
    from pipelines.flows.monitor import retrain_table

    table = retrain_table(history, options, retraining, onset)
    challenger = _fit(table, options)
    test = challenger.test_frame
    y_test = test[LABEL].to_numpy(dtype=np.int64)
    effort = test[EFFORT].to_numpy(dtype=np.float64, na_value=np.nan) if EFFORT in test else None
    verdict = judge(
        ChampionInfo(champion_name, champion_model, ""),
        challenger.test_metrics,
        test,
        y_test,
        effort,
        options.train.gate,
        challenger.test_scores,
        pd.Timestamp(challenger.split["train_end"]),
    )
    return table, challenger, verdict


def _champion(
    result: Any, name: str, since: int, history: Any, final: pd.DataFrame, day: Any, onset: Any = None
) -> dict[str, Any]:
    """A model as the product serves it from day ``since``: its bundle, the log it writes from then on
    (scored at ship time by it), its own reference (its training window), which its monitor judges, and
    the onset it was retrained from (the registry's ``retrain_onset`` tag, which the follow-ups read)."""
    from models.monitoring.assess import reference_of
    from models.scoring.context import make_scoring_context

    bundle = _bundle(result, name)
    period = result.split
    reference = reference_of(
        make_scoring_context(bundle, history, 0, final),
        pd.Timestamp(period["train_start"]),
        pd.Timestamp(period["train_end"]),
    )
    return {
        "name": name,
        "result": result,
        "since": since,
        "preds": predictions_of(history, final, bundle, day(since)),
        "reference": reference,
        "first_alarm": None,
        "onset": onset,
    }


def _scored_by(champions: list[dict[str, Any]], day: Any) -> pd.DataFrame:
    """Each deploy's score from the champion live when it shipped (the prequential log)."""
    parts = []
    for i, c in enumerate(champions):
        t = pd.to_datetime(c["preds"]["planned_at"], utc=True)
        keep = t >= day(c["since"])
        if i + 1 < len(champions):
            keep &= t < day(champions[i + 1]["since"])
        parts.append(c["preds"][keep.to_numpy()].assign(champion=c["name"]))
    return pd.concat(parts, ignore_index=True)


def _aucs(frame: pd.DataFrame, final: pd.DataFrame, sim: Any, stale: pd.DataFrame) -> dict[str, Any]:
    """Oracle, stale model and ``frame``'s scores on its matured, eligible deploys."""
    from models.training.evaluation import rank_auc

    lab = final.set_index("deploy_id").reindex(frame["deploy_id"].astype(str))
    keep = (lab["eligible"].fillna(False) & lab["mature"].fillna(False)).to_numpy(dtype=bool)
    ids = frame["deploy_id"].astype(str).to_numpy()[keep]
    y = lab["failed"].to_numpy(dtype=bool)[keep].astype(int)
    truth = sim.deploy_truth.set_index("deploy_id").loc[ids, "p_incident"].to_numpy()
    stale_p = stale.set_index("deploy_id").loc[ids, "probability"].to_numpy(dtype=np.float64)
    oracle, st, mine = rank_auc(y, truth), rank_auc(y, stale_p), rank_auc(y, frame["probability"].to_numpy()[keep])
    return {
        "deploys": int(len(y)),
        "failures": int(y.sum()),
        "oracle_auc": oracle,
        "stale_auc": st,
        "champion_auc": mine,
        "stale_share_of_oracle": st / oracle,
        "champion_share_of_oracle": mine / oracle,
    }


def run_live(
    args: argparse.Namespace,
    seed: int,
    kind: str | None,
    sim: Any,
    final: pd.DataFrame,
    day: Any,
    champion: Any,
    alarm_cfg: Any,
) -> dict[str, Any]:
    """The product's daily monitor with ``retrain: true``: each check judges the *current* champion on its own
    log against its own reference and baseline; on each day its alarm fires (a drifted run, up to 21 days
    before the end) a challenger is trained from the onset placed on that champion's log and the retrain's
    gate (``RetrainConfig.gate``) decides; a promoted challenger serves, and is judged, from that day on."""
    from models.monitoring.assess import assess
    from pipelines.flows.monitor import RetrainConfig, retrain_options

    history = sim.history
    retraining = RetrainConfig(window_days=args.window_days, from_onset=not args.fixed_window, gate_rule=args.gate,
                               follow_change=not args.no_follow, follow_gate_alpha=args.follow_alpha,
                               follow_days=args.follow_days)  # fmt: skip
    champions = [_champion(champion, "stale", args.train_day, history, final, day)]
    daily: list[dict[str, Any]] = []
    gates: list[dict[str, Any]] = []
    first_alarm: int | None = None
    retrain_until = args.days - 21
    for d in range(args.train_day + args.first_check, args.days + 1, args.check_every):
        cur = champions[-1]
        try:
            a = assess(cur["preds"], labels_as_of(final, day(d)), history.deploys, cur["reference"], alarm_cfg, day(d))
        except ValueError:
            continue  # a new champion's log has no matured label yet
        daily.append(
            {
                "day": d,
                "champion": cur["name"],
                "n": a.latest["n"],
                "auc": a.latest["roc_auc"],
                "auc_se": a.latest.get("roc_auc_se", float("nan")),
                "baseline": a.extra["baseline_auc"],
                "baseline_se": a.extra.get("baseline_se"),
                "baseline_source": a.extra.get("baseline_source"),
                "firing": a.alarm.firing,
                "reasons": list(a.alarm.reasons),
            }
        )
        if a.alarm.firing:
            if cur["first_alarm"] is None:
                cur["first_alarm"] = d
                _say(f"seed {seed} {kind or 'no drift'}: {cur['name']}'s alarm on day {d}: "
                     f"{'; '.join(a.alarm.reasons)}")  # fmt: skip
            if first_alarm is None:
                first_alarm = d
        # the monitor's follow-up: a champion retrained from a young onset is retrained from it, alarm or not
        follow = retraining.follows(cur["onset"], day(d))
        if not (a.alarm.firing or follow):
            continue
        retrain = kind is not None and args.retrains != 0 and d <= retrain_until
        if not retrain:
            if not a.alarm.firing or args.all_days or (kind is None and args.twin_all_days):
                continue
            break
        trigger = "follow-up" if follow else "alarm"
        options = retrain_options(day(d), config=retraining, follow_up=follow)
        onset = cur["onset"] if follow else a.onset  # the recorded onset, or the one placed on this champion's log
        table, challenger, verdict = _challenge(history, options, retraining, onset, cur["name"], cur["result"].model)
        decision = verdict.decision
        gates.append(
            {
                "day": d,
                "champion": cur["name"],
                "trigger": trigger,
                "onset": None if onset is None else str(onset),
                "onset_from": "recorded" if follow else cur["name"],
                "rows_from": str(pd.to_datetime(table.frame["created_at"], utc=True).min()),
                "train_rows": challenger.n_train,
                "compared": None if verdict.period is None else verdict.period.n,
                "promote": decision.promote,
                "reason": decision.reason,
            }
        )
        _say(f"retrain day {d} ({trigger}, judging {cur['name']}, onset {onset}): {challenger.n_train} rows; "
             f"{decision.reason}")  # fmt: skip
        if decision.promote:
            recorded = onset if retraining.from_onset else None  # the registry's retrain_onset tag
            champions.append(_champion(challenger, f"retrained day {d}", d, history, final, day, recorded))
    out: dict[str, Any] = {
        "first_alarm": first_alarm,
        "daily": daily,
        "gates": gates,
        "champions": [{"name": c["name"], "since": c["since"], "first_alarm": c["first_alarm"]} for c in champions],
    }
    if kind is None or not gates:
        return out
    stale = champions[0]["preds"]
    last = max(g["day"] for g in gates)
    final_log = champions[-1]["preds"]
    after = final_log[pd.to_datetime(final_log["planned_at"], utc=True) > day(last)]
    prequential = _scored_by(champions, day)
    post = prequential[pd.to_datetime(prequential["planned_at"], utc=True) >= day(args.drift_day)]
    out["retrain"] = {
        "last_day": last,
        "retrains": len(gates),
        "promoted": [g["day"] for g in gates if g["promote"]],
        "champion": champions[-1]["name"],
        "final": _aucs(after, final, sim, stale),
        "prequential": _aucs(post, final, sim, stale),
    }
    fin, pre = out["retrain"]["final"], out["retrain"]["prequential"]
    share = "champion_share_of_oracle"
    _say(f"seed {seed}: final {fin[share]:.1%} (stale {fin['stale_share_of_oracle']:.1%}), "
         f"prequential {pre[share]:.1%} (stale {pre['stale_share_of_oracle']:.1%})")  # fmt: skip
    return out


def _day_se(a: Any, alarm_cfg: Any, n_boot: int) -> float:
    from models.monitoring.outcomes import matured

    done = matured(a.joined)
    if done.empty:
        return float("nan")
    end = min(a.as_of, pd.to_datetime(done["planned_at"], utc=True).max())
    return day_block_se(done, end, alarm_cfg.window.days, n_boot)


def run_one(args: argparse.Namespace, seed: int, kind: str | None) -> dict[str, Any]:
    from features.labels.attribution import AttributionConfig, attribute
    from features.simulation.drift import drifted_config
    from features.simulation.simulator import SimulationConfig, simulate
    from models.monitoring.alarms import AlarmConfig
    from models.monitoring.assess import assess, reference_of
    from models.monitoring.outcomes import WindowConfig
    from models.scoring.context import make_scoring_context
    from pipelines.flows.deployments import recent_table
    from pipelines.flows.train import TrainOptions

    config = SimulationConfig(days=args.days, services=args.services, seed=seed)
    if kind is not None:
        config = drifted_config(config, kind, args.drift_day)
    began = time.perf_counter()
    sim = simulate(config)
    history = sim.history
    start = pd.Timestamp(config.start, tz="UTC").floor("D")
    day = lambda d: start + pd.Timedelta(days=d)  # noqa: E731
    final = attribute(history, AttributionConfig()).deploy_labels
    nightly = TrainOptions(as_of=day(args.train_day))
    champion = _fit(recent_table(history, nightly, NIGHTLY_WINDOW_DAYS), nightly)
    bundle = _bundle(champion, "1")
    _say(f"seed {seed} {kind or 'no drift'}: champion test AUC {champion.test_metrics['roc_auc']:.3f}")
    preds = predictions_of(history, final, bundle, day(args.train_day))
    period = champion.split
    reference = reference_of(
        make_scoring_context(bundle, history, 0, final),
        pd.Timestamp(period["train_start"]),
        pd.Timestamp(period["train_end"]),
    )
    alarm_cfg = replace(AlarmConfig(), window=WindowConfig(max_windows=1, n_boot=args.n_boot))
    if args.per_look_alarm:
        alarm_cfg = replace(alarm_cfg, false_alarm_rate=None, baseline_windows=None)
    elif args.exact_baseline:
        alarm_cfg = replace(alarm_cfg, baseline_windows=None)
    if args.no_expected_auc or args.per_look_alarm:
        alarm_cfg = replace(alarm_cfg, expected_auc_check=False)
    if not args.capped:
        live = run_live(args, seed, kind, sim, final, day, champion, alarm_cfg)
        first = live["first_alarm"]
        return {
            "seed": seed,
            "kind": kind or "none",
            "mode": "live",
            "drift_day": args.drift_day if kind else None,
            "champion_test_auc": champion.test_metrics["roc_auc"],
            "first_alarm_day": first,
            "days_after_change": None if first is None or kind is None else first - args.drift_day,
            "false_alarm": first is not None and (kind is None or first < args.drift_day),
            "days_checked": len(live["daily"]),
            "twin_fires": sum(r["firing"] for r in live["daily"]) if kind is None else None,
            **{k: v for k, v in live.items() if k != "first_alarm"},
            "seconds": time.perf_counter() - began,
        }
    daily = []
    first_alarm: int | None = None
    for d in range(args.train_day + args.first_check, args.days + 1, args.check_every):
        as_of = day(d)
        try:
            a = assess(preds, labels_as_of(final, as_of), history.deploys, reference, alarm_cfg, as_of)
        except ValueError:
            continue
        top = a.feature_psi.dropna(subset=["rank"])
        daily.append(
            {
                "day": d,
                "n": a.latest["n"],
                "auc": a.latest["roc_auc"],
                "auc_lo": a.latest["roc_auc_lo"],
                "auc_hi": a.latest["roc_auc_hi"],
                "auc_se": a.latest.get("roc_auc_se", float("nan")),
                "baseline": a.extra["baseline_auc"],
                "auc_se_days": _day_se(a, alarm_cfg, args.n_boot),
                "ece": a.latest["ece"],
                "ece_lo": a.latest["ece_lo"],
                "score_psi": a.score_psi,
                "top_psi": float(top[top["rank"] <= alarm_cfg.top_features]["psi"].max()),
                "drift": next(c.detail for c in a.alarm.checks if c.name == "drift"),
                "firing": a.alarm.firing,
                "reasons": list(a.alarm.reasons),
            }
        )
        if a.alarm.firing and first_alarm is None:
            first_alarm = d
            _say(f"seed {seed} {kind or 'no drift'}: alarm on day {d}: {'; '.join(a.alarm.reasons)}")
            if not (args.all_days or (kind is None and args.twin_all_days)):
                break
    out: dict[str, Any] = {
        "seed": seed,
        "kind": kind or "none",
        "drift_day": args.drift_day if kind else None,
        "champion_test_auc": champion.test_metrics["roc_auc"],
        "first_alarm_day": first_alarm,
        "days_after_change": None if first_alarm is None or kind is None else first_alarm - args.drift_day,
        "false_alarm": first_alarm is not None and (kind is None or first_alarm < args.drift_day),
        "days_checked": len(daily),
        "daily": daily,
    }
    if first_alarm is not None and kind is not None and args.retrains > 0:
        out["retrain"] = _retrain(args, history, final, sim, preds, champion, first_alarm, day, reference, alarm_cfg)
    out["seconds"] = time.perf_counter() - began
    return out


def main() -> None:
    from threadpoolctl import threadpool_limits

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--kind", default="shipping")
    parser.add_argument("--days", type=int, default=300)
    parser.add_argument("--services", type=int, default=60)
    parser.add_argument("--train-day", type=int, default=120)
    parser.add_argument("--drift-day", type=int, default=180)
    parser.add_argument("--first-check", type=int, default=14, help="days after --train-day of the first check")
    parser.add_argument("--window-days", type=float, default=30.0, help="the retrain's least window")
    parser.add_argument("--fixed-window", action="store_true", help="retrain on --window-days only, not from the onset")
    parser.add_argument(
        "--retrains",
        type=int,
        default=1,
        help="--capped: retrain on the alarm and weekly after it, N times; live: 0 turns retraining off",
    )
    parser.add_argument(
        "--capped",
        action="store_true",
        help="the benchmark before 2026-12-06 (sixth): the stale model's log only, --retrains weekly retrains",
    )
    parser.add_argument(
        "--gate",
        choices=("paired", "margin"),
        default="paired",
        help="live: the retrain's gate (RetrainConfig.gate_rule); --capped uses the margin gate",
    )
    parser.add_argument(
        "--exact-baseline",
        action="store_true",
        help="the alarm's baseline treated as exact (AlarmConfig.baseline_windows=None), the rule before",
    )
    parser.add_argument(
        "--no-expected-auc",
        action="store_true",
        help="the drift check without the expected-AUC condition (AlarmConfig.expected_auc_check=False)",
    )
    parser.add_argument(
        "--no-follow",
        action="store_true",
        help="live: no follow-up retrains after a promotion (RetrainConfig.follow_change=False), the rule before",
    )
    parser.add_argument("--follow-alpha", type=float, default=0.5,
                        help="live: a follow-up's gate alpha (RetrainConfig.follow_gate_alpha)")  # fmt: skip
    parser.add_argument("--follow-days", type=float, default=180.0,
                        help="live: days after the onset the follow-ups run (RetrainConfig.follow_days)")  # fmt: skip
    parser.add_argument("--n-boot", type=int, default=200)
    parser.add_argument("--check-every", type=int, default=1, help="days between monitor runs")
    parser.add_argument("--all-days", action="store_true", help="keep checking after the first alarm")
    parser.add_argument("--twin-all-days", action="store_true", help="the undrifted twin: every day's verdict")
    parser.add_argument("--per-look-alarm", action="store_true",
                        help="the drift check's rule before 2026-12-06: a 5%% test at each look")  # fmt: skip
    parser.add_argument("--only-drifted", action="store_true", help="skip the undrifted twin")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    results = []
    with threadpool_limits(1):
        for seed in args.seeds:
            for kind in (args.kind,) if args.only_drifted else (None, args.kind):
                results.append(run_one(args, seed, kind))
    summary = [{k: v for k, v in r.items() if k != "daily"} for r in results]
    print(json.dumps(summary, indent=2, default=str))
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(results, handle, indent=2, default=str)


if __name__ == "__main__":
    main()
