"""Successive halving over time-ordered folds: candidates that lose on the early folds stop there.

The idea of scikit-learn's ``HalvingRandomSearchCV``, with a different resource: instead of
random subsamples, the rolling-origin folds in time order. The first folds train on the oldest,
smallest part of the history and are cheap; the later ones cost the most. Every candidate runs
the cheap folds, and only the best share goes on to each later, dearer fold, so the search never
validates on a period earlier than its training rows and spends its time on the contenders.

Pure bookkeeping: the caller supplies ``run_fold(candidates, fold) -> scores`` (higher is better).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, Sequence

#: Called when a candidate stops: (candidate index, folds it ran).
OnStop = Callable[[int, int], None]


def rungs(n_splits: int, single_first: bool = False) -> list[list[int]]:
    """Folds run per rung: the first ``n_splits - 2`` folds together (at least one), then one per rung.

    With 4 folds (costs about 1:2:3:4, the training part grows), rung 0 is folds 0-1, then 2, then 3.
    ``single_first``: rung 0 is the latest of those folds alone (fold 1 of 4; fold 0 is not run).
    For a first rung cut to the same rows on each fold (``TrainConfig.halving_min_rows``): its
    folds then cost alike and, at 1M deploys, each ranked every candidate alike, so the earlier
    one doubled the rung's cost without changing who went on (docs/benchmarks.md, issue 17).
    """
    if n_splits < 1:
        raise ValueError(f"need at least one fold, got {n_splits}")
    first = max(1, n_splits - 2)
    return [list(range(first - 1 if single_first else 0, first)), *([k] for k in range(first, n_splits))]


def keep_count(n_alive: int, factor: int) -> int:
    """Candidates that go on to the next rung: the best 1/``factor``, at least two (when there are)."""
    return min(n_alive, max(2, math.ceil(n_alive / factor)))


def decisive_folds(folds_run: Sequence[int], cut_folds: Collection[int] = ()) -> list[int]:
    """The folds (numbers) a candidate is judged on: those it trained on whole periods, else all it ran.

    A fold cut to fewer rows (``TrainConfig.halving_min_rows``) is a cheap first look that drops
    clear losers; it favours the models that learn fastest from few rows, so once a candidate has
    run whole folds only those rank it, as they are what the final fit on the whole period resembles.
    """
    whole = [k for k in folds_run if k not in cut_folds]
    return whole or list(folds_run)


def _rank_key(scores: Mapping[int, float], cut_folds: Collection[int]) -> float:
    finite = [scores[k] for k in decisive_folds(list(scores), cut_folds) if math.isfinite(scores[k])]
    return sum(finite) / len(finite) if finite else -math.inf


#: Runs fold ``k`` for the given candidates (in any order, at once if it can); returns their scores in order.
RunFold = Callable[[Sequence[int], int], Sequence[float]]


def successive_halving(
    n_candidates: int,
    schedule: Sequence[Sequence[int]],
    factor: int,
    run_fold: RunFold,
    on_stop: OnStop | None = None,
    families: Sequence[str] | None = None,
    cut_folds: Collection[int] = (),
) -> dict[int, dict[int, float]]:
    """Run the ``schedule`` (``rungs``: the folds of each rung); returns each candidate's score per fold run.

    The survivors have run every fold of the schedule, in its order. Candidates are ranked by their
    mean score over the folds run so far (``decisive_folds``: the whole ones when there are, not the
    ``cut_folds``); ties keep the earlier candidate, as the full search's selection does.
    ``on_stop`` is told when a candidate drops out (after its last rung) or finishes. Each fold of a
    rung is run for all living candidates in one ``run_fold`` call, so the caller can share the
    fold's preprocessing among them and run them side by side.

    With ``families`` (the model kind of each candidate) and more than one family, the halving runs
    within each family (the best 1/``factor`` of the family, at least one, goes on), and the
    families' survivors meet on every fold: early, small folds favour the model that learns fastest
    from few rows (at 1M deploys the linear model), which need not be the one that gains most from
    the later, larger folds (boosting), so a family is never judged against another on them alone.
    """
    scores: dict[int, dict[int, float]] = {i: {} for i in range(n_candidates)}
    groups = _groups(n_candidates, families)
    alive = list(range(n_candidates))
    for r, folds in enumerate(schedule):
        for k in folds:
            for i, score in zip(alive, run_fold(alive, k), strict=True):
                scores[i][k] = score
        if r == len(schedule) - 1:
            break
        kept_set: set[int] = set()
        for group in groups:
            members = [i for i in alive if i in group]
            ranked = sorted(members, key=lambda i: (-_rank_key(scores[i], cut_folds), i))
            keep = max(1, math.ceil(len(members) / factor)) if len(groups) > 1 else keep_count(len(members), factor)
            kept_set |= set(ranked[:keep])
        kept = sorted(kept_set)
        for i in alive:
            if i not in kept and on_stop is not None:
                on_stop(i, len(scores[i]))
        alive = kept
    for i in alive:
        if on_stop is not None:
            on_stop(i, len(scores[i]))
    return scores


def _groups(n_candidates: int, families: Sequence[str] | None) -> list[set[int]]:
    """The candidates halved together: one group, or one per family (in order of first appearance)."""
    if families is None:
        return [set(range(n_candidates))]
    if len(families) != n_candidates:
        raise ValueError(f"{len(families)} families for {n_candidates} candidates")
    names = list(dict.fromkeys(families))
    return [{i for i, f in enumerate(families) if f == name} for name in names]
