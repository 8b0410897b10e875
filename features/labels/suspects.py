"""Rank the changes that may have caused an incident: a posterior share per candidate, plus "no recent change".

The incident is modelled as the first event of a point process on its service: a background rate
``b`` (incidents per service-hour with no change involved) plus, for every recent change ``c``, its
chance of causing an incident (``prior``, the champion's point-in-time score for deploys, the
history's failure share per action for flips) spread over time by the lag density ``f`` of its
kind. At the incident's time the share of each source is its intensity over the total::

    share(c) = prior(c) * f_kind(lag_c) * scope(c) * rollback(c) / (b + sum of the terms)
    share(no recent change) = b / (same)

A deploy is a candidate from the moment it **started** reaching production (``started_at``, else
``created_at``; ``SuspectConfig.deploy_time``): an incident that opens while a deploy is still rolling
out is that deploy's doing as often as any, and the lag of a cause counts from when it began acting.
``f`` per change kind is learned from the lags, measured from that same time, of the history's explicit
links (incidents naming their cause) **on the cause's own service** (a cause named by an incident of
another service reaches it later, through the dependency: it would widen the own-service density),
with rollback lags as a fallback; ``b`` from the incidents that had no change of their service within
the lag density's 99th percentile, over the service-hours that were equally quiet. Everything here is
a pure function of the canonical tables and an ``Attribution``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from features.history.schema import History
from features.labels.attribution import FLIP_ACTIONS, SHIPPED_STATUSES, Attribution
from features.labels.dependencies import Dependencies, depends_on

#: Change kinds the suspects rank.
KINDS = ("deploy", "toggle")
#: The answer when the background explains the incident best.
NO_RECENT_CHANGE = "no recent change"
#: When a deploy becomes a candidate and its lag starts: "started" (``started_at``, else ``created_at``) or
#: "finished" (``finished_at``, else ``created_at``: attribution's and DevLake's convention).
DeployTime = Literal["started", "finished"]
_HOUR = pd.Timedelta(hours=1)


@dataclass(frozen=True)
class SuspectConfig:
    """How suspects are gathered and weighed.

    lookback: how far before the incident changes are candidates.
    top: how many suspects an answer lists.
    dependency_weight: scope factor of a change of a service the incident's service depends on
        (own service = 1).
    min_lag_samples: explicit links a kind needs for its own lag density; fewer borrow the pooled one.
    smoothing: pseudo-count pulling a flip action's failure share toward all flips'.
    deploy_time: when a deploy becomes a candidate and its lag starts. "started" (default) keeps a deploy
        still rolling out when the incident opens among the suspects; "finished" is attribution's convention
        (such a deploy is then no candidate at all).
    """

    lookback: pd.Timedelta = pd.Timedelta(hours=72)
    top: int = 5
    dependency_weight: float = 0.3
    min_lag_samples: int = 30
    smoothing: float = 20.0
    deploy_time: DeployTime = "started"

    def __post_init__(self) -> None:
        if self.lookback <= pd.Timedelta(0):
            raise ValueError("lookback must be positive")
        if self.top < 1:
            raise ValueError("top must be at least 1")
        if not 0.0 < self.dependency_weight <= 1.0:
            raise ValueError("dependency_weight must be within (0, 1]")
        if self.deploy_time not in ("started", "finished"):
            raise ValueError(f"deploy_time must be 'started' or 'finished', got {self.deploy_time!r}")


@dataclass(frozen=True)
class LagDensity:
    """A density of the lag from change to incident (per hour), a Gaussian KDE on log-hours on a grid."""

    log_grid: np.ndarray
    log_density: np.ndarray  # density of log(lag hours) at the grid points
    n: int
    source: str  # 'explicit', 'pooled', 'rollback' or 'default'

    @classmethod
    def fit(cls, lag_hours: np.ndarray, source: str) -> LagDensity:
        x = np.log(np.clip(np.asarray(lag_hours, dtype=np.float64), 1e-4, None))
        sd = float(np.std(x)) if len(x) > 1 else 1.0
        h = max(1.06 * sd * len(x) ** -0.2, 0.05)
        grid = np.linspace(np.log(1e-3), np.log(24 * 30), 512)
        dens = np.zeros_like(grid)
        for chunk in np.array_split(x, max(1, len(x) // 2048)):
            dens += np.exp(-0.5 * ((grid[:, None] - chunk[None, :]) / h) ** 2).sum(axis=1)
        dens /= len(x) * h * np.sqrt(2 * np.pi)
        return cls(grid, dens, len(x), source)

    @classmethod
    def default(cls) -> LagDensity:
        """Minutes to hours (lognormal, median 1 h): used only when the history links nothing."""
        rng = np.random.default_rng(0)
        return cls.fit(np.exp(rng.normal(0.0, 1.2, 2000)), "default")

    def __call__(self, lag_hours: np.ndarray) -> np.ndarray:
        """Likelihood per hour of each lag (0 for lags <= 0)."""
        lag = np.asarray(lag_hours, dtype=np.float64)
        safe = np.clip(lag, 1e-6, None)
        g = np.interp(np.log(safe), self.log_grid, self.log_density, left=0.0, right=0.0)
        return np.where(lag > 0, g / safe, 0.0)

    def quantile(self, q: float) -> float:
        """The lag (hours) below which ``q`` of the density lies."""
        cdf = np.cumsum(self.log_density)
        cdf /= cdf[-1]
        return float(np.exp(np.interp(q, cdf, self.log_grid)))


@dataclass(frozen=True)
class SuspectModel:
    """What the history teaches about causes: lag densities, background rate, flip priors, rollbacks."""

    lags: Mapping[str, LagDensity]
    background_rate: float  # incidents per service-hour with no recent change
    toggle_prior: Mapping[str, float]  # failure share of a flip, per action
    rollback_ratio: float  # likelihood ratio of "rolled back after the incident" for a cause
    config: SuspectConfig = field(default_factory=SuspectConfig)
    evidence: Mapping[str, Any] = field(default_factory=dict)

    def lag_likelihood(self, kinds: np.ndarray, lag_hours: np.ndarray) -> np.ndarray:
        out = np.zeros(len(lag_hours))
        for kind, density in self.lags.items():
            mask = kinds == kind
            if mask.any():
                out[mask] = density(lag_hours[mask])
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "background_rate_per_service_day": self.background_rate * 24,
            "lag_sources": {
                k: {"source": d.source, "n": d.n, "median_hours": d.quantile(0.5)} for k, d in self.lags.items()
            },
            "toggle_prior": dict(self.toggle_prior),
            "rollback_ratio": self.rollback_ratio,
            **dict(self.evidence),
        }


# --------------------------------------------------------------------------------------------
# Learning from the history


def _hours(delta: pd.Series) -> np.ndarray:
    return np.asarray(delta.dt.total_seconds().to_numpy(dtype=np.float64) / 3600.0)


def own_service_lags(links: pd.DataFrame, changes: pd.DataFrame, incidents: pd.DataFrame) -> pd.DataFrame:
    """The explicit links whose cause is a change of the incident's own service: change_kind, lag (hours, from the
    change's time in ``changes``, so the same clock the ranking uses; only positive lags)."""
    explicit = links[links["method"].eq("explicit") & links["incident_id"].notna()]
    if explicit.empty:
        return pd.DataFrame({"change_kind": pd.Series(dtype=object), "lag": pd.Series(dtype=np.float64)})
    ch = changes.drop_duplicates("change_id")
    ch = ch.set_index(ch["change_id"].astype("string"))
    inc = incidents.drop_duplicates("incident_id")
    inc = inc.set_index(inc["incident_id"].astype("string"))
    ids = pd.Index(explicit["change_id"].astype("string"))
    incident_ids = pd.Index(explicit["incident_id"].astype("string"))
    change_service = ch["service"].astype("string").reindex(ids).reset_index(drop=True)
    incident_service = inc["service"].astype("string").reindex(incident_ids).reset_index(drop=True)
    opened = inc["created_at"].reindex(incident_ids).to_numpy(dtype="datetime64[us]")
    changed = ch["time"].reindex(ids).to_numpy(dtype="datetime64[us]")
    lag = (opened - changed).astype("timedelta64[us]").astype(np.float64) / 3.6e9
    lag[np.isnat(opened) | np.isnat(changed)] = np.nan
    own = change_service.eq(incident_service).fillna(False).to_numpy(dtype=bool)
    keep = own & np.isfinite(lag) & (lag > 0)
    return pd.DataFrame({"change_kind": explicit["change_kind"].to_numpy()[keep], "lag": lag[keep]})


def _lag_densities(
    links: pd.DataFrame, changes: pd.DataFrame, incidents: pd.DataFrame, config: SuspectConfig
) -> dict[str, LagDensity]:
    own = own_service_lags(links, changes, incidents)
    rollback = links[links["method"].eq("rollback") & links["lag"].notna() & (links["lag"] > pd.Timedelta(0))]
    pooled = own["lag"].to_numpy(dtype=np.float64)
    out: dict[str, LagDensity] = {}
    for kind in KINDS:
        mine = own.loc[own["change_kind"].eq(kind), "lag"].to_numpy(dtype=np.float64)
        rb = _hours(rollback.loc[rollback["change_kind"].eq(kind), "lag"])
        if len(mine) >= config.min_lag_samples:
            out[kind] = LagDensity.fit(mine, "explicit")
        elif len(pooled) >= config.min_lag_samples:
            out[kind] = LagDensity.fit(pooled, "pooled")
        elif len(rb) >= config.min_lag_samples:
            out[kind] = LagDensity.fit(rb, "rollback")
        else:
            out[kind] = LagDensity.default()
    return out


def change_times(
    history: History, environment: str = "production", deploy_time: DeployTime = "started"
) -> pd.DataFrame:
    """Every change that reached ``environment``: kind, id, service, time (a deploy's start, or its finish with
    ``deploy_time="finished"``; else its creation), who, url, action; flips with no environment count (flag tools
    that report none act on production)."""
    d = history.deploys
    dep = d[
        d["status"].isin(SHIPPED_STATUSES).fillna(False).to_numpy(dtype=bool)
        & d["environment"].eq(environment).fillna(False).to_numpy(dtype=bool)
    ]
    rollback = dep["is_rollback"].astype("boolean").fillna(False) | dep["status"].eq("rolled_back").fillna(False)
    t = history.toggle_events
    flips = t[
        t["action"].isin(FLIP_ACTIONS).fillna(False).to_numpy(dtype=bool)
        & (t["environment"].isna() | t["environment"].eq(environment)).fillna(False).to_numpy(dtype=bool)
    ]
    frames = [
        pd.DataFrame(
            {
                "change_kind": "deploy",
                "change_id": dep["deploy_id"].astype("string"),
                "service": dep["service"].astype("string"),
                "time": dep[f"{deploy_time}_at"].fillna(dep["created_at"]),
                "who": dep["author"].astype("string"),
                "url": dep["url"].astype("string"),
                "action": np.where(rollback.to_numpy(dtype=bool), "rollback", "deploy"),
                "is_rollback": rollback.to_numpy(dtype=bool),
            }
        ),
        pd.DataFrame(
            {
                "change_kind": "toggle",
                "change_id": flips["event_id"].astype("string"),
                "service": flips["service"].astype("string"),
                "time": flips["occurred_at"],
                "who": flips["actor"].astype("string"),
                "url": flips["url"].astype("string"),
                "action": flips["action"].astype("string").to_numpy(dtype=object),
                "is_rollback": False,
            }
        ),
    ]
    out = pd.concat(frames, ignore_index=True)
    out = out[out["service"].notna() & out["time"].notna()]
    return out.sort_values(["service", "time", "change_id"], kind="stable").reset_index(drop=True)


def _background_rate(
    changes: pd.DataFrame, incidents: pd.DataFrame, quiet_after: float, start: pd.Timestamp, end: pd.Timestamp
) -> tuple[float, int, float]:
    """(rate per service-hour, quiet incidents, quiet service-hours): incidents with no change of their service in
    the ``quiet_after`` hours before them, over the service-hours equally far from any change."""
    span = max((end - start) / _HOUR, 1e-9)
    services = pd.Index(changes["service"].dropna().unique()).union(pd.Index(incidents["service"].dropna().unique()))
    covered = 0.0
    for _, times in changes.groupby("service", sort=False)["time"]:
        t = np.sort(((times - start) / _HOUR).to_numpy(dtype=np.float64))
        t = t[(t >= 0) & (t < span)]
        if len(t):
            gaps = np.diff(np.append(t, span))
            covered += float(np.minimum(gaps, quiet_after).sum())
    quiet_hours = span * len(services) - covered
    inc = incidents[(incidents["created_at"] >= start) & (incidents["created_at"] < end)]
    left = inc[["service", "created_at"]].rename(columns={"created_at": "time"}).dropna().sort_values("time")
    right = changes[["service", "time"]].rename(columns={"time": "change_time"}).sort_values("change_time")
    hit = pd.merge_asof(
        left,
        right,
        left_on="time",
        right_on="change_time",
        by="service",
        direction="backward",
        allow_exact_matches=False,
    )
    quiet = hit["change_time"].isna() | (_hours(hit["time"] - hit["change_time"]) > quiet_after)
    n_quiet = int(quiet.sum())
    return (n_quiet + 0.5) / max(quiet_hours, 1.0), n_quiet, float(quiet_hours)


def _toggle_priors(history: History, attribution: Attribution, config: SuspectConfig) -> dict[str, float]:
    labels = attribution.toggle_labels
    flips = labels[labels["is_flip"] & labels["mature"]]
    actions = history.toggle_events.set_index(history.toggle_events["event_id"].astype("string"))["action"]
    action = flips["event_id"].map(actions).astype("string")
    failed = flips["failed"].to_numpy(dtype=bool)
    base = (failed.sum() + 1.0) / (len(flips) + 20.0)
    out = {"*": float(base)}
    for name in FLIP_ACTIONS:
        mask = action.eq(name).fillna(False).to_numpy(dtype=bool)
        out[name] = float((failed[mask].sum() + config.smoothing * base) / (mask.sum() + config.smoothing))
    return out


def _rollback_ratio(attribution: Attribution) -> float:
    """How much likelier a deploy that caused an incident is to be rolled back than any shipped deploy."""
    links = attribution.links
    rolled = set(links.loc[links["method"].eq("rollback"), "change_id"].dropna())
    causes = links.loc[links["method"].eq("explicit") & links["change_kind"].eq("deploy"), "change_id"].dropna()
    labels = attribution.deploy_labels
    known = labels["eligible"].to_numpy(dtype=bool).copy()
    if attribution.as_of is not None:
        known &= (labels["change_time"] <= attribution.as_of).fillna(False).to_numpy(dtype=bool)
    eligible = labels.loc[known, "deploy_id"]
    if len(causes) < 10 or len(eligible) == 0:
        return 1.0
    r1 = (causes.isin(rolled).sum() + 0.5) / (len(causes) + 1.0)
    r0 = (eligible.isin(rolled).sum() + 0.5) / (len(eligible) + 1.0)
    return float(np.clip(r1 / r0, 1.0, 100.0))


def learn_suspect_model(
    history: History, attribution: Attribution, config: SuspectConfig | None = None, environment: str = "production"
) -> SuspectModel:
    """Learn the lag densities, background rate, flip priors and rollback ratio from ``attribution``
    (use ``attribute(..., as_of=cutoff)`` and a history cut at the same time to learn from the past only)."""
    config = config or SuspectConfig()
    links = attribution.links
    end = attribution.as_of if attribution.as_of is not None else pd.Timestamp.now(tz="UTC")
    changes = change_times(history, environment, config.deploy_time)
    changes = changes[changes["time"] < end]
    inc = history.incidents
    inc = inc[(inc["environment"].isna() | inc["environment"].eq(environment)).fillna(False).to_numpy(dtype=bool)]
    lags = _lag_densities(links, changes, inc, config)
    quiet_after = max(d.quantile(0.99) for d in lags.values())
    times = pd.concat([changes["time"], inc["created_at"]]).dropna()
    start = times.min() if len(times) else end - pd.Timedelta(days=1)
    rate, n_quiet, quiet_hours = _background_rate(changes, inc, quiet_after, start, end)
    return SuspectModel(
        lags=lags,
        background_rate=rate,
        toggle_prior=_toggle_priors(history, attribution, config),
        rollback_ratio=_rollback_ratio(attribution),
        config=config,
        evidence={
            "quiet_after_hours": quiet_after,
            "quiet_incidents": n_quiet,
            "quiet_service_hours": quiet_hours,
            "learned_until": end.isoformat(),
            "deploy_time": config.deploy_time,
        },
    )


# --------------------------------------------------------------------------------------------
# Candidates and ranking (numpy on a per-service index: a question costs microseconds, not a pandas pass)


def rollbacks_of(attribution: Attribution, history: History) -> pd.DataFrame:
    """One row per rolled-back deploy, indexed by its id: rolled_back_by (the rollback deploy), rolled_back_at."""
    rb = attribution.links[attribution.links["method"].eq("rollback")]
    created = history.deploys.set_index(history.deploys["deploy_id"].astype("string"))["created_at"]
    out = pd.DataFrame(
        {
            "change_id": rb["change_id"].astype("string").to_numpy(),
            "rolled_back_by": rb["evidence"].astype("string").to_numpy(),
        }
    )
    out["rolled_back_at"] = out["rolled_back_by"].map(created)
    out = out.sort_values("rolled_back_at", kind="stable").drop_duplicates("change_id")
    return out.set_index("change_id")


def _micros(values: pd.Series) -> np.ndarray:
    return np.asarray(values.dt.as_unit("us").astype("int64").to_numpy(), dtype=np.int64)


_NEVER = np.iinfo(np.int64).max


@dataclass(frozen=True)
class ChangeIndex:
    """The production changes (``change_times``) as arrays sorted by service then time, with each deploy's
    first rollback (``rolled_back_at`` in UTC microseconds, ``_NEVER`` when none)."""

    kind: np.ndarray
    change_id: np.ndarray
    service: np.ndarray
    time: np.ndarray  # UTC microseconds
    who: np.ndarray
    url: np.ndarray
    action: np.ndarray
    rolled_back_at: np.ndarray
    rolled_back_by: np.ndarray
    slices: Mapping[str, tuple[int, int]]

    @classmethod
    def build(cls, changes: pd.DataFrame, rollbacks: pd.DataFrame | None = None) -> ChangeIndex:
        c = changes.sort_values(["service", "time", "change_id"], kind="stable").reset_index(drop=True)
        n = len(c)
        rb_at = np.full(n, _NEVER, dtype=np.int64)
        rb_by = np.full(n, None, dtype=object)
        if rollbacks is not None and len(rollbacks):
            pos = pd.Index(rollbacks.index).get_indexer(c["change_id"])
            hit = (pos >= 0) & (c["change_kind"].eq("deploy").to_numpy(dtype=bool))
            times = _micros(rollbacks["rolled_back_at"].dropna())
            valid = rollbacks["rolled_back_at"].notna().to_numpy(dtype=bool)
            full = np.full(len(rollbacks), _NEVER, dtype=np.int64)
            full[valid] = times
            rb_at[hit] = full[pos[hit]]
            rb_by[hit] = rollbacks["rolled_back_by"].to_numpy(dtype=object)[pos[hit]]
        service = c["service"].to_numpy(dtype=object)
        slices: dict[str, tuple[int, int]] = {}
        if n:
            starts = np.flatnonzero(np.r_[True, service[1:] != service[:-1]])
            ends = np.r_[starts[1:], n]
            slices = {str(service[a]): (int(a), int(b)) for a, b in zip(starts, ends, strict=True)}

        def obj(col: str) -> np.ndarray:
            return np.asarray([None if v is pd.NA else v for v in c[col].to_numpy(dtype=object)], dtype=object)

        return cls(
            kind=c["change_kind"].to_numpy(dtype=object),
            change_id=c["change_id"].to_numpy(dtype=object),
            service=service,
            time=_micros(c["time"]),
            who=obj("who"),
            url=obj("url"),
            action=c["action"].to_numpy(dtype=object),
            rolled_back_at=rb_at,
            rolled_back_by=rb_by,
            slices=slices,
        )

    def window(
        self, service: str, at: int, lookback: int, dependencies: Dependencies | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(positions, own-service mask) of the changes of ``service`` and its dependencies in ``[at - lookback, at)``:
        strictly before the incident."""
        parts, own = [], []
        for i, svc in enumerate((service, *depends_on(dependencies, service))):
            lo, hi = self.slices.get(svc, (0, 0))
            a = lo + int(np.searchsorted(self.time[lo:hi], at - lookback, side="left"))
            b = lo + int(np.searchsorted(self.time[lo:hi], at, side="left"))
            parts.append(np.arange(a, b))
            own.append(np.full(b - a, i == 0))
        return np.concatenate(parts).astype(np.int64), np.concatenate(own).astype(bool)


@dataclass(frozen=True)
class Ranking:
    """Candidates of one incident ranked by share (positions into the ``ChangeIndex``) and the background share."""

    positions: np.ndarray
    own: np.ndarray
    share: np.ndarray
    prior: np.ndarray
    lag_hours: np.ndarray
    lag_likelihood: np.ndarray
    scope_weight: np.ndarray
    rolled_back: np.ndarray  # a rollback seen by the time the question is asked
    rollback_weight: np.ndarray
    background: float

    @property
    def top_is_background(self) -> bool:
        return len(self.share) == 0 or self.background >= self.share[0]


def rank_suspects(
    index: ChangeIndex,
    positions: np.ndarray,
    own: np.ndarray,
    given_prior: np.ndarray,
    model: SuspectModel,
    at: int,
    as_of: int | None = None,
) -> Ranking:
    """Rank the candidates at ``positions`` of an incident at ``at`` (UTC microseconds).

    ``given_prior`` is each candidate's prior risk where known (for deploys, the champion's
    point-in-time score); NaN for a flip takes the history's failure share of its action, NaN for a
    deploy the median of the other deploys'. A deploy rolled back at or after the incident and by ``as_of`` (when the
    question is asked; default the incident's time, i.e. a live question sees none) is weighed by the
    learned rollback ratio.
    """
    as_of = at if as_of is None else as_of
    kinds = index.kind[positions]
    is_toggle = kinds == "toggle"
    toggle_prior = np.array(
        [model.toggle_prior.get(str(a), model.toggle_prior.get("*", 0.01)) for a in index.action[positions]],
        dtype=np.float64,
    )
    given = np.asarray(given_prior, dtype=np.float64)
    prior = np.where(is_toggle & ~np.isfinite(given), toggle_prior, given)
    finite = np.isfinite(prior) & ~is_toggle
    prior = np.where(np.isfinite(prior), prior, float(np.median(prior[finite])) if finite.any() else 0.05)
    lag_hours = (at - index.time[positions]) / 3.6e9
    likelihood = model.lag_likelihood(kinds, lag_hours)
    scope = np.where(own, 1.0, model.config.dependency_weight)
    rb_at = index.rolled_back_at[positions]
    seen = rb_at <= as_of
    rb = np.where(seen & (rb_at >= at), model.rollback_ratio, 1.0)
    weight = prior * likelihood * scope * rb
    total = float(weight.sum()) + model.background_rate
    order = np.lexsort((-index.time[positions], -weight))  # by weight, ties: the later change first
    return Ranking(
        positions=positions[order],
        own=own[order],
        share=(weight / total)[order],
        prior=prior[order],
        lag_hours=lag_hours[order],
        lag_likelihood=likelihood[order],
        scope_weight=scope[order],
        rolled_back=seen[order],
        rollback_weight=rb[order],
        background=model.background_rate / total,
    )


def latest_change(index: ChangeIndex, positions: np.ndarray, own: np.ndarray) -> str | None:
    """The "latest change of the service" baseline: the own-service candidate nearest before the incident."""
    mine = positions[own]
    if len(mine) == 0:
        return None
    return str(index.change_id[mine.max()])  # positions run in time order within a service
