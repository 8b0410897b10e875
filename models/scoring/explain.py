"""Score one deploy or a frame of them, and say why: the top factors and the flags of a score."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from features.history.schema import EXTRA_PREFIX, History
from features.labels.dora import TEAM_COLUMNS, fill_teams, team_lookup
from features.pointintime.compute import MISSING_CATEGORY, features_frame
from models.scoring.compiled import FastScorer, _model_extras
from models.scoring.context import DEFAULT_MAX_DATA_AGE_HOURS, FeatureIndex, ScoringContext, entity_features
from models.scoring.upcoming import UpcomingDeploy
from models.training.estimators import BANDS

#: How many factors a score explains by default.
TOP_FACTORS = 6


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


def new_author(author_prior_deploys: Any, author_missing: Any) -> np.ndarray:
    """The one ``new_author`` rule: a named author with no deploy before this one.

    A missing author is not "new" (it is unknown; ``author_missing`` says so), for one request and a batch alike.
    """
    return (np.asarray(author_prior_deploys) == 0) & (np.asarray(author_missing) == 0)


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
        "new_author": bool(new_author(numeric["author_prior_deploys"], numeric["author_missing"])),
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


def with_teams(frame: pd.DataFrame, history: History) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Missing squad/tribe filled by ``fill_teams`` (as for one request); also which were filled."""
    teams = team_lookup(history.deploys)
    out = frame.copy()

    def column(name: str) -> list[str | None]:
        values = out[name].astype("string") if name in out else pd.Series(pd.NA, index=out.index, dtype="string")
        return [None if pd.isna(v) else str(v) for v in values]

    rows = [
        fill_teams(service, squad, tribe, teams)
        for service, squad, tribe in zip(column("service"), column("squad"), column("tribe"), strict=True)
    ]
    filled = pd.DataFrame({t: [t in row[2] for row in rows] for t in TEAM_COLUMNS}, index=frame.index, dtype=bool)
    for i, team in enumerate(TEAM_COLUMNS):
        out[team] = pd.Series([row[i] for row in rows], index=out.index, dtype="string")
    return out, filled


def batch_features(frame: pd.DataFrame, context: ScoringContext) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(feature frame, filled teams) of a frame of deploys, by the training build on the context's prepared history."""
    entities, filled = with_teams(frame, context.history)
    for name in context.bundle.scorer.numeric:
        if name.startswith(EXTRA_PREFIX) and name not in entities and not name.endswith("_missing"):
            entities[name] = pd.array([None] * len(entities), dtype="Float64")
    return features_frame(context.index.prepared, entities), filled


def score_frame(
    frame: pd.DataFrame,
    context: ScoringContext,
    k: int = TOP_FACTORS,
    max_data_age_hours: float = DEFAULT_MAX_DATA_AGE_HOURS,
    with_features: bool = False,
) -> pd.DataFrame:
    """The batch path: probabilities from ``RiskModel.predict_proba`` on the feature frame, bands, factors.

    Returns one row per input deploy: deploy_id, service, created_at, probability, band, top_factors
    (a list of {feature, value, contribution, direction}), new_service, new_author, filled_teams,
    data_age_hours (from the store's newest event to the deploy's time) and stale_history (above
    ``max_data_age_hours``, or an empty store: the features miss recent history); and, with
    ``with_features``, ``features`` (the model's feature row as a dict, for the prediction log).
    """
    features, filled = batch_features(frame, context)
    age = _data_age_hours(features["created_at"], context)
    bundle = context.bundle
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
    out = pd.DataFrame(
        {
            "deploy_id": features["deploy_id"].to_numpy(dtype=object),
            "service": frame["service"].astype("string").to_numpy(dtype=object) if "service" in frame else None,
            "created_at": features["created_at"].to_numpy(),
            "probability": p,
            "band": scorer.bands(p),
            "top_factors": factors,
            "new_service": features["service_prior_deploys"].to_numpy() == 0,
            "new_author": new_author(features["author_prior_deploys"], features["author_missing"]),
            "filled_teams": [[t for t in ("squad", "tribe") if filled.at[i, t]] for i in filled.index],
            "data_age_hours": age,
            "stale_history": ~(age <= max_data_age_hours),
        },
        index=frame.index,
    )
    if with_features:
        rows = [
            dict(zip(scorer.features, [*num[i].tolist(), *cat_values[i].tolist()], strict=True))
            for i in range(len(features))
        ]
        out["features"] = pd.Series(rows, index=frame.index, dtype=object)
    return out


def _data_age_hours(times: pd.Series, context: ScoringContext) -> np.ndarray:
    if context.data_end is None:
        return np.full(len(times), np.nan)
    return ((times - context.data_end) / pd.Timedelta(hours=1)).to_numpy(dtype=np.float64)


def band_counts(bands: Sequence[str]) -> dict[str, int]:
    """How many scores fell in each band (every band present, in order)."""
    values = list(bands)
    return {b: values.count(b) for b in BANDS}
