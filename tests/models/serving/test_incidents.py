"""The incident routes in-process (TestClient): suspects by incident id or service, the PagerDuty v3 webhook
(recorded payloads), auth, and every bad input answered with a 4xx naming the field."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from features.history.store import HistoryStore
from models.serving.app import ServiceConfig, create_app
from tests.helpers.paths import REPO
from tests.helpers.scoring import home_with_champion, simulated

NAME = "incident-risk-test-incidents"
TOKEN = "s3cret-incidents"
FIXTURES = REPO / "tests" / "fixtures" / "pagerduty"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("incidents-home")
    home_with_champion(home, NAME)
    return home


def _config(home: Path, **kw: object) -> ServiceConfig:
    return ServiceConfig(store_dir=home / "store", model_name=NAME, refresh_seconds=3600.0, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def client(served: Path) -> Iterator[TestClient]:
    with TestClient(create_app(_config(served))) as c:
        yield c


@pytest.fixture(scope="module")
def truth() -> pd.DataFrame:
    sim = simulated()
    return sim.history.incidents.merge(sim.incident_truth, on="incident_id")


def _webhook(name: str = "webhook_v3_triggered.json") -> dict:
    return json.loads((FIXTURES / name).read_text())


def test_suspects_of_stored_incidents_find_the_true_cause(client: TestClient, truth: pd.DataFrame) -> None:
    caused = truth[truth["cause_kind"].isin(["deploy", "toggle"])]
    top1 = top3 = 0
    for row in caused.itertuples():
        r = client.post("/v1/incidents/suspects", json={"incident_id": row.incident_id, "top": 3})
        assert r.status_code == 200, r.text
        ids = [s["change_id"] for s in r.json()["suspects"]]
        top1 += bool(ids) and ids[0] == row.cause_id
        top3 += row.cause_id in ids
    assert len(caused) > 20
    assert top1 / len(caused) > 0.6 and top3 / len(caused) > 0.75


def test_an_answer_is_a_posterior_over_changes_strictly_before_plus_background(
    client: TestClient, truth: pd.DataFrame
) -> None:
    row = truth[truth["cause_kind"].eq("deploy")].iloc[5]
    body = client.post("/v1/incidents/suspects", json={"incident_id": row["incident_id"], "top": 50}).json()
    assert body["incident"]["incident_id"] == row["incident_id"]
    at = pd.Timestamp(body["incident"]["at"])
    shares = [s["share"] for s in body["suspects"]]
    assert len(shares) == body["candidates"] > 0
    assert sum(shares) + body["background_share"] == pytest.approx(1.0)
    assert shares == sorted(shares, reverse=True)
    for s in body["suspects"]:
        assert pd.Timestamp(s["at"]) < at <= pd.Timestamp(s["at"]) + pd.Timedelta(hours=72)
        why = s["why"]
        assert why["lag_minutes"] > 0 and 0 < why["prior_risk"] < 1 and "rolled_back" in why
        if s["change_kind"] == "deploy":
            assert why["prior_from"] == "champion" and why["risk_factors"] and s["who"]


def test_a_change_at_the_incident_time_is_not_a_candidate(client: TestClient) -> None:
    deploys = simulated().history.deploys
    d = deploys[deploys["environment"].eq("production") & deploys["status"].eq("success")].iloc[40]
    at = d["started_at"] if pd.notna(d["started_at"]) else d["created_at"]  # a deploy is a candidate from its start
    r = client.post("/v1/incidents/suspects", json={"service": d["service"], "at": at.isoformat(), "top": 50})
    assert r.status_code == 200, r.text
    assert d["deploy_id"] not in [s["change_id"] for s in r.json()["suspects"]]
    # still rolling out (started, not finished) when the incident opens: a suspect
    mid = at + (d["finished_at"] - at) / 2
    rolling = client.post("/v1/incidents/suspects", json={"service": d["service"], "at": mid.isoformat(), "top": 50})
    assert d["deploy_id"] in [s["change_id"] for s in rolling.json()["suspects"]]
    later = client.post(
        "/v1/incidents/suspects",
        json={"service": d["service"], "at": (at + pd.Timedelta(minutes=40)).isoformat(), "top": 50},
    ).json()
    assert d["deploy_id"] in [s["change_id"] for s in later["suspects"]]


def test_no_recent_change_when_the_service_was_quiet(client: TestClient) -> None:
    deploys = simulated().history.deploys
    service = deploys["service"].iloc[0]
    before = deploys["created_at"].min() - pd.Timedelta(days=1)
    body = client.post("/v1/incidents/suspects", json={"service": service, "at": before.isoformat()}).json()
    assert body["candidates"] == 0 and body["suspects"] == []
    assert body["top_answer"] == "no recent change" and body["background_share"] == 1.0


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"incident_id": "incidents:nope"}, 404, "incident_id"),
        ({"service": "no-such-svc"}, 404, "service"),
        ({"service": "reviews-svc", "at": "2999-01-01T00:00:00Z"}, 422, "at"),
        ({"service": "reviews-svc", "at": "2026-01-20T10:00:00"}, 422, "at"),  # no offset
        ({"service": "reviews-svc", "top": 0}, 422, "top"),
        ({"service": "reviews-svc", "environment": "moon"}, 422, "environment"),
        ({"service": "reviews-svc", "surprise": 1}, 422, "surprise"),
        ({}, 422, "body"),
        ({"service": "reviews-svc", "incident_id": "x"}, 422, "body"),
    ],
)
def test_bad_questions_get_a_4xx_naming_the_field(client: TestClient, body: dict, status: int, field: str) -> None:
    r = client.post("/v1/incidents/suspects", json=body)
    assert r.status_code == status, r.text
    assert any(field in map(str, e["loc"]) for e in r.json()["detail"])


def test_pagerduty_webhook_answers_with_the_suspects_and_stores_nothing(
    client: TestClient, served: Path, truth: pd.DataFrame
) -> None:
    row = truth[truth["cause_kind"].eq("deploy")].iloc[3]
    payload = _webhook()
    payload["event"]["data"]["service"]["summary"] = row["service"]
    payload["event"]["occurred_at"] = row["created_at"].isoformat()
    store = HistoryStore(served / "store")
    version = store.manifest().version
    r = client.post("/v1/webhooks/pagerduty", json=payload)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["incident"]["incident_id"] == "PFQZPSY" and body["incident"]["title"] == "Test Incident 3"
    assert body["incident"]["url"] == "https://pig208.pagerduty.com/incidents/PFQZPSY"
    same = client.post("/v1/incidents/suspects", json={"incident_id": row["incident_id"]}).json()
    assert [s["change_id"] for s in body["suspects"]] == [s["change_id"] for s in same["suspects"]]
    assert store.manifest().version == version
    assert "PFQZPSY" not in set(store.read("incidents")["incident_id"])


def test_pagerduty_webhook_recorded_payload_names_an_unknown_service(client: TestClient) -> None:
    r = client.post("/v1/webhooks/pagerduty", json=_webhook())  # service "pig208" is not in the store
    assert r.status_code == 404
    assert r.json()["detail"][0]["loc"] == ["body", "event", "data", "service", "summary"]


@pytest.mark.parametrize("name", ["webhook_v3_acknowledged.json", "webhook_v3_resolved.json"])
def test_pagerduty_webhook_refuses_other_event_types(client: TestClient, name: str) -> None:
    r = client.post("/v1/webhooks/pagerduty", json=_webhook(name))
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "event", "event_type"]


def _without(path: list[str]) -> dict:
    payload = copy.deepcopy(_webhook())
    node = payload
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return payload


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (_without(["event", "data", "service"]), "service"),
        (_without(["event", "occurred_at"]), "occurred_at"),
        (_without(["event"]), "event"),
        ({"event": {**_webhook()["event"], "occurred_at": "yesterday"}}, "occurred_at"),
        ({"event": {**_webhook()["event"], "occurred_at": "2999-01-01T00:00:00Z"}}, "occurred_at"),
        ([1, 2], "event"),
    ],
)
def test_pagerduty_webhook_malformed_bodies_get_422_naming_the_field(
    client: TestClient, payload: object, field: str
) -> None:
    r = client.post("/v1/webhooks/pagerduty", json=payload)
    assert r.status_code in (404, 422), r.text
    assert r.status_code == 422 or field == "service"
    assert any(field in map(str, e["loc"]) for e in r.json()["detail"])


def test_pagerduty_webhook_body_that_is_not_json_gets_422(client: TestClient) -> None:
    r = client.post("/v1/webhooks/pagerduty", content=b'{"event": ', headers={"content-type": "application/json"})
    assert r.status_code == 422


def test_incident_routes_need_the_same_token_as_score(served: Path, truth: pd.DataFrame) -> None:
    row = truth.iloc[3]
    payload = _webhook()
    payload["event"]["data"]["service"]["summary"] = row["service"]
    payload["event"]["occurred_at"] = row["created_at"].isoformat()
    with TestClient(create_app(_config(served, tokens=(TOKEN,)))) as c:
        for route, body in (
            ("/v1/incidents/suspects", {"incident_id": row["incident_id"]}),
            ("/v1/webhooks/pagerduty", payload),
        ):
            assert c.post(route, json=body).status_code == 401
            assert c.post(route, json=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
            ok = c.post(route, json=body, headers={"Authorization": f"Bearer {TOKEN}"})
            assert ok.status_code == 200, ok.text


def test_dependency_map_adds_the_services_it_depends_on(served: Path, tmp_path: Path, truth: pd.DataFrame) -> None:
    row = truth[truth["cause_kind"].eq("deploy")].iloc[3]
    deploys = simulated().history.deploys
    shipped = deploys[deploys["environment"].eq("production") & deploys["status"].eq("success")]
    before = shipped[shipped["service"].ne(row["service"]) & (shipped["created_at"] < row["created_at"])]
    other = before.sort_values("created_at")["service"].iloc[-1]  # another service that just deployed
    deps = tmp_path / "catalog-info.yaml"
    deps.write_text(
        "apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n  name: "
        f"{row['service']}\nspec:\n  dependsOn: ['component:default/{other}']\n"
    )
    with TestClient(create_app(_config(served, dependencies=deps))) as c:
        body = c.post("/v1/incidents/suspects", json={"incident_id": row["incident_id"], "top": 50}).json()
    assert body["dependencies"] == [other]
    scopes = {s["service"]: s["scope"] for s in body["suspects"]}
    assert scopes.get(row["service"]) == "own" and scopes.get(other) == "dependency"
    dep = [s for s in body["suspects"] if s["scope"] == "dependency"]
    assert all(s["why"]["scope_weight"] < 1 for s in dep)
