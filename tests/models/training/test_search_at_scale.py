"""Issue 17's search and fit internals: successive halving, early stopping, calibration reuse, threads."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from models.training.config import CandidateGrid, TrainConfig
from models.training.estimators import RiskModel, fold_scores, rolling_origin_splits
from models.training.halving import decisive_folds, keep_count, rungs, successive_halving
from models.training.train import (
    LABEL,
    candidate_specs,
    evaluate_candidate,
    final_params,
    fold_row_cap,
    halving_rungs,
    make_classifier,
    search,
    train,
    with_whole_folds,
)
from tests.helpers.synthetic import synthetic_table

CONFIG = TrainConfig(
    candidates=(
        CandidateGrid("logreg", (("C", (0.001, 0.1, 1.0)),)),
        CandidateGrid("hgb", (("max_iter", (400,)), ("learning_rate", (0.3,)), ("max_leaf_nodes", (7, 15)))),
    ),
    n_splits=4,
    permutation_repeats=1,
)


@pytest.fixture(autouse=True)
def _one_thread():
    with threadpool_limits(limits=1):
        yield


def test_rungs_run_the_cheap_early_folds_for_all_and_one_later_fold_per_rung():
    assert rungs(4) == [[0, 1], [2], [3]]
    assert rungs(2) == [[0], [1]]
    assert rungs(4, single_first=True) == [[1], [2], [3]]  # a cut first rung: its latest fold alone
    assert rungs(5, single_first=True) == [[2], [3], [4]]
    assert rungs(2, single_first=True) == [[0], [1]]
    assert [keep_count(n, 3) for n in (10, 4, 2, 1)] == [4, 2, 2, 1]


def each(run_one: Callable[[int, int], float]) -> Callable[[Sequence[int], int], list[float]]:
    """A ``run_fold`` for ``successive_halving`` that runs the candidates one by one."""
    return lambda candidates, k: [run_one(i, k) for i in candidates]


def test_halving_drops_losing_candidates_early_and_keeps_the_best():
    quality = [0.60, 0.70, 0.55, 0.72, 0.50, 0.65]  # candidate 3 is best on every fold
    calls: list[tuple[int, int]] = []
    stopped: dict[int, int] = {}

    def run_fold(i: int, k: int) -> float:
        calls.append((i, k))
        return quality[i] + 0.01 * k

    scores = successive_halving(len(quality), rungs(4), 3, each(run_fold), lambda i, n: stopped.update({i: n}))
    assert list(scores[3]) == list(scores[1]) == [0, 1, 2, 3]  # the two best run every fold
    assert all(len(scores[i]) == 2 for i in (0, 2, 4, 5))  # the rest stop after the cheap rung
    assert stopped == {i: len(scores[i]) for i in range(len(quality))}
    assert len(calls) == 6 * 2 + 2 + 2  # versus 24 for the full grid
    assert successive_halving(len(quality), rungs(4), 3, each(lambda i, k: quality[i] + 0.01 * k)) == scores


def test_halving_search_keeps_the_grid_search_winner_and_is_deterministic():
    table, _ = synthetic_table(2000, seed=4)
    table = table.sorted()
    halving = search(table, CONFIG)
    grid = search(table, replace(CONFIG, search="grid"))
    finished = [c for c in halving if len(c.fold_metrics) == CONFIG.n_splits]
    assert 2 <= len(finished) < len(halving)
    assert sum(len(c.fold_metrics) for c in halving) < sum(len(c.fold_metrics) for c in grid)
    best = max(grid, key=lambda c: c.mean_metrics["roc_auc"])
    assert best.name in {c.name for c in finished}
    assert [c.mean_metrics for c in search(table, CONFIG)] == [c.mean_metrics for c in halving]


def test_early_stopping_iteration_count_is_carried_into_the_final_fit():
    table, _ = synthetic_table(2000, seed=4)
    hgb_only = replace(CONFIG, candidates=(CONFIG.candidates[1],))
    result = train(table, hgb_only)
    assert result.chosen.n_iter is not None and result.chosen.n_iter < 400  # stopped before max_iter
    assert result.model.classifier_.estimator_.max_iter == result.chosen.n_iter
    assert not result.model.classifier_.estimator_.early_stopping  # the final fit has no stopping split
    assert result.model.classifier_.estimator_.n_iter_ == result.chosen.n_iter


def test_calibration_from_the_search_out_of_fold_scores_equals_recomputing_them():
    table, _ = synthetic_table(1500, seed=6)
    config = replace(CONFIG, early_stopping=False)
    result = train(table, config)
    train_frame = table.sorted().frame.iloc[: result.n_train]
    y = train_frame[LABEL].to_numpy()
    fresh = RiskModel(make_classifier(result.chosen.kind, result.chosen.params, table, config), n_splits=4).fit(
        train_frame[table.features], y
    )
    np.testing.assert_allclose(fresh.oof_scores_, result.model.oof_scores_)
    np.testing.assert_allclose(
        fresh.predict_proba(result.test_frame[table.features]), result.model.predict_proba(result.test_frame)
    )


def test_threads_only_for_large_fits():
    config = TrainConfig(n_threads=2, threads_min_rows=1000)
    assert config.threads_for(999) == 1 and config.threads_for(1000) == 2
    assert config.threads_for(10**6, "logreg") == 1  # BLAS threads slowed the linear model down
    assert TrainConfig().threads_for(10**7) >= 1
    with pytest.raises(ValueError, match="n_threads"):
        TrainConfig(n_threads=0)
    with pytest.raises(ValueError, match="search"):
        TrainConfig(search="random")  # type: ignore[arg-type]


def test_parallel_grid_replayed_as_halving_equals_the_sequential_halving_search():
    table, _ = synthetic_table(1500, seed=8)
    table = table.sorted()

    def evaluate_all(t, config, specs):  # type: ignore[no-untyped-def]
        return [evaluate_candidate(t, config, spec) for spec in specs]  # what a task runner returns

    sequential = search(table, CONFIG)
    parallel = search(table, CONFIG, evaluate_all=evaluate_all)
    assert [(c.name, c.fold_metrics, c.mean_metrics, c.n_iter) for c in parallel] == [
        (c.name, c.fold_metrics, c.mean_metrics, c.n_iter) for c in sequential
    ]


@pytest.mark.parametrize("kind", ["logreg", "hgb"])
def test_design_groups_shuffle_a_feature_as_shuffling_its_raw_column_and_re_encoding(kind):
    table, _ = synthetic_table(800, seed=2)
    params = {"C": 1.0} if kind == "logreg" else {"max_iter": 20}
    clf = make_classifier(kind, params, table, CONFIG).fit(table.frame[table.features], table.frame[LABEL])
    design = clf.design(table.frame)
    groups = clf.design_groups()
    assert len(groups) == len(table.features)
    assert sorted(np.concatenate(groups).tolist()) == list(range(design.shape[1]))  # every column, once
    perm = np.random.default_rng(0).permutation(len(table.frame))
    for name, columns in zip(table.features, groups, strict=True):
        raw = table.frame.assign(**{name: table.frame[name].to_numpy()[perm]})
        shuffled = design.copy()
        shuffled[:, columns] = design[np.ix_(perm, columns)]
        np.testing.assert_array_equal(clf.design(raw), shuffled)


def test_test_scores_from_the_design_matrix_equal_predict_proba_and_the_report_names_the_sample():
    table, _ = synthetic_table(3000, seed=4)
    config = replace(CONFIG, permutation_max_rows=300)
    result = train(table, config)
    np.testing.assert_array_equal(result.test_scores, result.model.predict_proba(result.test_frame)[:, 1])
    assert result.importance_rows == 300 < result.n_test
    assert set(result.importance["feature"]) == set(table.features)


def test_the_first_rung_trains_on_the_most_recent_rows_and_the_survivors_on_whole_folds():
    table, _ = synthetic_table(3000, seed=4)
    table = table.sorted()
    config = replace(CONFIG, halving_min_rows=300)
    results = search(table, config)
    whole = [len(tr) for tr, _ in rolling_origin_splits(len(table.frame), config.n_splits)]
    assert whole[0] > 300  # the cut bites on every fold of the first rung
    for c in results:  # the cut first rung is its latest fold alone: fold 0 is not run
        assert c.folds_run[0] == 1 and c.cut_folds == (1,)
        assert list(c.fold_rows) == [300, *whole[2 : len(c.fold_rows) + 1]]
    finished = [c for c in results if c.folds_run == (1, 2, 3)]
    assert finished and all(c.oof_folds is not None and set(np.unique(c.oof_folds)) == {-1, 2, 3} for c in finished)
    assert all(list(c.fold_rows) == whole for c in search(table, replace(config, search="grid")))
    assert [fold_row_cap(config, k) for k in range(4)] == [300, 300, None, None]
    assert halving_rungs(config, (0, 1)) == [[1], [2], [3]] and halving_rungs(config, ()) == [[0, 1], [2], [3]]
    assert fold_row_cap(replace(config, n_splits=2), 0) is None  # one whole fold would be left: no cut
    assert fold_row_cap(replace(config, halving_min_rows=None), 0) is None


def test_a_cut_first_rung_uses_fewer_rows_and_trains_reproducibly():
    table, _ = synthetic_table(3000, seed=4)
    config = replace(CONFIG, halving_min_rows=300)
    first, again = train(table, config), train(table, config)
    assert first.test_metrics == again.test_metrics and first.chosen.name == again.chosen.name
    cut_rows = sum(sum(c.fold_rows) for c in first.candidates)
    assert cut_rows < sum(sum(c.fold_rows) for c in train(table, replace(config, halving_min_rows=None)).candidates)
    with pytest.raises(ValueError, match="halving_min_rows"):
        TrainConfig(halving_min_rows=0)


def test_parallel_grid_replay_cuts_the_same_first_rung_as_the_sequential_search():
    table, _ = synthetic_table(2000, seed=8)
    table = table.sorted()
    config = replace(CONFIG, halving_min_rows=250)

    def evaluate_all(t, cfg, specs):  # type: ignore[no-untyped-def]
        return [evaluate_candidate(t, cfg, spec) for spec in specs]

    sequential = search(table, config)
    parallel = search(table, config, evaluate_all=evaluate_all)
    assert [(c.name, c.fold_metrics, c.fold_rows, c.folds_run, c.mean_metrics, c.n_iter) for c in parallel] == [
        (c.name, c.fold_metrics, c.fold_rows, c.folds_run, c.mean_metrics, c.n_iter) for c in sequential
    ]
    assert all(c.folds_run[0] == 1 for c in sequential)  # fold 0 is skipped in the grid run too


def test_calibration_gets_the_cut_and_skipped_folds_refitted_whole_as_the_final_model_is_fitted():
    table, _ = synthetic_table(3000, seed=4)
    table = table.sorted()
    config = replace(CONFIG, halving_min_rows=300)
    X, y = table.frame[table.features], table.frame[LABEL].to_numpy()
    splits = rolling_origin_splits(len(y), config.n_splits)
    finished = [c for c in search(table, config) if c.folds_run == (1, 2, 3)]
    assert {c.kind for c in finished} == {"logreg", "hgb"}  # per-kind halving: one finalist of each
    for chosen in finished:
        whole = with_whole_folds(table, config, chosen)
        assert whole.oof_folds is not None and whole.oof_scores is not None and chosen.oof_scores is not None
        assert set(np.unique(whole.oof_folds)) == {-1, 0, 1, 2, 3}
        later = np.isin(whole.oof_folds, [2, 3])  # the search's whole folds are kept as they are
        np.testing.assert_array_equal(whole.oof_scores[later], chosen.oof_scores[later])
        # the chosen parameters with the last fold's iteration count, no early stopping: as the final fit
        params = chosen.params if chosen.n_iter is None else {**chosen.params, "max_iter": chosen.n_iter}
        assert final_params(chosen) == params
        classifier = make_classifier(chosen.kind, params, table, replace(config, early_stopping=False))
        for tr, va in splits[:2]:
            np.testing.assert_allclose(whole.oof_scores[va], fold_scores(classifier, X, y, tr, va)[0], atol=1e-12)
        assert (whole.fold_metrics, whole.mean_metrics, whole.n_iter) == (
            chosen.fold_metrics,
            chosen.mean_metrics,
            chosen.n_iter,
        )
    uncut = next(c for c in search(table, CONFIG) if len(c.fold_metrics) == CONFIG.n_splits)
    assert with_whole_folds(table, CONFIG, uncut) is uncut  # nothing was cut: nothing to refit
    result = train(table, config)  # calibrates on every fold's validation period again
    every_fold = sum(len(va) for _, va in rolling_origin_splits(result.n_train, config.n_splits))
    assert result.chosen.cut_folds == (1,) and result.chosen.folds_run == (1, 2, 3)
    assert len(result.model.oof_positions_) == every_fold


def test_rows_as_a_resource_cut_only_large_tables():
    assert TrainConfig().halving_min_rows == 50_000
    table, _ = synthetic_table(3000, seed=4)
    whole = [len(tr) for tr, _ in rolling_origin_splits(3000, CONFIG.n_splits)]
    results = search(table.sorted(), CONFIG)  # the default cap is far above these folds
    assert all(list(c.fold_rows) == whole[: len(c.fold_rows)] and not c.cut_folds for c in results)


def test_once_a_candidate_ran_a_whole_fold_the_cut_folds_no_longer_rank_it():
    assert decisive_folds([0, 1], {0, 1}) == [0, 1]  # only cut folds yet: they are all there is
    assert decisive_folds([0, 1, 2, 3], {0, 1}) == [2, 3]
    assert decisive_folds([1, 2, 3], {1}) == [2, 3]  # by fold number, not position
    assert decisive_folds([0, 1, 2], ()) == [0, 1, 2]
    # candidate 0 learns fast from the cut first rung; 1 and 2 gain from the whole folds
    fold_score = {0: [0.70, 0.70, 0.60, 0.60], 1: [0.65, 0.65, 0.66, 0.66], 2: [0.64, 0.64, 0.65, 0.65]}
    score = each(lambda i, k: fold_score.get(i, [0.5] * 4)[k])
    judged_whole = successive_halving(7, rungs(4), 3, score, cut_folds={0, 1})
    assert len(judged_whole[0]) == 3 and len(judged_whole[1]) == len(judged_whole[2]) == 4
    judged_on_all = successive_halving(7, rungs(4), 3, score)
    assert len(judged_on_all[0]) == 4 and len(judged_on_all[2]) == 3
    config = replace(CONFIG, halving_min_rows=300)
    table, _ = synthetic_table(3000, seed=4)
    for c in search(table.sorted(), config):
        assert c.cut_folds == (1,)
        rows = c.fold_metrics[1:] if len(c.fold_metrics) > 1 else c.fold_metrics
        assert c.mean_metrics["roc_auc"] == pytest.approx(np.mean([f["roc_auc"] for f in rows]))


def test_shared_fold_encodings_and_side_by_side_fits_give_the_one_by_one_scores():
    table, _ = synthetic_table(2000, seed=8)
    table = table.sorted()
    side_by_side = replace(CONFIG, n_threads=2, threads_min_rows=1)  # every fold's fits in two threads
    assert side_by_side.search_workers(1) == 2 and CONFIG.search_workers(1) == 1
    shared = search(table, side_by_side)
    alone = {
        spec_result.name: spec_result
        for spec_result in (evaluate_candidate(table, CONFIG, s) for s in candidate_specs(CONFIG))
    }
    for c in shared:
        assert c.fold_metrics == alone[c.name].fold_metrics[: len(c.fold_metrics)]
        assert c.n_iter == (alone[c.name].n_iter if len(c.fold_metrics) == CONFIG.n_splits else None)
    assert [c.mean_metrics for c in search(table, CONFIG)] == [c.mean_metrics for c in shared]
