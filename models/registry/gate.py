"""The model registry: log a risk model safely, register it as challenger, and gate the champion.

Models are serialised with skops and loaded with a trust list that lives in this code, not in the
model file (MLflow reads the list from the artifact itself, so a crafted model could trust
anything). A version gets an alias only after it is READY and loads back; a champion alias that
points at a missing or unloadable version is reported and treated as "no champion".
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from models.monitoring.onset import concordance
from models.registry.artifacts import CHALLENGER, CHAMPION, LOG_TAG, MODEL_NAME, STACK_TAG, RegistryError, load_model
from models.training.config import GateConfig
from models.training.estimators import RiskModel
from models.training.evaluation import LOWER_IS_BETTER, evaluate

#: The test frame's time column (``models.training.train.TIME``).
TIME = "created_at"


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str


def quality_failures(metrics: dict[str, float], failure_rate: float, gate: GateConfig) -> list[str]:
    """Why ``metrics`` miss the minimum quality, if they do (empty list: they meet it)."""
    problems = []
    auc = metrics.get("roc_auc", math.nan)
    if not auc >= gate.min_roc_auc:
        problems.append(f"roc_auc {auc:.4f} < {gate.min_roc_auc}")
    lift = metrics.get("pr_auc", math.nan) / failure_rate if failure_rate > 0 else math.nan
    if not lift >= gate.min_pr_auc_lift:
        problems.append(f"pr_auc lift {lift:.2f} < {gate.min_pr_auc_lift}")
    ece = metrics.get("ece", math.nan)
    if not ece <= gate.max_ece:
        problems.append(f"ece {ece:.4f} > {gate.max_ece}")
    return problems


def decide(
    challenger: dict[str, float],
    champion: dict[str, float] | None,
    failure_rate: float,
    gate: GateConfig,
    champion_note: str = "",
    challenger_compared: dict[str, float] | None = None,
    no_common_period: str = "",
    paired: tuple[float, float, float] | None = None,
) -> GateDecision:
    """Promote when the challenger meets minimum quality and beats the champion by the margin.

    ``challenger`` (the whole test period) decides the minimum quality. ``champion`` holds the
    champion's metrics on the deploys after both training ends, and ``challenger_compared`` the
    challenger's on the same deploys (default: ``challenger``); None when there is no usable
    champion (``champion_note`` says why). ``no_common_period`` says why the two cannot be compared
    out of sample: then nothing is promoted (re-scoring the champion on deploys it was trained on
    would favour it). ``paired``: (difference, standard error, z) of the challenger's ROC-AUC over the
    champion's on those deploys (``paired_auc_test``), which the rule "paired" decides on.
    """
    problems = quality_failures(challenger, failure_rate, gate)
    if problems:
        return GateDecision(False, "below minimum quality: " + "; ".join(problems))
    if no_common_period:
        return GateDecision(False, f"{no_common_period}; promotion needs a manual decision (incident-risk promote)")
    if champion is None:
        if champion_note and not gate.promote_when_champion_unscorable:
            return GateDecision(
                False, f"champion cannot be compared ({champion_note}); promotion needs a manual decision"
            )
        return GateDecision(True, f"meets minimum quality; {champion_note or 'no champion yet'}")
    metric = gate.metric
    compared = challenger if challenger_compared is None else challenger_compared
    new, old = compared.get(metric, math.nan), champion.get(metric, math.nan)
    gain = (old - new) if metric in LOWER_IS_BETTER else (new - old)
    if math.isnan(old):
        return GateDecision(True, f"champion's {metric} is undefined on this test period")
    if gate.rule == "paired":
        diff, se, z = paired if paired is not None else (math.nan, math.nan, math.nan)
        said = f"{metric} {new:.4f} vs champion {old:.4f}: difference {diff:+.4f} (paired se {se:.4f}, z {z:.2f})"
        # strictly above: a tie (the same model retrained on the same rows, z = 0) keeps the champion
        need = NormalDist().inv_cdf(1 - gate.alpha)  # 0 at alpha 0.5: any gain on the same deploys
        if need == 0:
            yes, no = "better on the same deploys (z > 0)", "not better on the same deploys (z <= 0)"
        else:
            yes = f"better (z > {need:.2f}, one-sided {gate.alpha})"
            no = f"not better beyond noise (z <= {need:.2f}, one-sided {gate.alpha})"
        return GateDecision(True, f"{said}: {yes}") if z > need else GateDecision(False, f"{said}: {no}")
    if gain >= gate.margin:
        return GateDecision(True, f"{metric} {new:.4f} beats champion {old:.4f} by {gain:.4f} >= {gate.margin}")
    return GateDecision(False, f"{metric} {new:.4f} vs champion {old:.4f}: gain {gain:.4f} < margin {gate.margin}")


def paired_auc_test(y: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """AUC(a) - AUC(b) on the same deploys, its standard error and z (DeLong, DeLong & Clarke-Pearson 1988).

    Each deploy's placement (``onset.concordance``: its share of the AUC) averages to the AUC per
    class; the variance of the difference is that of the paired placement differences over the
    failures divided by their number, plus the same over the non-failures. Paired, so what both
    scores get right or wrong on the same deploys cancels: far less noise than two separate AUCs.
    NaN when an outcome has fewer than two deploys; z is +-inf with zero variance and a difference.
    """
    y = np.asarray(y, dtype=bool)
    m, n = int(y.sum()), int((~y).sum())
    if m < 2 or n < 2:
        return math.nan, math.nan, math.nan
    d = concordance(y, a) - concordance(y, b)
    diff = float(d[y].mean())
    se = math.sqrt(float(d[y].var(ddof=1)) / m + float(d[~y].var(ddof=1)) / n)
    if se == 0:
        return diff, 0.0, (0.0 if diff == 0 else math.copysign(math.inf, diff))
    return diff, se, diff / se


@dataclass(frozen=True)
class ChampionInfo:
    version: str | None
    model: RiskModel | None
    note: str


@dataclass(frozen=True)
class ComparisonPeriod:
    """The test deploys champion and challenger were compared on: those after both training ends."""

    after: str | None  # the later training end (None: no champion to compare with)
    start: str | None
    end: str | None
    n: int
    n_failed: int

    def describe(self) -> str:
        if self.after is None:
            return "no champion to compare with"
        if not self.n:
            return f"no test deploy after {self.after}"
        return f"{self.n} test deploys ({self.n_failed} failed) from {self.start} to {self.end}, after {self.after}"


@dataclass(frozen=True)
class GateOutcome:
    version: str
    decision: GateDecision
    champion_version: str | None
    champion_metrics: dict[str, float] | None
    champion_note: str
    comparison: ComparisonPeriod | None = None
    challenger_compared: dict[str, float] | None = None  # the challenger on the comparison period

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["decision"] = asdict(self.decision)
        return out


def training_end(model: RiskModel) -> pd.Timestamp | None:
    """When a registered model's training data ends (its serving metadata), or None when it does not say."""
    period = (model.metadata or {}).get("training_period") or {}
    end = period.get("end") if isinstance(period, dict) else None
    if not end:
        return None
    stamp = pd.Timestamp(end)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def comparison_rows(
    times: pd.Series, y: np.ndarray, train_ends: list[pd.Timestamp], gate: GateConfig
) -> tuple[np.ndarray, ComparisonPeriod, str]:
    """Positions of the test deploys after every training end, the period, and why they cannot serve
    for a comparison ("" when they can: at least ``gate.min_comparison_rows`` and both outcomes)."""
    after = max(train_ends)
    stamps = pd.to_datetime(times, utc=True)
    keep = np.flatnonzero((stamps > after).to_numpy(dtype=bool))
    kept = stamps.iloc[keep]
    period = ComparisonPeriod(
        after=str(after),
        start=str(kept.min()) if len(keep) else None,
        end=str(kept.max()) if len(keep) else None,
        n=int(len(keep)),
        n_failed=int(y[keep].sum()) if len(keep) else 0,
    )
    why = ""
    if len(keep) < gate.min_comparison_rows or len(np.unique(y[keep])) < 2:
        why = (
            f"the champion was trained on data until {after}: only {period.describe()} to compare on "
            f"(need >= {gate.min_comparison_rows} with both outcomes); retrain with a later --test-start"
        )
    return keep, period, why


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def current_champion(client: MlflowClient, name: str = MODEL_NAME) -> ChampionInfo:
    """The champion version and its model; a dangling or unloadable alias yields a note, not a crash."""
    try:
        mv = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return ChampionInfo(None, None, "")
    try:
        return ChampionInfo(str(mv.version), load_model(f"models:/{name}/{mv.version}"), "")
    except Exception as exc:  # a missing artifact or a bad file must not block training
        return ChampionInfo(str(mv.version), None, f"champion v{mv.version} cannot be loaded ({type(exc).__name__})")


def rescore(
    model: RiskModel, frame: pd.DataFrame, y: np.ndarray, effort: np.ndarray | None
) -> tuple[dict[str, float] | None, str, np.ndarray | None]:
    """A model's metrics and scores on ``frame``, or None and the reason when it needs columns the frame lacks."""
    clf = model.classifier_
    missing = [c for c in (*clf.numeric_, *clf.categorical_) if c not in frame.columns]
    if missing:
        return None, f"champion needs columns missing from this feature set: {missing[:5]}", None
    scores = model.predict_proba(frame)[:, 1]
    return evaluate(y, scores, effort), "", scores


def _ensure_registered(client: MlflowClient, name: str) -> None:
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="Probability that a deploy causes an incident.")


def _wait_ready(client: MlflowClient, name: str, version: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        mv = client.get_model_version(name, version)
        if mv.status == "READY":
            return
        if mv.status == "FAILED_REGISTRATION" or time.monotonic() > deadline:
            raise RegistryError(f"{name} v{version} did not become READY (status {mv.status})")
        time.sleep(0.2)


def register_version(client: MlflowClient, model_uri: str, run_id: str, name: str = MODEL_NAME) -> str:
    """Create a READY, loadable version of ``model_uri``; a version that fails either check is deleted."""
    import mlflow

    _ensure_registered(client, name)
    mv = mlflow.register_model(model_uri, name, tags={"run_id": run_id})
    ver = str(mv.version)
    try:
        _wait_ready(client, name, ver)
        load_model(f"models:/{name}/{ver}")
    except Exception:
        client.delete_model_version(name, ver)
        raise
    return ver


def _history(client: MlflowClient, name: str) -> tuple[list[str], list[dict[str, Any]]]:
    tags = client.get_registered_model(name).tags
    stack = [v for v in tags.get(STACK_TAG, "").split(",") if v]
    log = json.loads(tags.get(LOG_TAG, "[]"))
    return stack, log


def _record_champion(
    client: MlflowClient, name: str, ver: str, by: str, reason: str, stack: list[str], log: list[dict[str, Any]]
) -> None:
    """Point ``champion`` at ``ver`` and record who, when and why on the version and the model."""
    client.set_registered_model_alias(name, CHAMPION, ver)
    at = _now()
    client.set_model_version_tag(name, ver, "champion_since", at)
    client.set_model_version_tag(name, ver, "promoted_by", by)
    client.set_model_version_tag(name, ver, "promotion_reason", reason[:4000])
    log = [*log, {"version": ver, "by": by, "at": at, "reason": reason[:300]}][-20:]
    client.set_registered_model_tag(name, STACK_TAG, ",".join(stack[-200:]))
    client.set_registered_model_tag(name, LOG_TAG, json.dumps(log))


@dataclass(frozen=True)
class Comparison:
    """The gate's verdict on a challenger against a champion, before any alias moves."""

    decision: GateDecision
    champion_metrics: dict[str, float] | None
    note: str
    period: ComparisonPeriod | None = None
    challenger_compared: dict[str, float] | None = None


def judge(
    champion: ChampionInfo,
    challenger_metrics: dict[str, float],
    test_frame: pd.DataFrame,
    y: np.ndarray,
    effort: np.ndarray | None,
    gate: GateConfig,
    challenger_scores: np.ndarray | None = None,
    challenger_train_end: pd.Timestamp | None = None,
) -> Comparison:
    """Compare the challenger with ``champion`` out of sample and decide, without touching the registry.

    Both are scored on the test deploys after the later of the two training ends: the champion
    may have been trained on the start of the challenger's test period (a retrain with an earlier
    ``--test-start``), and re-scoring it there would favour it. ``challenger_scores`` are the
    challenger's test-period probabilities (default: ``challenger_metrics`` as they are). Plain, so
    a benchmark replaying many retrains gates them exactly as ``gate_and_alias`` does.
    """
    champion_metrics, note = None, champion.note
    compared, period, no_common = None, None, ""
    paired: tuple[float, float, float] | None = None
    if champion.model is not None:
        champion_end = training_end(champion.model)
        if champion_end is None:
            no_common = f"champion v{champion.version} does not record its training period"
        else:
            ends = [champion_end] + ([challenger_train_end] if challenger_train_end is not None else [])
            rows, period, no_common = comparison_rows(test_frame[TIME], y, ends, gate)
            if not no_common:
                sub_effort = None if effort is None else effort[rows]
                champion_metrics, note, theirs = rescore(champion.model, test_frame.iloc[rows], y[rows], sub_effort)
                if challenger_scores is not None:
                    compared = evaluate(y[rows], challenger_scores[rows], sub_effort)
                elif len(rows) != len(y):
                    raise ValueError("challenger_scores are needed to compare on part of the test period")
                if gate.rule == "paired" and theirs is not None and challenger_scores is not None:
                    paired = paired_auc_test(y[rows], challenger_scores[rows], theirs)
    failure_rate = float(np.mean(y)) if len(y) else math.nan
    decision = decide(challenger_metrics, champion_metrics, failure_rate, gate, note, compared, no_common, paired)
    if champion_metrics is not None and period is not None:  # say which deploys the comparison used
        where = f"on {period.n} test deploys after {period.after}"
        decision = GateDecision(decision.promote, f"{decision.reason} ({where})")
    return Comparison(decision, champion_metrics, note, period, compared)


def gate_and_alias(
    client: MlflowClient,
    ver: str,
    challenger_metrics: dict[str, float],
    test_frame: pd.DataFrame,
    y: np.ndarray,
    effort: np.ndarray | None,
    gate: GateConfig,
    name: str = MODEL_NAME,
    challenger_scores: np.ndarray | None = None,
    challenger_train_end: pd.Timestamp | None = None,
) -> GateOutcome:
    """Alias ``ver`` as challenger, compare it with the champion out of sample (``judge``), maybe promote."""
    champion = current_champion(client, name)
    c = judge(champion, challenger_metrics, test_frame, y, effort, gate, challenger_scores, challenger_train_end)
    decision, period = c.decision, c.period
    client.set_registered_model_alias(name, CHALLENGER, ver)
    client.set_model_version_tag(name, ver, "gate_decision", "promote" if decision.promote else "reject")
    client.set_model_version_tag(name, ver, "gate_reason", decision.reason[:4000])
    if champion.version is not None:
        client.set_model_version_tag(name, ver, "compared_with", f"v{champion.version}")
    if period is not None:
        client.set_model_version_tag(name, ver, "gate_period", period.describe()[:4000])
    if decision.promote:
        stack, log = _history(client, name)
        _record_champion(client, name, ver, "gate", decision.reason, [*stack, ver], log)
    return GateOutcome(ver, decision, champion.version, c.champion_metrics, c.note, period, c.challenger_compared)


def promote(
    client: MlflowClient,
    version_: str | None = None,
    revert: bool = False,
    reason: str = "",
    name: str = MODEL_NAME,
) -> str:
    """Force ``version_`` to champion, or revert to the previous champion; returns the new champion."""
    if (version_ is None) == (not revert):
        raise RegistryError("give either a version to promote or revert, not both")
    stack, log = _history(client, name)
    if revert:
        current = _alias_version(client, name, CHAMPION)
        while stack and stack[-1] == current:
            stack.pop()
        if not stack:
            raise RegistryError("no earlier champion to revert to")
        target = stack[-1]
        by, why = "revert", reason or f"reverted from v{current}"
    else:
        assert version_ is not None
        target, by, why = str(version_), "manual", reason or "forced by incident-risk promote"
        stack = [*stack, target]
    try:
        mv = client.get_model_version(name, target)
    except MlflowException:
        raise RegistryError(f"{name} has no version {target}") from None
    if mv.status != "READY":
        raise RegistryError(f"{name} v{target} is {mv.status}, not READY")
    load_model(f"models:/{name}/{target}")  # never alias a version whose model is missing
    _record_champion(client, name, target, by, why, stack, log)
    return target


def _alias_version(client: MlflowClient, name: str, alias: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None
