"""Successive halving over time-ordered folds: candidates that lose on the early folds stop there.

The idea of scikit-learn's ``HalvingRandomSearchCV``, with a different resource: instead of
random subsamples, the rolling-origin folds in time order. The first folds train on the oldest,
smallest part of the history and are cheap; the later ones cost the most. Every candidate runs
the cheap folds, and only the best share goes on to each later, dearer fold, so the search never
validates on a period earlier than its training rows and spends its time on the contenders.

Pure bookkeeping: the caller supplies ``run_fold(candidate, fold) -> score`` (higher is better).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

#: Called when a candidate stops: (candidate index, folds it ran).
OnStop = Callable[[int, int], None]


def rungs(n_splits: int) -> list[list[int]]:
    """Folds run per rung: the first ``n_splits - 2`` folds together (at least one), then one per rung.

    With 4 folds (costs about 1:2:3:4, the training part grows), rung 0 is folds 0-1, then 2, then 3.
    """
    if n_splits < 1:
        raise ValueError(f"need at least one fold, got {n_splits}")
    first = max(1, n_splits - 2)
    return [list(range(first)), *([k] for k in range(first, n_splits))]


def keep_count(n_alive: int, factor: int) -> int:
    """Candidates that go on to the next rung: the best 1/``factor``, at least two (when there are)."""
    return min(n_alive, max(2, math.ceil(n_alive / factor)))


def _rank_key(scores: list[float]) -> float:
    finite = [s for s in scores if math.isfinite(s)]
    return sum(finite) / len(finite) if finite else -math.inf


def successive_halving(
    n_candidates: int,
    n_splits: int,
    factor: int,
    run_fold: Callable[[int, int], float],
    on_stop: OnStop | None = None,
    families: Sequence[str] | None = None,
) -> dict[int, list[float]]:
    """Run the rungs; returns each candidate's fold scores (the survivors have all ``n_splits``).

    Candidates are ranked by their mean score over the folds run so far; ties keep the earlier
    candidate, as the full search's selection does. ``on_stop`` is told when a candidate drops
    out (after its last rung) or finishes. With ``families`` (e.g. the model kind of each
    candidate) the best of every family also goes on: early folds favour the model that learns
    fastest from few rows, which need not be the one that gains most from the later, larger folds.
    """
    scores: dict[int, list[float]] = {i: [] for i in range(n_candidates)}
    alive = list(range(n_candidates))
    schedule = rungs(n_splits)
    for r, folds in enumerate(schedule):
        for i in alive:
            for k in folds:
                scores[i].append(run_fold(i, k))
        if r == len(schedule) - 1:
            break
        ranked = sorted(alive, key=lambda i: (-_rank_key(scores[i]), i))
        kept_set = set(ranked[: keep_count(len(alive), factor)])
        if families is not None:
            kept_set |= {next(i for i in ranked if families[i] == f) for f in {families[i] for i in alive}}
        kept = sorted(kept_set)
        for i in alive:
            if i not in kept and on_stop is not None:
                on_stop(i, len(scores[i]))
        alive = kept
    for i in alive:
        if on_stop is not None:
            on_stop(i, len(scores[i]))
    return scores
