"""Incident suspects with the champion's prior risk: which recent change most likely caused this incident.

The ranking itself is ``features.labels.suspects`` (pure); this module supplies each candidate
deploy's prior, the champion's score of that deploy computed point-in-time (``score_deploy`` on
the feature index: only history strictly before the deploy), and shapes the answer. Scores of
past deploys never change for one snapshot, so they are cached per context.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.history.schema import History
from features.labels.attribution import Attribution, AttributionConfig, attribute
from features.labels.dependencies import (
    Dependencies,
    dependencies_from_catalog,
    depends_on,
    parse_dependencies_yaml,
)
from features.labels.suspects import (
    NO_RECENT_CHANGE,
    ChangeIndex,
    Ranking,
    SuspectConfig,
    SuspectModel,
    change_times,
    learn_suspect_model,
    rank_suspects,
    rollbacks_of,
)
from models.scoring.compiled import FastScorer
from models.scoring.context import FeatureIndex
from models.scoring.explain import ScoreResult, score_deploy
from models.scoring.upcoming import deploys_from_frame, now_utc

#: A question may name a time at most this far ahead of the clock (clock skew), not more.


def load_dependencies(path: Path) -> dict[str, tuple[str, ...]]:
    """Read a dependency map: a Backstage catalog (read as the ``backstage_catalog`` source reads it) or a
    dependencies.yaml. Errors are ``ValueError`` naming the file, the record and the field."""
    from features.sources.backstage import BackstageOptions, parse_catalog
    from features.sources.base import SourceError

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the dependency map ({exc.strerror})") from None
    if "backstage.io/" not in text:
        return parse_dependencies_yaml(text, str(path))
    try:
        parsed = parse_catalog(path, str(path), BackstageOptions())
    except SourceError as exc:
        raise ValueError(str(exc)) from None
    if len(parsed.rejects):
        first = parsed.rejects.iloc[0]
        raise ValueError(f"{first['reason']} (field {first['field']!r}, record {first['record']})")
    return dependencies_from_catalog(parsed.frame)


FUTURE_TOLERANCE = pd.Timedelta(minutes=5)


class SuspectsError(ValueError):
    """A bad question: ``field`` names the input at fault, ``status`` the HTTP status (404 unknown, 422 invalid)."""

    def __init__(self, field: str, message: str, status: int = 422) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.status = status


@dataclass(frozen=True)
class SuspectContext:
    """What a suspects question needs, built once per store/model snapshot."""

    history: History
    index: FeatureIndex
    scorer: FastScorer
    model: SuspectModel
    changes: ChangeIndex  # production changes and their rollbacks
    deploys: pd.DataFrame  # the deploys table indexed by deploy_id
    incidents: pd.DataFrame  # the incidents table indexed by incident_id
    services: frozenset[str]
    dependencies: Dependencies | None = None
    info: Mapping[str, Any] = field(default_factory=dict)
    _scores: dict[str, ScoreResult] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def prior(self, deploy_id: str) -> ScoreResult:
        """The champion's point-in-time score of a past deploy (cached)."""
        hit = self._scores.get(deploy_id)
        if hit is not None:
            return hit
        row = self.deploys.loc[[deploy_id]]
        result = score_deploy(self.index, self.scorer, deploys_from_frame(row)[0])
        with self._lock:
            self._scores[deploy_id] = result
        return result


def build_suspect_context(
    history: History,
    index: FeatureIndex,
    scorer: FastScorer,
    attribution: Attribution | AttributionConfig | None = None,
    config: SuspectConfig | None = None,
    dependencies: Dependencies | None = None,
    info: Mapping[str, Any] | None = None,
    model: SuspectModel | None = None,
) -> SuspectContext:
    """Learn the suspect model from ``history`` (its attribution: given, or made under ``attribution``'s config,
    by default the project's) and index its changes. A ``model`` learned elsewhere (e.g. from the past only) is used
    as given."""
    att = (
        attribution if isinstance(attribution, Attribution) else attribute(history, attribution or AttributionConfig())
    )
    model = model if model is not None else learn_suspect_model(history, att, config)
    inc = history.incidents
    services = pd.concat(
        [history.deploys["service"], history.toggle_events["service"], inc["service"]], ignore_index=True
    ).dropna()
    return SuspectContext(
        history=history,
        index=index,
        scorer=scorer,
        model=model,
        changes=ChangeIndex.build(
            change_times(history, deploy_time=model.config.deploy_time), rollbacks_of(att, history)
        ),
        deploys=history.deploys.set_index(history.deploys["deploy_id"].astype("string"), drop=False),
        incidents=inc.set_index(inc["incident_id"].astype("string"), drop=False),
        services=frozenset(str(s) for s in services.unique()),
        dependencies=dependencies,
        info=dict(info or {}),
    )


def _utc(ts: Any, field_name: str) -> pd.Timestamp:
    try:
        t = pd.Timestamp(ts)
    except (ValueError, TypeError) as exc:
        raise SuspectsError(field_name, f"not a time ({exc})") from None
    if t is pd.NaT or t.tzinfo is None:
        raise SuspectsError(field_name, "needs a UTC offset (e.g. 2026-02-04T10:00:00Z)")
    return t.tz_convert("UTC")


def suspects(
    ctx: SuspectContext,
    service: str,
    at: Any = None,
    environment: str = "production",
    top: int | None = None,
    as_of: pd.Timestamp | None = None,
    incident: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ranked suspects of an incident of ``service`` opening at ``at`` (default now), as a JSON-able dict."""
    now = now_utc()
    when = now if at is None else _utc(at, "at")
    if when > now + FUTURE_TOLERANCE:
        raise SuspectsError("at", f"{when.isoformat()} is in the future")
    if service not in ctx.services:
        raise SuspectsError("service", f"unknown service {service!r} (no deploy, flip or incident names it)", 404)
    if environment != "production":
        raise SuspectsError("environment", f"only production changes are ranked, got {environment!r}")
    k = top or ctx.model.config.top
    if k < 1:
        raise SuspectsError("top", "must be at least 1")
    asked = max(when, as_of if as_of is not None else now)
    at_us, asked_us = _us(when), _us(asked)
    lookback = int(ctx.model.config.lookback / pd.Timedelta(microseconds=1))
    positions, own = ctx.changes.window(service, at_us, lookback, ctx.dependencies)
    scores: dict[int, ScoreResult] = {}
    prior = np.full(len(positions), np.nan)
    for i, pos in enumerate(positions):
        if ctx.changes.kind[pos] == "deploy":
            scores[int(pos)] = ctx.prior(str(ctx.changes.change_id[pos]))
            prior[i] = scores[int(pos)].probability
    ranking = rank_suspects(ctx.changes, positions, own, prior, ctx.model, at_us, asked_us)
    listed = [
        _suspect(ctx.changes, ranking, i, scores.get(int(ranking.positions[i]))) for i in range(min(k, len(positions)))
    ]
    return {
        "incident": dict(incident or {"incident_id": None, "service": service}) | {"at": when.isoformat()},
        "environment": environment,
        "as_of": asked.isoformat(),
        "lookback_hours": ctx.model.config.lookback / pd.Timedelta(hours=1),
        "candidates": len(positions),
        "background_share": float(ranking.background),
        "top_answer": NO_RECENT_CHANGE
        if ranking.top_is_background
        else str(ctx.changes.change_id[ranking.positions[0]]),
        "suspects": listed,
        "dependencies": list(depends_on(ctx.dependencies, service)),
        "model": dict(ctx.info),
    }


def _us(ts: pd.Timestamp) -> int:
    return int(ts.value // 1000)  # Timestamp.value is nanoseconds whatever the unit


def _iso(us: int) -> str:
    return pd.Timestamp(us, unit="us", tz="UTC").isoformat()


def _opt(value: Any) -> Any:
    return (
        None
        if value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and math.isnan(value))
        else value
    )


def _suspect(changes: ChangeIndex, r: Ranking, i: int, score: ScoreResult | None) -> dict[str, Any]:
    pos = int(r.positions[i])
    rolled = bool(r.rolled_back[i])
    return {
        "change_kind": changes.kind[pos],
        "change_id": changes.change_id[pos],
        "service": changes.service[pos],
        "scope": "own" if r.own[i] else "dependency",
        "at": _iso(int(changes.time[pos])),
        "share": float(r.share[i]),
        "why": {
            "lag_minutes": round(float(r.lag_hours[i]) * 60, 1),
            "lag_likelihood_per_hour": float(r.lag_likelihood[i]),
            "prior_risk": float(r.prior[i]),
            "prior_from": "champion" if score is not None else "flip failure share",
            "band": score.band if score is not None else None,
            "risk_factors": [f.as_dict() for f in score.factors] if score is not None else [],
            "action": changes.action[pos],
            "rolled_back": rolled,
            "rolled_back_by": changes.rolled_back_by[pos] if rolled else None,
            "rolled_back_at": _iso(int(changes.rolled_back_at[pos])) if rolled else None,
            "rollback_weight": float(r.rollback_weight[i]),
            "scope_weight": float(r.scope_weight[i]),
        },
        "who": changes.who[pos],
        "url": changes.url[pos],
    }


def incident_suspects(
    ctx: SuspectContext, incident_id: str, top: int | None = None, as_of: pd.Timestamp | None = None
) -> dict[str, Any]:
    """The suspects of an incident already in the store, at its own time (candidates strictly before it)."""
    if incident_id not in ctx.incidents.index:
        raise SuspectsError("incident_id", f"unknown incident {incident_id!r}", 404)
    row = ctx.incidents.loc[incident_id]
    if isinstance(row, pd.DataFrame):
        row = row.iloc[0]
    service = _opt(row["service"])
    if service is None:
        raise SuspectsError("incident_id", f"incident {incident_id!r} names no service")
    env = _opt(row["environment"]) or "production"
    info = {"incident_id": incident_id, "service": str(service), "title": _opt(row["title"]), "url": _opt(row["url"])}
    return suspects(ctx, str(service), row["created_at"], str(env), top, as_of, info)
