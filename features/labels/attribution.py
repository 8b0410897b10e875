"""Attribute incidents to the changes (deploys, flag flips) that caused them, and label changes.

The label a risk model learns from is "did this change cause an incident?". Tools rarely say so
outright, so the rules below combine what they do say with the time-window heuristics of DORA Four
Keys, Apache DevLake, Sleuth and Middleware (see ``docs/labels.md``), in priority order:

1. explicit: the incident names its cause (``caused_by_deploy_id``, ``caused_by_commit_sha`` or
   ``caused_by_flag_key``);
2. external: a deploy's ``label`` column (e.g. SZZ) stands as given;
3. time window: the nearest change of the incident's service before it, within ``max_lag``;
4. ``not_change_related`` incidents are never linked.

Rollbacks mark the deploy they revert as failed. A change younger than the attribution window at
``as_of`` has no final label yet (``mature`` is False) and must not be trained or evaluated on.
Everything here is a pure function of the three canonical tables.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.history.choices import check_choice
from features.history.schema import FLIP_ACTIONS, History
from features.history.timestamps import utc_timestamp

#: Deploy statuses meaning the change reached its environment (a ``rolled_back`` deploy is itself
#: a rollback that shipped; see ``docs/labels.md``).
SHIPPED_STATUSES = ("success", "rolled_back")
#: Shortest commit sha prefix accepted as naming one commit (git's default abbreviation).
MIN_SHA_PREFIX = 7

Method = Literal["explicit", "time_window", "rollback"]
Scope = Literal["service", "project"]
ChangeTime = Literal["finished", "created"]
LINK_COLUMNS = ("incident_id", "change_kind", "change_id", "method", "matched_on", "evidence", "lag")


@dataclass(frozen=True)
class AttributionConfig:
    """How incidents are attributed to changes.

    max_lag: longest time from a change to an incident it may be blamed for by the time window;
        None reproduces DevLake (no window).
    scope: "service" matches an incident only to changes of its own service; "project" to a change
        of any service (DevLake treats the whole project as one unit).
    include_toggles: flag flips count as changes (Sleuth); False ignores toggles entirely.
    rollback_marks_failed: a rollback marks the deploy it reverts as failed (Sleuth, Middleware).
    production_only: only production deploys/flips are changes, and incidents of a named
        non-production environment are not linked by the time window. Flips with no environment
        are kept (flag tools that do not report one are taken to act on production).
    change_time: when a deploy takes effect: "finished" (``finished_at``, else ``created_at``;
        DevLake) or "created".
    maturity_window: how long a change's label stays open when ``max_lag`` is None.
    fallback_on_unmatched_explicit: an incident whose explicit cause matches nothing in the
        history is linked by the time window instead of staying unlinked.
    use_explicit: honour the incidents' cause fields (rule 1); False ignores them, as DevLake does.
    """

    max_lag: pd.Timedelta | None = pd.Timedelta(hours=24)
    scope: Scope = "service"
    include_toggles: bool = True
    rollback_marks_failed: bool = True
    production_only: bool = True
    change_time: ChangeTime = "finished"
    maturity_window: pd.Timedelta = pd.Timedelta(days=7)
    fallback_on_unmatched_explicit: bool = False
    use_explicit: bool = True

    def __post_init__(self) -> None:
        if self.max_lag is not None and self.max_lag <= pd.Timedelta(0):
            raise ValueError("max_lag must be positive (or None for no window)")
        if self.maturity_window <= pd.Timedelta(0):
            raise ValueError("maturity_window must be positive")
        check_choice("scope", self.scope, Scope)
        check_choice("change_time", self.change_time, ChangeTime)

    @property
    def window(self) -> pd.Timedelta:
        """How long after a change its label can still change: the lag window, else the maturity window."""
        return self.max_lag if self.max_lag is not None else self.maturity_window

    @classmethod
    def devlake(cls) -> AttributionConfig:
        """Apache DevLake's rule: latest production deploy before the incident, anywhere, no window,
        cause fields, flags and rollbacks ignored."""
        return cls(
            max_lag=None, scope="project", include_toggles=False, rollback_marks_failed=False, use_explicit=False
        )


def max_lag_from(value: float | str | None) -> pd.Timedelta | None:
    """The one max-lag parser: hours (a positive finite number, or its text) or ``None``/``"none"``.

    ``None`` means DevLake's rule (no window). Raises ``ValueError`` on anything else, for the
    command line (``--max-lag``) and the scheduled flows (``max_lag_hours``) alike.
    """
    if value is None or (isinstance(value, str) and value.strip().lower() == "none"):
        return None
    try:
        hours = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"max lag must be a number of hours or 'none', got {value!r}") from None
    if not math.isfinite(hours) or hours <= 0:
        raise ValueError(f"max lag must be a positive number of hours or 'none', got {value!r}")
    return pd.Timedelta(hours=hours)


@dataclass(frozen=True)
class Attribution:
    """Links from incidents to changes, and the per-change labels derived from them.

    links: incident_id (NA for rollback links), change_kind ('deploy'|'toggle'), change_id, method
        ('explicit'|'time_window'|'rollback'), matched_on (which field matched), evidence (the
        matched value, or the rollback deploy's id), lag (incident or rollback time - change time).
    deploy_labels: one row per deploy: deploy_id, service, environment, created_at, change_time,
        eligible (a shipped deploy in scope), label (external, Int8), failed, n_incidents,
        label_method ('explicit'|'external'|'rollback'|'time_window'|'none'), matured_at, mature.
    toggle_labels: one row per toggle event: event_id, flag_key, service, occurred_at, is_flip,
        failed, n_incidents, label_method, matured_at, mature.
    """

    links: pd.DataFrame
    deploy_labels: pd.DataFrame
    toggle_labels: pd.DataFrame
    summary: dict[str, int] = field(default_factory=dict)
    as_of: pd.Timestamp | None = None


def data_end(history: History) -> pd.Timestamp | None:
    """The latest timestamp in the history (deploy, toggle and incident times), or None if empty."""
    candidates = [
        history.deploys["created_at"],
        history.deploys["finished_at"],
        history.toggle_events["occurred_at"],
        history.incidents["created_at"],
        history.incidents["resolved_at"],
    ]
    latest = [s.max() for s in candidates if len(s) and s.notna().any()]
    return max(latest) if latest else None


def attribute(history: History, config: AttributionConfig, as_of: pd.Timestamp | None = None) -> Attribution:
    """Link incidents to changes and label every deploy and toggle event, as known at ``as_of``.

    Only incidents and rollbacks created at or before ``as_of`` (default: the data's end) are
    used, so the result is what could have been known then.
    """
    end = as_of if as_of is not None else data_end(history)
    if end is None:
        end = pd.Timestamp(0, tz="UTC")
    end = utc_timestamp(end, "as_of")

    deploys = _deploy_frame(history.deploys, config)
    toggles = _toggle_frame(history.toggle_events, config)
    incidents = _incident_frame(history.incidents, config, end)

    explicit, unmatched = _explicit_links(incidents, deploys, toggles, config)
    linked = _isin(incidents["incident_id"], explicit["incident_id"])
    window_pool = incidents[
        ~linked
        & ~incidents["not_change_related"]
        & incidents["env_ok"]
        & (~incidents["has_explicit"] | (config.fallback_on_unmatched_explicit & unmatched))
    ]
    window = _window_links(window_pool, deploys, toggles, config)
    rollbacks = _rollback_links(deploys, end, config) if config.rollback_marks_failed else _empty_links()
    links = pd.concat([explicit, window, rollbacks], ignore_index=True)
    links = links.astype(_LINK_DTYPES).sort_values(["change_kind", "change_id", "method", "incident_id"], kind="stable")
    links = links.reset_index(drop=True)

    deploy_labels = _deploy_labels(deploys, links, config, end)
    toggle_labels = _toggle_labels(toggles, links, config, end)
    summary = _summary(incidents, links, deploy_labels, toggle_labels, unmatched)
    return Attribution(links, deploy_labels, toggle_labels, summary, end)


# --------------------------------------------------------------------------------------------
# Preparing the tables


def _flag(values: pd.Series) -> pd.Series:
    return values.astype("boolean").fillna(False).astype(bool)


def _deploy_frame(raw: pd.DataFrame, config: AttributionConfig) -> pd.DataFrame:
    """Deploys with their effective time and the flags the rules need; input left untouched."""
    d = pd.DataFrame(
        {
            "deploy_id": raw["deploy_id"].astype("string"),
            "source": raw["source"].astype("string"),
            "service": raw["service"].astype("string"),
            "environment": raw["environment"].astype("string"),
            "status": raw["status"].astype("string"),
            "created_at": raw["created_at"],
            "finished_at": raw["finished_at"],
            "commit_sha": raw["commit_sha"].astype("string"),
            "commit_shas": raw["commit_shas"].astype("string"),
            "reverts_deploy_id": raw["reverts_deploy_id"].astype("string"),
            "label": raw["label"].astype("Int8"),
        }
    )
    if config.change_time == "finished":
        d["time"] = d["finished_at"].fillna(d["created_at"])
    else:
        d["time"] = d["created_at"]
    prod = d["environment"].eq("production").fillna(False).astype(bool) if config.production_only else True
    d["shipped"] = d["status"].isin(SHIPPED_STATUSES).astype(bool)
    d["eligible"] = d["shipped"] & prod
    d["is_rollback"] = _flag(raw["is_rollback"]) | d["status"].eq("rolled_back").fillna(False).astype(bool)
    return d.reset_index(drop=True)


def _toggle_frame(raw: pd.DataFrame, config: AttributionConfig) -> pd.DataFrame:
    t = pd.DataFrame(
        {
            "event_id": raw["event_id"].astype("string"),
            "flag_key": raw["flag_key"].astype("string"),
            "service": raw["service"].astype("string"),
            "environment": raw["environment"].astype("string"),
            "time": raw["occurred_at"],
        }
    )
    t["is_flip"] = raw["action"].isin(FLIP_ACTIONS).fillna(False).astype(bool).to_numpy()
    env_ok = t["environment"].isna() | t["environment"].eq("production") if config.production_only else True
    t["eligible"] = (t["is_flip"] & env_ok & config.include_toggles).astype(bool)
    return t.reset_index(drop=True)


def _incident_frame(raw: pd.DataFrame, config: AttributionConfig, end: pd.Timestamp) -> pd.DataFrame:
    i = pd.DataFrame(
        {
            "incident_id": raw["incident_id"].astype("string"),
            "service": raw["service"].astype("string"),
            "environment": raw["environment"].astype("string"),
            "time": raw["created_at"],
            "caused_by_deploy_id": _clean(raw["caused_by_deploy_id"]),
            "caused_by_commit_sha": _clean(raw["caused_by_commit_sha"]).str.lower(),
            "caused_by_flag_key": _clean(raw["caused_by_flag_key"]),
            "not_change_related": _flag(raw["not_change_related"]),
        }
    )
    i = i[i["time"].le(end).fillna(False).astype(bool)].reset_index(drop=True)
    i["env_ok"] = (i["environment"].isna() | i["environment"].eq("production")) if config.production_only else True
    i["env_ok"] = i["env_ok"].astype(bool)
    i["has_explicit"] = (
        i["caused_by_deploy_id"].notna() | i["caused_by_commit_sha"].notna() | i["caused_by_flag_key"].notna()
    ).astype(bool) & config.use_explicit
    return i


def _clean(values: pd.Series) -> pd.Series:
    s = values.astype("string").str.strip()
    return s.mask(s.eq(""))


# Arrow kernels for the string-heavy steps: pandas' isin, reindex and string sorts are several
# times slower on million-row id columns.


def _arrow(values: pd.Series) -> pa.Array:
    arr = pa.array(values.astype("string"), type=pa.string(), from_pandas=True)
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr


def _isin(values: pd.Series, members: pd.Series) -> np.ndarray:
    """``values.isin(members)`` for string columns (NA is never a member)."""
    if len(values) == 0 or len(members) == 0:
        return np.zeros(len(values), dtype=bool)
    found = pc.fill_null(pc.is_in(_arrow(values), value_set=_arrow(members).unique(), skip_nulls=True), False)
    return np.asarray(found.to_numpy(zero_copy_only=False), dtype=bool)


def _index_in(values: pd.Series, keys: pd.Series) -> np.ndarray:
    """Position of each value in ``keys`` (unique), -1 where absent or NA."""
    if len(values) == 0 or len(keys) == 0:
        return np.full(len(values), -1, dtype=np.int64)
    pos = pc.fill_null(pc.index_in(_arrow(values), value_set=_arrow(keys), skip_nulls=True), -1)
    return np.asarray(pos.to_numpy(zero_copy_only=False), dtype=np.int64)


def _sort(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """``frame`` sorted ascending by ``keys`` (the last key must make rows unique)."""
    table = pa.table({k: frame[k].reset_index(drop=True) for k in keys})
    order = pc.sort_indices(table, sort_keys=[(k, "ascending") for k in keys]).to_numpy()
    return frame.iloc[order]


def _codes(*columns: pd.Series) -> list[np.ndarray]:
    """Shared integer codes for string columns (NA -> -1), so joins and merge_asof ``by`` keys are ints."""
    joined = pc.dictionary_encode(pa.concat_arrays([_arrow(c) for c in columns]))
    codes = np.asarray(pc.fill_null(joined.indices, -1).to_numpy(zero_copy_only=False), dtype=np.int64)
    bounds = np.cumsum([0, *(len(c) for c in columns)])
    return [codes[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


# --------------------------------------------------------------------------------------------
# Links


_LINK_DTYPES = {
    "incident_id": "string",
    "change_kind": "string",
    "change_id": "string",
    "method": "string",
    "matched_on": "string",
    "evidence": "string",
    "lag": "timedelta64[us]",
}


def _empty_links() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in _LINK_DTYPES.items()})


def _make_links(
    incident_id: pd.Series,
    kind: str,
    change_id: pd.Series,
    method: str,
    matched_on: pd.Series | str,
    evidence: pd.Series | None,
    lag: pd.Series,
) -> pd.DataFrame:
    n = len(change_id)
    out = pd.DataFrame(
        {
            "incident_id": incident_id.to_numpy(),
            "change_kind": [kind] * n,
            "change_id": change_id.to_numpy(),
            "method": [method] * n,
            "matched_on": matched_on.to_numpy() if isinstance(matched_on, pd.Series) else [matched_on] * n,
            "evidence": evidence.to_numpy() if evidence is not None else pd.array([pd.NA] * n, dtype="string"),
            "lag": lag.to_numpy(),
        }
    )
    return out.astype(_LINK_DTYPES) if n else _empty_links()


def _explicit_links(
    incidents: pd.DataFrame, deploys: pd.DataFrame, toggles: pd.DataFrame, config: AttributionConfig
) -> tuple[pd.DataFrame, pd.Series]:
    """Links from the incidents' own cause fields; also which incidents named a cause matching nothing.

    Tried in order deploy id, commit sha, flag key: the first that matches wins.
    """
    pool = incidents[incidents["has_explicit"] & ~incidents["not_change_related"]]
    found: list[pd.DataFrame] = []

    by_id = pool[pool["caused_by_deploy_id"].notna()]
    hits = _resolve_deploy_ids(by_id[["incident_id", "service", "time"]], by_id["caused_by_deploy_id"], deploys)
    found.append(
        _make_links(
            hits["incident_id"], "deploy", hits["deploy_id"], "explicit", "deploy_id", hits["value"], hits["lag"]
        )
    )

    done = hits["incident_id"]
    by_sha = pool[pool["caused_by_commit_sha"].notna() & ~_isin(pool["incident_id"], done)]
    hits = _resolve_commits(by_sha, deploys[deploys["eligible"]])
    found.append(
        _make_links(
            hits["incident_id"], "deploy", hits["deploy_id"], "explicit", "commit_sha", hits["value"], hits["lag"]
        )
    )

    done = pd.concat([done, hits["incident_id"]])
    by_flag = pool[pool["caused_by_flag_key"].notna() & ~_isin(pool["incident_id"], done)]
    hits = _resolve_flags(by_flag, toggles[toggles["eligible"]])
    found.append(
        _make_links(hits["incident_id"], "toggle", hits["event_id"], "explicit", "flag_key", hits["value"], hits["lag"])
    )
    done = pd.concat([done, hits["incident_id"]])

    links = pd.concat(found, ignore_index=True)
    unmatched = incidents["has_explicit"] & ~incidents["not_change_related"] & ~_isin(incidents["incident_id"], done)
    return links, unmatched.astype(bool)


def _pick_one(pairs: pd.DataFrame) -> pd.DataFrame:
    """One candidate per incident: same service first, then the latest change at or before the
    incident, else the earliest after it; ties by change id for determinism."""
    if pairs.empty:
        return pairs
    ranked = pairs.assign(
        _same=pairs["same_service"].to_numpy(dtype=bool),
        _before=(pairs["change_time"] <= pairs["time"]).to_numpy(dtype=bool),
        _dist=(pairs["time"] - pairs["change_time"]).abs(),
    )
    ranked = ranked.sort_values(
        ["incident_id", "_same", "_before", "_dist", "change_id"],
        ascending=[True, False, False, True, False],
        kind="stable",
    )
    return ranked.drop_duplicates("incident_id").drop(columns=["_same", "_before", "_dist"])


def _native_ids(deploys: pd.DataFrame) -> pd.Series:
    """The tool's own id: ``deploy_id`` without its ``"{source}:"`` prefix (one slice per source)."""
    native = deploys["deploy_id"].copy()
    for source, idx in deploys.groupby("source", sort=False).groups.items():
        prefix = f"{source}:"
        ids = deploys.loc[idx, "deploy_id"]
        has = ids.str.startswith(prefix).fillna(False).astype(bool)
        native.loc[ids.index[has]] = ids[has].str.slice(len(prefix))
    return native


def _resolve_deploy_ids(who: pd.DataFrame, values: pd.Series, deploys: pd.DataFrame) -> pd.DataFrame:
    """Match ids naming a deploy: the full canonical id, or the native id after ``<source>:``.

    A native id can recur across sources; then the same-service deploy nearest before wins.
    Returns incident_id (the ``who`` key), deploy_id, value, lag.
    """
    cols = ["incident_id", "deploy_id", "value", "lag"]
    if who.empty or deploys.empty:
        return pd.DataFrame(columns=cols)
    key = who.columns[0]
    left = who.assign(value=values.to_numpy())
    d = deploys[["deploy_id", "service", "time"]].rename(columns={"service": "d_service", "time": "change_time"})
    pos = _index_in(left["value"], deploys["deploy_id"])
    full = pd.concat([left[pos >= 0].reset_index(drop=True), d.iloc[pos[pos >= 0]].reset_index(drop=True)], axis=1)
    rest = left[pos < 0]
    if len(rest):
        nat = d.assign(native=_native_ids(deploys).to_numpy())
        nat = nat[_isin(nat["native"], rest["value"])]
        full = pd.concat([full, rest.merge(nat, left_on="value", right_on="native").drop(columns="native")])
    full = full.assign(
        same_service=full["d_service"].eq(full["service"]).fillna(False).astype(bool).to_numpy(),
        change_id=full["deploy_id"],
    )
    best = _pick_one(full.rename(columns={key: "incident_id"}))
    return best.assign(lag=best["time"] - best["change_time"])[cols]


def _deploy_commits(deploys: pd.DataFrame, keys: pd.Series) -> pd.DataFrame:
    """(deploy row, sha) for every commit a deploy shipped whose 7-char prefix is in ``keys``.

    A deploy ships the commits in ``commit_shas`` (its range since the service's previous deploy)
    where known, plus its head ``commit_sha``. Split with pyarrow: histories hold millions of shas.
    """
    shas = pa.array(deploys["commit_shas"].fillna("").str.lower().to_numpy(dtype=object), type=pa.string())
    lists = pc.split_pattern(shas, " ")
    flat = pc.list_flatten(lists)
    parent = pc.list_parent_indices(lists).to_numpy()
    heads = deploys["commit_sha"].str.lower().fillna("").to_numpy(dtype=object)
    all_shas = pa.concat_arrays([flat, pa.array(heads, type=pa.string())])
    rows = np.concatenate([parent, np.arange(len(deploys))])
    keep = pc.is_in(
        pc.utf8_slice_codeunits(all_shas, 0, MIN_SHA_PREFIX), value_set=pa.array(keys.unique(), pa.string())
    )
    keep = pc.and_(keep, pc.greater_equal(pc.utf8_length(all_shas), MIN_SHA_PREFIX))
    mask = keep.to_numpy(zero_copy_only=False)
    out = pd.DataFrame({"row": rows[mask], "sha": all_shas.filter(keep).to_numpy(zero_copy_only=False)})
    return out.drop_duplicates()


def _is_prefix_pair(a: pd.Series, b: pd.Series) -> np.ndarray:
    """Row-wise: the shorter of a and b is a prefix of the longer (hex strings, compared as bytes)."""
    if len(a) == 0:
        return np.zeros(0, dtype=bool)
    width = int(max(a.str.len().max(), b.str.len().max()))
    av = np.asarray(a.to_numpy(dtype=object).astype(f"S{width}")).view(np.uint8).reshape(-1, width)
    bv = np.asarray(b.to_numpy(dtype=object).astype(f"S{width}")).view(np.uint8).reshape(-1, width)
    shortest = np.minimum(a.str.len().to_numpy(), b.str.len().to_numpy())
    inside = np.arange(width)[None, :] < shortest[:, None]
    return np.asarray(((av == bv) | ~inside).all(axis=1))


def _resolve_commits(pool: pd.DataFrame, deploys: pd.DataFrame) -> pd.DataFrame:
    """Match ``caused_by_commit_sha`` to the deploy that shipped that commit (prefixes >= 7 chars)."""
    cols = ["incident_id", "deploy_id", "value", "lag"]
    sha = pool["caused_by_commit_sha"]
    usable = sha.str.fullmatch(rf"[0-9a-f]{{{MIN_SHA_PREFIX},}}").fillna(False).astype(bool)
    left = pool.loc[usable, ["incident_id", "service", "time"]].assign(value=sha[usable])
    if left.empty or deploys.empty:
        return pd.DataFrame(columns=cols)
    left = left.assign(key=left["value"].str.slice(0, MIN_SHA_PREFIX))
    commits = _deploy_commits(deploys, left["key"])
    commits = commits.assign(key=commits["sha"].str.slice(0, MIN_SHA_PREFIX))
    d = deploys[["deploy_id", "service", "time"]].rename(columns={"service": "d_service", "time": "change_time"})
    commits = commits.join(d.reset_index(drop=True), on="row")
    pairs = left.merge(commits, on="key")
    pairs = pairs[_is_prefix_pair(pairs["value"].astype("string"), pairs["sha"].astype("string"))]
    pairs = pairs.assign(
        same_service=pairs["d_service"].eq(pairs["service"]).fillna(False).astype(bool).to_numpy(),
        change_id=pairs["deploy_id"],
    )
    best = _pick_one(pairs)
    return best.assign(lag=best["time"] - best["change_time"])[cols]


def _resolve_flags(pool: pd.DataFrame, flips: pd.DataFrame) -> pd.DataFrame:
    """Match ``caused_by_flag_key`` to the latest flip of that flag at or before the incident."""
    cols = ["incident_id", "event_id", "value", "lag"]
    if pool.empty or flips.empty:
        return pd.DataFrame(columns=cols)
    left = pool[["incident_id", "time"]].assign(flag_key=pool["caused_by_flag_key"]).sort_values("time")
    right = flips[["event_id", "flag_key", "time"]].rename(columns={"time": "change_time"})
    right = right.assign(time=right["change_time"]).sort_values(["time", "event_id"], kind="stable")
    hit = pd.merge_asof(left, right, on="time", by="flag_key", direction="backward", allow_exact_matches=True)
    hit = hit[hit["event_id"].notna()]
    return hit.assign(value=hit["flag_key"], lag=hit["time"] - hit["change_time"])[cols]


def _window_links(
    pool: pd.DataFrame, deploys: pd.DataFrame, toggles: pd.DataFrame, config: AttributionConfig
) -> pd.DataFrame:
    """The nearest change at or before each incident within ``max_lag``, of its service (or any).

    Deploys and flips share one timeline; at equal times a deploy wins over a flip, then the later
    created deploy, then the larger id (merge_asof takes the last of equal keys).
    """
    d = deploys.loc[deploys["eligible"], ["deploy_id", "service", "time", "created_at"]]
    cands = [
        pd.DataFrame(
            {
                "change_kind": "deploy",
                "change_id": d["deploy_id"],
                "service": d["service"],
                "time": d["time"],
                "_kind_rank": 1,
                "_created": d["created_at"],
            }
        )
    ]
    if config.include_toggles:
        t = toggles[toggles["eligible"]]
        cands.append(
            pd.DataFrame(
                {
                    "change_kind": "toggle",
                    "change_id": t["event_id"],
                    "service": t["service"],
                    "time": t["time"],
                    "_kind_rank": 0,
                    "_created": t["time"],
                }
            )
        )
    right = pd.concat(cands, ignore_index=True)
    right = right[right["time"].notna()]
    left = pool[["incident_id", "service", "time"]]
    by: str | None = None
    if config.scope == "service":
        right = right[right["service"].notna()]
        left = left[left["service"].notna()]
        by = "service"
    else:
        right = right.drop(columns="service")
        left = left.drop(columns="service")
    if left.empty or right.empty:
        return _empty_links()
    if by is not None:
        left_code, right_code = _codes(left["service"], right["service"])
        left = left.assign(service=left_code)
        right = right.assign(service=right_code)
    right = _sort(right.assign(change_time=right["time"]), ["time", "_kind_rank", "_created", "change_id"])
    right = right.astype({"change_kind": "string", "change_id": "string"})
    hit = pd.merge_asof(
        left.sort_values("time", kind="stable"),
        right.drop(columns=["_kind_rank", "_created"]),
        on="time",
        by=by,
        direction="backward",
        allow_exact_matches=True,
        tolerance=config.max_lag,
    )
    hit = hit[hit["change_id"].notna()]
    parts = []
    for kind in ("deploy", "toggle"):
        h = hit[hit["change_kind"].eq(kind)]
        parts.append(
            _make_links(
                h["incident_id"], kind, h["change_id"], "time_window", "window", None, h["time"] - h["change_time"]
            )
        )
    return pd.concat(parts, ignore_index=True)


def _rollback_links(deploys: pd.DataFrame, end: pd.Timestamp, config: AttributionConfig) -> pd.DataFrame:
    """Each rollback marks the deploy it reverts: ``reverts_deploy_id`` when known, else the
    service's previous shipped non-rollback deploy in the same environment."""
    rb = deploys[deploys["is_rollback"] & deploys["eligible"] & deploys["created_at"].le(end)]
    if rb.empty:
        return _empty_links()
    named = rb[rb["reverts_deploy_id"].notna()]
    who = named[["deploy_id", "service", "created_at"]].rename(
        columns={"deploy_id": "rollback_id", "created_at": "time"}
    )
    hits = _resolve_deploy_ids(who, named["reverts_deploy_id"], deploys)
    hits = hits.rename(columns={"incident_id": "rollback_id"})
    explicit = _make_links(
        pd.Series(pd.NA, index=hits.index, dtype="string"),
        "deploy",
        hits["deploy_id"],
        "rollback",
        "reverts_deploy_id",
        hits["rollback_id"],
        hits["lag"],
    )

    rest = rb[~_isin(rb["deploy_id"], hits["rollback_id"])]
    left = rest[["deploy_id", "service", "environment", "created_at"]].rename(columns={"deploy_id": "rollback_id"})
    left = left.assign(time=left["created_at"]).sort_values("time", kind="stable")
    prev = deploys[deploys["eligible"] & ~deploys["is_rollback"]]
    right = _sort(
        prev[["deploy_id", "service", "environment", "time", "created_at"]], ["time", "created_at", "deploy_id"]
    )
    right = right.assign(change_time=right["time"]).drop(columns="created_at")
    left = left[left["service"].notna()]
    right = right[right["service"].notna()]
    if left.empty or right.empty:
        return explicit
    # one integer key per (service, environment)
    ls, rs = _codes(left["service"], right["service"])
    le, re_ = _codes(left["environment"], right["environment"])
    width = int(max(le.max(), re_.max())) + 2
    left = left.assign(_key=ls * width + le + 1).drop(columns=["service", "environment"])
    right = right.assign(_key=rs * width + re_ + 1).drop(columns=["service", "environment"])
    hit = pd.merge_asof(left, right, on="time", by="_key", direction="backward", allow_exact_matches=False)
    hit = hit[hit["deploy_id"].notna()]
    implicit = _make_links(
        pd.Series(pd.NA, index=hit.index, dtype="string"),
        "deploy",
        hit["deploy_id"],
        "rollback",
        "previous_deploy",
        hit["rollback_id"],
        hit["created_at"] - hit["change_time"],
    )
    return pd.concat([explicit, implicit], ignore_index=True)


# --------------------------------------------------------------------------------------------
# Labels


def _per_change(links: pd.DataFrame, kind: str, ids: pd.Series) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """For each change in ``ids``: whether it has a link of each method, and distinct incidents linked."""
    lk = links[links["change_kind"].eq(kind)]
    has = {m: _isin(ids, lk.loc[lk["method"].eq(m), "change_id"]) for m in ("explicit", "time_window", "rollback")}
    pairs = lk.loc[lk["incident_id"].notna(), ["change_id", "incident_id"]].drop_duplicates()
    counts = pairs["change_id"].value_counts()
    pos = _index_in(ids, pd.Series(counts.index))
    n = np.where(pos >= 0, counts.to_numpy(dtype=np.int64)[np.maximum(pos, 0)], 0) if len(counts) else pos * 0
    return has, n.astype(np.int64)


def _deploy_labels(
    deploys: pd.DataFrame, links: pd.DataFrame, config: AttributionConfig, end: pd.Timestamp
) -> pd.DataFrame:
    has, n_incidents = _per_change(links, "deploy", deploys["deploy_id"])
    explicit, window, rollback = has["explicit"], has["time_window"], has["rollback"]
    label = deploys["label"]
    has_label = label.notna().to_numpy(dtype=bool)
    label_one = label.eq(1).fillna(False).to_numpy(dtype=bool)
    failed = explicit | np.where(has_label, label_one, rollback | window)
    method = np.select(
        [explicit, has_label, rollback, window], ["explicit", "external", "rollback", "time_window"], "none"
    )
    matured_at = deploys["time"] + config.window
    out = pd.DataFrame(
        {
            "deploy_id": deploys["deploy_id"],
            "service": deploys["service"],
            "environment": deploys["environment"],
            "created_at": deploys["created_at"],
            "change_time": deploys["time"],
            "eligible": deploys["eligible"].to_numpy(dtype=bool),
            "label": label,
            "failed": failed,
            "n_incidents": n_incidents,
            "label_method": pd.array(method, dtype="string"),
            "matured_at": matured_at,
            "mature": matured_at.le(end).to_numpy(dtype=bool),
        }
    )
    return out.reset_index(drop=True)


def _toggle_labels(
    toggles: pd.DataFrame, links: pd.DataFrame, config: AttributionConfig, end: pd.Timestamp
) -> pd.DataFrame:
    has, n_incidents = _per_change(links, "toggle", toggles["event_id"])
    explicit, window = has["explicit"], has["time_window"]
    matured_at = toggles["time"] + config.window
    return pd.DataFrame(
        {
            "event_id": toggles["event_id"],
            "flag_key": toggles["flag_key"],
            "service": toggles["service"],
            "occurred_at": toggles["time"],
            "is_flip": toggles["is_flip"].to_numpy(dtype=bool),
            "failed": explicit | window,
            "n_incidents": n_incidents,
            "label_method": pd.array(
                np.select([explicit, window], ["explicit", "time_window"], "none"), dtype="string"
            ),
            "matured_at": matured_at,
            "mature": matured_at.le(end).to_numpy(dtype=bool),
        }
    ).reset_index(drop=True)


def _summary(
    incidents: pd.DataFrame,
    links: pd.DataFrame,
    deploy_labels: pd.DataFrame,
    toggle_labels: pd.DataFrame,
    unmatched: pd.Series,
) -> dict[str, int]:
    inc_links = links[links["incident_id"].notna()]
    linked = _isin(incidents["incident_id"], inc_links["incident_id"])
    el = deploy_labels[deploy_labels["eligible"]]
    counts = {
        "incidents": len(incidents),
        "incidents_linked": int(linked.sum()),
        "incidents_unlinked": int((~linked).sum()),
        "incidents_not_change_related": int(incidents["not_change_related"].sum()),
        "incidents_non_production": int((~incidents["env_ok"]).sum()),
        "incidents_explicit_unmatched": int(unmatched.sum()),
        "links_explicit_deploy_id": int(inc_links["matched_on"].eq("deploy_id").sum()),
        "links_explicit_commit_sha": int(inc_links["matched_on"].eq("commit_sha").sum()),
        "links_explicit_flag_key": int(inc_links["matched_on"].eq("flag_key").sum()),
        "links_time_window_deploy": int(
            (inc_links["method"].eq("time_window") & inc_links["change_kind"].eq("deploy")).sum()
        ),
        "links_time_window_toggle": int(
            (inc_links["method"].eq("time_window") & inc_links["change_kind"].eq("toggle")).sum()
        ),
        "links_rollback": int(links["method"].eq("rollback").sum()),
        "deploys": len(deploy_labels),
        "deploys_eligible": len(el),
        "deploys_failed": int(el["failed"].sum()),
        "deploys_immature": int((~el["mature"]).sum()),
        "deploys_external_label": int(el["label_method"].eq("external").sum()),
        "toggle_flips": int(toggle_labels["is_flip"].sum()),
        "toggles_failed": int(toggle_labels["failed"].sum()),
        "toggles_immature": int((toggle_labels["is_flip"] & ~toggle_labels["mature"]).sum()),
    }
    for m in ("explicit", "external", "rollback", "time_window", "none"):
        counts[f"deploy_labels_{m}"] = int(el["label_method"].eq(m).sum())
    return counts
