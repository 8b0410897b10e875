"""What-if advice: re-score changed copies of the same deploy and report the actions that lower the risk.

The model is not causal: advice is what the model predicts for the changed deploy, nothing more. Each
candidate is a modified ``UpcomingDeploy`` (later ship time, smaller size, another author, a toggle
input) whose features come from the same ``compute_features`` on the same prepared history as the
score, and whose probability comes from the same ``FastScorer``; all candidates of one deploy go
through one ``compute_features`` call and one scorer pass. The score asked for is never touched:
advice reads it (``current``) and reports differences against it.

Which actions are offered by default follows the simulator benchmark (``benchmarks/advice.py``,
docs/advice.md): only those whose advice truly lowered the simulator's hazard.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal, get_args
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from features.history.schema import FLIP_ACTIONS, History
from features.pointintime.compute import EntityArrays, FeatureConfig, compute_features
from models.scoring.compiled import FastScorer, _model_extras
from models.scoring.context import FeatureIndex, _entity_row
from models.scoring.upcoming import _SIZE_COLUMNS, UpcomingDeploy

MINUTE_US = 60_000_000

#: Every action kind, in the order candidates are built.
Action = Literal[
    "next_business_morning",
    "after_flips_settle",
    "after_incident_resolved",
    "after_deploy_in_flight",
    "split",
    "behind_toggle",
    "different_author",
]
ACTIONS: tuple[Action, ...] = get_args(Action)
#: Offered unless configured otherwise: the kinds the simulator confirmed (docs/advice.md).
DEFAULT_ACTIONS = ("next_business_morning",)


@dataclass(frozen=True)
class AdviceConfig:
    """Which actions are evaluated and when a drop is worth saying.

    - ``actions``: the kinds offered (``ACTIONS``); default ``DEFAULT_ACTIONS``.
    - ``min_drop`` and ``min_relative_drop``: the materiality threshold. An action is reported only
      when its probability is lower than the current one by at least ``min_drop`` (absolute) and by
      at least ``min_relative_drop`` of the current probability; smaller drops are inside the model's
      noise and would teach authors to chase it.
    - ``split_parts``: the k of "split into k deploys" (sizes divided by k).
    - ``settle_minutes``: "after the flips settle" ships this long after the service's last flip.
    - ``author_lookback_days``, ``max_authors``: candidate authors are the service's authors of
      the last days, the most active first; ``name_authors`` puts their names in the advice
      (off: "a recent author of this service").
    - ``toggle_column``: the ``extra_*`` input that says a deploy ships dark behind a toggle (1) in
      your feature set; without one the model cannot tell a guarded deploy and the action is skipped.
    - ``max_wait_hours``: waits longer than this are not advised.
    """

    actions: tuple[str, ...] = DEFAULT_ACTIONS
    min_drop: float = 0.01
    min_relative_drop: float = 0.10
    split_parts: tuple[int, ...] = (2, 3, 4)
    settle_minutes: int = 60
    author_lookback_days: int = 30
    max_authors: int = 5
    name_authors: bool = False
    toggle_column: str | None = None
    max_wait_hours: float = 96.0

    def __post_init__(self) -> None:
        unknown = [a for a in self.actions if a not in ACTIONS]
        if unknown:
            raise ValueError(f"unknown advice actions {unknown}; known: {ACTIONS}")
        if not 0 <= self.min_drop < 1 or not 0 <= self.min_relative_drop < 1:
            raise ValueError("min_drop and min_relative_drop must be in [0, 1)")
        if any(k < 2 for k in self.split_parts):
            raise ValueError("split_parts must be at least 2")
        if self.toggle_column is not None and not self.toggle_column.startswith("extra_"):
            raise ValueError("toggle_column must be an extra_* input")

    def material(self, current: float, probability: float) -> bool:
        """Is the drop from ``current`` to ``probability`` worth reporting?"""
        return current - probability >= max(self.min_drop, self.min_relative_drop * current)


@dataclass(frozen=True)
class Advice:
    """One action: what to do, the predicted probability after it and the change against now."""

    action: str
    detail: str
    probability: float
    change: float
    ship_at: pd.Timestamp | None = None
    parts: int | None = None
    author: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "detail": self.detail,
            "probability": self.probability,
            "change": self.change,
            "ship_at": self.ship_at.isoformat() if self.ship_at is not None else None,
            "parts": self.parts,
            "author": self.author,
        }


@dataclass(frozen=True)
class _Times:
    """Per key (a service), sorted event times in UTC microseconds and a matching value array."""

    times: Mapping[str, np.ndarray]
    values: Mapping[str, np.ndarray]


@dataclass(frozen=True)
class AdviceIndex:
    """Per-service events the actions need, built once per store version (never per request).

    ``flips``: flip times; ``incidents``: created -> expected resolution; ``deploys``: created ->
    expected finish (in-flight checks); ``authors``: deploy times -> author. An unknown end is
    expected at the start plus the history's median duration (``median_resolution_us``,
    ``median_deploy_us``).
    """

    flips: _Times
    incidents: _Times
    deploys: _Times
    authors: _Times
    median_resolution_us: int
    median_deploy_us: int


def _micros(values: pd.Series) -> np.ndarray:
    """UTC microseconds of a timestamp column; missing as int64 min."""
    ts = pd.to_datetime(values, utc=True).dt.as_unit("us")
    out = ts.to_numpy(dtype="datetime64[us]").astype(np.int64)
    return np.where(ts.isna().to_numpy(), np.iinfo(np.int64).min, out)


def _grouped(keys: pd.Series, times: np.ndarray, values: np.ndarray) -> _Times:
    keep = keys.notna().to_numpy() & (times != np.iinfo(np.int64).min)
    k = keys.astype("string").to_numpy(dtype=object)[keep]
    t, v = times[keep], values[keep]
    order = np.lexsort((t, k.astype(str))) if len(k) else np.zeros(0, dtype=np.int64)
    k, t, v = k[order], t[order], v[order]
    out_t: dict[str, np.ndarray] = {}
    out_v: dict[str, np.ndarray] = {}
    if len(k):
        starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
        ends = np.r_[starts[1:], len(k)]
        for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
            out_t[str(k[s])], out_v[str(k[s])] = t[s:e], v[s:e]
    return _Times(out_t, out_v)


def _median_duration(start: np.ndarray, end: np.ndarray, default_us: int) -> int:
    known = (start != np.iinfo(np.int64).min) & (end != np.iinfo(np.int64).min) & (end >= start)
    return int(np.median(end[known] - start[known])) if known.any() else default_us


def build_advice_index(history: History, config: FeatureConfig) -> AdviceIndex:
    """The per-service events of ``history`` the actions read, counted as the features count them."""
    envs = list(config.history_environments)
    tog = history.toggle_events
    env_ok = tog["environment"].isna() | tog["environment"].astype("string").isin(envs).fillna(False)
    flip = tog["action"].astype("string").isin(list(FLIP_ACTIONS)).fillna(False) & env_ok
    tog = tog.loc[flip.to_numpy(dtype=bool)]
    ft = _micros(tog["occurred_at"])
    inc = history.incidents
    inc = inc.loc[(inc["environment"].isna() | inc["environment"].astype("string").isin(envs).fillna(False)).to_numpy()]
    created, resolved = _micros(inc["created_at"]), _micros(inc["resolved_at"])
    med_res = _median_duration(created, resolved, 60 * MINUTE_US)
    dep = history.deploys
    dep = dep.loc[dep["environment"].astype("string").isin(envs).fillna(False).to_numpy(dtype=bool)]
    d_created, d_finished = _micros(dep["created_at"]), _micros(dep["finished_at"])
    med_dep = _median_duration(d_created, d_finished, 10 * MINUTE_US)
    running = dep["status"].astype("string").isin(["running"]).fillna(False).to_numpy(dtype=bool)
    unknown_end = d_finished == np.iinfo(np.int64).min
    # a finished deploy without an end time is over; a running one ends at the median duration
    d_end = np.where(unknown_end, np.where(running, d_created + med_dep, d_created), d_finished)
    i_end = np.where(resolved == np.iinfo(np.int64).min, created + med_res, resolved)
    authors = dep["author"].astype("string").to_numpy(dtype=object)
    return AdviceIndex(
        flips=_grouped(tog["service"], ft, ft),
        incidents=_grouped(inc["service"], created, i_end),
        deploys=_grouped(dep["service"], d_created, d_end),
        authors=_grouped(dep["service"], d_created, authors),
        median_resolution_us=med_res,
        median_deploy_us=med_dep,
    )


@dataclass(frozen=True)
class _Candidate:
    action: str
    detail: str
    variant: UpcomingDeploy
    parts: int = 1
    ship_at: pd.Timestamp | None = None
    author: str | None = None


def _at(micros: int) -> pd.Timestamp:
    return pd.Timestamp(micros, unit="us", tz="UTC")


def next_business_morning(t_us: int, zone: str, business_hours: tuple[int, int]) -> int:
    """The next weekday at the start of business hours on the service's clock, after ``t_us``."""
    tz = ZoneInfo(zone)
    local = datetime.fromtimestamp(t_us / 1e6, tz)
    day = local.date()
    for step in range(8):
        d = day + timedelta(days=step)
        if d.weekday() >= 5:
            continue
        morning = datetime(d.year, d.month, d.day, business_hours[0], tzinfo=tz)
        micros = int(morning.timestamp()) * 1_000_000
        if micros > t_us:
            return micros
    raise AssertionError("a weekday morning exists within 8 days")


def outside_working_day(t_us: int, zone: str, features: FeatureConfig) -> bool:
    """Is ``t_us`` outside the service's working day (weekend, outside business hours, Friday afternoon)?

    The same definitions as the timing features (``is_outside_business_hours``, ``is_friday_afternoon``).
    """
    local = datetime.fromtimestamp(t_us / 1e6, ZoneInfo(zone))
    start, end = features.business_hours
    friday_pm = local.weekday() == 4 and local.hour >= features.friday_afternoon_hour
    return local.weekday() >= 5 or local.hour < start or local.hour >= end or friday_pm


def _waits(
    deploy: UpcomingDeploy, events: AdviceIndex, features: FeatureConfig, config: AdviceConfig
) -> list[_Candidate]:
    t = deploy.micros
    service = deploy.service or ""
    out: list[_Candidate] = []
    max_wait = int(config.max_wait_hours * 60) * MINUTE_US

    def later(action: str, detail: str, at: int) -> None:
        if t < at <= t + max_wait:
            out.append(_Candidate(action, detail, replace(deploy, created_at=_at(at)), ship_at=_at(at)))

    zone = features.service_timezones.get(service, "UTC")
    if "next_business_morning" in config.actions and outside_working_day(t, zone, features):
        # only deploys outside the working day: moving one inside it is not what this action means
        at = next_business_morning(t, zone, features.business_hours)
        later(
            "next_business_morning",
            f"ship at the next business morning ({_at(at).tz_convert(zone):%a %H:%M} {zone})",
            at,
        )
    if "after_flips_settle" in config.actions and service in events.flips.times:
        flips = events.flips.times[service]
        settle = config.settle_minutes * MINUTE_US
        lo, hi = np.searchsorted(flips, [t - settle, t], side="left")
        recent = flips[lo:hi]
        if len(recent):
            n = len(recent)
            later(
                "after_flips_settle",
                f"ship after the {n} recent flip(s) settle ({config.settle_minutes} min quiet)",
                int(recent.max()) + settle,
            )
    waits = (
        ("after_incident_resolved", "ship after the service's open incident is resolved", events.incidents),
        ("after_deploy_in_flight", "do not stack: ship after the deploy in flight finishes", events.deploys),
    )
    for kind, detail, spans in waits:  # ship one minute after the last span open at t ends
        if kind in config.actions and service in spans.times:
            created, end = spans.times[service], spans.values[service]
            open_ = (created < t) & (end > t)
            if open_.any():
                later(kind, detail, int(end[open_].max()) + MINUTE_US)
    return out


def _split(deploy: UpcomingDeploy, config: AdviceConfig) -> list[_Candidate]:
    if "split" not in config.actions or not any(getattr(deploy, c) for c in _SIZE_COLUMNS):
        return []
    out = []
    for k in config.split_parts:
        sizes = {c: (v / k if v is not None else None) for c in _SIZE_COLUMNS for v in [getattr(deploy, c)]}
        out.append(_Candidate("split", f"split into {k} smaller deploys", replace(deploy, **sizes), parts=k))  # type: ignore[arg-type]
    return out


def _toggle(deploy: UpcomingDeploy, scorer: FastScorer, config: AdviceConfig) -> list[_Candidate]:
    column = config.toggle_column
    if "behind_toggle" not in config.actions or column is None or column not in scorer.numeric:
        return []
    if deploy.extra.get(column) == 1.0:
        return []
    variant = replace(deploy, extra={**deploy.extra, column: 1.0})
    return [_Candidate("behind_toggle", f"ship the code dark behind a toggle ({column} = 1), flip it later", variant)]


def _authors(deploy: UpcomingDeploy, events: AdviceIndex, config: AdviceConfig) -> list[_Candidate]:
    service = deploy.service or ""
    if "different_author" not in config.actions or service not in events.authors.times:
        return []
    t = deploy.micros
    times, names = events.authors.times[service], events.authors.values[service]
    lo, hi = np.searchsorted(times, [t - config.author_lookback_days * 24 * 60 * MINUTE_US, t], side="left")
    counts = Counter(n for n in names[lo:hi].tolist() if isinstance(n, str) and n != deploy.author)
    ranked = [name for name, _ in counts.most_common(config.max_authors)]
    out = []
    for name in ranked:
        shown = str(name) if config.name_authors else "a recent author of this service"
        out.append(
            _Candidate("different_author", f"have {shown} ship it", replace(deploy, author=str(name)), author=str(name))
        )
    return out


def _stack(rows: Sequence[EntityArrays]) -> EntityArrays:
    """Several one-row entities as one (one ``compute_features`` call for all candidates)."""
    names = sorted({n for r in rows for n in r.numbers})
    return EntityArrays(
        t=np.concatenate([r.t for r in rows]),
        service=np.concatenate([np.asarray(r.service, dtype=object) for r in rows]),
        author=np.concatenate([np.asarray(r.author, dtype=object) for r in rows]),
        squad=np.concatenate([np.asarray(r.squad, dtype=object) for r in rows]),
        tribe=np.concatenate([np.asarray(r.tribe, dtype=object) for r in rows]),
        numbers={n: np.concatenate([r.number(n) for r in rows]) for n in names},
    )


def rescore(index: FeatureIndex, scorer: FastScorer, deploys: Sequence[UpcomingDeploy]) -> np.ndarray:
    """Calibrated probabilities of deploys (teams already filled) through the scoring feature path."""
    extras = _model_extras(scorer)
    entities = _stack([EntityArrays.from_mapping(_entity_row(d, extras)) for d in deploys])
    features = compute_features(index.prepared, entities)
    num = np.column_stack([features.numeric.get(c, np.full(len(deploys), math.nan)) for c in scorer.numeric])
    cats = [
        [str(features.categorical[c][i]) if c in features.categorical else None for c in scorer.categorical]
        for i in range(len(deploys))
    ]
    return np.asarray(scorer.probability(num, scorer.encode(cats)), dtype=np.float64)


def candidates(
    index: FeatureIndex, scorer: FastScorer, events: AdviceIndex, deploy: UpcomingDeploy, config: AdviceConfig
) -> list[_Candidate]:
    """Every configured action that applies to this deploy, as a changed copy of it."""
    deploy, _ = deploy.with_teams(index.teams)
    return [
        *_waits(deploy, events, index.config, config),
        *_split(deploy, config),
        *_toggle(deploy, scorer, config),
        *_authors(deploy, events, config),
    ]


def evaluate(
    index: FeatureIndex,
    scorer: FastScorer,
    events: AdviceIndex,
    deploy: UpcomingDeploy,
    current: float,
    config: AdviceConfig,
) -> list[tuple[_Candidate, float]]:
    """(candidate, predicted probability after it) for every applicable action, material or not.

    A split's probability is that any of its k parts causes an incident: 1 - prod(1 - p_i).
    """
    cands = candidates(index, scorer, events, deploy, config)
    if not cands:
        return []
    p = rescore(index, scorer, [c.variant for c in cands])
    return [(c, float(1.0 - (1.0 - pi) ** c.parts)) for c, pi in zip(cands, p.tolist(), strict=True)]


def advise(
    index: FeatureIndex,
    scorer: FastScorer,
    events: AdviceIndex,
    deploy: UpcomingDeploy,
    current: float,
    config: AdviceConfig,
) -> list[Advice]:
    """The material actions for ``deploy`` (scored ``current``), best first; one per kind (its best)."""
    best: dict[str, Advice] = {}
    for cand, p in evaluate(index, scorer, events, deploy, current, config):
        if not config.material(current, p):
            continue
        advice = Advice(cand.action, cand.detail, p, p - current, cand.ship_at, cand.parts if cand.parts > 1 else None,
                        cand.author if config.name_authors else None)  # fmt: skip
        if cand.action not in best or advice.probability < best[cand.action].probability:
            best[cand.action] = advice
    return sorted(best.values(), key=lambda a: a.probability)


def advise_many(
    index: FeatureIndex,
    scorer: FastScorer,
    events: AdviceIndex,
    deploys: Sequence[UpcomingDeploy],
    probabilities: Sequence[float],
    config: AdviceConfig,
) -> list[list[Advice]]:
    """``advise`` for each deploy of a batch (its score given), one deploy at a time through the same path."""
    return [advise(index, scorer, events, d, float(p), config) for d, p in zip(deploys, probabilities, strict=True)]
