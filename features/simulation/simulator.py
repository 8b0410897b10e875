"""A deterministic simulator of an engineering organisation's deploy, toggle and incident history.

It exists so the whole pipeline (ingest, attribution, features, models, serving) can be built and
evaluated against a known truth: every incident is generated from a documented logistic hazard
(see docs/simulator.md) whose inputs a point-in-time feature builder can compute strictly before
the deploy. Everything is vectorised numpy; a seed fixes every table exactly.

The history uses the canonical ids that ingest produces from the written exports
(``"<source name>:<native id>"`` with the source names below).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.history.schema import (
    CATALOG,
    DEPLOYS,
    FLIP_ACTIONS,
    INCIDENTS,
    TOGGLE_EVENTS,
    History,
    TableSpec,
    canonical_order,
    conform,
    empty_table,
)

#: Source names used in the written sources.yaml (both styles); ids are prefixed with them.
DEPLOY_SOURCE = "deploys"
TOGGLE_SOURCE = "toggles"
INCIDENT_SOURCE = "incidents"
CATALOG_SOURCE = "catalog"

#: First native deploy id (GitHub-like integers); upcoming deploys continue the numbering.
FIRST_DEPLOY_ID = 1_000_001

_DAY = 86_400
_HOUR = 3_600
_MIN = 60
#: Time origin of the internal int64-second clock, far enough back for pre-history flags.
_ORIGIN_PAD_DAYS = 400
#: Largest simulated change (lines added or deleted); far below schema.MAX_LINES.
_MAX_CHANGE_LINES = 250_000
#: The flips the simulated truth puts hazard on: the canonical ``FLIP_ACTIONS`` minus targeting and
#: variant changes, which the simulated organisation makes but which carry no risk in its hazard
#: (so evaluation can tell whether a model learns to count only the flips that matter).
HAZARD_FLIP_ACTIONS = tuple(a for a in FLIP_ACTIONS if a not in ("targeting_changed", "variants_changed"))

Progress = Callable[[str], None]


@dataclass(frozen=True)
class DeployHazard:
    """Coefficients of the true deploy hazard (logit scale); docs/simulator.md gives the formula."""

    intercept: float = -3.7
    log_size: float = 0.42  # x log1p(lines_added + lines_deleted)
    flips_1h: float = 0.6  # x min(flips of the service's flags in production in [t-1h, t), 3)
    incidents_7d: float = 0.45  # x log1p(incidents of the service in [t-7d, t))
    author_experience: float = -0.2  # x log1p(author's deploys in the history before t)
    friday_afternoon: float = 0.45  # Friday, hour >= 13 UTC
    outside_hours: float = 0.55  # weekend, or hour < 9 or >= 18 UTC
    touches_infra: float = 0.35
    infra_x_log_size: float = 0.15  # interaction: touches_infra x log1p(lines_added + lines_deleted)
    rollback: float = -1.0
    service_sd: float = 0.45  # sd of the per-service base risk (random intercept)


@dataclass(frozen=True)
class ToggleHazard:
    """Coefficients of the true hazard of a production flag flip (enabled/disabled/rollout_changed)."""

    intercept: float = -3.9
    enabled: float = 0.8
    disabled: float = -0.6
    rollout_jump: float = 1.4  # x (new rollout % - old rollout %) / 100
    outside_hours: float = 0.5


class HazardChange(Protocol):
    """A change of the deploy hazard over time (features/simulation/drift.py): a logit shift per deploy."""

    def logit_delta(self, *, t: np.ndarray, squad: np.ndarray, log_size: np.ndarray, flips_1h: np.ndarray,
                    touches_infra: np.ndarray) -> np.ndarray: ...  # fmt: skip


@dataclass(frozen=True)
class SimulationConfig:
    """Size and shape of the simulated organisation; defaults give the committed sample (~15k deploys)."""

    days: int = 180
    services: int = 60
    seed: int = 0
    start: str = "2026-01-05"
    deploys_per_service_day: float = 1.4  # mean over calendar days (weekends are quiet)
    staging_share: float = 0.15
    failure_share: float = 0.04
    canceled_share: float = 0.03
    flags_per_service_day: float = 0.2
    background_incidents_per_service_day: float = 0.09
    second_incident_share: float = 0.12  # bad deploys that also break a sibling service
    explicit_link_share: float = 0.4  # change-caused incidents naming their cause
    not_change_related_share: float = 0.5  # background incidents the tool marks as such
    rollback_share: float = 0.5  # deploy-caused incidents answered by a rollback deploy
    upcoming_days: int = 2
    hazard: DeployHazard = field(default_factory=DeployHazard)
    toggle_hazard: ToggleHazard = field(default_factory=ToggleHazard)
    hazard_change: HazardChange | None = None  # drift from a given day (features/simulation/drift.py)

    def __post_init__(self) -> None:
        if self.days < 1 or self.services < 1:
            raise ValueError("days and services must be at least 1")
        if self.deploys_per_service_day <= 0:
            raise ValueError("deploys_per_service_day must be positive")
        for name in ("staging_share", "explicit_link_share", "rollback_share", "second_incident_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within [0, 1]")
        pd.Timestamp(self.start)  # fail early on a bad date


@dataclass(frozen=True)
class SimulatedHistory:
    """The simulated history plus the truth that only evaluation may read."""

    history: History
    deploy_truth: pd.DataFrame  # deploy_id, p_incident, caused_incident
    toggle_truth: pd.DataFrame  # event_id, p_incident, caused_incident
    incident_truth: pd.DataFrame  # incident_id, cause_kind, cause_id
    upcoming: pd.DataFrame  # planned deploys after the history ends (deploys columns, status running)
    upcoming_truth: pd.DataFrame = field(default_factory=pd.DataFrame)  # deploy_id, p_incident


# --------------------------------------------------------------------------------------------
# Vocabulary (names only; all choices among them are random)

_TRIBES = ("platform", "payments", "commerce", "growth", "identity", "logistics", "data", "content", "support")
_SQUAD_WORDS = (
    "falcon", "otter", "lynx", "heron", "badger", "orca", "raven", "bison", "koala", "panda", "gecko", "ibis",
    "moose", "narwhal", "puma", "quokka", "stoat", "tapir", "walrus", "yak", "zebra", "crane", "dingo", "egret",
)  # fmt: skip
_SERVICE_NOUNS = (
    "checkout", "cart", "payments", "billing", "invoice", "search", "catalog", "pricing", "inventory", "shipping",
    "orders", "auth", "accounts", "profile", "notifications", "email", "sms", "recommendations", "reviews", "media",
    "images", "gateway", "ledger", "fraud", "risk", "reporting", "analytics", "events", "scheduler", "webhooks",
    "export", "import", "sync", "feature-store", "ml-serving", "chat", "tickets", "onboarding", "loyalty",
    "coupons", "subscriptions", "tax", "currency", "geo", "maps", "routing", "tracking", "returns", "warehouse",
    "partners", "admin", "audit", "config", "secrets", "queue", "cache", "session", "metrics", "storefront", "wallet",
)  # fmt: skip
_SERVICE_KINDS = ("api", "svc", "worker", "web")
_FIRST = (
    "ada", "alan", "grace", "linus", "margaret", "ken", "barbara", "dennis", "frances", "edsger", "radia", "donald",
    "sophie", "tim", "anita", "guido", "hedy", "john", "katherine", "niklaus", "shafi", "bjarne", "yukihiro", "rasmus",
)  # fmt: skip
_LAST = (
    "lovelace", "turing", "hopper", "torvalds", "hamilton", "thompson", "liskov", "ritchie", "allen", "dijkstra",
    "perlman", "knuth", "wilson", "lee", "borg", "rossum", "lamarr", "backus", "johnson", "wirth", "goldwasser",
    "stroustrup", "matsumoto", "lerdorf", "kay", "moore", "sutherland", "cerf",
)  # fmt: skip
_FEATURES = (
    "new-flow", "v2-api", "async-writes", "dark-launch", "fast-path", "batching", "cache-v3", "new-ui", "retry-policy",
    "bulk-export", "smart-routing", "lazy-load", "grpc-client", "multi-region", "rate-limit", "new-pricing",
)  # fmt: skip
#: Incident titles as (before service, after service).
_SYMPTOMS = (
    ("High error rate on ", ""), ("Elevated 5xx responses from ", ""), ("", " latency above SLO"),
    ("", " pods crash-looping"), ("Queue backlog growing in ", ""), ("", " health check failing"),
    ("Memory pressure on ", ""), ("Database connection pool exhausted in ", ""), ("Timeouts calling ", ""),
)  # fmt: skip
_BACKGROUND_SYMPTOMS = (
    ("Upstream provider outage affecting ", ""), ("Certificate expiring for ", ""), ("Disk almost full on ", ""),
    ("Traffic spike on ", ""), ("Cloud zone degradation affecting ", ""),
)  # fmt: skip

#: Deploy hour-of-day weights (UTC): business hours, a lunch dip, few evening/night deploys.
_HOURS_WEEKDAY = np.array(
    [0.15, 0.1, 0.1, 0.1, 0.1, 0.15, 0.3, 0.8, 2.0, 4.5, 6.0, 6.0, 3.5, 5.0, 6.0, 5.5, 4.5, 3.0, 1.2, 0.6, 0.4, 0.3,
     0.2, 0.15])  # fmt: skip
_HOURS_FRIDAY = _HOURS_WEEKDAY * np.where(np.arange(24) >= 13, 0.45, 1.0)
_HOURS_WEEKEND = np.array([0.3] * 8 + [1.0] * 12 + [0.5] * 4)
#: Relative deploy volume Monday..Sunday, normalised to mean 1 below.
_DOW = np.array([1.0, 1.1, 1.1, 1.0, 0.7, 0.06, 0.06])
_DOW = _DOW / _DOW.mean()


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _weekday(t: np.ndarray) -> np.ndarray:
    """Monday=0 for int64 unix seconds (1970-01-01 was a Thursday)."""
    return ((t // _DAY) + 3) % 7


def _hour(t: np.ndarray) -> np.ndarray:
    return (t // _HOUR) % 24


def time_flags(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(friday_afternoon, outside_business_hours) of unix-second times, as the hazard defines them."""
    wd, hr = _weekday(t), _hour(t)
    friday_pm = (wd == 4) & (hr >= 13)
    outside = (wd >= 5) | (hr < 9) | (hr >= 18)
    return friday_pm, outside


def _time_of_day(rng: np.random.Generator, day_start: np.ndarray) -> np.ndarray:
    """Unix seconds within each given day, shaped like an office's working week."""
    wd = _weekday(day_start)
    hours = np.empty(len(day_start), dtype=np.int64)
    for weights, mask in (
        (_HOURS_WEEKDAY, wd < 4),
        (_HOURS_FRIDAY, wd == 4),
        (_HOURS_WEEKEND, wd >= 5),
    ):
        hours[mask] = rng.choice(24, size=int(mask.sum()), p=weights / weights.sum())
    return day_start + hours * _HOUR + rng.integers(0, _HOUR, size=len(day_start))


def _lognormal_seconds(
    rng: np.random.Generator, n: int, median_s: float, sigma: float, lo: float, hi: float
) -> np.ndarray:
    return np.clip(np.rint(median_s * np.exp(sigma * rng.standard_normal(n))), lo, hi).astype(np.int64)


def _unique(names: np.ndarray) -> np.ndarray:
    """Make names unique by suffixing repeats with -2, -3, ..."""
    dup = pd.Series(names).groupby(names, sort=False).cumcount().to_numpy()
    return np.where(dup > 0, np.strings.add(np.strings.add(names, "-"), (dup + 1).astype(str)), names)


def _group_key(group: np.ndarray, t: np.ndarray) -> np.ndarray:
    return (group.astype(np.int64) << 36) | t.astype(np.int64)


def count_before(ev_group: np.ndarray, ev_time: np.ndarray, q_group: np.ndarray, q_time: np.ndarray,
                 window: int | None = None) -> np.ndarray:  # fmt: skip
    """Events of the query's group with ``q_time - window <= time < q_time`` (no window: all before).

    Times are int64 unix seconds; strictly-before matches the point-in-time rule of the feature
    builder.
    """
    return _Queries.of(q_group, q_time).count(np.sort(_group_key(ev_group, ev_time)), window)


@dataclass(frozen=True)
class _Queries:
    """(group, time) queries sorted once, so repeated window counts search in order (much faster)."""

    order: np.ndarray
    group: np.ndarray
    time: np.ndarray

    @classmethod
    def of(cls, group: np.ndarray, time: np.ndarray) -> _Queries:
        order = np.lexsort((time, group))
        return cls(order, group[order].astype(np.int64), time[order].astype(np.int64))

    def count(self, sorted_keys: np.ndarray, window: int | None) -> np.ndarray:
        hi = np.searchsorted(sorted_keys, _group_key(self.group, self.time), side="left")
        lo_time = np.zeros_like(self.time) if window is None else np.maximum(self.time - window, 0)
        lo = np.searchsorted(sorted_keys, _group_key(self.group, lo_time), side="left")
        out = np.empty(len(self.order), dtype=np.int64)
        out[self.order] = hi - lo
        return out


def _keys(group: np.ndarray, time: np.ndarray) -> np.ndarray:
    return np.sort(_group_key(group, time))


# --------------------------------------------------------------------------------------------
# The organisation


@dataclass(frozen=True)
class _Org:
    service: np.ndarray  # names
    squad_of_service: np.ndarray
    squad: np.ndarray  # names
    tribe_of_squad: np.ndarray
    tribe: np.ndarray  # names
    base_risk: np.ndarray  # per service, logit scale
    deploy_rate: np.ndarray  # per service, deploys per calendar day
    infra_rate: np.ndarray  # per service
    services_by_squad: np.ndarray  # service indices sorted by squad
    squad_offset: np.ndarray  # start of each squad in services_by_squad
    squad_size: np.ndarray
    author: np.ndarray  # names
    author_squad: np.ndarray
    author_join: np.ndarray  # internal seconds
    authors_by_squad_key: np.ndarray  # sorted _group_key(squad, join)
    author_order: np.ndarray  # author index for each position in authors_by_squad_key
    author_offset: np.ndarray  # start of each squad in the sorted authors


def _organisation(rng: np.random.Generator, cfg: SimulationConfig, t0: int, t_end: int) -> _Org:
    n = cfg.services
    n_squads = max(1, round(n / 4))
    n_tribes = max(1, min(len(_TRIBES) * 4, round(n_squads / 4)))
    tribe = _unique(np.array([_TRIBES[i % len(_TRIBES)] for i in range(n_tribes)]))
    squad_words = np.array(_SQUAD_WORDS)[rng.integers(0, len(_SQUAD_WORDS), n_squads)]
    tribe_of_squad = np.concatenate([np.arange(n_tribes), rng.integers(0, n_tribes, max(0, n_squads - n_tribes))])
    tribe_of_squad = tribe_of_squad[:n_squads]
    squad = _unique(np.strings.add(np.strings.add(tribe[tribe_of_squad], "-"), squad_words))

    combos = np.strings.add(np.strings.add(np.repeat(np.array(_SERVICE_NOUNS), len(_SERVICE_KINDS)), "-"),
                            np.tile(np.array(_SERVICE_KINDS), len(_SERVICE_NOUNS)))  # fmt: skip
    combos = combos[rng.permutation(len(combos))]
    idx = np.arange(n)
    service = combos[idx % len(combos)]
    repeat = np.strings.add(np.strings.add(service, "-"), (idx // len(combos)).astype(str))
    service = np.where(idx >= len(combos), repeat, service)
    squad_of_service = np.concatenate([np.arange(n_squads), rng.integers(0, n_squads, max(0, n - n_squads))])[:n]
    squad_of_service = squad_of_service[rng.permutation(n)]

    h = cfg.hazard
    base_risk = h.service_sd * rng.standard_normal(n)
    activity = rng.lognormal(0.0, 0.6, n)
    deploy_rate = cfg.deploys_per_service_day * activity / activity.mean()
    platform = tribe_of_squad[squad_of_service] == 0
    infra_rate = np.where(platform, 0.35, 0.06)

    services_by_squad = np.argsort(squad_of_service, kind="stable")
    squad_size = np.bincount(squad_of_service, minlength=n_squads)
    squad_offset = np.concatenate([[0], np.cumsum(squad_size)[:-1]])

    # Authors: founders present from the start, joiners arriving during the period.
    founders = 3 + rng.poisson(1.5 * np.maximum(squad_size, 1) / 4 + 0.5, n_squads)
    joiners = rng.poisson(0.25 * cfg.days / 30, n_squads)
    a_squad = np.concatenate([np.repeat(np.arange(n_squads), founders), np.repeat(np.arange(n_squads), joiners)])
    a_join = np.concatenate([np.full(founders.sum(), t0, dtype=np.int64),
                             rng.integers(t0, t_end, joiners.sum(), dtype=np.int64)])  # fmt: skip
    na = len(a_squad)
    first = np.array(_FIRST)[rng.integers(0, len(_FIRST), na)]
    last = np.array(_LAST)[rng.integers(0, len(_LAST), na)]
    author = _unique(np.strings.add(np.strings.add(first, "."), last))
    keys = _group_key(a_squad, a_join)
    order = np.argsort(keys, kind="stable")
    a_size = np.bincount(a_squad, minlength=n_squads)
    return _Org(
        service=service, squad_of_service=squad_of_service, squad=squad, tribe_of_squad=tribe_of_squad, tribe=tribe,
        base_risk=base_risk, deploy_rate=deploy_rate, infra_rate=infra_rate, services_by_squad=services_by_squad,
        squad_offset=squad_offset, squad_size=squad_size, author=author, author_squad=a_squad, author_join=a_join,
        authors_by_squad_key=keys[order], author_order=order,
        author_offset=np.concatenate([[0], np.cumsum(a_size)[:-1]]),
    )  # fmt: skip


def _pick_author(rng: np.random.Generator, org: _Org, svc: np.ndarray, t: np.ndarray) -> np.ndarray:
    """A random member of the service's squad who had joined by time t."""
    sq = org.squad_of_service[svc]
    active = np.searchsorted(org.authors_by_squad_key, _group_key(sq, t), side="right") - org.author_offset[sq]
    pos = org.author_offset[sq] + np.floor(rng.random(len(svc)) * np.maximum(active, 1)).astype(np.int64)
    return org.author_order[pos]


def _sibling_service(rng: np.random.Generator, org: _Org, svc: np.ndarray) -> np.ndarray:
    sq = org.squad_of_service[svc]
    pos = org.squad_offset[sq] + np.floor(rng.random(len(svc)) * org.squad_size[sq]).astype(np.int64)
    return org.services_by_squad[pos]


# --------------------------------------------------------------------------------------------
# Deploys (the draws that do not depend on outcomes)


@dataclass(frozen=True)
class _DeployDraws:
    t: np.ndarray
    svc: np.ndarray
    author: np.ndarray
    prod: np.ndarray
    status: np.ndarray  # 0 success, 1 failure, 2 canceled
    added: np.ndarray
    deleted: np.ndarray
    files: np.ndarray
    commits: np.ndarray
    infra: np.ndarray


def _draw_deploys(
    rng: np.random.Generator, org: _Org, cfg: SimulationConfig, first_day: int, n_days: int
) -> _DeployDraws:
    """Deploy times (per service and day, business-hours shaped) and heavy-tailed change sizes."""
    days = first_day + np.arange(n_days, dtype=np.int64) * _DAY
    lam = org.deploy_rate[:, None] * _DOW[_weekday(days)][None, :]
    counts = rng.poisson(lam).ravel()
    svc = np.repeat(np.repeat(np.arange(len(org.service)), n_days), counts)
    day = np.repeat(np.tile(days, len(org.service)), counts)
    t = _time_of_day(rng, day)
    order = np.argsort(t, kind="stable")
    svc, t = svc[order], t[order]
    n = len(t)
    author = _pick_author(rng, org, svc, t)
    prod = rng.random(n) >= cfg.staging_share
    u = rng.random(n)
    status = np.where(u < cfg.failure_share, 1, np.where(u < cfg.failure_share + cfg.canceled_share, 2, 0))
    # Heavy tails: lognormal size with a Pareto tail for a few bulk changes (renames, generated code).
    added = np.exp(3.3 + 1.45 * rng.standard_normal(n))
    bulk = rng.random(n) < 0.02
    added = np.where(bulk, added + 500.0 * (rng.pareto(1.1, n) + 1.0), added)
    added = np.clip(np.rint(added), 0, _MAX_CHANGE_LINES).astype(np.int64)
    deleted = np.clip(np.rint(added * np.exp(-1.0 + 1.0 * rng.standard_normal(n))), 0, _MAX_CHANGE_LINES)
    deleted = deleted.astype(np.int64)
    log_size = np.log1p(added + deleted)
    files = np.maximum(1, np.rint(np.exp(0.35 * log_size - 0.2 + 0.5 * rng.standard_normal(n)))).astype(np.int64)
    files = np.minimum(files, np.maximum(1, added + deleted))
    commits = rng.geometric(1.0 / (1.0 + 0.35 * log_size)).astype(np.int64)
    infra = rng.random(n) < org.infra_rate[svc]
    return _DeployDraws(t, svc, author, prod, status, added, deleted, files, commits, infra)


# --------------------------------------------------------------------------------------------
# Toggles


@dataclass(frozen=True)
class _Toggles:
    t: np.ndarray
    flag: np.ndarray  # flag index
    action: np.ndarray  # index into schema.TOGGLE_ACTIONS
    prod: np.ndarray
    pct: np.ndarray  # rollout % after the event (-1: not a rollout event)
    jump: np.ndarray  # rollout % change / 100
    actor: np.ndarray  # author index
    flag_service: np.ndarray
    flag_key: np.ndarray
    flag_project: np.ndarray
    p: np.ndarray
    caused: np.ndarray
    lag: np.ndarray


_ACT = {a: i for i, a in enumerate(TOGGLE_EVENTS.column("action").choices)}


def _simulate_toggles(rng: np.random.Generator, org: _Org, cfg: SimulationConfig, t0: int, t_end: int) -> _Toggles:
    """Flags created, enabled in staging then production, rolled out in steps, sometimes killed, often stale."""
    pre_days = 60
    span_days = cfg.days + pre_days
    n_flags_s = rng.poisson(cfg.flags_per_service_day * span_days, len(org.service))
    f_svc = np.repeat(np.arange(len(org.service)), n_flags_s)
    nf = len(f_svc)
    created_day = (t0 // _DAY - pre_days) + rng.integers(0, span_days, nf)
    staging_day = created_day + rng.geometric(0.6, nf) - 1
    enable_day = staging_day + 1 + rng.poisson(3, nf)
    n_steps = rng.choice(4, size=nf, p=[0.3, 0.2, 0.25, 0.25])
    # Events planned per flag as (day, rank, action, prod, pct, jump).
    rows: list[tuple[np.ndarray, ...]] = []

    def add(mask: np.ndarray, day: np.ndarray, rank: int, action: str, prod: bool | np.ndarray,
            pct: np.ndarray | int, jump: np.ndarray | float) -> None:  # fmt: skip
        idx = np.flatnonzero(mask)
        rows.append((idx, day[idx], np.full(len(idx), rank), np.full(len(idx), _ACT[action]),
                     np.broadcast_to(prod, (nf,))[idx], np.broadcast_to(pct, (nf,))[idx],
                     np.broadcast_to(jump, (nf,))[idx]))  # fmt: skip

    everyone = np.ones(nf, dtype=bool)
    add(everyone, created_day, 0, "created", True, -1, 0.0)
    add(everyone, staging_day, 1, "enabled", False, -1, 0.0)
    initial = np.where(n_steps == 0, 100, 10)
    add(everyone, enable_day, 2, "enabled", True, initial, initial / 100.0)
    ladder = np.array([[100, 0, 0], [50, 100, 0], [25, 50, 100]])
    day = enable_day.copy()
    prev = initial.copy()
    for k in range(3):
        has = n_steps > k
        step_pct = np.where(has, ladder[np.maximum(n_steps - 1, 0), k], prev)
        day = day + 1 + rng.poisson(2, nf)
        add(has, day, 3 + k, "rollout_changed", True, step_pct, (step_pct - prev) / 100.0)
        prev = np.where(has, step_pct, prev)
    last_day = day
    n_target = rng.poisson(0.6, nf)
    t_flag = np.repeat(np.arange(nf), n_target)
    t_day = enable_day[t_flag] + rng.integers(0, 30, len(t_flag))
    rows.append((t_flag, t_day, np.full(len(t_flag), 6), np.full(len(t_flag), _ACT["targeting_changed"]),
                 rng.random(len(t_flag)) < 0.7, np.full(len(t_flag), -1), np.zeros(len(t_flag))))  # fmt: skip
    killed = rng.random(nf) < 0.08
    kill_day = last_day + rng.integers(0, 10, nf)
    add(killed, kill_day, 7, "disabled", True, -1, 0.0)
    archived = rng.random(nf) < 0.35
    archive_day = np.maximum(last_day, np.where(killed, kill_day, 0)) + 14 + rng.poisson(30, nf)
    add(archived, archive_day, 8, "archived", True, -1, 0.0)

    flag, day_e, rank, action, prod, pct, jump = (np.concatenate(c) for c in zip(*rows, strict=True))
    plan = np.lexsort((rank, day_e, flag))
    flag, day_e, action, prod, pct, jump = flag[plan], day_e[plan], action[plan], prod[plan], pct[plan], jump[plan]
    t = _time_of_day(rng, day_e * _DAY)
    # Same-day events keep their planned order: sort each flag's times and hand them out in plan order.
    t = t[np.lexsort((t, flag))]
    keep = (t >= t0) & (t < t_end)
    flag, t, action, prod, pct, jump = flag[keep], t[keep], action[keep], prod[keep], pct[keep], jump[keep]
    order = np.argsort(t, kind="stable")
    flag, t, action, prod, pct, jump = flag[order], t[order], action[order], prod[order], pct[order], jump[order]

    svc = f_svc[flag]
    actor = _pick_author(rng, org, svc, t)
    th = cfg.toggle_hazard
    is_flip = prod & np.isin(action, [_ACT[a] for a in HAZARD_FLIP_ACTIONS])
    _, outside = time_flags(t)
    eta = (th.intercept + th.enabled * (action == _ACT["enabled"]) + th.disabled * (action == _ACT["disabled"])
           + th.rollout_jump * jump + th.outside_hours * outside + org.base_risk[svc])  # fmt: skip
    p = np.where(is_flip, _sigmoid(eta), 0.0)
    caused = rng.random(len(t)) < p
    lag = _incident_lag(rng, len(t))
    feature = np.array(_FEATURES)[rng.integers(0, len(_FEATURES), nf)]
    key = np.strings.add(np.strings.add(np.strings.add(org.service[f_svc], "-"), feature), "-")
    key = np.strings.add(key, np.arange(1, nf + 1).astype(str))
    project = org.tribe[org.tribe_of_squad[org.squad_of_service[f_svc]]]
    return _Toggles(t, flag, action, prod, pct, jump, actor, f_svc, key, project, p, caused, lag)


def _incident_lag(rng: np.random.Generator, n: int) -> np.ndarray:
    """Seconds from a bad change to its incident: minutes to hours (median 45 min, 3 min..12 h)."""
    return _lognormal_seconds(rng, n, 45 * _MIN, 1.1, 3 * _MIN, 12 * _HOUR)


# --------------------------------------------------------------------------------------------
# The deploy hazard with feedback (incidents raise later risk; rollbacks follow incidents)


@dataclass(frozen=True)
class _Outcomes:
    p: np.ndarray
    caused: np.ndarray
    inc1: np.ndarray  # time of first incident (valid where caused)
    second: np.ndarray  # caused a second incident on a sibling service
    inc2: np.ndarray
    inc2_svc: np.ndarray
    rb_parent: np.ndarray  # base deploy index each rollback reverts
    rb_t: np.ndarray
    rb_p: np.ndarray
    rb_caused: np.ndarray
    rb_inc: np.ndarray
    rb_author: np.ndarray
    iterations: int


def hazard_logit(h: DeployHazard, *, log_size: np.ndarray, flips_1h: np.ndarray, incidents_7d: np.ndarray,
                 author_prior: np.ndarray, t: np.ndarray, touches_infra: np.ndarray, is_rollback: np.ndarray,
                 base_risk: np.ndarray, change: HazardChange | None = None,
                 squad: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """The documented deploy hazard on the logit scale (before the staging/canceled zeroing)."""
    friday_pm, outside = time_flags(t)
    infra = touches_infra.astype(float)
    shift = 0.0 if change is None else change.logit_delta(
        t=t, squad=np.zeros(len(t), dtype=np.int64) if squad is None else squad, log_size=log_size,
        flips_1h=flips_1h, touches_infra=touches_infra)  # fmt: skip
    return shift + (h.intercept + h.log_size * log_size + h.flips_1h * np.minimum(flips_1h, 3)
            + h.incidents_7d * np.log1p(incidents_7d) + h.author_experience * np.log1p(author_prior)
            + h.friday_afternoon * friday_pm + h.outside_hours * outside + h.touches_infra * infra
            + h.infra_x_log_size * infra * log_size + h.rollback * is_rollback + base_risk)  # fmt: skip


def _resolve_outcomes(rng: np.random.Generator, org: _Org, cfg: SimulationConfig, d: _DeployDraws, tog: _Toggles,
                      static_inc: tuple[np.ndarray, np.ndarray], t_end: int) -> _Outcomes:  # fmt: skip
    """Solve the causal loop exactly by fixed-point iteration over common random numbers.

    A deploy's risk depends on incidents and rollbacks that earlier deploys caused, and every
    effect comes strictly later than its cause, so iterating from "nothing caused" settles on
    the one consistent history (usually in a handful of rounds).
    """
    n = len(d.t)
    u = rng.random(n)
    lag1 = _incident_lag(rng, n)
    second = rng.random(n) < cfg.second_incident_share
    lag2 = lag1 + _lognormal_seconds(rng, n, 30 * _MIN, 0.8, 5 * _MIN, 6 * _HOUR)
    sib = _sibling_service(rng, org, d.svc)
    do_rb = rng.random(n) < cfg.rollback_share
    rb_delay = _lognormal_seconds(rng, n, 25 * _MIN, 0.6, 5 * _MIN, 3 * _HOUR)
    rb_u = rng.random(n)
    rb_lag = _incident_lag(rng, n)

    h = cfg.hazard
    live = d.prod & (d.status != 2)
    log_size = np.log1p(d.added + d.deleted)
    flip_mask = tog.prod & np.isin(tog.action, [_ACT[a] for a in HAZARD_FLIP_ACTIONS])
    flip_svc, flip_t = tog.flag_service[tog.flag[flip_mask]], tog.t[flip_mask]
    q_svc, q_author = _Queries.of(d.svc, d.t), _Queries.of(d.author, d.t)
    flip_keys = _keys(flip_svc, flip_t)
    author_keys = _keys(d.author, d.t)
    flips = q_svc.count(flip_keys, _HOUR)
    base_prior = q_author.count(author_keys, None)
    s_svc, s_t = static_inc
    static_keys = _keys(s_svc, s_t)
    base_inc_static = q_svc.count(static_keys, 7 * _DAY)
    inc1 = d.t + lag1
    inc2 = d.t + lag2

    caused = np.zeros(n, dtype=bool)
    rb_caused_by_parent = np.zeros(n, dtype=bool)
    empty_i = np.array([], dtype=np.int64)
    for iteration in range(1, 201):
        rb_parent = np.flatnonzero(caused & do_rb & (inc1 + rb_delay < t_end))
        rb_t = inc1[rb_parent] + rb_delay[rb_parent]
        rb_author = d.author[rb_parent]
        rb_svc = d.svc[rb_parent]
        rb_caused = rb_caused_by_parent[rb_parent]
        dyn_svc = np.concatenate([d.svc[caused], sib[caused & second], rb_svc[rb_caused]])
        dyn_t = np.concatenate([inc1[caused], inc2[caused & second], rb_t[rb_caused] + rb_lag[rb_parent][rb_caused]])
        if len(dyn_t) == 0:
            dyn_svc, dyn_t = empty_i, empty_i
        dyn_keys = _keys(dyn_svc, dyn_t)
        inc7 = base_inc_static + q_svc.count(dyn_keys, 7 * _DAY)
        prior = base_prior + q_author.count(_keys(rb_author, rb_t), None)
        logit = hazard_logit(
            h, log_size=log_size, flips_1h=flips, incidents_7d=inc7, author_prior=prior, t=d.t,
            touches_infra=d.infra, is_rollback=np.zeros(n, dtype=bool), base_risk=org.base_risk[d.svc],
            change=cfg.hazard_change, squad=org.squad_of_service[d.svc])  # fmt: skip
        p = np.where(live, _sigmoid(logit), 0.0)
        new_caused = u < p
        rb_inc7 = count_before(s_svc, s_t, rb_svc, rb_t, 7 * _DAY) + count_before(
            dyn_svc, dyn_t, rb_svc, rb_t, 7 * _DAY
        )
        rb_prior = count_before(d.author, d.t, rb_author, rb_t) + count_before(rb_author, rb_t, rb_author, rb_t)
        rb_p = _sigmoid(hazard_logit(
            h, log_size=log_size[rb_parent], flips_1h=count_before(flip_svc, flip_t, rb_svc, rb_t, _HOUR),
            incidents_7d=rb_inc7, author_prior=rb_prior, t=rb_t, touches_infra=d.infra[rb_parent],
            is_rollback=np.ones(len(rb_parent), dtype=bool), base_risk=org.base_risk[rb_svc],
            change=cfg.hazard_change, squad=org.squad_of_service[rb_svc]))  # fmt: skip
        new_rb = np.zeros(n, dtype=bool)
        new_rb[rb_parent] = rb_u[rb_parent] < rb_p
        if np.array_equal(new_caused, caused) and np.array_equal(new_rb, rb_caused_by_parent):
            return _Outcomes(p, caused, inc1, second, inc2, sib, rb_parent, rb_t, rb_p, new_rb[rb_parent],
                             rb_t + rb_lag[rb_parent], rb_author, iteration)  # fmt: skip
        caused, rb_caused_by_parent = new_caused, new_rb
    raise RuntimeError("deploy outcomes did not converge; the hazard's feedback is too strong")


# --------------------------------------------------------------------------------------------
# Assembling canonical tables


# Strings are built as Arrow arrays (dictionary takes, casts, joins): numpy unicode arrays and
# pd.array on them cost seconds per million rows.


def _ts(seconds: np.ndarray) -> pd.Series:
    """int64 unix seconds (negative = missing) to canonical UTC timestamps."""
    arr = np.where(seconds < 0, np.iinfo(np.int64).min, seconds).astype("datetime64[s]").astype("datetime64[us]")
    return pd.Series(pd.DatetimeIndex(arr).tz_localize("UTC"))


def _series(arr: pa.Array) -> pd.Series:
    """An Arrow string array as a Series of the canonical string dtype."""
    return pd.Series(pd.arrays.ArrowStringArray(arr.cast(pa.large_string())))


def _mask(valid: np.ndarray | None) -> np.ndarray | None:
    return None if valid is None else ~np.asarray(valid, dtype=bool)


def _take(names: np.ndarray | list[str] | tuple[str, ...] | pa.Array, codes: np.ndarray,
          valid: np.ndarray | None = None) -> pa.Array:  # fmt: skip
    """names[codes] (null where not valid)."""
    table = names if isinstance(names, pa.Array) else pa.array([str(x) for x in names], type=pa.large_string())
    return table.take(pa.array(np.asarray(codes, dtype=np.int64), mask=_mask(valid)))


def _prefixed(prefix: str, numbers: np.ndarray, width: int = 0, valid: np.ndarray | None = None) -> pa.Array:
    """prefix + decimal number, zero-padded to ``width`` (null where not valid)."""
    text = pc.cast(pa.array(np.asarray(numbers, dtype=np.int64), mask=_mask(valid)), pa.large_string())
    if width:
        text = pc.utf8_lpad(text, width=width, padding="0")
    return _join(prefix, text)


def _join(*parts: pa.Array | str) -> pa.Array:
    """Element-wise concatenation of string arrays and constants (null if any part is null)."""
    args = [pa.scalar(x, pa.large_string()) if isinstance(x, str) else x.cast(pa.large_string()) for x in parts]
    return pc.binary_join_element_wise(*args, pa.scalar("", pa.large_string()))


def _shas(rng: np.random.Generator, n: int) -> pa.Array:
    """n random 40-hex-digit commit shas, straight from a buffer."""
    data = rng.bytes(20 * n).hex().encode("ascii")
    offsets = np.arange(n + 1, dtype=np.int64) * 40
    return pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data))


def _table(spec: TableSpec, columns: dict[str, pd.Series]) -> pd.DataFrame:
    """A table in canonical dtypes and layout; columns not given are all-missing."""
    n = len(next(iter(columns.values())))
    empty = empty_table(spec)
    out = {}
    for name in spec.column_names:
        if name in columns:
            out[name] = pd.Series(columns[name]).reset_index(drop=True).astype(empty[name].dtype)
        else:
            out[name] = pd.Series([pd.NA] * n, dtype=empty[name].dtype)
    return canonical_order(spec, pd.DataFrame(out))


def _ints(values: np.ndarray) -> pd.Series:
    return pd.Series(pd.array(values.astype(np.int64), dtype="Int64"))


def _bools(values: np.ndarray, valid: np.ndarray | None = None) -> pd.Series:
    return pd.Series(pd.arrays.BooleanArray(values.astype(bool), np.zeros(len(values), bool) if valid is None
                                            else ~valid.astype(bool)))  # fmt: skip


def deploy_ids(native: np.ndarray) -> pa.Array:
    """Canonical deploy ids for native (GitHub-like integer) ids."""
    return _prefixed(f"{DEPLOY_SOURCE}:", native)


def _toggle_native_ids(n: int) -> pa.Array:
    """LaunchDarkly-like 24-hex-digit audit entry ids, in time order."""
    return _prefixed("65a0", np.arange(1, n + 1), 20)


def _incident_native_ids(n: int) -> pa.Array:
    """PagerDuty-like 14-character incident ids, in time order."""
    return _prefixed("Q", np.arange(1, n + 1), 13)


def _deploy_table(d: _DeployDraws, org: _Org, ids: pa.Array, sha: pa.Array, is_rb: np.ndarray,
                  reverts: pa.Array, running: bool, rng: np.random.Generator) -> pd.DataFrame:  # fmt: skip
    n = len(d.t)
    status = np.full(n, 3) if running else d.status
    sq = org.squad_of_service[d.svc]
    # prev_commit_sha: the previous deploy of the same service to the same environment.
    order = np.lexsort((d.t, d.prod, d.svc))
    same = np.zeros(n, dtype=bool)
    same[1:] = (d.svc[order][1:] == d.svc[order][:-1]) & (d.prod[order][1:] == d.prod[order][:-1])
    prev_pos = np.zeros(n, dtype=np.int64)
    prev_pos[order[1:]] = order[:-1]
    has_prev = np.zeros(n, dtype=bool)
    has_prev[order] = same
    started = d.t + rng.integers(5, 90, n)
    finished = started + _lognormal_seconds(rng, n, 4 * _MIN, 0.6, 30, 2 * _HOUR)
    canceled = d.status == 2
    started = np.where(canceled | running, -1, started)
    finished = np.where(running, -1, np.where(canceled, d.t + rng.integers(10, 300, n), finished))
    zeros = np.zeros(n, dtype=np.int64)
    return _table(DEPLOYS, {
        "deploy_id": _series(ids),
        "source": _series(_take([DEPLOY_SOURCE], zeros)),
        "service": _series(_take(org.service, d.svc)),
        "environment": _series(_take(["staging", "production"], d.prod.astype(np.int64))),
        "commit_sha": _series(sha),
        "prev_commit_sha": _series(sha.take(pa.array(prev_pos, mask=~has_prev))),
        "ref": _series(_take(["main"], zeros)),
        "status": _series(_take(["success", "failure", "canceled", "running"], status)),
        "created_at": _ts(d.t),
        "started_at": _ts(started),
        "finished_at": _ts(finished),
        "author": _series(_take(org.author, d.author)),
        "commit_count": _ints(d.commits),
        "lines_added": _ints(d.added),
        "lines_deleted": _ints(d.deleted),
        "files_changed": _ints(d.files),
        "is_rollback": _bools(is_rb),
        "reverts_deploy_id": _series(reverts),
        "touches_infra": _bools(d.infra),
        "squad": _series(_take(org.squad, sq)),
        "tribe": _series(_take(org.tribe, org.tribe_of_squad[sq])),
        "updated_at": _ts(finished),
    })  # fmt: skip


def _toggle_table(tog: _Toggles, org: _Org, native: pa.Array) -> pd.DataFrame:
    n = len(tog.t)
    on_off = np.isin(tog.action, [_ACT["enabled"], _ACT["disabled"]])
    rollout = tog.pct >= 0
    return _table(TOGGLE_EVENTS, {
        "event_id": _series(_join(f"{TOGGLE_SOURCE}:", native)),
        "source": _series(_take([TOGGLE_SOURCE], np.zeros(n, dtype=np.int64))),
        "flag_key": _series(_take(tog.flag_key, tog.flag)),
        "project": _series(_take(tog.flag_project, tog.flag)),
        "environment": _series(_take(["staging", "production"], tog.prod.astype(np.int64))),
        "service": _series(_take(org.service, tog.flag_service[tog.flag])),
        "action": _series(_take(TOGGLE_EVENTS.column("action").choices, tog.action)),
        "occurred_at": _ts(tog.t),
        "actor": _series(_take(org.author, tog.actor)),
        "new_enabled": _bools(tog.action == _ACT["enabled"], on_off),
        "comment": _series(_join("rollout to ", pc.cast(pa.array(tog.pct, mask=~rollout), pa.large_string()), "%")),
    })  # fmt: skip


# --------------------------------------------------------------------------------------------
# The simulation


def simulate(config: SimulationConfig, progress: Progress | None = None) -> SimulatedHistory:
    """Simulate ``config.days`` of history for ``config.services`` services; pure and deterministic."""
    say = progress or (lambda _msg: None)
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(config.seed).spawn(9)]
    r_org, r_tog, r_dep, r_bg, r_out, r_inc, r_tab, r_up, r_upt = streams
    start = pd.Timestamp(config.start, tz="UTC").floor("D")
    t0 = int(start.timestamp())
    t_end = t0 + config.days * _DAY

    say("organisation")
    org = _organisation(r_org, config, t0, t_end)
    say("feature toggles")
    tog = _simulate_toggles(r_tog, org, config, t0, t_end)
    say("deploys")
    d = _draw_deploys(r_dep, org, config, t0, config.days)

    # Background incidents: per-service Poisson, riskier services a little more often.
    bg_rate = config.background_incidents_per_service_day * np.exp(0.5 * org.base_risk)
    bg_n = r_bg.poisson(bg_rate * config.days)
    bg_svc = np.repeat(np.arange(len(org.service)), bg_n)
    bg_t = r_bg.integers(t0, t_end, len(bg_svc), dtype=np.int64)
    tg_mask = tog.caused
    static_inc = (np.concatenate([bg_svc, tog.flag_service[tog.flag[tg_mask]]]),
                  np.concatenate([bg_t, tog.t[tg_mask] + tog.lag[tg_mask]]))  # fmt: skip

    say("incident hazard")
    out = _resolve_outcomes(r_out, org, config, d, tog, static_inc, t_end)

    say("tables")
    # All deploys: base draws then rollbacks, numbered in time order.
    nb, nr = len(d.t), len(out.rb_parent)
    par = out.rb_parent
    all_d = _DeployDraws(
        t=np.concatenate([d.t, out.rb_t]), svc=np.concatenate([d.svc, d.svc[par]]),
        author=np.concatenate([d.author, out.rb_author]), prod=np.concatenate([d.prod, np.ones(nr, dtype=bool)]),
        status=np.concatenate([d.status, np.zeros(nr, dtype=np.int64)]),
        added=np.concatenate([d.added, d.deleted[par]]), deleted=np.concatenate([d.deleted, d.added[par]]),
        files=np.concatenate([d.files, d.files[par]]), commits=np.concatenate([d.commits, np.ones(nr, dtype=np.int64)]),
        infra=np.concatenate([d.infra, d.infra[par]]),
    )  # fmt: skip
    native = np.empty(nb + nr, dtype=np.int64)
    native[np.argsort(all_d.t, kind="stable")] = FIRST_DEPLOY_ID + np.arange(nb + nr)
    is_rb = np.concatenate([np.zeros(nb, dtype=bool), np.ones(nr, dtype=bool)])
    reverts = _prefixed(f"{DEPLOY_SOURCE}:", np.concatenate([np.zeros(nb, dtype=np.int64), native[par]]), valid=is_rb)
    sha = _shas(r_tab, nb + nr)
    ids = deploy_ids(native)
    deploys = _deploy_table(all_d, org, ids, sha, is_rb, reverts, False, r_tab)
    deploy_truth = _truth("deploy_id", ids, np.concatenate([out.p, out.rb_p]),
                          np.concatenate([out.caused, out.rb_caused]))  # fmt: skip

    t_native = _toggle_native_ids(len(tog.t))
    toggles = _toggle_table(tog, org, t_native)
    t_ids = _join(f"{TOGGLE_SOURCE}:", t_native)
    toggle_truth = _truth("event_id", t_ids, tog.p, tog.caused)

    incidents, incident_truth, inc_svc, inc_t = _incidents(
        r_inc, config, org, out, d, tog, ids, sha, t_ids, (bg_svc, bg_t), t_end)  # fmt: skip
    say("upcoming deploys")
    upcoming, upcoming_truth = _upcoming(r_up, r_upt, org, config, all_d, tog, (inc_svc, inc_t), t_end,
                                         FIRST_DEPLOY_ID + nb + nr)  # fmt: skip
    return SimulatedHistory(
        history=History(deploys=deploys, toggle_events=toggles, incidents=incidents, catalog=_catalog(org)),
        deploy_truth=deploy_truth, toggle_truth=toggle_truth, incident_truth=incident_truth,
        upcoming=upcoming, upcoming_truth=upcoming_truth,
    )  # fmt: skip


def _catalog(org: _Org) -> pd.DataFrame:
    """The organisation as a software catalog would hold it: tribes, squads (with their Slack
    channels), one System per tribe and one Component per service, owned by its squad and
    depending on the squad's previous service (by name). No randomness: the draws stay as they were."""
    rows: list[dict[str, object]] = []

    def add(kind: str, name: str, **fields: object) -> None:
        rows.append({"entity_ref": f"{CATALOG_SOURCE}:{kind}:default/{name}", "kind": kind, "namespace": "default",
                     "name": name, "ownership": "fill", **fields})  # fmt: skip

    for tribe in sorted(set(org.tribe.tolist())):
        add("group", tribe, type="tribe", slack_channel=f"tribe-{tribe}")
        add("system", f"{tribe}-services", owner=tribe)
    for k, squad in enumerate(org.squad.tolist()):
        add("group", squad, type="squad", parent=str(org.tribe[org.tribe_of_squad[k]]), slack_channel=f"squad-{squad}")
    previous: dict[int, str] = {}
    for i in np.argsort(org.service, kind="stable"):
        squad_k = int(org.squad_of_service[i])
        tribe = str(org.tribe[org.tribe_of_squad[squad_k]])
        service = str(org.service[i])
        add("component", service, type="service", lifecycle="production", owner=str(org.squad[squad_k]),
            system=f"{tribe}-services", depends_on=previous.get(squad_k))  # fmt: skip
        previous[squad_k] = service
    frame = pd.DataFrame(rows).assign(source=CATALOG_SOURCE)
    return canonical_order(CATALOG, conform(CATALOG, frame, source=CATALOG_SOURCE, file="simulation").valid)


def _truth(key: str, ids: pa.Array, p: np.ndarray, caused: np.ndarray) -> pd.DataFrame:
    frame = pd.DataFrame({key: _series(ids), "p_incident": p.astype(float), "caused_incident": caused.astype(bool)})
    return frame.sort_values(key, kind="stable").reset_index(drop=True)


def _incidents(rng: np.random.Generator, cfg: SimulationConfig, org: _Org, out: _Outcomes, d: _DeployDraws,
               tog: _Toggles, ids: pa.Array, sha: pa.Array, t_ids: pa.Array,
               background: tuple[np.ndarray, np.ndarray],
               t_end: int) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray, np.ndarray]:  # fmt: skip
    """Every incident (deploy-, rollback-, toggle-caused and background) with titles, links and timing."""
    nb = len(d.t)
    c = np.flatnonzero(out.caused)
    c2 = np.flatnonzero(out.caused & out.second)
    rb = np.flatnonzero(out.rb_caused)
    tg = np.flatnonzero(tog.caused)
    bg_svc, bg_t = background
    # Parts, in order: deploy first incidents, second incidents, rollback incidents, toggle, background.
    t = np.concatenate([out.inc1[c], out.inc2[c2], out.rb_inc[rb], tog.t[tg] + tog.lag[tg], bg_t])
    svc = np.concatenate([d.svc[c], out.inc2_svc[c2], d.svc[out.rb_parent[rb]], tog.flag_service[tog.flag[tg]], bg_svc])
    n_dep, n_tg = len(c) + len(c2) + len(rb), len(tg)
    kind = np.concatenate([np.zeros(n_dep, dtype=np.int64), np.ones(n_tg, dtype=np.int64), np.full(len(bg_t), 2)])
    dep_pos = np.concatenate([c, c2, nb + rb])  # positions in the all-deploys arrays
    src = np.concatenate([dep_pos, tg, np.zeros(len(bg_t), dtype=np.int64)])  # position in its cause's table
    keep = t < t_end
    order = np.flatnonzero(keep)[np.argsort(t[keep], kind="stable")]
    t, svc, kind, src = t[order], svc[order], kind[order], src[order]
    n = len(t)
    is_dep, is_tog = kind == 0, kind == 1
    cause = pc.coalesce(ids.take(pa.array(src, mask=~is_dep)), t_ids.take(pa.array(src, mask=~is_tog)))
    cause_sha = sha.take(pa.array(src, mask=~is_dep))
    flag_key = _take(tog.flag_key, tog.flag[np.where(is_tog, src, 0)], is_tog)

    # Titles: symptom x service, and the explicit links only part of the incidents carry.
    symptoms = _SYMPTOMS + _BACKGROUND_SYMPTOMS
    sym = np.where((kind == 2) & (rng.random(n) < 0.5), len(_SYMPTOMS) + rng.integers(0, len(_BACKGROUND_SYMPTOMS), n),
                   rng.integers(0, len(_SYMPTOMS), n))  # fmt: skip
    pre = _take([a for a, _ in symptoms], sym)
    post = _take([b for _, b in symptoms], sym)
    title = _join(pre, _take(org.service, svc), post)
    linked = (kind < 2) & (rng.random(n) < cfg.explicit_link_share)
    by_sha = linked & is_dep & (rng.random(n) < 0.5)
    by_id = linked & is_dep & ~by_sha
    by_flag = linked & is_tog
    title = pc.if_else(pa.array(by_sha), _join(title, " (root cause: ", pc.fill_null(cause_sha, ""), ")"), title)
    not_change = (kind == 2) & (rng.random(n) < cfg.not_change_related_share)

    sev = rng.choice(5, size=n, p=[0.04, 0.14, 0.42, 0.28, 0.12])
    ack = t + _lognormal_seconds(rng, n, 4 * _MIN, 0.9, 30, 2 * _HOUR)
    resolved = ack + _lognormal_seconds(rng, n, 50 * _MIN, 1.0, 5 * _MIN, 3 * _DAY)
    status = np.where(ack >= t_end, 0, np.where(resolved >= t_end, 1, 2))
    ack = np.where(ack >= t_end, -1, ack)
    resolved = np.where(resolved >= t_end, -1, resolved)
    inc_ids = _join(f"{INCIDENT_SOURCE}:", _incident_native_ids(n))
    null = pa.nulls(n, pa.large_string())
    incidents = _table(INCIDENTS, {
        "incident_id": _series(inc_ids),
        "source": _series(_take([INCIDENT_SOURCE], np.zeros(n, dtype=np.int64))),
        "title": _series(title),
        "service": _series(_take(org.service, svc)),
        "environment": _series(_take(["production"], np.zeros(n, dtype=np.int64))),
        "severity": _series(_take(["sev1", "sev2", "sev3", "sev4", "sev5"], sev)),
        "priority": _series(_take(["P1", "P2", "P3", "P4", "P5"], sev)),
        "urgency": _series(_take(["high", "low"], (sev > 2).astype(np.int64))),
        "status": _series(_take(["open", "acknowledged", "resolved"], status)),
        "created_at": _ts(t),
        "acknowledged_at": _ts(ack),
        "resolved_at": _ts(resolved),
        "caused_by_deploy_id": _series(pc.if_else(pa.array(by_id), cause, null)),
        "caused_by_commit_sha": _series(pc.if_else(pa.array(by_sha), cause_sha, null)),
        "caused_by_flag_key": _series(pc.if_else(pa.array(by_flag), flag_key, null)),
        "not_change_related": _bools(not_change, not_change),
        "updated_at": _ts(np.maximum.reduce([t, ack, resolved])),
    })  # fmt: skip
    truth = pd.DataFrame({
        "incident_id": _series(inc_ids),
        "cause_kind": _series(_take(["deploy", "toggle", "background"], kind)),
        "cause_id": _series(cause),
    }).sort_values("incident_id", kind="stable").reset_index(drop=True)  # fmt: skip
    return incidents, truth, svc, t


def _upcoming(rng: np.random.Generator, rng_tab: np.random.Generator, org: _Org, cfg: SimulationConfig,
              hist: _DeployDraws, tog: _Toggles, incidents: tuple[np.ndarray, np.ndarray], t_end: int,
              first_id: int) -> tuple[pd.DataFrame, pd.DataFrame]:  # fmt: skip
    """Deploys planned from the next working day after the history: no outcome, but a true risk."""
    first_day = t_end + int(np.argmax(_weekday(t_end + np.arange(7) * _DAY) < 5)) * _DAY
    up = _draw_deploys(rng, org, cfg, first_day, cfg.upcoming_days)
    n = len(up.t)
    ids = deploy_ids(first_id + np.arange(n, dtype=np.int64))
    none = pa.nulls(n, pa.large_string())
    table = _deploy_table(up, org, ids, _shas(rng_tab, n), np.zeros(n, dtype=bool), none, True, rng_tab)
    flip_mask = tog.prod & np.isin(tog.action, [_ACT[a] for a in HAZARD_FLIP_ACTIONS])
    p = np.where(up.prod, _sigmoid(hazard_logit(
        cfg.hazard, log_size=np.log1p(up.added + up.deleted),
        flips_1h=count_before(tog.flag_service[tog.flag[flip_mask]], tog.t[flip_mask], up.svc, up.t, _HOUR),
        incidents_7d=count_before(incidents[0], incidents[1], up.svc, up.t, 7 * _DAY),
        author_prior=count_before(hist.author, hist.t, up.author, up.t), t=up.t, touches_infra=up.infra,
        is_rollback=np.zeros(n, dtype=bool), base_risk=org.base_risk[up.svc], change=cfg.hazard_change,
        squad=org.squad_of_service[up.svc])), 0.0)  # fmt: skip
    truth = pd.DataFrame({"deploy_id": _series(ids), "p_incident": p})
    return table, truth.sort_values("deploy_id", kind="stable").reset_index(drop=True)
