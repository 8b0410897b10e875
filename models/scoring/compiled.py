"""The compiled fast scorer: a fitted RiskModel applied to a numpy row from its learned attributes.

A pandas ``ColumnTransformer`` costs ~8 ms per single-row prediction; the same model applied here from
its fitted arrays costs well under a millisecond. Explanations are on the log-odds scale, before
calibration (see ``models.scoring.explain``).

The compiled path reads scikit-learn's private attributes (``_predictors``, ``_bin_mapper``, ...),
which may change meaning in any release, so it is checked, not trusted: ``compile_fast_scorer``
scores a seeded check sample both ways and, on any difference above ``PARITY_TOLERANCE`` (or any
error while compiling), keeps the model's own ``predict_proba`` for probabilities (``fallback``),
logs a warning, and the service counts it on ``/metrics``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import pandas as pd

from features.history.schema import EXTRA_PREFIX
from models.training.estimators import RiskModel, ScoreCalibrator, assign_bands
from models.training.transformers import signed_log1p

log = logging.getLogger("incident_risk.scoring")

#: Largest |compiled - predict_proba| allowed on the check sample before the compiled path is refused.
PARITY_TOLERANCE = 1e-9
#: Rows of the seeded check sample scored both ways when a model is compiled.
CHECK_ROWS = 512
#: Seed of the check sample: the same model always gets the same check.
CHECK_SEED = 20_240_601


def _model_extras(scorer: FastScorer) -> list[str]:
    """The model's ``extra_*`` inputs, as ``batch_features`` adds them (not their missing indicators)."""
    return [c for c in scorer.numeric if c.startswith(EXTRA_PREFIX) and not c.endswith("_missing")]


@dataclass(frozen=True)
class _Linear:
    log: bool
    median: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    indicator: np.ndarray  # numeric positions that have a missing indicator
    coef_num: np.ndarray
    coef_ind: np.ndarray
    coef_cat: tuple[np.ndarray, ...]  # per categorical column, one coefficient per known category
    intercept: float


@dataclass(frozen=True)
class _Trees:
    """All trees of a binary HistGradientBoosting model as flat arrays, evaluated for every tree at once.

    Each internal node's test ("goes left?") is evaluated for the row in one vector operation; a leaf is
    reached when every ancestor's test agrees with the side the leaf is on (``pair_*``: one entry per
    (leaf, ancestor)). sklearn's own per-row walk has the same outcome; see ``_tree_raw``.
    """

    perm: np.ndarray  # tree input column j is design column perm[j] (sklearn puts categoricals first)
    cat_remap: tuple[np.ndarray, ...]  # per categorical column: our category code -> HGB's own code
    node_feature: np.ndarray  # per internal node
    node_threshold: np.ndarray
    node_missing_left: np.ndarray
    node_categorical: np.ndarray
    node_bitset: np.ndarray  # row of ``left_bitsets`` per categorical node
    left_bitsets: np.ndarray  # (rows, 8) uint32: categories that go left
    node_known: np.ndarray  # row of ``known_bitsets`` per node
    known_bitsets: np.ndarray  # (categorical features, 8) uint32: categories seen in training
    pair_node: np.ndarray
    pair_left: np.ndarray
    leaf_start: np.ndarray  # first pair of each leaf (leaves in tree order)
    leaf_has_pairs: np.ndarray
    leaf_value: np.ndarray
    tree_start: np.ndarray  # first leaf of each tree
    baseline: float
    # Explanations: pairs grouped by (feature of the ancestor, leaf); see ``_tree_contributions``.
    mismatch_ref: np.ndarray  # per pair: does the ancestor's test at the feature's reference disagree?
    group_order: np.ndarray  # pairs in (feature, leaf) order
    group_start: np.ndarray  # first pair (in that order) of each (feature, leaf) group
    group_leaf: np.ndarray
    feature_start: np.ndarray  # first group of each feature in ``used``
    used: np.ndarray  # tree columns some split uses: the only ones whose substitution can matter


@dataclass(frozen=True)
class FastScorer:
    """A fitted ``RiskModel`` as plain arrays: calibrated probabilities and contributions for numpy rows.

    Rows are ``numeric`` (float, NaN = missing) in ``self.numeric`` order and category codes (int, -1 =
    unknown or missing) from ``encode``.
    """

    kind: Literal["logreg", "hgb"]
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    categories: tuple[Mapping[str, int], ...]
    calibrator: ScoreCalibrator
    thresholds: np.ndarray
    linear: _Linear | None = None
    trees: _Trees | None = None
    #: Set when the compiled path was refused at load: probabilities come from its ``predict_proba``.
    fallback: RiskModel | None = None
    #: Largest |compiled - predict_proba| on the check sample (NaN: compiling or checking failed).
    parity_error: float = 0.0

    @property
    def features(self) -> tuple[str, ...]:
        return (*self.numeric, *self.categorical)

    @property
    def path(self) -> Literal["compiled", "predict_proba"]:
        """Which code computes probabilities: the compiled arrays, or the model after a failed check."""
        return "compiled" if self.fallback is None else "predict_proba"

    def model_frame(self, num: np.ndarray, codes: np.ndarray) -> pd.DataFrame:
        """Rows as the model's own input frame: numerics, and category codes back to their values."""
        data: dict[str, Any] = {name: num[:, j] for j, name in enumerate(self.numeric)}
        for j, (name, lookup) in enumerate(zip(self.categorical, self.categories, strict=True)):
            values = np.array([None, *sorted(lookup, key=lookup.__getitem__)], dtype=object)
            data[name] = values[codes[:, j] + 1]
        return pd.DataFrame(data, columns=list(self.features))

    def encode(self, values: Sequence[Sequence[str | None]]) -> np.ndarray:
        """Category codes per row and categorical column; -1 where the model does not know the value."""
        codes = np.full((len(values), len(self.categorical)), -1, dtype=np.int64)
        for i, row in enumerate(values):
            for j, (lookup, v) in enumerate(zip(self.categories, row, strict=True)):
                if v is not None:
                    codes[i, j] = lookup.get(v, -1)
        return codes

    def raw(self, num: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """The estimator's log-odds for each row (before calibration), from the compiled arrays."""
        if self.linear is not None:
            return self._linear_terms(num, codes).sum(axis=1) + self.linear.intercept
        assert self.trees is not None
        return _tree_raw(self.trees, self._tree_input(num, codes))

    def probability(self, num: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """Calibrated probabilities, as ``RiskModel.predict_proba(...)[:, 1]`` (by it, after a failed check)."""
        if self.fallback is not None:
            return self._fallback_probability(num, codes)
        return self.calibrator.predict(_expit(self.raw(num, codes)))

    def _fallback_probability(self, num: np.ndarray, codes: np.ndarray) -> np.ndarray:
        assert self.fallback is not None
        return np.asarray(self.fallback.predict_proba(self.model_frame(num, codes))[:, 1], dtype=np.float64)

    def bands(self, p: np.ndarray) -> np.ndarray:
        return assign_bands(p, self.thresholds)

    def contributions(self, num: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """(rows, features) log-odds contribution of each feature; see the module docstring for the method."""
        return self.explain(num, codes)[1]

    def explain(self, num: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(calibrated probabilities, contributions) from one pass over the model (the serving call).

        After a failed check the probabilities are ``predict_proba``'s; contributions are still the
        compiled arrays' (an explanation, not the score), zeros when nothing could be compiled.
        """
        if self.fallback is not None:
            try:
                contributions = self._compiled_explain(num, codes)[1]
            except Exception:  # noqa: BLE001 - a refused compiled path may fail in any way
                contributions = np.zeros((num.shape[0], len(self.features)))
            return self._fallback_probability(num, codes), contributions
        return self._compiled_explain(num, codes)

    def _compiled_explain(self, num: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.linear is not None:
            terms = self._linear_terms(num, codes)
            raw = terms.sum(axis=1) + self.linear.intercept
            return self.calibrator.predict(_expit(raw)), terms
        assert self.trees is not None
        trees = self.trees
        mismatch, counts = _mismatches(trees, _node_left(trees, self._tree_input(num, codes)))
        out = np.zeros((num.shape[0], len(self.features)))
        out[:, trees.perm[trees.used]] = _tree_contributions(trees, mismatch, counts)
        return self.calibrator.predict(_expit(_leaf_sum(trees, counts))), out

    def _linear_terms(self, num: np.ndarray, codes: np.ndarray) -> np.ndarray:
        lin = self.linear
        assert lin is not None
        z = signed_log1p(num) if lin.log else num
        missing = np.isnan(z)
        k = len(self.numeric)
        terms = np.empty((num.shape[0], k + len(self.categorical)))
        terms[:, :k] = (np.where(missing, lin.median, z) - lin.mean) / lin.scale * lin.coef_num
        if len(lin.indicator):
            terms[:, lin.indicator] += missing[:, lin.indicator] * lin.coef_ind
        for j, coef in enumerate(lin.coef_cat):
            c = codes[:, j]
            terms[:, k + j] = np.where(c >= 0, coef[np.maximum(c, 0)], 0.0) if len(coef) else 0.0
        return terms

    def _tree_input(self, num: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """The matrix sklearn's trees read: HGB's category codes (NaN = unknown) and numerics, HGB's order."""
        assert self.trees is not None
        cats = [
            np.where(codes[:, j] >= 0, remap[np.maximum(codes[:, j], 0)], np.nan)
            if len(remap)
            else np.full(len(codes), np.nan)
            for j, remap in enumerate(self.trees.cat_remap)
        ]
        design = np.column_stack([num, *cats]) if cats else num
        return design[:, self.trees.perm]


def _expit(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _node_left(trees: _Trees, x: np.ndarray) -> np.ndarray:
    """(rows, internal nodes): does the row go left at the node? As sklearn's ``_predict_one_from_raw_data``.

    NaN follows the missing direction; a category goes left if in the node's bitset, right if known, else
    the missing direction; a number goes left if <= the threshold.
    """
    v = x[:, trees.node_feature]
    nan = np.isnan(v)
    left = v <= trees.node_threshold
    if trees.node_categorical.any():
        code = np.clip(np.nan_to_num(v, nan=0.0), 0, 255).astype(np.int64)
        word, bit = code // 32, (code % 32).astype(np.uint32)
        in_left = (trees.left_bitsets[trees.node_bitset, word] >> bit) & 1
        in_known = (trees.known_bitsets[trees.node_known, word] >> bit) & 1
        unknown = (v < 0) | ((in_left == 0) & (in_known == 0))
        left = np.where(trees.node_categorical, np.where(unknown, trees.node_missing_left, in_left == 1), left)
    return np.where(nan, trees.node_missing_left, left)


def _mismatches(trees: _Trees, left: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(per pair: does the ancestor send the row away from the leaf?, per leaf: how many do); 0 = reached."""
    mismatch = left[:, trees.pair_node] != trees.pair_left
    if not len(trees.pair_node):
        return mismatch, np.zeros((left.shape[0], len(trees.leaf_value)), dtype=np.int64)
    starts = np.minimum(trees.leaf_start, len(trees.pair_node) - 1)
    counts = np.add.reduceat(mismatch.astype(np.int64), starts, axis=1)
    return mismatch, np.where(trees.leaf_has_pairs, counts, 0)


def _tree_raw(trees: _Trees, x: np.ndarray) -> np.ndarray:
    """Sum of the reached leaves' values plus the baseline per row, added in tree order as sklearn adds them."""
    return _leaf_sum(trees, _mismatches(trees, _node_left(trees, x))[1])


def _leaf_sum(trees: _Trees, counts: np.ndarray) -> np.ndarray:
    per_tree = np.add.reduceat(np.where(counts == 0, trees.leaf_value, 0.0), trees.tree_start, axis=1)
    summed = np.cumsum(np.column_stack([np.full(counts.shape[0], trees.baseline), per_tree]), axis=1)
    return np.asarray(summed[:, -1])


def _tree_contributions(trees: _Trees, mismatch: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(rows, used features): raw(x) - raw(x with the feature at its reference), for every feature at once.

    Setting feature j to its reference changes only the tests of nodes splitting on j, so only leaves
    below such nodes can change between reached and not. Per (j, leaf) group the change in mismatches is
    a sum over the group's pairs; the tree outputs change by the values of the leaves that stop or start
    being reached. Equal to re-scoring the substituted rows (tested), without re-walking every tree.
    """
    if not len(trees.used):
        return np.zeros((counts.shape[0], 0))
    delta = trees.mismatch_ref.astype(np.int64)[None, :] - mismatch.astype(np.int64)
    group_delta = np.add.reduceat(delta[:, trees.group_order], trees.group_start, axis=1)
    before = counts[:, trees.group_leaf]
    value = trees.leaf_value[trees.group_leaf]
    change = value * ((before == 0).astype(np.float64) - (before + group_delta == 0).astype(np.float64))
    return np.add.reduceat(change, trees.feature_start, axis=1)


def compile_fast_scorer(model: RiskModel, reference: Mapping[str, float] | None = None) -> FastScorer:
    """Read a fitted ``RiskModel``'s learned attributes into a ``FastScorer``, checked against the model.

    ``reference`` gives the training median of each numeric feature for tree explanations; without it
    the model's ``metadata["feature_medians"]`` is used, and a feature without either gets NaN (the
    trees' missing-value route). The compiled path is used only if it matches ``predict_proba`` within
    ``PARITY_TOLERANCE`` on ``check_sample``; otherwise the scorer falls back to the model.
    """
    try:
        scorer = _compile(model, reference)
    except Exception as exc:  # noqa: BLE001 - private attributes may be missing or reshaped
        log.warning("compiled scorer refused: compiling failed (%s); scoring with predict_proba", exc)
        return replace(_interface(model), fallback=model, parity_error=math.nan)
    error = parity_error(scorer, model)
    if not error <= PARITY_TOLERANCE:
        log.warning(
            "compiled scorer refused: differs from predict_proba by %.3g > %g on the check sample; "
            "scoring with predict_proba",
            error,
            PARITY_TOLERANCE,
        )
        return replace(scorer, fallback=model, parity_error=error)
    return replace(scorer, parity_error=error)


def check_sample(scorer: FastScorer, rows: int = CHECK_ROWS, seed: int = CHECK_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (numeric, codes) rows that exercise the model: every tree split threshold exactly (the ``<=``
    edge), values around the linear model's centre, zeros, large counts, missing values, every known
    category and an unknown one."""
    rng = np.random.default_rng(seed)
    k = len(scorer.numeric)
    num = np.empty((rows, k))
    for j in range(k):
        pool = [0.0, 1.0, 2.0, 24.0, 1_000.0, 1e6, -1.0]
        if scorer.linear is not None:
            centre = scorer.linear.mean[j]
            spread = scorer.linear.scale[j]
            pool += [float(centre), float(centre + spread), float(centre - spread)]
            if scorer.linear.log:
                pool += [float(np.sign(centre) * np.expm1(abs(centre)))]
        if scorer.trees is not None:
            column = int(np.flatnonzero(scorer.trees.perm == j)[0])
            pool += scorer.trees.node_threshold[scorer.trees.node_feature == column].tolist()
        values = rng.choice(np.asarray(pool, dtype=np.float64), rows)
        jitter = rng.random(rows) < 0.3
        values[jitter] = values[jitter] * rng.uniform(0.5, 1.5, int(jitter.sum()))
        values[rng.random(rows) < 0.1] = np.nan
        num[:, j] = values
    codes = np.zeros((rows, len(scorer.categories)), dtype=np.int64)
    for j, lookup in enumerate(scorer.categories):
        codes[:, j] = rng.integers(-1, len(lookup), rows) if lookup else -1
    return num, codes


def parity_error(scorer: FastScorer, model: RiskModel) -> float:
    """Largest |compiled - ``predict_proba``| on ``check_sample`` (probabilities and the explain pass); NaN
    when either path fails."""
    num, codes = check_sample(scorer)
    try:
        expected = np.asarray(model.predict_proba(scorer.model_frame(num, codes))[:, 1], dtype=np.float64)
        compiled = replace(scorer, fallback=None)
        got = compiled.calibrator.predict(_expit(compiled.raw(num, codes)))
        explained = compiled.explain(num, codes)[0]
    except Exception as exc:  # noqa: BLE001 - any failure refuses the compiled path
        log.warning("compiled scorer check failed: %s", exc)
        return math.nan
    return float(max(np.max(np.abs(got - expected), initial=0.0), np.max(np.abs(explained - expected), initial=0.0)))


def _interface(model: RiskModel) -> FastScorer:
    """What scoring needs besides the compiled arrays: feature names, categories, calibrator, bands."""
    clf = model.classifier_
    numeric, categorical = tuple(str(c) for c in clf.numeric_), tuple(str(c) for c in clf.categorical_)
    step = clf.categorical_step_
    cats = [list(c) for c in step.categories_] if step is not None else [[] for _ in categorical]
    return FastScorer(
        kind="hgb" if getattr(clf, "tree_", False) else "logreg",
        numeric=numeric,
        categorical=categorical,
        categories=tuple({str(v): i for i, v in enumerate(c)} for c in cats),
        calibrator=model.calibrator_,
        thresholds=np.asarray(model.band_thresholds_, dtype=np.float64),
    )


def _compile(model: RiskModel, reference: Mapping[str, float] | None) -> FastScorer:
    """The compiled arrays, unchecked (``compile_fast_scorer`` checks them)."""
    base = _interface(model)
    clf, est = model.classifier_, model.classifier_.estimator_
    step = clf.categorical_step_
    cats = [list(c) for c in step.categories_] if step is not None else [[] for _ in base.categorical]
    if base.kind == "logreg":
        return replace(base, linear=_linear_parts(clf, est, len(base.numeric), cats))
    medians = dict((model.metadata or {}).get("feature_medians") or {})
    medians.update(reference or {})
    design_ref = np.array([float(medians.get(c, math.nan)) for c in base.numeric] + [math.nan] * len(base.categorical))
    return replace(base, trees=_tree_parts(est, len(base.numeric), [len(c) for c in cats], design_ref))


def _linear_parts(clf: Any, est: Any, k: int, cats: list[list[Any]]) -> _Linear:
    coef = np.asarray(est.coef_, dtype=np.float64).ravel()
    ns = clf.numeric_step_
    if ns is not None:
        indicator = np.asarray(ns.indicator_features_, dtype=np.int64)
        median, mean, scale, log = ns.median_, ns.mean_, ns.scale_, bool(ns.log)
    else:
        indicator = np.zeros(0, dtype=np.int64)
        median, mean, scale, log = np.zeros(k), np.zeros(k), np.ones(k), False
    offset = k + len(indicator)
    coef_cat = []
    for c in cats:
        coef_cat.append(coef[offset : offset + len(c)])
        offset += len(c)
    return _Linear(
        log=log,
        median=np.asarray(median, dtype=np.float64),
        mean=np.asarray(mean, dtype=np.float64),
        scale=np.asarray(scale, dtype=np.float64),
        indicator=indicator,
        coef_num=coef[:k],
        coef_ind=coef[k : k + len(indicator)],
        coef_cat=tuple(coef_cat),
        intercept=float(np.asarray(est.intercept_).ravel()[0]),
    )


def _tree_parts(est: Any, k: int, n_categories: list[int], design_ref: np.ndarray) -> _Trees:
    """Flatten a fitted binary HistGradientBoostingClassifier (its preprocessor, bitsets and nodes)."""
    if est.n_trees_per_iteration_ != 1:
        raise TypeError("only binary HistGradientBoosting models can be compiled")
    width = k + len(n_categories)
    remaps: list[np.ndarray] = []
    if est._preprocessor is not None:
        # With categorical features sklearn re-encodes them (OrdinalEncoder) and puts them first.
        is_cat = np.asarray(est.is_categorical_, dtype=bool)
        perm = np.r_[np.flatnonzero(is_cat), np.flatnonzero(~is_cat)].astype(np.int64)
        encoder = est._preprocessor.named_transformers_["encoder"]
        for j, seen in enumerate(encoder.categories_):
            seen = np.asarray(seen, dtype=np.float64)
            seen = seen[~np.isnan(seen)]
            remap = np.full(n_categories[j], np.nan)
            for pos, value in enumerate(seen):
                if 0 <= value < n_categories[j] and float(value).is_integer():
                    remap[int(value)] = float(pos)
            remaps.append(remap)
    else:
        perm = np.arange(width, dtype=np.int64)
        remaps = [np.arange(n, dtype=np.float64) for n in n_categories]

    predictors = [p[0] for p in est._predictors]
    known, f_idx_map = est._bin_mapper.make_known_categories_bitsets()
    node_feature, node_thr, node_miss, node_cat, node_bitset = [], [], [], [], []
    pair_leaf: list[int] = []
    pair_node: list[int] = []
    pair_left: list[bool] = []
    leaf_value: list[float] = []
    tree_start: list[int] = []
    bitsets: list[np.ndarray] = []
    n_internal = 0
    for pred in predictors:
        nodes = pred.nodes
        tree_start.append(len(leaf_value))
        internal_id: dict[int, int] = {}
        for n in np.flatnonzero(~nodes["is_leaf"].astype(bool)).tolist():
            internal_id[n] = n_internal + len(internal_id)
            node = nodes[n]
            node_feature.append(int(node["feature_idx"]))
            node_thr.append(float(node["num_threshold"]))
            node_miss.append(bool(node["missing_go_to_left"]))
            node_cat.append(bool(node["is_categorical"]))
            node_bitset.append(int(node["bitset_idx"]) + sum(len(b) for b in bitsets))
        stack: list[tuple[int, list[tuple[int, bool]]]] = [(0, [])]
        leaves: list[tuple[int, list[tuple[int, bool]]]] = []
        while stack:
            at, path = stack.pop()
            if nodes[at]["is_leaf"]:
                leaves.append((at, path))
                continue
            stack.append((int(nodes[at]["right"]), [*path, (internal_id[at], False)]))
            stack.append((int(nodes[at]["left"]), [*path, (internal_id[at], True)]))
        for leaf_at, path in sorted(leaves):
            for node_id, went_left in path:
                pair_leaf.append(len(leaf_value))
                pair_node.append(node_id)
                pair_left.append(went_left)
            leaf_value.append(float(nodes[leaf_at]["value"]))
        n_internal += len(internal_id)
        bitsets.append(np.asarray(pred.raw_left_cat_bitsets, dtype=np.uint32).reshape(-1, 8))

    leaf_ids = np.asarray(pair_leaf, dtype=np.int64)
    counts = np.bincount(leaf_ids, minlength=len(leaf_value))
    feature = np.asarray(node_feature, dtype=np.int64)
    all_bitsets = np.vstack([*bitsets, np.zeros((1, 8), dtype=np.uint32)])
    known = np.asarray(known, dtype=np.uint32).reshape(-1, 8)
    f_idx_map = np.asarray(f_idx_map, dtype=np.int64)
    pairs = np.asarray(pair_node, dtype=np.int64)
    pair_feature = feature[pairs]
    order = np.lexsort((leaf_ids, pair_feature))
    key_f, key_l = pair_feature[order], leaf_ids[order]
    new_group = np.r_[True, (key_f[1:] != key_f[:-1]) | (key_l[1:] != key_l[:-1])] if len(order) else np.zeros(0, bool)
    group_start = np.flatnonzero(new_group)
    group_feature = key_f[group_start]
    used, feature_start = np.unique(group_feature, return_index=True)
    trees = _Trees(
        perm=perm,
        cat_remap=tuple(remaps),
        node_feature=feature,
        node_threshold=np.asarray(node_thr, dtype=np.float64),
        node_missing_left=np.asarray(node_miss, dtype=bool),
        node_categorical=np.asarray(node_cat, dtype=bool),
        node_bitset=np.asarray(node_bitset, dtype=np.int64),
        left_bitsets=all_bitsets,
        node_known=f_idx_map[feature] if len(feature) else np.zeros(0, dtype=np.int64),
        known_bitsets=known if len(known) else np.zeros((1, 8), dtype=np.uint32),
        pair_node=np.asarray(pair_node, dtype=np.int64),
        pair_left=np.asarray(pair_left, dtype=bool),
        leaf_start=np.r_[0, np.cumsum(counts)[:-1]].astype(np.int64),
        leaf_has_pairs=counts > 0,
        leaf_value=np.asarray(leaf_value, dtype=np.float64),
        tree_start=np.asarray(tree_start, dtype=np.int64),
        baseline=float(np.asarray(est._baseline_prediction).ravel()[0]),
        mismatch_ref=np.zeros(len(pairs), dtype=bool),
        group_order=order.astype(np.int64),
        group_start=group_start.astype(np.int64),
        group_leaf=key_l[group_start],
        feature_start=feature_start.astype(np.int64),
        used=used.astype(np.int64),
    )
    # A node's test at the reference value of its own feature does not depend on the row.
    left_ref = _node_left(trees, design_ref[perm][None, :])
    return replace(trees, mismatch_ref=left_ref[0][pairs] != trees.pair_left)
