"""The scoring service: FastAPI app factory, request schema, auth, metrics and hot model/store refresh.

``create_app(config)`` builds the app and nothing runs at import. The app keeps one immutable
``Snapshot`` (model bundle + feature index of one store version); a background thread checks the
store's manifest version and the registry alias every ``refresh_seconds`` and, when either moved,
builds a new snapshot off the request path and swaps it in with one assignment. A request reads the
snapshot once, so it is scored wholly by the old or wholly by the new model, never fails for a swap.

Every client input gets a 2xx or a 4xx: pydantic (extra fields forbidden, NaN/inf refused, sizes
bounded) gives field-level 422s, bodies over ``max_body_bytes`` get 413 before they are read whole.
"""

from __future__ import annotations

import gc
import hashlib
import hmac
import logging
import math
import os
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import pandas as pd
from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, field_validator

from features.attribution import attribute
from features.schema import ENVIRONMENTS, MAX_LINES, History
from features.store import HistoryStore
from models.registry import CHAMPION, MODEL_NAME
from models.scoring import (
    FeatureIndex,
    ModelBundle,
    UpcomingDeploy,
    build_feature_index,
    champion_version,
    feature_medians,
    load_bundle,
    now_utc,
    score_deploy,
)

log = logging.getLogger("incident_risk.service")

#: Most deploys one batch request may carry.
MAX_BATCH = 500
#: Environment variable holding bearer tokens (comma- or newline-separated).
TOKENS_ENV = "INCIDENT_RISK_TOKENS"
MAX_FILES = 10_000_000
MAX_COMMITS = 1_000_000
MAX_EXTRA = 1e15
_EARLIEST = datetime.fromisoformat("1990-01-01T00:00:00+00:00")
_LATEST = datetime.fromisoformat("2200-01-01T00:00:00+00:00")


@dataclass(frozen=True)
class ServiceConfig:
    """Where the service reads from and how it behaves; passed to ``create_app``."""

    store_dir: Path
    tracking_uri: str | None = None  # None: MLflow's own resolution (MLFLOW_TRACKING_URI)
    model_name: str = MODEL_NAME
    alias: str = CHAMPION
    refresh_seconds: float = 30.0
    max_body_bytes: int = 1_000_000
    tokens: tuple[str, ...] = ()  # empty: no auth
    top_factors: int = 6


def load_tokens(file: Path | None = None, env: MutableMapping[str, str] | None = None) -> tuple[str, ...]:
    """Bearer tokens from ``$INCIDENT_RISK_TOKENS`` and/or a file (one per line; blank and # lines skipped)."""
    environ = os.environ if env is None else env
    raw = environ.get(TOKENS_ENV, "").replace(",", "\n").splitlines()
    if file is not None:
        raw += file.read_text(encoding="utf-8").splitlines()
    return tuple(t.strip() for t in raw if t.strip() and not t.strip().startswith("#"))


# --------------------------------------------------------------------------------------------
# Request and response schema

Text = Annotated[str, StringConstraints(min_length=1, max_length=256)]
ExtraName = Annotated[str, StringConstraints(pattern=r"^extra_[A-Za-z0-9_]{1,100}$")]
ExtraValue = Annotated[float, Field(allow_inf_nan=False, ge=-MAX_EXTRA, le=MAX_EXTRA)]


class DeployIn(BaseModel):
    """One upcoming deploy. Only ``service`` is required; every omitted size is scored as missing."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    service: Text
    environment: Literal[ENVIRONMENTS] = "production"  # type: ignore[valid-type]
    author: Text | None = None
    lines_added: Annotated[int, Field(strict=True, ge=0, le=MAX_LINES)] | None = None
    lines_deleted: Annotated[int, Field(strict=True, ge=0, le=MAX_LINES)] | None = None
    files_changed: Annotated[int, Field(strict=True, ge=0, le=MAX_FILES)] | None = None
    commit_count: Annotated[int, Field(strict=True, ge=0, le=MAX_COMMITS)] | None = None
    commit_sha: Annotated[str, StringConstraints(min_length=1, max_length=256)] | None = None
    deploy_id: Text | None = None
    touches_infra: Annotated[bool, Field(strict=True)] | None = None
    is_rollback: Annotated[bool, Field(strict=True)] | None = None
    planned_at: AwareDatetime | None = Field(None, description="When it ships (with a UTC offset); default now")
    squad: Text | None = None
    tribe: Text | None = None
    extra: dict[ExtraName, ExtraValue] = Field(default_factory=dict, max_length=64)

    @field_validator("planned_at")
    @classmethod
    def _plausible_time(cls, value: datetime | None) -> datetime | None:
        if value is not None and not _EARLIEST <= value < _LATEST:
            raise ValueError("planned_at must be between 1990 and 2200")
        return value

    def to_deploy(self, now: pd.Timestamp) -> UpcomingDeploy:
        at = pd.Timestamp(self.planned_at).tz_convert("UTC") if self.planned_at is not None else now
        return UpcomingDeploy(
            service=self.service,
            created_at=at,
            deploy_id=self.deploy_id or self.commit_sha,
            environment=self.environment,
            author=self.author,
            lines_added=self.lines_added,
            lines_deleted=self.lines_deleted,
            files_changed=self.files_changed,
            commit_count=self.commit_count,
            commit_sha=self.commit_sha,
            touches_infra=self.touches_infra,
            is_rollback=self.is_rollback,
            squad=self.squad,
            tribe=self.tribe,
            extra=dict(self.extra),
        )


class BatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    deploys: list[DeployIn] = Field(min_length=1, max_length=MAX_BATCH)


class FactorOut(BaseModel):
    feature: str
    value: float | str
    contribution: float = Field(description="Log-odds contribution (see explanation_method)")
    direction: Literal["up", "down"]


class ModelRef(BaseModel):
    name: str
    version: str
    run_id: str | None
    alias: str | None


class ScoreOut(BaseModel):
    deploy_id: str | None
    service: str | None
    scored_for: str = Field(description="The ship time the features were computed at (UTC)")
    probability: float = Field(description="Calibrated probability that the deploy causes an incident")
    band: Literal["low", "medium", "high"]
    factors: list[FactorOut]
    features: dict[str, float | str]
    flags: dict[str, Any]
    explanation_method: str
    model: ModelRef
    store_version: int


class BatchOut(BaseModel):
    scores: list[ScoreOut]


class ModelOut(BaseModel):
    name: str
    version: str
    run_id: str | None
    alias: str | None
    kind: str
    trained_at: str | None
    test_metrics: dict[str, float]
    bands: dict[str, Any]
    features: dict[str, list[str]]
    explanation_method: str
    store_version: int
    loaded_at: float


class StatusOut(BaseModel):
    status: str
    detail: str | None = None


class ErrorOut(BaseModel):
    detail: Any = Field(description="What was wrong with the request (or why the service cannot answer)")


_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorOut} for code in (400, 401, 413, 503)}


_JSON = TypeAdapter(Any)
EXPLANATION = {
    "logreg": "coefficient x standardised value (log-odds), missing indicator included",
    "hgb": "log-odds output minus output with the feature at its training median (categories: unknown)",
}


# --------------------------------------------------------------------------------------------
# The scoring state: one immutable snapshot, replaced atomically


@dataclass(frozen=True)
class Snapshot:
    """Everything one request needs; never mutated, only replaced."""

    bundle: ModelBundle
    index: FeatureIndex
    history: History
    store_version: int
    loaded_at: float


def _settle_heap() -> None:
    """Keep the long-lived snapshot out of the garbage collector's way.

    A snapshot holds millions of objects (history frames, indexes); every full collection would
    traverse them all, stalling requests for tens to hundreds of milliseconds — the p99. After a
    swap, unfreeze (so the replaced snapshot can be freed), collect once here in the refresh
    thread, then freeze what survives: later collections only scan what requests allocate.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


class ScoringState:
    """Holds the current ``Snapshot`` and refreshes it when the store or the registry alias moved."""

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.snapshot: Snapshot | None = None
        self.last_error: str | None = None
        self._lock = threading.Lock()  # one refresh at a time; requests never take it
        self._on_swap: list[Callable[[Snapshot], None]] = []

    def on_swap(self, hook: Callable[[Snapshot], None]) -> None:
        """Call ``hook`` with every new snapshot (and now, with the current one if there is one)."""
        self._on_swap.append(hook)
        if self.snapshot is not None:
            hook(self.snapshot)

    def refresh(self) -> bool:
        """Rebuild what changed and swap it in; True when a new snapshot was installed.

        Failures keep the current snapshot (a broken new model or store never takes the service down).
        """
        with self._lock:
            try:
                changed = self._refresh()
                self.last_error = None
                return changed
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("refresh failed, keeping the current model and store view: %s", self.last_error)
                raise

    def _refresh(self) -> bool:
        from mlflow import MlflowClient

        cfg = self.config
        client = MlflowClient(tracking_uri=cfg.tracking_uri) if cfg.tracking_uri else MlflowClient()
        target = champion_version(client, cfg.model_name, cfg.alias)
        if target is None:
            raise LookupError(f"no model version has the alias {cfg.model_name}@{cfg.alias}")
        store = HistoryStore(cfg.store_dir)
        manifest = store.manifest()
        current = self.snapshot
        same_model = current is not None and current.bundle.info.version == target[0]
        if same_model and current is not None and current.store_version == manifest.version:
            return False
        bundle = (
            current.bundle
            if same_model and current is not None
            else load_bundle(client, cfg.model_name, target[0], cfg.alias)
        )
        if current is not None and current.store_version == manifest.version:
            history = current.history
        else:
            history = History(*(store.read(t, manifest) for t in ("deploys", "toggle_events", "incidents")))
        labels = attribute(history, bundle.attribution_config).deploy_labels
        if bundle.needs_medians:
            bundle = bundle.with_medians(feature_medians(history, labels, bundle.feature_config, bundle.scorer.numeric))
        index = build_feature_index(history, labels, bundle.feature_config)
        snap = Snapshot(bundle, index, history, manifest.version, time.time())
        self.snapshot = snap  # the swap: one reference assignment
        _settle_heap()
        for hook in self._on_swap:
            hook(snap)
        log.info("serving %s v%s on store version %d", cfg.model_name, bundle.info.version, manifest.version)
        return True


# --------------------------------------------------------------------------------------------
# Metrics


@dataclass(frozen=True)
class _Metrics:
    registry: CollectorRegistry
    requests: Counter
    latency: Histogram
    scores: Counter
    model: Gauge
    store: Gauge
    refresh_errors: Counter

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
            model=Gauge(
                "incident_risk_model_info",
                "The model being served (value 1)",
                ["name", "version", "run_id"],
                registry=reg,
            ),
            store=Gauge("incident_risk_store_version", "History store version being served", registry=reg),
            refresh_errors=Counter("incident_risk_refresh_errors", "Failed store/model refreshes", registry=reg),
        )

    def on_swap(self, snap: Snapshot) -> None:
        info = snap.bundle.info
        self.model.clear()
        self.model.labels(info.name, info.version, info.run_id or "").set(1)
        self.store.set(snap.store_version)


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


# --------------------------------------------------------------------------------------------
# The app


def _token_check(tokens: tuple[str, ...]) -> Callable[..., Awaitable[None]]:
    """A dependency accepting any of ``tokens`` as a bearer token, compared in constant time."""
    digests = [hashlib.sha256(t.encode()).digest() for t in tokens]
    bearer = HTTPBearer(auto_error=False, description="One of the service's tokens")

    async def check(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        given = hashlib.sha256((credentials.credentials if credentials else "").encode()).digest()
        ok = False
        for digest in digests:  # no early exit: every token is compared
            ok |= hmac.compare_digest(given, digest)
        if credentials is None or not ok:
            raise HTTPException(401, "missing or invalid bearer token", headers={"WWW-Authenticate": "Bearer"})

    return check


def score_payload(snap: Snapshot, deploy: DeployIn, now: pd.Timestamp, k: int) -> dict[str, Any]:
    """The JSON body of a score: the result, how it is explained, which model and store made it."""
    result = score_deploy(snap.index, snap.bundle.scorer, deploy.to_deploy(now), k)
    out = result.as_dict()
    out["explanation_method"] = EXPLANATION[snap.bundle.scorer.kind]
    out["model"] = snap.bundle.info.as_dict()
    out["store_version"] = snap.store_version
    return out


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


def _finite(values: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and math.isfinite(v)}


def create_app(config: ServiceConfig, state: ScoringState | None = None) -> FastAPI:
    """The scoring API; the model and store load at startup and refresh in the background."""
    state = state or ScoringState(config)
    metrics = _Metrics.create()
    state.on_swap(metrics.on_swap)
    stop = threading.Event()

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
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=5)

    app = FastAPI(
        title="incident-risk",
        version="1",
        summary="How likely is this deploy to cause an incident? Calibrated probability, band and reasons.",
        lifespan=lifespan,
    )
    app.state.scoring = state
    app.add_exception_handler(RequestValidationError, _validation_error)
    protected = [Depends(_token_check(config.tokens))] if config.tokens else []

    def current() -> Snapshot:
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
        payload = score_payload(snap, deploy, now_utc(), config.top_factors)
        metrics.scores.labels(payload["band"]).inc()
        return json_response(payload)

    @app.post("/v1/score/batch", response_model=BatchOut, dependencies=protected, responses=_ERRORS)
    async def score_batch(batch: BatchIn) -> Response:
        """Score up to 500 deploys (``MAX_BATCH``) in one request, all with the same model and store view."""
        snap = current()
        now = now_utc()
        scores = [score_payload(snap, d, now, config.top_factors) for d in batch.deploys]
        for s in scores:
            metrics.scores.labels(s["band"]).inc()
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
        """Readiness: a model and a store view are loaded."""
        snap = state.snapshot
        if snap is None:
            return json_response({"status": "not ready", "detail": state.last_error or "starting"}, 503)
        detail = f"model v{snap.bundle.info.version}, store v{snap.store_version}"
        return json_response({"status": "ready", "detail": detail})

    @app.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
    async def prometheus() -> Response:
        """Prometheus metrics: request counts and latencies, scores by band, model and store versions."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(_Guard, metrics=metrics, max_body=config.max_body_bytes)  # type: ignore[arg-type]
    return app
