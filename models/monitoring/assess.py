"""One monitoring assessment: outcomes, rolling metrics, per-group calibration, drift and the alarm.

``reference_of`` describes the champion's training window (its features and scores, the feature
importance the alarm's "top features" come from); ``assess`` is a pure function of the logged
predictions, the labels known at ``as_of`` and that reference, used by the monitor flow and by
benchmarks/monitoring.py alike.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from models.monitoring.alarms import AlarmConfig, AlarmReport, evaluate_alarm
from models.monitoring.drift import feature_drift, newcomer_share, psi_numeric
from models.monitoring.onset import OnsetConfig, degradation_onset
from models.monitoring.outcomes import (
    bootstrap_values,
    join_outcomes,
    matured,
    outcome_counts,
    per_group,
    rolling_metrics,
)
from models.monitoring.predlog import feature_rows
from models.scoring.context import ScoringContext
from models.scoring.explain import batch_features
from models.training.evaluation import rank_auc


class MonitorInputError(ValueError):
    """Nothing to assess yet (no predictions, no matured labels): said in one line."""


@dataclass(frozen=True)
class Reference:
    """The champion's training window: feature rows, its scores on them, importance, test AUC."""

    features: pd.DataFrame
    scores: np.ndarray
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    importance: Mapping[str, float]
    champion_auc: float
    services: frozenset[str] = frozenset()
    authors: frozenset[str] = frozenset()


def reference_of(
    context: ScoringContext,
    start: pd.Timestamp | None,
    end: pd.Timestamp | None,
    limit: int = 20_000,
) -> Reference:
    """Features and scores of the production deploys of ``[start, end]`` (the latest ``limit``), as in training."""
    deploys, bundle = context.history.deploys, context.bundle
    t = pd.to_datetime(deploys["created_at"], utc=True)
    keep = (deploys["environment"].astype("string") == "production").fillna(False).to_numpy(dtype=bool)
    if start is not None:
        keep &= (t >= start).to_numpy()
    if end is not None:
        keep &= (t <= end).to_numpy()
    entities = deploys[keep].sort_values("created_at", kind="stable").tail(limit).reset_index(drop=True)
    features, _ = batch_features(entities, context)
    scorer = bundle.scorer
    scores = bundle.model.predict_proba(features)[:, 1] if len(features) else np.zeros(0)
    importance: dict[str, float] = {}
    if len(features):
        num = features[list(scorer.numeric)].to_numpy(dtype=np.float64)
        codes = scorer.encode(features[list(scorer.categorical)].astype(object).to_numpy().tolist())
        contrib = np.abs(scorer.contributions(num, codes)).mean(axis=0)
        importance = {str(f): float(v) for f, v in zip(scorer.features, contrib, strict=True)}
    return Reference(
        features=features,
        scores=np.asarray(scores, dtype=np.float64),
        numeric=tuple(scorer.numeric),
        categorical=tuple(scorer.categorical),
        importance=importance,
        champion_auc=float(bundle.info.metrics.get("roc_auc", math.nan)),
        services=frozenset(entities["service"].dropna().astype(str)),
        authors=frozenset(entities["author"].dropna().astype(str)),
    )


@dataclass(frozen=True)
class Assessment:
    """What one monitor run found."""

    as_of: pd.Timestamp
    counts: dict[str, int]
    joined: pd.DataFrame
    rolling: pd.DataFrame
    groups: dict[str, pd.DataFrame]
    feature_psi: pd.DataFrame
    score_psi: float
    newcomers: dict[str, float]
    latest: dict[str, float]
    alarm: AlarmReport
    extra: dict[str, Any] = field(default_factory=dict)
    #: When the ranking got worse (``onset.degradation_onset``), placed only when the alarm fires.
    onset: pd.Timestamp | None = None

    def summary(self) -> dict[str, Any]:
        """A JSON-friendly digest (what the CLI prints with --json and the MLflow run keeps)."""
        top = self.feature_psi.head(10)
        return {
            "as_of": self.as_of.isoformat(),
            "predictions": self.counts,
            "latest_window": {k: (None if not math.isfinite(v) else v) for k, v in self.latest.items()},
            "score_psi": None if not math.isfinite(self.score_psi) else self.score_psi,
            "feature_psi": dict(zip(top["feature"].astype(str), top["psi"].astype(float).tolist(), strict=True)),
            "newcomers": self.newcomers,
            "alarm": self.alarm.as_dict(),
            "degradation_onset": None if self.onset is None else self.onset.isoformat(),
            **self.extra,
        }


def assess(
    predictions: pd.DataFrame,
    deploy_labels: pd.DataFrame,
    deploys: pd.DataFrame,
    reference: Reference,
    config: AlarmConfig,
    as_of: pd.Timestamp,
) -> Assessment:
    """Join, measure and judge the predictions logged up to ``as_of`` (labels as known at ``as_of``).

    Raises ``MonitorInputError`` when there are no predictions or no matured labels yet.
    """
    logged = predictions[pd.to_datetime(predictions["logged_at"], utc=True) <= as_of]
    if logged.empty:
        raise MonitorInputError("no predictions logged yet: nothing to monitor (score deploys first)")
    joined = join_outcomes(logged, deploy_labels, deploys)
    counts = outcome_counts(joined)
    done = matured(joined)
    if done.empty:
        raise MonitorInputError(
            f"no matured labels yet: {len(logged)} predictions logged, {counts['pending']} pending, "
            f"{counts['unmatched']} not (yet) in the history; labels mature after the attribution window"
        )
    window = config.window
    # windows end at the latest matured prediction: labels lag, so "the last 28 days" means of judged deploys
    end = min(as_of, pd.to_datetime(done["planned_at"], utc=True).max())
    rolling = rolling_metrics(done, window, end=end)
    latest = {str(k): float(v) for k, v in rolling.iloc[-1].drop("window_end").items()}
    planned = pd.to_datetime(logged["planned_at"], utc=True)
    recent_end = min(as_of, planned.max())
    recent = logged[((planned > recent_end - pd.Timedelta(days=window.days)) & (planned <= recent_end)).to_numpy()]
    current = feature_rows(recent)
    fpsi = feature_drift(reference.features, current, reference.numeric, reference.categorical, reference.importance)
    score_psi = psi_numeric(reference.scores, recent["probability"].to_numpy(dtype=np.float64))
    newcomers = {
        "new_services": newcomer_share(list(reference.services), recent["service"].tolist()),
        "new_authors": newcomer_share(list(reference.authors), recent["author"].tolist()),
    }
    if config.baseline_windows is None:
        baseline, baseline_se, source = baseline_auc(done, reference.champion_auc, config), 0.0, "exact"
    else:
        baseline, baseline_se, source = live_baseline(done, reference.champion_auc, config, end)
    alarm = evaluate_alarm(latest, baseline, fpsi, score_psi, config, baseline_se)
    extra = {
        "champion_test_auc": reference.champion_auc,
        "baseline_auc": baseline,
        "baseline_se": None if not math.isfinite(baseline_se) else baseline_se,
        "baseline_source": source,
    }
    onset = None
    if alarm.firing:  # a retrain learns from the onset on (pipelines/flows/monitor.py)
        y, p = done["label"].to_numpy(dtype=np.int64), done["probability"].to_numpy(dtype=np.float64)
        sides = OnsetConfig(min_side=config.min_labels, min_side_failures=config.min_failures)  # a window's worth
        onset = degradation_onset(done["planned_at"], y, p, sides)
    groups = per_group(done)
    return Assessment(as_of, counts, joined, rolling, groups, fpsi, score_psi, newcomers, latest, alarm, extra, onset)


def baseline_auc(done: pd.DataFrame, champion_auc: float, config: AlarmConfig) -> float:
    """The rule before ``baseline_windows`` (``AlarmConfig.baseline_windows=None``): the champion's test AUC,
    or its AUC over its first live window if lower, treated as exact.

    A test AUC measured on a few weeks is itself noisy (+-0.03 on the simulations) and often
    optimistic; judged against it alone, an undrifted run false-fired. The first ``window.days`` of
    matured live predictions (when they hold ``min_labels``) are out of sample and of the same kind
    as the windows judged later.
    """
    planned = pd.to_datetime(done["planned_at"], utc=True)
    first = done[(planned <= planned.min() + pd.Timedelta(days=config.window.days)).to_numpy()]
    y = first["label"].to_numpy(dtype=np.int64)
    if len(y) < config.min_labels or y.sum() < config.min_failures:
        return champion_auc
    live = rank_auc(y, first["probability"].to_numpy(dtype=np.float64))
    return min(champion_auc, live) if math.isfinite(champion_auc) else live


def live_baseline(
    done: pd.DataFrame, champion_auc: float, config: AlarmConfig, window_end: pd.Timestamp
) -> tuple[float, float, str]:
    """The baseline AUC, its standard error and where it comes from (``AlarmConfig.baseline_windows``).

    The model's matured live predictions planned in its first ``baseline_windows * window.days`` and
    before the judged window (ending ``window_end``) starts: out of sample, of the same kind as the
    windows judged later, and fixed once complete, so a drop after it is measured against the model
    as it first served. Its SE is the bootstrap's over those deploys. With fewer than ``min_labels``
    labels or ``min_failures`` failures there: the test AUC, its SE unknown (NaN: the alarm takes the
    window's).
    """
    planned = pd.to_datetime(done["planned_at"], utc=True)
    days = config.baseline_days() or config.window.days
    window_start = pd.Timestamp(window_end) - pd.Timedelta(days=config.window.days)
    stop = min(planned.min() + pd.Timedelta(days=days), window_start)
    base = done[(planned <= stop).to_numpy()]
    y = base["label"].to_numpy(dtype=np.int64)
    if len(y) < config.min_labels or y.sum() < config.min_failures:
        return champion_auc, math.nan, "test AUC (too few live labels before the window)"
    p = base["probability"].to_numpy(dtype=np.float64)
    boots = bootstrap_values(y, p, rank_auc, config.window.n_boot, config.window.seed + 1_000)
    se = float(np.std(boots, ddof=1)) if len(boots) > 1 else math.nan
    return rank_auc(y, p), se, f"live: {len(y)} deploys up to {stop:%Y-%m-%d}"


def prometheus_text(a: Assessment, model_name: str, model_version: str, now: float) -> str:
    """The assessment as Prometheus text (node_exporter's textfile collector reads it; rules in docs/monitoring.md)."""
    labels = f'model="{model_name}",version="{model_version}"'
    values = {
        "incident_risk_monitor_alarm": float(a.alarm.firing),
        "incident_risk_monitor_last_run_timestamp_seconds": now,
        "incident_risk_monitor_matured_predictions": float(a.counts.get("matured", 0)),
        "incident_risk_monitor_window_roc_auc": a.latest.get("roc_auc", math.nan),
        "incident_risk_monitor_window_ece": a.latest.get("ece", math.nan),
        "incident_risk_monitor_score_psi": a.score_psi,
    }
    lines = []
    for name, value in values.items():
        if math.isfinite(value):
            lines += [f"# TYPE {name} gauge", f"{name}{{{labels}}} {value:.6g}"]
    return "\n".join(lines) + "\n"
