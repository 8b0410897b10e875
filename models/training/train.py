"""Training on a ready training table: time-ordered split, rolling-origin search, calibration, baselines.

Pure functions of (table, config): no MLflow, no Prefect, no files. ``train`` returns everything
the tracking, report and registry steps need, so they can be tested on their own.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from models.training.config import METRIC_KEYS, ModelKind, TrainConfig, usable_cores
from models.training.estimators import RiskClassifier, RiskModel, is_tree, rolling_origin_splits
from models.training.evaluation import LOWER_IS_BETTER, evaluate, metrics_by_group, permutation_importance
from models.training.halving import decisive_folds, rungs, successive_halving
from models.training.split import ID, TIME, Split, time_split
from models.training.transformers import signed_log1p

# Column names of a training table (the contract between the flow and models/; ID, TIME and
# MATURED are in models/training/split.py).
LABEL = "label"
EFFORT = "effort"  # lines to review (added + deleted); drives Recall@20%Effort and Popt
SIZE = "baseline_lines_added"  # lines added, for the change-size baseline (LApredict); not a feature
SERVICE = "service"
SERVICE_RATE = "service_failure_rate"  # a feature; also scored alone as a baseline
GROUPS = ("tribe", "squad")


@dataclass(frozen=True)
class TrainingTable:
    """Matured, labelled production deploys with point-in-time features, one row per deploy.

    ``frame`` holds ``deploy_id``, ``created_at`` (UTC), ``label`` (0/1), the feature columns and,
    where known, ``effort``, ``lines_added``, ``service``, ``matured_at``, ``tribe``, ``squad``.
    ``excluded`` counts rows left out upstream (e.g. immature labels) for the data summary.
    """

    frame: pd.DataFrame
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    excluded: dict[str, int] = field(default_factory=dict)
    label_rule: str = ""
    feature_set_version: str = ""

    def __post_init__(self) -> None:
        required = [ID, TIME, LABEL, *self.numeric, *self.categorical]
        missing = [c for c in required if c not in self.frame.columns]
        if missing:
            raise ValueError(f"training table lacks columns {missing}")
        overlap = set(self.numeric) & set(self.categorical)
        if overlap:
            raise ValueError(f"columns {sorted(overlap)} are both numeric and categorical")
        labels = set(pd.unique(self.frame[LABEL].dropna()).tolist())
        if not labels <= {0, 1}:
            raise ValueError(f"label must be 0/1, found {sorted(labels, key=str)[:5]}")
        if self.frame[LABEL].isna().any() or self.frame[TIME].isna().any():
            raise ValueError("training table rows need a label and a created_at")

    @property
    def features(self) -> list[str]:
        return [*self.numeric, *self.categorical]

    def sorted(self) -> TrainingTable:
        """Rows in time order (ties by deploy id), which every time-ordered step assumes."""
        frame = self.frame.sort_values([TIME, ID], kind="stable").reset_index(drop=True)
        return TrainingTable(
            frame, self.numeric, self.categorical, self.excluded, self.label_rule, self.feature_set_version
        )


def make_classifier(
    kind: ModelKind, params: dict[str, Any], table: TrainingTable, config: TrainConfig
) -> RiskClassifier:
    """An unfitted candidate: the model family with these hyperparameters and the table's columns."""
    if kind == "logreg":
        estimator: Any = LogisticRegression(max_iter=2000, **params)
    elif kind == "hgb":
        estimator = HistGradientBoostingClassifier(early_stopping=False, random_state=config.seed, **params)
    else:
        raise ValueError(f"unknown model kind {kind!r}")
    return RiskClassifier(
        estimator,
        numeric=table.numeric,
        categorical=table.categorical,
        min_frequency=config.min_category_count,
        max_categories=config.max_categories,
    )


@dataclass(frozen=True)
class CandidateResult:
    """A candidate's rolling-origin validation: metrics per fold run and their mean.

    ``folds_run``: the fold numbers run, in order (``fold_metrics`` and ``fold_rows`` follow it); a
    search whose first rung is cut skips the earlier first-rung folds (``halving.rungs``). A
    candidate dropped by successive halving has not run the last fold and has no out-of-fold
    scores. A finished one keeps its out-of-fold scores (``oof_scores``, NaN before
    the first validation block, in folds fitted on a cut training period and in folds not run,
    ``oof_folds`` -1 there, until ``with_whole_folds`` refits those) so calibration reuses them,
    and, for boosting with early stopping, the iteration count of its last fold (``n_iter``, which ``final_params``
    carries into the final fit). ``fold_rows``: training rows each fold's fit read;
    ``cut_folds``: the folds whose training period was cut to ``halving_min_rows``, which
    ``mean_metrics`` leaves out once the candidate has run a whole fold (``halving.decisive_folds``).
    """

    name: str
    kind: ModelKind
    params: dict[str, Any]
    fold_metrics: list[dict[str, float]]
    mean_metrics: dict[str, float]
    seconds: float
    n_iter: int | None = None
    fold_rows: tuple[int, ...] = ()
    cut_folds: tuple[int, ...] = ()
    folds_run: tuple[int, ...] = ()
    oof_scores: np.ndarray | None = field(default=None, repr=False, compare=False)
    oof_folds: np.ndarray | None = field(default=None, repr=False, compare=False)


def candidate_name(kind: str, params: dict[str, Any]) -> str:
    return kind + "(" + ", ".join(f"{k}={v}" for k, v in params.items()) + ")"


def _score(metrics: dict[str, float], metric: str) -> float:
    value = metrics.get(metric, math.nan)
    if math.isnan(value):
        return -math.inf
    return -value if metric in LOWER_IS_BETTER else value


CandidateSpec = tuple[ModelKind, dict[str, Any]]
#: Evaluates every candidate spec on a table, returning results in spec order; lets an orchestrator
#: (pipelines/flows/train.py) run the independent candidates in parallel.
EvaluateAll = Callable[[TrainingTable, TrainConfig, list[CandidateSpec]], list["CandidateResult"]]


def candidate_specs(config: TrainConfig) -> list[CandidateSpec]:
    """Every (kind, params) of the grid, in a fixed order (ties in selection go to the earlier)."""
    return [(g.kind, p) for g in config.candidates for p in g.expand()]


def fold_row_cap(config: TrainConfig, k: int) -> int | None:
    """At most how many (the most recent) training rows fold ``k``'s fits read; None: the whole period.

    Successive halving's first rung (``halving.rungs``), which every candidate runs, is cut to
    ``halving_min_rows`` rows, so the look at a candidate that will be dropped stays cheap on large
    histories; the later rungs' folds stay whole, and so does every fold of the grid search, of a
    search of two candidates or fewer (no one can drop out), or when fewer than two folds would be
    whole (calibration chooses its method on the whole folds). A function of the fold and the config
    alone, so a parallel grid run cuts the same folds as the sequential halving.
    """
    if config.search != "halving" or config.halving_min_rows is None:
        return None
    if len(candidate_specs(config)) <= 2:  # halving keeps at least two: no one drops, nothing to save
        return None
    first = rungs(config.n_splits)[0]
    if config.n_splits - len(first) < 2 or k not in first:
        return None
    return config.halving_min_rows


def halving_rungs(config: TrainConfig, cut_folds: Collection[int]) -> list[list[int]]:
    """The search's rungs (``halving.rungs``): the first one its latest fold alone when that fold is cut.

    Cut folds train on the same ``halving_min_rows`` rows each, so one of them is as good a cheap
    look as two; the later, whole folds are as before. Calibration still sees every validation
    period: ``with_whole_folds`` refits the chosen candidate on the folds the search cut or skipped.
    """
    return rungs(config.n_splits, single_first=rungs(config.n_splits)[0][-1] in cut_folds)


#: An executor's ``submit``: how ``_SearchData.prepare`` runs the families' encodings on a pool.
Submit = Callable[..., "Future[_FoldDesign]"]


@contextmanager
def side_by_side(workers: int) -> Iterator[Callable[..., Iterator[Any]]]:
    """A ``map`` that runs its calls on ``workers`` threads of one BLAS/OpenMP thread each (1: plain ``map``)."""
    if workers <= 1:
        yield map
        return
    with threadpool_limits(limits=1), ThreadPoolExecutor(max_workers=workers) as pool:
        yield pool.map


@dataclass(frozen=True)
class _FoldDesign:
    """One fold's rows through preprocessing fitted on its training rows, for every candidate of a family."""

    prepared: RiskClassifier
    train: np.ndarray
    validation: np.ndarray


class _SearchData:
    """What every candidate's folds read, built once per search (one feature frame, not one per candidate).

    The encoded design matrices of a fold are built once per model family (linear or boosting)
    and shared by that family's candidates: the search runs fold by fold (``successive_halving``
    hands each fold's living candidates over together), so only the current fold is kept.
    """

    def __init__(self, table: TrainingTable, config: TrainConfig, whole_folds: bool = False) -> None:
        frame = table.frame
        self.config = config
        self.whole_folds = whole_folds  # never cut a fold (``fold_row_cap``): calibration's refits
        # categoricals as Python strings once, not per fold fit (pandas' Arrow strings convert per cell)
        self.X = frame[table.features].astype({c: object for c in table.categorical})
        self.y = frame[LABEL].to_numpy(dtype=np.int64)
        self.effort = frame[EFFORT].to_numpy(dtype=np.float64, na_value=np.nan) if EFFORT in frame else None
        self.splits = rolling_origin_splits(len(frame), config.n_splits)
        self._designs: dict[tuple[int, bool], Future[_FoldDesign]] = {}

    def cut_folds(self) -> list[int]:
        """The folds whose training rows the search cuts on this table (``fold_row_cap``)."""
        return [k for k in range(self.config.n_splits) if self.fold(k)[2]]

    def rungs(self) -> list[list[int]]:
        """The folds of each rung of the search on this table (``halving_rungs``; every fold for the grid)."""
        return halving_rungs(self.config, self.cut_folds())

    def fold(self, k: int) -> tuple[np.ndarray, np.ndarray, bool]:
        """Fold ``k``'s (training rows, validation rows, whether the training rows were cut)."""
        tr, va = self.splits[k]
        cap = None if self.whole_folds else fold_row_cap(self.config, k)
        if cap is not None and len(tr) > cap:
            return tr[-cap:], va, True  # the most recent rows: the nearest to the validation period
        return tr, va, False

    def design(self, k: int, classifier: RiskClassifier) -> _FoldDesign:
        """Fold ``k`` encoded by ``classifier``'s family's preprocessing, fitted on the fold's training rows."""
        self.prepare(k, [classifier])
        return self._designs[(k, is_tree(classifier))].result()

    def prepare(self, k: int, classifiers: Sequence[RiskClassifier], submit: Submit | None = None) -> None:
        """Start encoding fold ``k`` once for each family among ``classifiers`` (``submit``: on a pool).

        Only one fold per family is held, which bounds the memory: the search runs fold by fold.
        With a pool the encodings are submitted before the fits that wait on them, so a FIFO pool
        starts every encoding before any fit blocks a worker.
        """
        families = {is_tree(c): c for c in classifiers}
        for family, classifier in families.items():
            if (k, family) in self._designs:
                continue
            for held in [key for key in self._designs if key[1] == family]:
                del self._designs[held]
            if submit is not None:
                self._designs[(k, family)] = submit(self._encode, k, classifier)
            else:
                done: Future[_FoldDesign] = Future()
                done.set_result(self._encode(k, classifier))
                self._designs[(k, family)] = done

    def _encode(self, k: int, classifier: RiskClassifier) -> _FoldDesign:
        tr, va, _ = self.fold(k)
        prepared = clone(classifier)
        train_design, _y = prepared.fit_preprocessing(self.X.iloc[tr], self.y[tr])
        return _FoldDesign(prepared, train_design, prepared.design(self.X.iloc[va]))


class _CandidateRun:
    """One candidate's folds as they are run (all at once, or rung by rung when halving)."""

    def __init__(
        self, table: TrainingTable, config: TrainConfig, spec: CandidateSpec, data: _SearchData | None = None
    ) -> None:
        frame = table.frame
        self.data = data if data is not None else _SearchData(table, config)
        self.config, self.spec = config, spec
        self.classifier = make_classifier(spec[0], spec[1], table, config)
        self.scores = np.full(len(frame), np.nan)
        self.folds = np.full(len(frame), -1, dtype=np.int64)
        self.fold_metrics: list[dict[str, float]] = []
        self.fold_rows: list[int] = []
        self.cut_folds: list[int] = []
        self.folds_run: list[int] = []
        self.n_iter: int | None = None
        self.seconds = 0.0

    def run_fold(self, k: int, threads: int | None = 0) -> dict[str, float]:
        """Fit on fold ``k``'s training rows and score its validation rows.

        ``threads``: BLAS/OpenMP threads for the fit; 0 picks them from the config (a fit alone),
        None leaves the caller's limit (fits run side by side, one thread each).
        """
        started = time.perf_counter()
        tr, va, cut = self.data.fold(k)
        if cut:
            self.cut_folds.append(k)
        self.folds_run.append(k)
        self.fold_rows.append(len(tr))
        y = self.data.y
        if len(np.unique(y[tr])) < 2:  # one class to learn from: score the training prior
            scores, self.n_iter = np.full(len(va), float(np.mean(y[tr]))), None
        else:
            design = self.data.design(k, self.classifier)
            fitted = self.classifier.with_preprocessing_of(design.prepared)
            stop_early = self.config.early_stopping and fitted.tree_
            limit = self.config.threads_for(len(tr), self.spec[0]) if threads == 0 else threads
            with threadpool_limits(limits=limit):
                fitted.fit_design(
                    design.train, y[tr], design.validation if stop_early else None, y[va] if stop_early else None
                )
                scores = fitted.estimator_.predict_proba(design.validation)[:, 1]
            self.n_iter = fitted.n_iter_ if self.config.early_stopping else None
        self.scores[va], self.folds[va] = scores, k
        effort = None if self.data.effort is None else self.data.effort[va]
        self.fold_metrics.append(evaluate(y[va], scores, effort))
        self.seconds += time.perf_counter() - started
        return self.fold_metrics[-1]

    def result(self) -> CandidateResult:
        kind, params = self.spec
        per_fold = self.fold_metrics
        mean = _mean_metrics(per_fold, self.folds_run, self.cut_folds)
        done = self.config.n_splits - 1 in self.folds_run  # only the finalists run the last fold
        scores, folds = self.scores, self.folds
        if self.cut_folds:  # calibrate on scores of models fitted as the final one is: on whole periods
            cut = np.isin(folds, self.cut_folds)
            scores, folds = np.where(cut, np.nan, scores), np.where(cut, -1, folds)
        return CandidateResult(
            candidate_name(kind, params),
            kind,
            params,
            list(per_fold),
            mean,
            self.seconds,
            n_iter=self.n_iter if done else None,
            fold_rows=tuple(self.fold_rows),
            cut_folds=tuple(self.cut_folds),
            folds_run=tuple(self.folds_run),
            oof_scores=scores if done else None,
            oof_folds=folds if done else None,
        )


def evaluate_candidate(table: TrainingTable, config: TrainConfig, spec: CandidateSpec) -> CandidateResult:
    """A candidate's rolling-origin validation on every fold the search runs; pure, so it can run anywhere."""
    run = _CandidateRun(table, config, spec)
    for k in [k for rung in run.data.rungs() for k in rung]:
        run.run_fold(k)
    return run.result()


def search(
    table: TrainingTable, config: TrainConfig, progress: Any = None, evaluate_all: EvaluateAll | None = None
) -> list[CandidateResult]:
    """Every candidate of the grid, validated by rolling origin on the (sorted) training table.

    Run here, each candidate is reported as it finishes (at 1M deploys one took about 40 s);
    with ``evaluate_all`` (in parallel) they are reported when all are done.
    """
    specs = candidate_specs(config)
    say = progress or (lambda _msg: None)

    def report(i: int, result: CandidateResult) -> None:
        ran = ("folds " if len(result.folds_run) > 1 else "fold ") + ", ".join(str(k + 1) for k in result.folds_run)
        stopped = "" if config.n_splits - 1 in result.folds_run else f", stopped after {ran} of {config.n_splits}"
        rows = "/".join(f"{n / 1000:.0f}k" for n in result.fold_rows)
        say(
            f"candidate {i + 1}/{len(specs)} {result.name}: "
            f"{config.selection_metric}={result.mean_metrics.get(config.selection_metric, math.nan):.4f} "
            f"({result.seconds:.1f} s{stopped}; training rows per fold {rows})"
        )

    if config.search == "halving" and evaluate_all is None:
        return _halving_search(table, config, specs, report)
    if evaluate_all is not None:
        results = evaluate_all(table, config, specs)
        if config.search == "halving":
            results = _as_halving(results, config)
        for i, result in enumerate(results):
            report(i, result)
        return results
    results = []
    for i, spec in enumerate(specs):
        results.append(evaluate_candidate(table, config, spec))
        report(i, results[-1])
    return results


def _halving_search(
    table: TrainingTable,
    config: TrainConfig,
    specs: list[CandidateSpec],
    report: Callable[[int, CandidateResult], None],
) -> list[CandidateResult]:
    """Successive halving over the time-ordered folds (models/training/halving.py), fold by fold.

    A fold's living candidates share its design matrices (one encoding per family) and, when the
    fold is large enough for threads (``TrainConfig.search_workers``), run side by side on the
    cores, one thread each: a fit's result does not depend on which thread ran it, so the scores
    are those of the sequential run. With the orchestrator's parallel ``evaluate_all`` the full
    grid runs and ``_as_halving`` replays the rungs on it, so both give the same results.
    """
    data = _SearchData(table, config)
    runs = [_CandidateRun(table, config, spec, data) for spec in specs]
    results: dict[int, CandidateResult] = {}

    def run_fold(alive: Sequence[int], k: int) -> list[float]:
        tr = data.fold(k)[0]
        workers = min(len(alive), config.search_workers(len(tr)))
        if workers <= 1:
            return [_score(runs[i].run_fold(k), config.selection_metric) for i in alive]
        # boosting first: its fits are the long ones, so the linear ones fill the other core's gaps
        order = sorted(alive, key=lambda i: not is_tree(runs[i].classifier))
        with threadpool_limits(limits=1), ThreadPoolExecutor(max_workers=workers) as pool:
            if len(np.unique(data.y[tr])) > 1:  # each family's encoding of the fold, before its fits
                data.prepare(k, [runs[i].classifier for i in order], pool.submit)
            metrics = dict(zip(order, pool.map(lambda i: runs[i].run_fold(k, threads=None), order), strict=True))
        return [_score(metrics[i], config.selection_metric) for i in alive]

    def on_stop(i: int, _folds: int) -> None:
        results[i] = runs[i].result()
        report(i, results[i])

    cut = data.cut_folds()
    schedule = halving_rungs(config, cut)
    successive_halving(len(specs), schedule, config.halving_factor, run_fold, on_stop, _families(config), cut)
    return [results[i] for i in range(len(specs))]


def final_params(chosen: CandidateResult) -> dict[str, Any]:
    """The chosen parameters as the final fit uses them: boosting's early-stopped iteration count as ``max_iter``."""
    return chosen.params if chosen.n_iter is None else {**chosen.params, "max_iter": chosen.n_iter}


def folds_to_refit(config: TrainConfig, chosen: CandidateResult) -> list[int]:
    """The folds ``with_whole_folds`` refits: those the search cut, and those it skipped (``halving_rungs``)."""
    return [k for k in range(config.n_splits) if k in chosen.cut_folds or k not in chosen.folds_run]


def with_whole_folds(table: TrainingTable, config: TrainConfig, chosen: CandidateResult) -> CandidateResult:
    """``chosen`` with the folds the search cut or skipped refitted on their whole training periods, for calibration.

    The cut first rung (``fold_row_cap``, ``halving_rungs``) only ranks candidates cheaply: a model
    fitted on the latest ``halving_min_rows`` rows scores unlike the final one, so those scores stay
    out of calibration, which would then learn from the latest folds alone and follow their failure
    rate (at 1M deploys that doubled the test ECE). Each such fold, and each earlier fold the cut
    rung skipped, is refitted whole as the final model is fitted: the
    chosen parameters with the last fold's iteration count, no early stopping. The calibration map
    then sees every validation period again; the ranking, mean metrics and iteration count stay the
    search's.
    """
    refit = folds_to_refit(config, chosen)
    if not refit or chosen.oof_scores is None or chosen.oof_folds is None:
        return chosen
    data = _SearchData(table, config, whole_folds=True)
    run = _CandidateRun(table, replace(config, early_stopping=False), (chosen.kind, final_params(chosen)), data)
    scores, folds = chosen.oof_scores.copy(), chosen.oof_folds.copy()
    for k in refit:
        run.run_fold(k)
        validation = data.splits[k][1]
        scores[validation], folds[validation] = run.scores[validation], k
    return replace(chosen, oof_scores=scores, oof_folds=folds)


def _as_halving(results: list[CandidateResult], config: TrainConfig) -> list[CandidateResult]:
    """The halving search's results from a full grid run in parallel: the same survivors and choice.

    A fold's score does not depend on which other candidates ran, so replaying the rungs on the
    grid's fold scores drops the same candidates after the same folds as the sequential run does.
    """
    cut_folds = results[0].cut_folds if results else ()
    by_fold = [dict(zip(r.folds_run, r.fold_metrics, strict=True)) for r in results]
    ran = successive_halving(
        len(results),
        halving_rungs(config, cut_folds),
        config.halving_factor,
        lambda alive, k: [_score(by_fold[i][k], config.selection_metric) for i in alive],
        families=_families(config),
        cut_folds=cut_folds,
    )
    out = []
    for i, result in enumerate(results):
        folds = list(ran[i])
        if folds == list(result.folds_run):
            out.append(result)
            continue
        kept = [by_fold[i][k] for k in folds]
        rows = dict(zip(result.folds_run, result.fold_rows, strict=True))
        cut = tuple(k for k in result.cut_folds if k in folds)
        out.append(
            CandidateResult(
                result.name,
                result.kind,
                result.params,
                kept,
                _mean_metrics(kept, folds, cut),
                result.seconds,
                fold_rows=tuple(rows[k] for k in folds),
                cut_folds=cut,
                folds_run=tuple(folds),
            )
        )
    return out


def _families(config: TrainConfig) -> list[str] | None:
    """Each candidate's model kind when halving keeps the best of each kind (``halving_per_kind``)."""
    return [kind for kind, _ in candidate_specs(config)] if config.halving_per_kind else None


def _mean_metrics(
    per_fold: list[dict[str, float]], folds_run: Sequence[int], cut_folds: Sequence[int] = ()
) -> dict[str, float]:
    """Mean of each metric over the decisive folds (``halving.decisive_folds``: the whole ones when there are)."""
    by_fold = dict(zip(folds_run, per_fold, strict=True))
    rows = [by_fold[k] for k in decisive_folds(folds_run, cut_folds)]
    return {m: float(np.nanmean([f[m] for f in rows])) if _any_finite(rows, m) else math.nan for m in METRIC_KEYS}


def _any_finite(rows: list[dict[str, float]], key: str) -> bool:
    return any(not math.isnan(r[key]) for r in rows)


def select(results: list[CandidateResult], metric: str) -> CandidateResult:
    """The best candidate by mean validation ``metric``; ties go to the earlier (simpler) candidate.

    Only candidates that ran the most folds compete (successive halving's survivors): a mean over
    fewer, earlier folds is not comparable. The mean is over the whole folds (``mean_metrics``).
    """
    if not results:
        raise ValueError("no candidates to select from")
    most = max(len(r.fold_metrics) for r in results)
    finished = [i for i, r in enumerate(results) if len(r.fold_metrics) == most]
    best = max(finished, key=lambda i: (_score(results[i].mean_metrics, metric), -i))
    return results[best]


def size_baseline(train: pd.DataFrame, test: pd.DataFrame) -> np.ndarray | None:
    """LApredict: logistic regression on log lines added alone; None when lines added are unknown."""
    if SIZE not in train or train[SIZE].isna().all():
        return None
    fill = float(np.nanmedian(train[SIZE].to_numpy(dtype=np.float64, na_value=np.nan)))

    def design(f: pd.DataFrame) -> np.ndarray:
        x = f[SIZE].to_numpy(dtype=np.float64, na_value=np.nan)
        return signed_log1p(np.where(np.isnan(x), fill, x)).reshape(-1, 1)

    y = train[LABEL].to_numpy(dtype=np.int64)
    lr = LogisticRegression(max_iter=1000).fit(design(train), y)
    return np.asarray(lr.predict_proba(design(test))[:, 1])


@dataclass
class TrainResult:
    """Everything one training produced: the fitted model, the search, test scores and baselines."""

    model: RiskModel
    config: TrainConfig
    split: dict[str, Any]
    n_train: int
    n_test: int
    candidates: list[CandidateResult]
    chosen: CandidateResult
    calibration: str
    calibration_losses: dict[str, float]
    calibration_reason: str
    test_frame: pd.DataFrame
    test_scores: np.ndarray
    test_metrics: dict[str, float]
    baseline_scores: dict[str, np.ndarray]
    baseline_metrics: dict[str, dict[str, float]]
    group_metrics: dict[str, pd.DataFrame]
    importance: pd.DataFrame
    data_summary: dict[str, Any]
    seconds: dict[str, float]
    #: Test deploys permutation importance was computed on (a seeded sample of at most
    #: ``config.permutation_max_rows``), shown in the report next to the table.
    importance_rows: int = 0


def data_summary(table: TrainingTable, split: Split) -> dict[str, Any]:
    """Period, counts and failure rates of the training and test periods, and what was excluded."""
    f = table.frame
    y = f[LABEL].to_numpy(dtype=np.float64)
    return {
        **split.describe(f),
        "n_rows": int(len(f)),
        "n_train": int(len(split.train)),
        "n_test": int(len(split.test)),
        "failure_rate_train": float(y[split.train].mean()),
        "failure_rate_test": float(y[split.test].mean()),
        "failures_train": int(y[split.train].sum()),
        "failures_test": int(y[split.test].sum()),
        "n_numeric_features": len(table.numeric),
        "n_categorical_features": len(table.categorical),
        "excluded": dict(table.excluded),
        "label_rule": table.label_rule,
        "feature_set_version": table.feature_set_version,
    }


def train(
    table: TrainingTable,
    config: TrainConfig,
    test_fraction: float = 0.2,
    test_start: pd.Timestamp | None = None,
    progress: Any = None,
    evaluate_all: EvaluateAll | None = None,
) -> TrainResult:
    """Split by time, search candidates on the training period, calibrate, and evaluate on the test period.

    ``progress``, if given, is called with one line of text per step; ``evaluate_all``, if given,
    runs the candidate search (e.g. in parallel) and must return what the sequential search would.
    """
    with threadpool_limits(limits=1):  # boosting fits raise it (TrainConfig.threads_for)
        return _train(table, config, test_fraction, test_start, progress or (lambda _msg: None), evaluate_all)


def _train(
    table: TrainingTable,
    config: TrainConfig,
    test_fraction: float,
    test_start: pd.Timestamp | None,
    say: Any,
    evaluate_all: EvaluateAll | None = None,
) -> TrainResult:
    timings: dict[str, float] = {}
    table = table.sorted()
    split = time_split(table.frame, test_fraction, test_start)
    train_frame = table.frame.iloc[split.train].reset_index(drop=True)
    test_frame = table.frame.iloc[split.test].reset_index(drop=True)
    y_train = train_frame[LABEL].to_numpy(dtype=np.int64)
    if len(train_frame) < config.min_train_rows or len(np.unique(y_train)) < 2:
        raise ValueError(
            f"training period has {len(train_frame)} rows and {int(y_train.sum())} failures; need at least "
            f"{config.min_train_rows} rows (--min-train-rows) and both outcomes"
        )
    train_table = TrainingTable(train_frame, table.numeric, table.categorical, table.excluded)
    say(
        f"split {split.rule}: {len(train_frame)} training deploys, {len(test_frame)} test deploys "
        f"(test from {split.test_start})"
    )

    started = time.perf_counter()
    results = search(train_table, config, say, evaluate_all)
    chosen = select(results, config.selection_metric)
    timings["search"] = time.perf_counter() - started
    say(f"chosen {chosen.name}")

    started = time.perf_counter()
    refit = folds_to_refit(config, chosen)
    if refit and chosen.oof_scores is not None:
        folds = ", ".join(str(k + 1) for k in refit)
        say(f"calibration: refitting the chosen candidate on whole folds {folds} (the search cut or skipped them)")
        chosen = with_whole_folds(train_table, config, chosen)
    model = RiskModel(
        make_classifier(chosen.kind, final_params(chosen), table, config),
        calibration=config.calibration,
        n_splits=config.n_splits,
        min_isotonic_positives=config.min_isotonic_positives,
        high_share=config.high_share,
        medium_share=config.medium_share,
    )
    with threadpool_limits(limits=config.threads_for(len(train_frame), chosen.kind)):
        # calibration from the search's out-of-fold scores of this candidate: no fold is refitted
        model.fit(train_frame[table.features], y_train, oof_scores=chosen.oof_scores, oof_folds=chosen.oof_folds)
    timings["fit"] = time.perf_counter() - started
    if chosen.n_iter is not None:
        say(f"final fit: {chosen.n_iter} boosting iterations (early stopping on the last fold)")
    say(f"calibration: {model.calibration_reason_}")

    started = time.perf_counter()
    y_test = test_frame[LABEL].to_numpy(dtype=np.int64)
    effort = test_frame[EFFORT].to_numpy(dtype=np.float64, na_value=np.nan) if EFFORT in test_frame else None
    design = model.classifier_.design(test_frame[table.features])  # encoded once: scores and importance
    scores = model.score_design(design)
    metrics = evaluate(y_test, scores, effort)

    baselines: dict[str, np.ndarray] = {}
    size = size_baseline(train_frame, test_frame)
    if size is not None:
        baselines["lines_added"] = size
    if SERVICE_RATE in test_frame:
        # the feature itself: the service's smoothed failure rate from labels matured before each deploy
        baselines[SERVICE_RATE] = test_frame[SERVICE_RATE].to_numpy(dtype=np.float64, na_value=np.nan)
    baseline_metrics = {name: evaluate(y_test, s, effort) for name, s in baselines.items()}

    groups = {g: metrics_by_group(test_frame, g, y_test, scores) for g in GROUPS if g in test_frame}
    # about 150 predictions: worth both cores whatever the test period's size
    with side_by_side(config.n_threads or usable_cores()) as map_each:
        importance, importance_rows = permutation_importance(
            model.score_design,
            design,
            model.classifier_.design_groups(),
            table.features,
            y_test,
            config.permutation_repeats,
            config.seed,
            max_rows=config.permutation_max_rows,
            map_each=map_each,
        )
    timings["evaluate"] = time.perf_counter() - started
    say(f"test: roc_auc={metrics['roc_auc']:.4f} pr_auc={metrics['pr_auc']:.4f} ece={metrics['ece']:.4f}")

    return TrainResult(
        model=model,
        config=config,
        split=split.describe(table.frame),
        n_train=len(train_frame),
        n_test=len(test_frame),
        candidates=results,
        chosen=chosen,
        calibration=model.calibrator_.method,
        calibration_losses=dict(model.calibration_losses_),
        calibration_reason=model.calibration_reason_,
        test_frame=test_frame,
        test_scores=scores,
        test_metrics=metrics,
        baseline_scores=baselines,
        baseline_metrics=baseline_metrics,
        group_metrics=groups,
        importance=importance,
        data_summary=data_summary(table, split),
        seconds=timings,
        importance_rows=importance_rows,
    )
