"""Scoring upcoming deploys: point-in-time features, a compiled model, and why the score is what it is.

Two paths give the same numbers:

- the batch path is the training code itself: ``build_features`` on a frame of deploys, then the fitted
  ``RiskModel.predict_proba`` on the feature frame (``score_frame``);
- the fast path serves one deploy in well under a millisecond: ``FeatureIndex`` holds the store's history
  prepared by the training code's first stage (``features.pointintime.prepare_history``, once per store
  version), a request runs its second stage (``compute_features``) on one row of plain arrays, and
  ``FastScorer`` applies the fitted preprocessing and estimator to a numpy row from their learned
  attributes (``compile_fast_scorer``), no pandas, no sklearn validation (``score_deploy``).

The features therefore have one definition; tests hold both paths equal (features exactly,
probabilities to 1e-9) on many deploys.

Explanations are on the model's log-odds scale, before calibration. For the logistic model a feature's
contribution is coefficient x transformed value (the standardised signed-log value, which is relative
to the training mean, plus its missing-indicator term; a category's one-hot coefficient). For boosted
trees it is the change in the model's log-odds when the feature is replaced by its training median (a
category by "unknown"): output(x) - output(x with that feature at its reference).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

import numpy as np
import pandas as pd

from features.attribution import AttributionConfig
from features.dora import service_teams
from features.pointintime import (
    MISSING_CATEGORY,
    EntityArrays,
    FeatureConfig,
    PreparedHistory,
    build_features,
    compute_features,
    prepare_history,
)
from features.schema import EXTRA_PREFIX, History
from models.estimators import BANDS, RiskModel, ScoreCalibrator, assign_bands
from models.transformers import signed_log1p

_SIZE_COLUMNS = ("lines_added", "lines_deleted", "files_changed", "commit_count")
#: How many factors a score explains by default.
TOP_FACTORS = 6


# --------------------------------------------------------------------------------------------
# The deploy to score


@dataclass(frozen=True)
class UpcomingDeploy:
    """One deploy about to ship, in canonical deploys-table terms; ``created_at`` is when it ships (UTC)."""

    service: str | None
    created_at: pd.Timestamp
    deploy_id: str | None = None
    environment: str = "production"
    author: str | None = None
    lines_added: float | None = None
    lines_deleted: float | None = None
    files_changed: float | None = None
    commit_count: float | None = None
    commit_sha: str | None = None
    touches_infra: bool | None = None
    is_rollback: bool | None = None
    squad: str | None = None
    tribe: str | None = None
    extra: Mapping[str, float] = field(default_factory=dict)

    @property
    def micros(self) -> int:
        """Ship time as UTC microseconds since the epoch (the feature code's time axis)."""
        return _micros(self.created_at)

    def with_teams(self, teams: Mapping[str, tuple[str | None, str | None]]) -> tuple[UpcomingDeploy, tuple[str, ...]]:
        """Squad and tribe filled from the service's latest deploy that names them, and which were filled."""
        known = teams.get(self.service) if self.service is not None else None
        if known is None:
            return self, ()
        squad = self.squad if self.squad is not None else known[0]
        tribe = self.tribe if self.tribe is not None else known[1]
        filled = tuple(n for n, old, new in (("squad", self.squad, squad), ("tribe", self.tribe, tribe)) if old != new)
        if not filled:
            return self, ()
        return replace(self, squad=squad, tribe=tribe), filled


def _micros(ts: pd.Timestamp) -> int:
    ts = pd.Timestamp(ts)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return int(ts.as_unit("us").value // 1000)


def deploys_frame(deploys: Sequence[UpcomingDeploy], extra_columns: Sequence[str] = ()) -> pd.DataFrame:
    """The deploys as a canonical entity frame for ``build_features`` (the batch path's input)."""
    extras = sorted({*extra_columns, *(k for d in deploys for k in d.extra)})
    created = pd.to_datetime([d.micros for d in deploys], unit="us", utc=True)
    frame = pd.DataFrame(
        {
            "deploy_id": pd.array([d.deploy_id for d in deploys], dtype="string"),
            "service": pd.array([d.service for d in deploys], dtype="string"),
            "environment": pd.array([d.environment for d in deploys], dtype="string"),
            "created_at": pd.Series(created).dt.as_unit("us"),
            "author": pd.array([d.author for d in deploys], dtype="string"),
            "commit_sha": pd.array([d.commit_sha for d in deploys], dtype="string"),
            **{c: pd.array([getattr(d, c) for d in deploys], dtype="Float64") for c in _SIZE_COLUMNS},
            "touches_infra": pd.array([d.touches_infra for d in deploys], dtype="boolean"),
            "is_rollback": pd.array([d.is_rollback for d in deploys], dtype="boolean"),
            "squad": pd.array([d.squad for d in deploys], dtype="string"),
            "tribe": pd.array([d.tribe for d in deploys], dtype="string"),
        }
    )
    for name in extras:
        frame[name] = pd.array([d.extra.get(name) for d in deploys], dtype="Float64")
    return frame


def deploys_from_frame(frame: pd.DataFrame) -> list[UpcomingDeploy]:
    """Canonical deploy rows (e.g. the store's deploys table) as ``UpcomingDeploy`` values."""
    extras = [c for c in frame.columns if str(c).startswith(EXTRA_PREFIX)]
    out = []
    for row in frame.to_dict("records"):
        out.append(
            UpcomingDeploy(
                service=_opt_str(row.get("service")),
                created_at=pd.Timestamp(row["created_at"]),
                deploy_id=_opt_str(row.get("deploy_id")),
                environment=_opt_str(row.get("environment")) or "production",
                author=_opt_str(row.get("author")),
                commit_sha=_opt_str(row.get("commit_sha")),
                touches_infra=_opt_bool(row.get("touches_infra")),
                is_rollback=_opt_bool(row.get("is_rollback")),
                squad=_opt_str(row.get("squad")),
                tribe=_opt_str(row.get("tribe")),
                extra={c: float(row[c]) for c in extras if _present(row.get(c))},
                **{c: float(row[c]) if _present(row.get(c)) else None for c in _SIZE_COLUMNS},
            )
        )
    return out


def _present(v: Any) -> bool:
    return v is not None and v is not pd.NA and not (isinstance(v, float) and math.isnan(v))


def _opt_str(v: Any) -> str | None:
    return str(v) if _present(v) else None


def _opt_bool(v: Any) -> bool | None:
    return bool(v) if _present(v) else None


# --------------------------------------------------------------------------------------------
# Point-in-time features of one deploy: the training code's two stages


@dataclass(frozen=True)
class FeatureIndex:
    """The store's history prepared once per refresh (``features.pointintime.prepare_history``), for one
    ``FeatureConfig``, and each service's teams for filling a request's squad and tribe.

    A request only runs ``compute_features`` on one row against it: the training build's own code,
    so serving cannot drift from training (``tests/test_scoring_features.py`` checks every deploy).
    """

    prepared: PreparedHistory
    teams: Mapping[str, tuple[str | None, str | None]]

    @property
    def config(self) -> FeatureConfig:
        return self.prepared.config

    @property
    def n_deploys(self) -> int:
        return self.prepared.n_deploys


def build_feature_index(history: History, deploy_labels: pd.DataFrame, config: FeatureConfig) -> FeatureIndex:
    """Index ``history`` (and its labels, usable once matured) for one-row feature queries."""
    teams = service_teams(history.deploys)
    return FeatureIndex(
        prepared=prepare_history(history, deploy_labels, config),
        teams={str(r.service): (_opt_str(r.squad), _opt_str(r.tribe)) for r in teams.itertuples(index=False)},
    )


def entity_features(
    index: FeatureIndex, deploy: UpcomingDeploy, extra_columns: Sequence[str] = ()
) -> tuple[dict[str, float], dict[str, str]]:
    """(numeric, categorical) features of one deploy; ``build_features`` on a one-row frame, minus pandas.

    ``extra_columns`` are ``extra_*`` inputs wanted as columns even when the deploy lacks them (then
    missing), as ``batch_features`` adds the model's to a frame.
    """
    features = compute_features(index.prepared, EntityArrays.from_mapping(_entity_row(deploy, extra_columns)))
    numeric = {name: float(values[0]) for name, values in features.numeric.items()}
    return numeric, {name: str(values[0]) for name, values in features.categorical.items()}


def _entity_row(deploy: UpcomingDeploy, extra_columns: Sequence[str]) -> dict[str, Any]:
    """The deploy as the entity columns the features read (what ``deploys_frame`` makes of it)."""
    return {
        "created_at": deploy.micros,
        "service": deploy.service,
        "author": deploy.author,
        "squad": deploy.squad,
        "tribe": deploy.tribe,
        **{c: getattr(deploy, c) for c in (*_SIZE_COLUMNS, "touches_infra", "is_rollback")},
        **dict.fromkeys(extra_columns),
        **deploy.extra,
    }


def _model_extras(scorer: FastScorer) -> list[str]:
    """The model's ``extra_*`` inputs, as ``batch_features`` adds them (not their missing indicators)."""
    return [c for c in scorer.numeric if c.startswith(EXTRA_PREFIX) and not c.endswith("_missing")]


# --------------------------------------------------------------------------------------------
# The model compiled to arrays


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

    @property
    def features(self) -> tuple[str, ...]:
        return (*self.numeric, *self.categorical)

    def encode(self, values: Sequence[Sequence[str | None]]) -> np.ndarray:
        """Category codes per row and categorical column; -1 where the model does not know the value."""
        codes = np.full((len(values), len(self.categorical)), -1, dtype=np.int64)
        for i, row in enumerate(values):
            for j, (lookup, v) in enumerate(zip(self.categories, row, strict=True)):
                if v is not None:
                    codes[i, j] = lookup.get(v, -1)
        return codes

    def raw(self, num: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """The estimator's log-odds for each row (before calibration)."""
        if self.linear is not None:
            return self._linear_terms(num, codes).sum(axis=1) + self.linear.intercept
        assert self.trees is not None
        return _tree_raw(self.trees, self._tree_input(num, codes))

    def probability(self, num: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """Calibrated probabilities, as ``RiskModel.predict_proba(...)[:, 1]``."""
        return self.calibrator.predict(_expit(self.raw(num, codes)))

    def bands(self, p: np.ndarray) -> np.ndarray:
        return assign_bands(p, self.thresholds)

    def contributions(self, num: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """(rows, features) log-odds contribution of each feature; see the module docstring for the method."""
        return self.explain(num, codes)[1]

    def explain(self, num: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(calibrated probabilities, contributions) from one pass over the model (the serving call)."""
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
    """Read a fitted ``RiskModel``'s learned attributes into a ``FastScorer``.

    ``reference`` gives the training median of each numeric feature for tree explanations; without it
    the model's ``metadata["feature_medians"]`` is used, and a feature without either gets NaN (the
    trees' missing-value route).
    """
    clf = model.classifier_
    numeric, categorical = tuple(str(c) for c in clf.numeric_), tuple(str(c) for c in clf.categorical_)
    step = clf.categorical_step_
    cats = [list(c) for c in step.categories_] if step is not None else [[] for _ in categorical]
    common: dict[str, Any] = {
        "numeric": numeric,
        "categorical": categorical,
        "categories": tuple({str(v): i for i, v in enumerate(c)} for c in cats),
        "calibrator": model.calibrator_,
        "thresholds": np.asarray(model.band_thresholds_, dtype=np.float64),
    }
    est = clf.estimator_
    if not getattr(clf, "tree_", False):
        return FastScorer(kind="logreg", linear=_linear_parts(clf, est, len(numeric), cats), **common)
    medians = dict((model.metadata or {}).get("feature_medians") or {})
    medians.update(reference or {})
    design_ref = np.array([float(medians.get(c, math.nan)) for c in numeric] + [math.nan] * len(categorical))
    return FastScorer(kind="hgb", trees=_tree_parts(est, len(numeric), [len(c) for c in cats], design_ref), **common)


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


# --------------------------------------------------------------------------------------------
# What was loaded, and scoring with it


@dataclass(frozen=True)
class ModelInfo:
    """Where the model came from: registry name, version and alias, its run, training time and test metrics."""

    name: str
    version: str
    run_id: str | None = None
    alias: str | None = None
    trained_at: str | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "run_id": self.run_id, "alias": self.alias}


@dataclass(frozen=True)
class ModelBundle:
    """A fitted model with everything scoring needs: the compiled scorer and the configs it was trained with."""

    model: RiskModel
    scorer: FastScorer
    info: ModelInfo
    feature_config: FeatureConfig
    attribution_config: AttributionConfig
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def needs_medians(self) -> bool:
        """A tree model saved without training medians: explanations need them from the store."""
        return self.scorer.trees is not None and not self.metadata.get("feature_medians")

    def with_medians(self, medians: Mapping[str, float]) -> ModelBundle:
        return replace(self, scorer=compile_fast_scorer(self.model, medians))


def make_bundle(
    model: RiskModel,
    info: ModelInfo,
    metadata: Mapping[str, Any] | None = None,
    reference: Mapping[str, float] | None = None,
) -> ModelBundle:
    """Bundle a fitted model; its configs come from ``metadata`` (the registry's serving metadata), else
    ``model.metadata``, else the defaults."""
    meta = dict(metadata if metadata is not None else (model.metadata or {}))
    medians = {**dict(meta.get("feature_medians") or {}), **dict(reference or {})}
    return ModelBundle(
        model=model,
        scorer=compile_fast_scorer(model, medians),
        info=info,
        feature_config=feature_config_from(meta.get("feature_config")),
        attribution_config=attribution_config_from(meta.get("attribution_config")),
        metadata=meta,
    )


def champion_version(client: Any, name: str, alias: str) -> tuple[str, str | None] | None:
    """(version, run id) the alias points at, or None when it points nowhere (cheap: one registry query)."""
    from mlflow.exceptions import MlflowException

    try:
        mv = client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None
    return str(mv.version), mv.run_id


def load_bundle(client: Any, name: str, version: str, alias: str | None = None) -> ModelBundle:
    """A registered model version with its serving metadata (loaded with the registry's trust list)."""
    from mlflow.models import get_model_info

    from models.registry import load_model

    uri = f"models:/{name}/{version}"
    mv = client.get_model_version(name, version)
    model = load_model(uri)
    meta = dict(get_model_info(uri).metadata or {})
    metrics = {k: float(v) for k, v in (meta.get("test_metrics") or {}).items() if v is not None}
    info = ModelInfo(name, str(version), mv.run_id, alias, meta.get("trained_at"), metrics)
    return make_bundle(model, info, meta)


def feature_config_from(value: Any) -> FeatureConfig:
    """A ``FeatureConfig`` from itself, a dict of its fields (as ``models.dataset.config_dict`` writes) or None."""
    if value is None:
        return FeatureConfig()
    if isinstance(value, FeatureConfig):
        return value
    data = dict(value)
    for key in ("history_environments", "business_hours", "extra_columns"):
        if data.get(key) is not None:
            data[key] = tuple(data[key])
    known = {f.name for f in fields(FeatureConfig)}
    return FeatureConfig(**{k: v for k, v in data.items() if k in known})


def attribution_config_from(value: Any) -> AttributionConfig:
    """An ``AttributionConfig`` from itself, a dict of its fields (timedeltas as text) or None."""
    if value is None:
        return AttributionConfig()
    if isinstance(value, AttributionConfig):
        return value
    data = dict(value)
    for key in ("max_lag", "maturity_window"):
        if isinstance(data.get(key), str) and data[key].lower() not in ("none", "null"):
            data[key] = pd.Timedelta(data[key])
        elif isinstance(data.get(key), str):
            data[key] = None
    known = {f.name for f in fields(AttributionConfig)}
    return AttributionConfig(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class Factor:
    feature: str
    value: float | str
    contribution: float

    @property
    def direction(self) -> str:
        return "up" if self.contribution > 0 else "down"

    def as_dict(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "value": self.value,
            "contribution": self.contribution,
            "direction": self.direction,
        }


@dataclass(frozen=True)
class ScoreResult:
    """A scored deploy: probability, band, top factors, the feature values used and what was unusual."""

    deploy_id: str | None
    service: str | None
    created_at: pd.Timestamp
    probability: float
    band: str
    factors: tuple[Factor, ...]
    features: Mapping[str, float | str]
    flags: Mapping[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            "deploy_id": self.deploy_id,
            "service": self.service,
            "scored_for": self.created_at.isoformat(),
            "probability": self.probability,
            "band": self.band,
            "factors": [f.as_dict() for f in self.factors],
            "features": dict(self.features),
            "flags": dict(self.flags),
        }


def top_factors(
    names: Sequence[str], values: Sequence[float | str], contributions: np.ndarray, k: int = TOP_FACTORS
) -> tuple[Factor, ...]:
    """The ``k`` features with the largest absolute contribution (zero contributions left out)."""
    order = np.argsort(-np.abs(contributions), kind="stable")[:k]
    return tuple(Factor(names[i], values[i], float(contributions[i])) for i in order if contributions[i] != 0.0)


def _flags(
    deploy: UpcomingDeploy,
    numeric: Mapping[str, float],
    scorer: FastScorer,
    codes: np.ndarray,
    filled: tuple[str, ...],
    cats: Mapping[str, str],
) -> dict[str, Any]:
    """What the caller should know: new service or author, values the model has not seen, inputs ignored."""
    # rare in training (beyond the encoder's max_categories) or never seen: the model treats it as "other"
    outside = [c for c, code in zip(scorer.categorical, codes, strict=True) if code < 0]
    return {
        "new_service": numeric["service_prior_deploys"] == 0,
        "new_author": deploy.author is not None and numeric["author_prior_deploys"] == 0,
        "author_missing": deploy.author is None,
        "categories_encoded_as_other": {c: cats.get(c, MISSING_CATEGORY) for c in outside},
        "filled_from_history": list(filled),
        "ignored_extra": sorted(k for k in deploy.extra if k not in scorer.numeric),
        "non_production": deploy.environment != "production",
    }


def score_deploy(index: FeatureIndex, scorer: FastScorer, deploy: UpcomingDeploy, k: int = TOP_FACTORS) -> ScoreResult:
    """The fast path: one deploy's features from the index, then the compiled model on a numpy row."""
    deploy, filled = deploy.with_teams(index.teams)
    numeric, cats = entity_features(index, deploy, _model_extras(scorer))
    num = np.array([[numeric.get(c, math.nan) for c in scorer.numeric]])
    codes = scorer.encode([[cats.get(c) for c in scorer.categorical]])
    probability, contributions = scorer.explain(num, codes)
    p, contrib = float(probability[0]), contributions[0]
    values: list[float | str] = [*num[0].tolist(), *(cats.get(c, MISSING_CATEGORY) for c in scorer.categorical)]
    used = dict(zip(scorer.features, values, strict=True))
    return ScoreResult(
        deploy_id=deploy.deploy_id,
        service=deploy.service,
        created_at=pd.Timestamp(deploy.micros, unit="us", tz="UTC"),
        probability=p,
        band=str(scorer.bands(np.array([p]))[0]),
        factors=top_factors(scorer.features, values, contrib, k),
        features=used,
        flags=_flags(deploy, numeric, scorer, codes[0], filled, cats),
    )


# --------------------------------------------------------------------------------------------
# The batch path: the training code on a frame


def with_teams(frame: pd.DataFrame, history: History) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Missing squad/tribe filled from each service's latest deploy naming them; also which were filled."""
    teams = service_teams(history.deploys).set_index("service")
    out = frame.copy()
    filled = pd.DataFrame(index=frame.index)
    for team in ("squad", "tribe"):
        current = out[team].astype("string") if team in out else pd.Series(pd.NA, index=out.index, dtype="string")
        looked_up = out["service"].astype("string").map(teams[team]).astype("string")
        filled[team] = current.isna() & looked_up.notna()
        out[team] = current.fillna(looked_up)
    return out, filled


def batch_features(
    frame: pd.DataFrame, history: History, deploy_labels: pd.DataFrame, bundle: ModelBundle
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(feature frame, filled teams) of a frame of deploys, by ``build_features`` as in training."""
    entities, filled = with_teams(frame, history)
    for name in bundle.scorer.numeric:
        if name.startswith(EXTRA_PREFIX) and name not in entities and not name.endswith("_missing"):
            entities[name] = pd.array([None] * len(entities), dtype="Float64")
    return build_features(entities, history, deploy_labels, bundle.feature_config), filled


def score_frame(
    frame: pd.DataFrame, history: History, deploy_labels: pd.DataFrame, bundle: ModelBundle, k: int = TOP_FACTORS
) -> pd.DataFrame:
    """The batch path: probabilities from ``RiskModel.predict_proba`` on the feature frame, bands, factors.

    Returns one row per input deploy: deploy_id, service, created_at, probability, band, top_factors
    (a list of {feature, value, contribution, direction}), new_service, new_author.
    """
    features, filled = batch_features(frame, history, deploy_labels, bundle)
    scorer = bundle.scorer
    p = bundle.model.predict_proba(features)[:, 1]
    num = features[list(scorer.numeric)].to_numpy(dtype=np.float64)
    cat_values = features[list(scorer.categorical)].astype(object).to_numpy()
    codes = scorer.encode(cat_values.tolist())
    contrib = scorer.contributions(num, codes) if len(features) else np.zeros((0, len(scorer.features)))
    factors = []
    for i in range(len(features)):
        values = [*num[i].tolist(), *cat_values[i].tolist()]
        factors.append([f.as_dict() for f in top_factors(scorer.features, values, contrib[i], k)])
    return pd.DataFrame(
        {
            "deploy_id": features["deploy_id"].to_numpy(dtype=object),
            "service": frame["service"].astype("string").to_numpy(dtype=object) if "service" in frame else None,
            "created_at": features["created_at"].to_numpy(),
            "probability": p,
            "band": scorer.bands(p),
            "top_factors": factors,
            "new_service": features["service_prior_deploys"].to_numpy() == 0,
            "new_author": (features["author_prior_deploys"].to_numpy() == 0) & (features["author_missing"] == 0),
            "filled_teams": [[t for t in ("squad", "tribe") if filled.at[i, t]] for i in filled.index],
        },
        index=frame.index,
    )


def band_counts(bands: Sequence[str]) -> dict[str, int]:
    """How many scores fell in each band (every band present, in order)."""
    values = list(bands)
    return {b: values.count(b) for b in BANDS}


def feature_medians(
    history: History, deploy_labels: pd.DataFrame, config: FeatureConfig, numeric: Sequence[str], limit: int = 20_000
) -> dict[str, float]:
    """Median of each numeric feature over the latest ``limit`` counted deploys of the history.

    Stands in for the training medians when a tree model was saved without them: the store's deploys
    are what the model was trained on (see ``compile_fast_scorer``).
    """
    deploys = history.deploys
    keep = deploys["environment"].astype("string").isin(list(config.history_environments)).fillna(False)
    entities = deploys.loc[keep.to_numpy(dtype=bool)].sort_values("created_at", kind="stable").tail(limit)
    if not len(entities):
        return {}
    table = build_features(entities, history, deploy_labels, config)
    return {c: float(np.nanmedian(table[c].to_numpy(dtype=np.float64))) for c in numeric if c in table}


def now_utc() -> pd.Timestamp:
    """Now, as the ship time of a deploy that gives none (microsecond precision, like the store)."""
    return pd.Timestamp(time.time_ns() // 1000, unit="us", tz="UTC")
