"""The HTTP service in-process (TestClient): scores, validation, auth, metrics, OpenAPI and hot swaps."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from features.labels.attribution import data_end as history_data_end
from models.scoring.upcoming import now_utc
from models.serving.app import ServiceConfig, create_app
from models.serving.auth import load_tokens
from models.serving.schemas import MAX_BATCH
from models.serving.state import ScoringState
from tests.helpers.scoring import fitted, home_with_champion, register, simulated, write_store

NAME = "incident-risk-test-service"
DEPLOY = {
    "service": "reviews-svc",
    "author": "guido.turing",
    "lines_added": 120,
    "lines_deleted": 30,
    "files_changed": 4,
    "commit_count": 2,
    "touches_infra": True,
    "planned_at": "2026-02-04T10:00:00Z",
}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with a simulated history and a registered champion (logistic regression)."""
    home = tmp_path_factory.mktemp("service-home")
    home_with_champion(home, NAME)
    return home


def _config(home: Path, **kw: object) -> ServiceConfig:
    options: dict = {"refresh_seconds": 3600.0, **kw}
    return ServiceConfig(store_dir=home / "store", model_name=NAME, **options)


@pytest.fixture(scope="module")
def client(served: Path) -> Iterator[TestClient]:
    with TestClient(create_app(_config(served))) as c:
        yield c


def test_score_answers_with_probability_band_factors_features_and_model(client: TestClient) -> None:
    r = client.post("/v1/score", json=DEPLOY)
    assert r.status_code == 200, r.text
    body = r.json()
    assert 0 < body["probability"] < 1 and body["band"] in ("low", "medium", "high")
    assert body["model"]["name"] == NAME and body["model"]["version"] and body["model"]["run_id"]
    assert body["scored_for"].startswith("2026-02-04T10:00:00")
    assert body["features"]["lines_added"] == 120 and body["features"]["touches_infra"] == 1
    assert body["features"]["squad"] != "(missing)"  # filled from the service's history
    assert body["flags"]["filled_from_history"] == ["squad", "tribe"]
    factors = body["factors"]
    assert factors and all(f["direction"] == ("up" if f["contribution"] > 0 else "down") for f in factors)
    assert [abs(f["contribution"]) for f in factors] == sorted((abs(f["contribution"]) for f in factors), reverse=True)
    assert body["explanation_method"].startswith("coefficient")


def test_unknown_service_and_author_are_scored_and_flagged(client: TestClient) -> None:
    r = client.post("/v1/score", json={"service": "brand-new-svc", "author": "first.timer", "lines_added": 3})
    assert r.status_code == 200
    flags = r.json()["flags"]
    assert flags["new_service"] and flags["new_author"]
    assert flags["categories_encoded_as_other"]["service"] == "brand-new-svc"


def test_batch_scores_each_deploy_and_limits_the_size(client: TestClient) -> None:
    r = client.post("/v1/score/batch", json={"deploys": [DEPLOY, {"service": "x"}]})
    assert r.status_code == 200
    scores = r.json()["scores"]
    assert [s["service"] for s in scores] == ["reviews-svc", "x"]
    single = client.post("/v1/score", json=DEPLOY).json()
    assert scores[0]["probability"] == single["probability"]
    too_many = client.post("/v1/score/batch", json={"deploys": [{"service": "x"}] * (MAX_BATCH + 1)})
    assert too_many.status_code == 422
    assert client.post("/v1/score/batch", json={"deploys": []}).status_code == 422


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**DEPLOY, "lines_added": -1}, "lines_added"),
        ({**DEPLOY, "lines_added": 10**12}, "lines_added"),
        ({**DEPLOY, "lines_added": "12"}, "lines_added"),
        ({**DEPLOY, "lines_added": 1.5}, "lines_added"),
        ({**DEPLOY, "touches_infra": "maybe"}, "touches_infra"),
        ({**DEPLOY, "surprise": 1}, "surprise"),
        ({**DEPLOY, "environment": "moon"}, "environment"),
        ({**DEPLOY, "planned_at": "2026-02-04T10:00:00"}, "planned_at"),  # naive
        ({**DEPLOY, "planned_at": "9999-01-01T00:00:00Z"}, "planned_at"),
        ({**DEPLOY, "extra": {"extra_x": "nan"}}, "extra"),
        ({**DEPLOY, "extra": {"not_extra": 1}}, "extra"),
        ({**DEPLOY, "service": ""}, "service"),
        ({**DEPLOY, "service": "s" * 300}, "service"),
        ({"lines_added": 1}, "service"),
    ],
)
def test_malformed_requests_get_field_level_422(client: TestClient, body: dict, field: str) -> None:
    r = client.post("/v1/score", json=body)
    assert r.status_code == 422, r.text
    assert any(field in map(str, e["loc"]) for e in r.json()["detail"])


@pytest.mark.parametrize(
    "raw",
    [
        '{"service": "a", "lines_added": NaN}',
        '{"service": "a", "extra": {"extra_x": Infinity}}',
        '{"service": ',
        "[]",
        "null",
    ],
)
def test_non_finite_numbers_and_broken_json_get_422(client: TestClient, raw: str) -> None:
    r = client.post("/v1/score", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422


def test_oversized_bodies_get_413(served: Path) -> None:
    with TestClient(create_app(_config(served, max_body_bytes=1000))) as c:
        big = {**DEPLOY, "deploy_id": "x" * 200, "extra": {f"extra_{i}": 1.0 for i in range(60)}}
        assert c.post("/v1/score", json=big).status_code == 413
        chunks = (part.encode() for part in ['{"service": "a", "deploy_id": "', "y" * 1200, '"}'])
        assert c.post("/v1/score", content=chunks, headers={"content-type": "application/json"}).status_code == 413
        assert c.post("/v1/score", json=DEPLOY).status_code == 200


def test_model_health_ready_and_metrics(client: TestClient) -> None:
    model = client.get("/v1/model").json()
    assert model["name"] == NAME and model["kind"] == "logreg" and model["trained_at"]
    assert set(model["bands"]["thresholds"]) == {"medium", "high"} and "roc_auc" in model["test_metrics"]
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    client.post("/v1/score", json=DEPLOY)
    text = client.get("/metrics").text
    assert 'incident_risk_requests_total{method="POST",route="/v1/score",status="200"}' in text
    assert "incident_risk_request_seconds_bucket" in text and "incident_risk_scores_total{band=" in text
    assert f'incident_risk_model_info{{name="{NAME}"' in text and "incident_risk_store_version 1.0" in text


def test_a_stale_store_is_flagged_in_scores_readiness_and_metrics(served: Path) -> None:
    """The store's history ends weeks before "now": scores at now miss every recent deploy and incident."""
    data_end = history_data_end(simulated().history)
    assert data_end is not None and now_utc() - data_end > pd.Timedelta(days=30)

    def at(hours: float) -> dict:
        return {**DEPLOY, "planned_at": (data_end + pd.Timedelta(hours=hours)).isoformat()}

    with TestClient(create_app(_config(served, max_data_age_hours=48.0))) as c:
        fresh, stale = c.post("/v1/score", json=at(47)).json(), c.post("/v1/score", json=at(49)).json()
        assert fresh["stale_history"] is False and stale["stale_history"] is True
        assert stale["data_age_hours"] == pytest.approx(49.0) and stale["data_end"] == data_end.isoformat()
        now = c.post("/v1/score", json={k: v for k, v in DEPLOY.items() if k != "planned_at"}).json()
        assert now["stale_history"] is True
        batch = c.post("/v1/score/batch", json={"deploys": [at(1), at(100)]}).json()["scores"]
        assert [s["stale_history"] for s in batch] == [False, True]
        ready = c.get("/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "degraded"
        assert "h old (max 48 h)" in ready.json()["detail"]
        gauge = next(line for line in c.get("/metrics").text.splitlines() if line.startswith("incident_risk_data_age"))
        age = float(gauge.split()[-1])
        assert abs(age - (now_utc() - data_end).total_seconds()) < 120
    with TestClient(create_app(_config(served, max_data_age_hours=1e6))) as c:
        assert c.get("/readyz").json()["status"] == "ready"
        assert c.post("/v1/score", json=DEPLOY).json()["stale_history"] is False


def test_not_ready_without_a_champion_but_alive(served: Path) -> None:
    config = ServiceConfig(store_dir=served / "store", model_name="no-such-model", refresh_seconds=3600)
    with TestClient(create_app(config)) as c:
        assert c.get("/healthz").status_code == 200
        assert c.get("/readyz").status_code == 503
        assert c.post("/v1/score", json=DEPLOY).status_code == 503


def test_bearer_tokens_guard_everything_but_health(served: Path, tmp_path: Path) -> None:
    file = tmp_path / "tokens"
    file.write_text("# ops\nfile-token\n")
    tokens = load_tokens(file, env={"INCIDENT_RISK_TOKENS": "env-token, other"})
    assert tokens == ("env-token", "other", "file-token")
    with TestClient(create_app(_config(served, tokens=tokens))) as c:
        assert c.post("/v1/score", json=DEPLOY).status_code == 401
        bad = c.post("/v1/score", json=DEPLOY, headers={"Authorization": "Bearer nope"})
        assert bad.status_code == 401 and bad.headers["www-authenticate"] == "Bearer"
        for token in tokens:
            assert c.post("/v1/score", json=DEPLOY, headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert c.get("/v1/model").status_code == 401
        assert c.get("/healthz").status_code == 200 and c.get("/readyz").status_code == 200
        assert c.get("/metrics").status_code == 200


def test_openapi_spec_documents_the_api(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert {"/v1/score", "/v1/score/batch", "/v1/model", "/healthz", "/readyz", "/metrics"} <= set(spec["paths"])
    score = spec["paths"]["/v1/score"]["post"]
    assert {"200", "401", "413", "422", "503"} <= set(score["responses"])
    deploy = spec["components"]["schemas"]["DeployIn"]
    assert deploy["additionalProperties"] is False and deploy["required"] == ["service"]
    assert spec["components"]["schemas"]["ScoreOut"]["properties"]["probability"]["type"] == "number"


def test_promotion_and_store_commits_are_picked_up_without_a_failed_request(served: Path) -> None:
    """Requests run in threads while the champion moves and the store gets a new version."""
    from mlflow import MlflowClient

    state = ScoringState(_config(served))
    with TestClient(create_app(_config(served), state)) as c:
        before = c.post("/v1/score", json=DEPLOY).json()
        errors: list[str] = []
        versions: set[str] = set()
        stop = threading.Event()

        def hammer() -> None:
            while not stop.is_set():
                r = c.post("/v1/score", json=DEPLOY)
                if r.status_code != 200:
                    errors.append(r.text)
                else:
                    versions.add(r.json()["model"]["version"])

        threads = [threading.Thread(target=hammer) for _ in range(3)]
        for t in threads:
            t.start()
        try:
            new_version = register(served, fitted("hgb"), NAME)  # aliases it champion
            assert state.refresh()
            sim = simulated()
            write_store(served, sim.history)  # a new store version (same content)
            assert state.refresh()
            assert not state.refresh()  # nothing moved since
        finally:
            stop.set()
            for t in threads:
                t.join()
        after = c.post("/v1/score", json=DEPLOY).json()
        assert not errors
        assert after["model"]["version"] == new_version != before["model"]["version"]
        assert after["store_version"] == before["store_version"] + 1
        assert new_version in versions or len(versions) >= 1
        # and back: a revert of the alias is followed too
        MlflowClient().set_registered_model_alias(NAME, "champion", before["model"]["version"])
        assert state.refresh()
        assert c.post("/v1/score", json=DEPLOY).json()["model"]["version"] == before["model"]["version"]


def test_background_refresh_follows_the_alias(served: Path) -> None:
    import time

    from mlflow import MlflowClient

    client = MlflowClient()
    current = client.get_model_version_by_alias(NAME, "champion").version
    state = ScoringState(_config(served, refresh_seconds=0.5))
    with TestClient(create_app(_config(served, refresh_seconds=0.5), state)) as c:
        assert c.get("/v1/model").json()["version"] == str(current)
        target = register(served, fitted("logreg"), NAME)
        deadline = time.monotonic() + 30
        while c.get("/v1/model").json()["version"] != target and time.monotonic() < deadline:
            time.sleep(0.2)
        assert c.get("/v1/model").json()["version"] == target
    json.dumps(state.snapshot.bundle.info.as_dict())  # the loaded info stays plain data
