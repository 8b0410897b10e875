"""Score one deploy or a frame of them, and say why: the top factors and the flags of a score."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from features.history.schema import EXTRA_PREFIX, History
from features.labels.dora import service_teams
from features.pointintime.compute import (
    MISSING_CATEGORY,
    build_features,
)
from models.scoring.compiled import FastScorer, _model_extras
from models.scoring.context import FeatureIndex, ModelBundle, entity_features
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
    frame: pd.DataFrame,
    history: History,
    deploy_labels: pd.DataFrame,
    bundle: ModelBundle,
    k: int = TOP_FACTORS,
    with_features: bool = False,
) -> pd.DataFrame:
    """The batch path: probabilities from ``RiskModel.predict_proba`` on the feature frame, bands, factors.

    Returns one row per input deploy: deploy_id, service, created_at, probability, band, top_factors
    (a list of {feature, value, contribution, direction}), new_service, new_author; and, with
    ``with_features``, ``features`` (the model's feature row as a dict, for the prediction log).
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
    out = pd.DataFrame(
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
    if with_features:
        rows = [
            dict(zip(scorer.features, [*num[i].tolist(), *cat_values[i].tolist()], strict=True))
            for i in range(len(features))
        ]
        out["features"] = pd.Series(rows, index=frame.index, dtype=object)
    return out


def band_counts(bands: Sequence[str]) -> dict[str, int]:
    """How many scores fell in each band (every band present, in order)."""
    values = list(bands)
    return {b: values.count(b) for b in BANDS}
