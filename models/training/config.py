"""Typed training configuration: candidates, search grid, calibration, bands, promotion gate.

Everything that changes a training result lives here and is logged whole as MLflow params, so two
runs with equal configs and equal data give equal metrics.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from features.history.choices import check_choice, choices_of

ModelKind = Literal["logreg", "hgb"]
#: A metric of ``models.training.evaluation.evaluate``; the gate and the search compare on one.
Metric = Literal[
    "roc_auc",
    "pr_auc",
    "brier",
    "log_loss",
    "ece",
    "recall_at_5pct",
    "recall_at_10pct",
    "recall_at_20pct",
    "recall_at_20pct_effort",
    "popt",
]
#: Keys of every metrics dict, in report order (the --metrics-out contract).
METRIC_KEYS: tuple[Metric, ...] = choices_of(Metric)  # type: ignore[assignment]
#: Risk bands, lowest first.
Band = Literal["low", "medium", "high"]
#: How the risk score is calibrated: chosen on held-out folds ("auto") or fixed.
CalibrationMethod = Literal["auto", "isotonic", "sigmoid"]
#: How candidates are searched: every candidate on every fold ("grid"), or successive halving
#: over the time-ordered folds ("halving": losers of the early, cheap folds stop there).
SearchStrategy = Literal["halving", "grid"]
#: How the gate weighs a challenger against the champion (``GateConfig.rule``).
GateRule = Literal["margin", "paired"]


@dataclass(frozen=True)
class CandidateGrid:
    """One model family and the hyperparameter values searched for it (the Cartesian product)."""

    kind: ModelKind
    grid: tuple[tuple[str, tuple[Any, ...]], ...]

    def __post_init__(self) -> None:
        check_choice("candidate kind", self.kind, ModelKind)

    def expand(self) -> list[dict[str, Any]]:
        names = [name for name, _ in self.grid]
        return [dict(zip(names, values, strict=True)) for values in itertools.product(*(v for _, v in self.grid))]


def default_candidates() -> tuple[CandidateGrid, ...]:
    """A small grid: regularisation and class weights for the linear model, depth/rate for trees.

    Class weights are searched for the linear model only: they trade calibration for a little
    recall on rare failures, calibration undoes the probability shift, and the time-ordered
    validation decides whether the ranking gains anything.
    """
    return (
        CandidateGrid("logreg", (("C", (0.01, 0.1, 1.0)), ("class_weight", (None, "balanced")))),
        CandidateGrid(
            "hgb",
            (
                ("learning_rate", (0.05, 0.1)),
                ("max_leaf_nodes", (7, 15)),
                ("max_iter", (150,)),
                ("min_samples_leaf", (40,)),
                ("l2_regularization", (1.0,)),
            ),
        ),
    )


@dataclass(frozen=True)
class GateConfig:
    """When a challenger may replace the champion.

    The challenger must reach the minimum quality on the test period and beat the champion,
    re-scored on the same test period, by ``margin`` on ``metric``.
    """

    metric: Metric = "roc_auc"
    margin: float = 0.005
    min_roc_auc: float = 0.6
    min_pr_auc_lift: float = 1.1  # PR-AUC over the test failure rate (a random score has lift 1)
    max_ece: float = 0.1
    promote_when_champion_unscorable: bool = True
    #: The champion is compared only on test deploys after both models' training ends (it has seen
    #: the earlier ones); fewer than this many, or only one outcome among them: no comparison.
    min_comparison_rows: int = 50
    #: "margin": promote when the challenger beats the champion by ``margin`` on ``metric`` (the nightly
    #: training). "paired" (the monitor's retrain): promote when a paired DeLong test on the comparison
    #: deploys says the challenger ranks better, one-sided at ``alpha``; ``metric`` must be roc_auc.
    #: ``alpha`` 0.5 asks only for z > 0: better on the same deploys, a tie keeps the champion (the
    #: monitor's follow-ups).
    rule: GateRule = "margin"
    alpha: float = 0.05

    def __post_init__(self) -> None:
        check_choice("gate metric", self.metric, Metric)
        check_choice("gate rule", self.rule, GateRule)
        if self.rule == "paired" and self.metric != "roc_auc":
            raise ValueError(f"the gate's paired test compares roc_auc; rule 'paired' with metric {self.metric!r}")
        if not 0 < self.alpha <= 0.5:
            raise ValueError(f"the gate's alpha must be in (0, 0.5], got {self.alpha}")


@dataclass(frozen=True)
class TrainConfig:
    """How to select, calibrate and band a model from a time-ordered training table."""

    seed: int = 0
    n_splits: int = 4
    selection_metric: Metric = "roc_auc"
    candidates: tuple[CandidateGrid, ...] = field(default_factory=default_candidates)
    calibration: CalibrationMethod = "auto"
    min_isotonic_positives: int = 50
    high_share: float = 0.10
    medium_share: float = 0.20
    min_category_count: int = 5
    max_categories: int = 30
    permutation_repeats: int = 3
    #: Test rows sampled (seeded) for permutation importance; bounds its cost on large test periods.
    permutation_max_rows: int = 10_000
    min_train_rows: int = 50
    #: "halving": every candidate runs the first ``n_splits - 2`` folds, then only the best
    #: 1/``halving_factor`` (at least two) go on to each later fold; "grid": all folds for all.
    search: SearchStrategy = "halving"
    halving_factor: int = 3
    #: Rows as a second halving resource (scikit-learn's ``resource="n_samples"``): a fit of the
    #: first rung (the folds every candidate runs) trains on at most this many of the most recent
    #: rows of its fold's training period; later rungs train on whole periods, and once a candidate
    #: has run a whole fold only whole folds rank it and enter its mean (``halving.decisive_folds``),
    #: as calibration uses only whole folds. Only tables of more than 2.5x this many training rows
    #: are cut at all (the second fold trains on 2/5 of them). At 1M deploys 50,000 and 100,000 kept
    #: the same survivors and champion, and 50,000 took the first rung from 35 s to 21 s
    #: (docs/benchmarks.md). None: whole periods everywhere.
    halving_min_rows: int | None = 50_000
    #: Halving runs within each model kind (the best 1/``halving_factor`` of the kind, at least one,
    #: goes on) and the kinds' survivors meet on every fold. The early, small folds favour the
    #: model that learns fastest from few rows: at 1M deploys halving over all candidates together
    #: dropped every boosting candidate after folds 1-2, where the linear model led by 0.001-0.002,
    #: though boosting led on folds 2-4 and on the test period (99.2% of the oracle against 98.9%;
    #: docs/benchmarks.md). False: one ranking of all candidates.
    halving_per_kind: bool = True
    #: Boosting stops on each fold's validation period (HistGradientBoosting's ``early_stopping``,
    #: ``n_iter_no_change`` = 10); the final fit reuses the last fold's iteration count.
    early_stopping: bool = True
    #: OpenMP threads for a boosting fit of at least ``threads_min_rows`` rows; everything else
    #: (smaller fits, the linear model's BLAS, evaluation) uses one. None: the cores this process
    #: may run on. Small fits gain nothing from threads; on busy shared cores threaded
    #: HistGradientBoosting spun and ran 30x slower on them, and two BLAS threads made the linear
    #: model's fits slower, not faster, in our measurements.
    n_threads: int | None = None
    threads_min_rows: int = 50_000
    gate: GateConfig = field(default_factory=GateConfig)

    def __post_init__(self) -> None:
        check_choice("selection_metric", self.selection_metric, Metric)
        check_choice("calibration", self.calibration, CalibrationMethod)
        check_choice("search", self.search, SearchStrategy)
        if self.halving_factor < 2:
            raise ValueError(f"halving_factor must be at least 2, got {self.halving_factor}")
        if self.halving_min_rows is not None and self.halving_min_rows < 1:
            raise ValueError(f"halving_min_rows must be at least 1 (None: whole folds), got {self.halving_min_rows}")
        if self.n_threads is not None and self.n_threads < 1:
            raise ValueError(f"n_threads must be at least 1 (or None for every core), got {self.n_threads}")

    def threads_for(self, n_rows: int, kind: ModelKind = "hgb") -> int:
        """Threads for a ``kind`` fit on ``n_rows`` rows: ``n_threads`` for large boosting fits, else one."""
        if kind != "hgb" or n_rows < self.threads_min_rows:
            return 1
        return self.n_threads if self.n_threads is not None else usable_cores()

    def search_workers(self, n_rows: int) -> int:
        """Candidates fitted side by side (one thread each) on a search fold of ``n_rows`` training rows.

        The same rule as boosting's threads: the cores (``n_threads``) from ``threads_min_rows``
        rows, else one. Side by side, every fit uses both cores, the single-threaded linear ones
        included, and no OpenMP team waits on a busy core.
        """
        return self.threads_for(n_rows, "hgb")

    def as_params(self) -> dict[str, str]:
        """Flat ``section.key -> str`` for MLflow params (values stay readable, lists as text)."""
        return flatten(asdict(self))


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, which containers and taskset narrow)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def flatten(value: Any, prefix: str = "") -> dict[str, str]:
    """Nested dicts to dotted keys; leaves rendered with ``str``."""
    if isinstance(value, dict):
        out: dict[str, str] = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, dict) for v in value):
        out = {}
        for i, v in enumerate(value):
            out.update(flatten(v, f"{prefix}{i}."))
        return out
    return {prefix.rstrip("."): str(value)}
