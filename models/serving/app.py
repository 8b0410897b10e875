"""The scoring service: FastAPI app factory, request schema, auth, metrics and hot model/store refresh.

``create_app(config)`` builds the app and nothing runs at import. The app keeps one immutable
``ScoringContext`` (model bundle + feature index of one store version); a background thread checks the
store's manifest version and the registry alias every ``refresh_seconds`` and, when either moved,
builds a new snapshot off the request path and swaps it in with one assignment. A request reads the
snapshot once, so it is scored wholly by the old or wholly by the new model, never fails for a swap.

Every client input gets a 2xx or a 4xx: pydantic (extra fields forbidden, NaN/inf refused, sizes
bounded) gives field-level 422s, bodies over ``max_body_bytes`` get 413 before they are read whole.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pandas as pd
from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import TypeAdapter

from features.pointintime.catalog import FEATURE_SET_VERSION
from models.monitoring.predlog import PredictionLog, PredictionRecord, prediction_record, predictions_dir
from models.notify.alerts import Alerts
from models.notify.config import NotifyConfig
from models.scoring.advice import AdviceConfig
from models.scoring.context import ScoringContext
from models.scoring.explain import score_deploy
from models.scoring.upcoming import now_utc
from models.serving.advice import AdviceEvents, advice_payload
from models.serving.auth import _token_check
from models.serving.incidents import incidents_router
from models.serving.schemas import (
    _ERRORS,
    EXPLANATION,
    BatchIn,
    BatchOut,
    DeployIn,
    ModelOut,
    ScoreOut,
    StatusOut,
)
from models.serving.state import ScoringState, ServiceConfig

log = logging.getLogger("incident_risk.service")


_JSON = TypeAdapter(Any)


@dataclass(frozen=True)
class _Metrics:
    registry: CollectorRegistry
    requests: Counter
    latency: Histogram
    scores: Counter
    probability: Histogram
    model: Gauge
    store: Gauge
    refresh_errors: Counter
    data_age: Gauge
    fast_scorer: Gauge
    fast_scorer_fallbacks: Counter

    @classmethod
    def create(cls) -> _Metrics:
        reg = CollectorRegistry()
        return cls(
            registry=reg,
            requests=Counter("incident_risk_requests", "HTTP requests", ["route", "method", "status"], registry=reg),
            latency=Histogram(
                "incident_risk_request_seconds",
                "Request latency",
                ["route"],
                registry=reg,
                buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            ),
            scores=Counter("incident_risk_scores", "Deploys scored, by band", ["band"], registry=reg),
            probability=Histogram(
                "incident_risk_score_probability",
                "Distribution of the scores given, by band (drift of the score shows here first)",
                ["band"],
                registry=reg,
                buckets=(0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0),
            ),
            model=Gauge(
                "incident_risk_model_info",
                "The model being served (value 1)",
                ["name", "version", "run_id"],
                registry=reg,
            ),
            store=Gauge("incident_risk_store_version", "History store version being served", registry=reg),
            refresh_errors=Counter("incident_risk_refresh_errors", "Failed store/model refreshes", registry=reg),
            data_age=Gauge(
                "incident_risk_data_age_seconds",
                "Seconds since the newest event in the history store being served (NaN before a store loads)",
                registry=reg,
            ),
            fast_scorer=Gauge(
                "incident_risk_fast_scorer_compiled",
                "1 while the compiled fast scorer serves, 0 after its load check fell back to predict_proba",
                registry=reg,
            ),
            fast_scorer_fallbacks=Counter(
                "incident_risk_fast_scorer_fallback",
                "Snapshots swapped in whose compiled scorer failed its load check (scored by predict_proba)",
                registry=reg,
            ),
        )

    def observe(self, payload: dict[str, Any]) -> None:
        self.scores.labels(payload["band"]).inc()
        self.probability.labels(payload["band"]).observe(payload["probability"])

    def on_swap(self, snap: ScoringContext) -> None:
        info = snap.bundle.info
        self.model.clear()
        self.model.labels(info.name, info.version, info.run_id or "").set(1)
        self.store.set(snap.store_version)
        compiled = snap.bundle.scorer.fallback is None
        self.fast_scorer.set(1 if compiled else 0)
        if not compiled:
            self.fast_scorer_fallbacks.inc()


_ROUTES = ("/v1/score", "/v1/score/batch", "/v1/model", "/healthz", "/readyz", "/metrics", "/openapi.json", "/docs")


Scope = MutableMapping[str, Any]


Message = MutableMapping[str, Any]


Receive = Callable[[], Awaitable[Message]]


Send = Callable[[Message], Awaitable[None]]


ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class _Guard:
    """Pure ASGI middleware: body size limit (413 before the body is held whole) and request metrics."""

    def __init__(self, app: ASGIApp, metrics: _Metrics, max_body: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        path = scope.get("path", "")
        route = path if path in _ROUTES else "other"
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            if scope.get("method") in ("POST", "PUT", "PATCH"):
                body = await self._read_body(scope, receive)
                if body is None:
                    await _too_large(send_status, self.max_body)
                    return
                replayed = False

                async def replay() -> Message:
                    nonlocal replayed
                    if replayed:
                        return await receive()
                    replayed = True
                    return {"type": "http.request", "body": body, "more_body": False}

                await self.app(scope, replay, send_status)
            else:
                await self.app(scope, receive, send_status)
        finally:
            self.metrics.requests.labels(route, scope.get("method", ""), str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes | None:
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    if int(value) > self.max_body:
                        return None
                except ValueError:
                    return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


async def _too_large(send: Send, limit: int) -> None:
    body = _JSON.dump_json({"detail": f"request body larger than {limit} bytes"})
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def score_payload(
    snap: ScoringContext,
    deploy: DeployIn,
    now: pd.Timestamp,
    k: int,
    max_data_age_hours: float,
    advice: AdviceConfig | None = None,
    events: AdviceEvents | None = None,
) -> dict[str, Any]:
    """The JSON body of a score: the result, how it is explained, which model and store made it, and
    whether the store's history ends too long before the scored time (``stale_history``).

    With ``deploy.advice`` also the advice, computed after the score and from it (never changing it).
    """
    upcoming = deploy.to_deploy(now)
    result = score_deploy(snap.index, snap.bundle.scorer, upcoming, k)
    out = result.as_dict()
    out["explanation_method"] = EXPLANATION[snap.bundle.scorer.kind]
    out["model"] = snap.bundle.info.as_dict()
    out["store_version"] = snap.store_version
    age = snap.data_age_hours(result.created_at)
    out["data_end"] = None if snap.data_end is None else snap.data_end.isoformat()
    out["data_age_hours"] = age
    out["stale_history"] = snap.is_stale(result.created_at, max_data_age_hours)
    if deploy.advice:
        config, found = advice or AdviceConfig(), events or AdviceEvents()
        out["advice"] = advice_payload(snap, upcoming, result.probability, config, found)
    return out


def log_record(snap: ScoringContext, deploy: DeployIn, payload: dict[str, Any], caller: str) -> PredictionRecord:
    """The prediction-log row of one score (squad and tribe filled from the store as the score did)."""
    teams = snap.index.teams.get(deploy.service)
    fsv = FEATURE_SET_VERSION  # the row was computed by this code's feature set
    return prediction_record(payload, caller=caller, deploy=dict(deploy), teams=teams, feature_set_version=fsv)


def _json_safe(value: Any) -> Any:
    """Error details as strict JSON: a NaN or infinite input echoes back as text, not as invalid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


async def _validation_error(_: Request, exc: Exception) -> Response:
    errors = exc.errors() if isinstance(exc, RequestValidationError) else [{"msg": str(exc)}]
    body = _json_safe(jsonable_encoder(errors, custom_encoder={float: lambda v: v}))
    return Response(_JSON.dump_json({"detail": body}), status_code=422, media_type="application/json")


def use_system_allocator() -> None:
    """Arrow's system memory pool for this (long-running) process, unless ``ARROW_DEFAULT_MEMORY_POOL`` chooses.

    Arrow's default pool (mimalloc) keeps the pages the prediction log's flushes free: over the serving
    soak the server's RSS grew 14-25 MiB with it and under 3 MiB with the system pool (docs/benchmarks.md).
    """
    import pyarrow as pa

    if not os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        pa.set_memory_pool(pa.system_memory_pool())


def _finite(values: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and math.isfinite(v)}


def _data_age_seconds(snap: ScoringContext | None) -> float:
    age = None if snap is None else snap.data_age_hours(now_utc())
    return math.nan if age is None else age * 3600.0


def _alerts(notify: NotifyConfig | None, registry: CollectorRegistry) -> Alerts | None:
    """The alert sender when Slack is configured; its outcomes (queued, sent, failed, dropped,
    duplicate) are counted on /metrics as ``incident_risk_alerts_total``."""
    if notify is None or not notify.slack.enabled:
        return None
    counter = Counter("incident_risk_alerts", "Slack alerts by outcome", ["outcome"], registry=registry)
    for outcome in ("queued", "sent", "failed", "dropped", "duplicate"):
        counter.labels(outcome)
    return Alerts(notify, on_outcome=lambda outcome: counter.labels(outcome).inc())


def create_app(config: ServiceConfig, state: ScoringState | None = None, notify: NotifyConfig | None = None) -> FastAPI:
    """The scoring API; the model and store load at startup and refresh in the background.

    With ``notify`` (and Slack credentials in it), high-risk scores are announced to the owning
    squad's channel by a background sender: a score only queues the alert (models/notify/alerts.py).
    """
    state = state or ScoringState(config)
    metrics = _Metrics.create()
    alerts = _alerts(notify, metrics.registry)
    state.on_swap(metrics.on_swap)
    advice_events = AdviceEvents()
    state.on_swap(advice_events.prepare)  # built in the refresh thread, before requests ask for advice
    metrics.data_age.set_function(lambda: _data_age_seconds(state.snapshot))
    stop = threading.Event()

    def _alert_advice(snap: ScoringContext, deploy: DeployIn, payload: dict[str, Any]) -> Callable[[], Any]:
        """The alert's advice, computed by the alert sender only when the alert is built (never per request)."""
        at = pd.Timestamp(payload["scored_for"])
        return lambda: advice_payload(
            snap, deploy.to_deploy(at), float(payload["probability"]), config.advice, advice_events
        )

    plog_dir = config.prediction_log_dir or predictions_dir(config.store_dir.parent)
    plog = PredictionLog(plog_dir, config.prediction_flush_seconds) if config.log_predictions else None

    def refresh_logged() -> None:
        try:
            state.refresh()
        except Exception:
            metrics.refresh_errors.inc()

    def loop() -> None:
        while not stop.wait(config.refresh_seconds):
            refresh_logged()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        refresh_logged()  # startup: serve at once if a champion exists; /readyz says when not
        thread = threading.Thread(target=loop, name="incident-risk-refresh", daemon=True)
        thread.start()
        if plog is not None:
            plog.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=5)
            if alerts is not None:
                alerts.close()
            if plog is not None:
                plog.stop()  # the shutdown flush

    app = FastAPI(
        title="incident-risk",
        version="1",
        summary="How likely is this deploy to cause an incident? Calibrated probability, band and reasons.",
        lifespan=lifespan,
    )
    app.state.scoring = state
    app.state.prediction_log = plog
    app.add_exception_handler(RequestValidationError, _validation_error)
    protected = [Depends(_token_check(config.tokens))] if config.tokens else []
    app.include_router(incidents_router(state, protected, config.dependencies))

    def current() -> ScoringContext:
        snap = state.snapshot
        if snap is None:
            raise HTTPException(503, f"no model loaded yet ({state.last_error or 'starting'})")
        return snap

    def json_response(payload: Any, status: int = 200) -> Response:
        return Response(_JSON.dump_json(payload), status_code=status, media_type="application/json")

    @app.post("/v1/score", response_model=ScoreOut, dependencies=protected, responses=_ERRORS)
    async def score(deploy: DeployIn) -> Response:
        """Score one upcoming deploy against the current champion and the store's history."""
        snap = current()
        payload = score_payload(
            snap, deploy, now_utc(), config.top_factors, config.max_data_age_hours, config.advice, advice_events
        )
        metrics.observe(payload)
        if plog is not None:
            plog.add(log_record(snap, deploy, payload, "/v1/score"))
        if alerts is not None:
            alerts.offer(snap.history, payload, deploy.author, deploy.commit_sha, _alert_advice(snap, deploy, payload))
        return json_response(payload)

    @app.post("/v1/score/batch", response_model=BatchOut, dependencies=protected, responses=_ERRORS)
    async def score_batch(batch: BatchIn) -> Response:
        """Score up to 500 deploys (``MAX_BATCH``) in one request, all with the same model and store view."""
        snap = current()
        now = now_utc()
        scores = [
            score_payload(snap, d, now, config.top_factors, config.max_data_age_hours, config.advice, advice_events)
            for d in batch.deploys
        ]
        for s, d in zip(scores, batch.deploys, strict=True):
            metrics.observe(s)
            if plog is not None:
                plog.add(log_record(snap, d, s, "/v1/score/batch"))
            if alerts is not None:
                alerts.offer(snap.history, s, d.author, d.commit_sha, _alert_advice(snap, d, s))
        return json_response({"scores": scores})

    @app.get(
        "/v1/model",
        response_model=ModelOut,
        dependencies=protected,
        responses={k: v for k, v in _ERRORS.items() if k in (401, 503)},
    )
    async def model_info() -> Response:
        """The model being served: version, run, training time, test metrics and band thresholds."""
        snap = current()
        b = snap.bundle
        meta = b.metadata
        return json_response(
            {
                **b.info.as_dict(),
                "kind": b.scorer.kind,
                "trained_at": b.info.trained_at,
                "test_metrics": _finite(dict(b.info.metrics)),
                "bands": {
                    "thresholds": {"medium": float(b.scorer.thresholds[0]), "high": float(b.scorer.thresholds[1])},
                    "shares": meta.get("band_shares", {}),
                },
                "features": {"numeric": list(b.scorer.numeric), "categorical": list(b.scorer.categorical)},
                "explanation_method": EXPLANATION[b.scorer.kind],
                "store_version": snap.store_version,
                "loaded_at": snap.loaded_at,
            }
        )

    @app.get("/healthz", response_model=StatusOut)
    async def healthz() -> Response:
        """Liveness: the process answers."""
        return json_response({"status": "ok"})

    @app.get("/readyz", response_model=StatusOut, responses={503: {"model": StatusOut}})
    async def readyz() -> Response:
        """Readiness: a model and a store view are loaded; "degraded" (still 200: it answers) when the
        store's newest event is older than ``max_data_age_hours``, i.e. ingest has stalled."""
        snap = state.snapshot
        if snap is None:
            return json_response({"status": "not ready", "detail": state.last_error or "starting"}, 503)
        detail = f"model v{snap.bundle.info.version}, store v{snap.store_version}"
        now = now_utc()
        if snap.is_stale(now, config.max_data_age_hours):
            age = snap.data_age_hours(now)
            ended = "the store is empty" if age is None else f"the store's newest event is {age:.0f} h old"
            detail += f"; {ended} (max {config.max_data_age_hours:g} h): scores see no recent history"
            return json_response({"status": "degraded", "detail": detail})
        return json_response({"status": "ready", "detail": detail})

    @app.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
    async def prometheus() -> Response:
        """Prometheus metrics: request counts and latencies, scores by band, model and store versions."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(_Guard, metrics=metrics, max_body=config.max_body_bytes)  # type: ignore[arg-type]
    return app
