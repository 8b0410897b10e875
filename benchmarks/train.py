"""Training evidence on simulated history: champion vs oracle AUC, and where the flow's time goes.

1. Simulate a history, commit it to a fresh store (temporary home).
2. Labels + features + ``train`` as plain functions: the test ROC-AUC next to the oracle AUC of
   the simulator's true probabilities (``deploy_truth.p_incident``) on the same test deploys.
3. ``run_training`` without Prefect, then with Prefect: total time, the time of each step, and
   the MLflow (tracking, report, model logging, registry) and Prefect shares.

    .venv/bin/python -m benchmarks.train --days 90 --services 20
    .venv/bin/python -m benchmarks.train --days 180 --services 60        # the larger simulation
    .venv/bin/python -m benchmarks.train --sample data/sample            # the demo sample instead

With ``--baseline-tree DIR`` (a checkout of the previous code, e.g. ``git worktree add /tmp/base
9997acd``) the same benchmark first runs in a subprocess of that tree, and the report adds the
ratios of its step times to ours, measured minutes apart on the same machine. Peak RSS (this
process; the baseline subprocess's from its rusage) is reported for both, and
``peak_rss_mb_run_training`` is ``run_training``'s own peak: the plain functions' history, table and
result are freed and the peak window reset (Linux ``clear_refs``) before it starts
(``peak_rss_mb_plain`` is the peak before that).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sklearn.metrics import roc_auc_score
from threadpoolctl import threadpool_limits

from models.training.config import TrainConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--services", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sample", type=Path, default=None, help="ingest this sample's sources.yaml instead")
    parser.add_argument("--no-flow", action="store_true", help="skip the Prefect run")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--baseline-tree", type=Path, default=None, help="run the same benchmark in this checkout, first"
    )
    parser.add_argument("--threads", type=int, default=None, help="TrainConfig.n_threads (default: usable cores)")
    parser.add_argument("--search", choices=("halving", "grid"), default="halving")
    parser.add_argument("--no-early-stopping", action="store_true")
    parser.add_argument(
        "--no-halving-per-kind", action="store_true", help="TrainConfig.halving_per_kind=False: one ranking for all"
    )
    parser.add_argument(
        "--halving-min-rows",
        type=int,
        default=TrainConfig().halving_min_rows,
        help="TrainConfig.halving_min_rows: rows of the first rung's fits (default: the config's; 0: whole folds)",
    )
    args = parser.parse_args()
    baseline = run_baseline(args) if args.baseline_tree is not None else None

    from pipelines.settings import prepare_runtime, resolve_settings

    with tempfile.TemporaryDirectory() as tmp:
        settings = resolve_settings(Path(tmp) / "home")
        prepare_runtime(settings)
        report = run(settings, args)
    report["peak_rss_mb"] = max(peak_rss_mb(), report.get("peak_rss_mb_plain", 0.0))  # the phases' peaks
    if baseline is not None:
        report["baseline"] = baseline
        report["speedup_vs_baseline"] = speedups(baseline, report)
    print(json.dumps(report, indent=2))
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=2))


def run_baseline(args: argparse.Namespace) -> dict:
    """The same benchmark (same data arguments) in a subprocess of the baseline checkout."""
    tree = args.baseline_tree.resolve()
    command = [sys.executable, "-m", "benchmarks.train", "--days", str(args.days), "--services", str(args.services)]
    command += ["--seed", str(args.seed)]
    if args.sample is not None:
        command += ["--sample", str(args.sample.resolve())]
    if args.no_flow:
        command.append("--no-flow")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "baseline.json"
        started = time.perf_counter()
        env = {**os.environ, "PYTHONPATH": str(tree)}
        subprocess.run([*command, "--out", str(out)], cwd=tree, env=env, check=True, stdout=subprocess.DEVNULL)
        report = json.loads(out.read_text())
    report["seconds_benchmark"] = time.perf_counter() - started
    report["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    report["tree"] = str(tree)
    return report


def speedups(baseline: dict, ours: dict) -> dict[str, float]:
    """Baseline seconds / our seconds for the totals and each step both runs report."""
    out: dict[str, float] = {}
    for key in ("seconds_train_plain", "seconds_run_training_no_prefect", "seconds_run_training_prefect"):
        if baseline.get(key) and ours.get(key):
            out[key] = baseline[key] / ours[key]
    for step, seconds in ours.get("steps_no_prefect", {}).items():
        before = baseline.get("steps_no_prefect", {}).get(step)
        if before and seconds:
            out[f"step {step}"] = before / seconds
    return out


def progress_printer(stage: str):  # type: ignore[no-untyped-def]
    """Step lines on stderr with the elapsed time (stdout keeps only the JSON report)."""
    started = time.perf_counter()

    def say(message: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f}s] {stage}: {message}", file=sys.stderr, flush=True)

    return say


def reset_peak_rss() -> None:
    """Start a new peak-RSS window (Linux: writing 5 to clear_refs resets VmHWM), so a phase reports its own peak."""
    Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mb() -> float:
    """This process's peak RSS since the last ``reset_peak_rss`` (VmHWM), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def outside_steps(total: float, steps: dict[str, float]) -> float:
    """Seconds of a run spent outside its top-level steps (``train.*`` are parts of ``train``)."""
    return total - sum(seconds for name, seconds in steps.items() if "." not in name)


def run(settings, args) -> dict:  # type: ignore[no-untyped-def]
    from features.history.store import HistoryStore
    from features.labels.attribution import AttributionConfig
    from features.pointintime.compute import FeatureConfig
    from features.simulation.simulator import SimulationConfig, simulate
    from models.training.dataset import build_training_table
    from models.training.train import train
    from pipelines.flows.train import TrainOptions, run_training

    report: dict = {}
    truth = None
    say = progress_printer("data")
    started = time.perf_counter()
    if args.sample is not None:
        from pipelines.flows.ingest import run_ingest

        ingest = run_ingest(args.sample / "sources.yaml", settings.store_dir)
        if not ingest.ok:
            raise SystemExit(f"ingest failed: {ingest.error}")
        report["data"] = f"sample {args.sample}"
    else:
        sim = simulate(SimulationConfig(days=args.days, services=args.services, seed=args.seed))
        store = HistoryStore(settings.store_dir)
        h = sim.history
        with store.lock():
            store.commit({"deploys": h.deploys, "toggle_events": h.toggle_events, "incidents": h.incidents}, None, 0)
        truth = sim.deploy_truth.set_index("deploy_id")["p_incident"]
        report["data"] = f"simulate(days={args.days}, services={args.services}, seed={args.seed})"
    report["seconds_data"] = time.perf_counter() - started
    say(f"{report['data']} committed to the store; building labels and features")

    config = TrainConfig(
        seed=args.seed,
        n_threads=args.threads,
        search=args.search,
        early_stopping=not args.no_early_stopping,
        halving_min_rows=args.halving_min_rows or None,
        halving_per_kind=not args.no_halving_per_kind,
    )
    history = HistoryStore(settings.store_dir).read_history()
    started = time.perf_counter()
    table = build_training_table(history, AttributionConfig(), FeatureConfig())
    report["seconds_features"] = time.perf_counter() - started
    say(f"training table: {len(table.frame):,} labelled deploys")
    started = time.perf_counter()
    with threadpool_limits(limits=config.threads_for(len(table.frame))):
        result = train(table, config, progress=progress_printer("train (plain functions)"))
    report["seconds_train_plain"] = time.perf_counter() - started
    y = result.test_frame["label"].to_numpy()
    report["n_deploys"] = len(history.deploys)
    report["n_train"], report["n_test"] = result.n_train, result.n_test
    report["excluded"] = table.excluded
    report["test_failure_rate"] = float(y.mean())
    report["chosen"] = result.chosen.name
    report["chosen_n_iter"] = result.chosen.n_iter
    report["threads"] = config.threads_for(len(table.frame))
    report["fold_fits"] = sum(len(c.fold_metrics) for c in result.candidates)
    report["fold_rows"] = sum(sum(c.fold_rows) for c in result.candidates)
    report["importance_rows"] = result.importance_rows
    report["calibration"] = result.calibration
    report["test"] = result.test_metrics
    report["baselines"] = result.baseline_metrics
    if truth is not None:
        oracle = roc_auc_score(y, truth.reindex(result.test_frame["deploy_id"]).to_numpy())
        report["oracle_roc_auc"] = oracle
        report["roc_auc_share_of_oracle"] = result.test_metrics["roc_auc"] / oracle

    options = TrainOptions(train=config, experiment="benchmark")
    del history, table, result, truth, y  # run_training reads the store itself, as the product does
    gc.collect()
    report["peak_rss_mb_plain"] = peak_rss_mb()  # simulation, features and the plain functions
    reset_peak_rss()
    started = time.perf_counter()
    plain = run_training(settings, options, progress=progress_printer("run_training"), orchestrate=False)
    report["seconds_run_training_no_prefect"] = time.perf_counter() - started
    report["peak_rss_mb_run_training"] = peak_rss_mb()
    report["steps_no_prefect"] = plain.seconds
    if not args.no_flow:
        started = time.perf_counter()
        flowed = run_training(settings, options, progress=progress_printer("train flow"), orchestrate=True)
        report["seconds_run_training_prefect"] = time.perf_counter() - started
        report["steps_prefect"] = flowed.seconds
        # Prefect's cost is the time it adds around the same steps (server start, flow and task runs);
        # the difference of the two totals would also carry the steps' own run-to-run noise.
        report["prefect_overhead_seconds"] = outside_steps(
            report["seconds_run_training_prefect"], flowed.seconds
        ) - outside_steps(report["seconds_run_training_no_prefect"], plain.seconds)
    report["mlflow_seconds"] = plain.seconds.get("mlflow")
    return report


if __name__ == "__main__":
    main()
