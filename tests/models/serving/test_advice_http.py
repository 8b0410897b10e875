"""Advice over HTTP: ``advice: true`` on /v1/score adds the actions and leaves the score exactly as it was."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from models.scoring.advice import ACTIONS, AdviceConfig
from models.serving.app import ServiceConfig, create_app
from tests.helpers.scoring import home_with_champion

NAME = "incident-risk-test-advice"
#: Saturday night on the service's clock, right after the history: the morning is a real alternative.
DEPLOY = {
    "service": "reviews-svc",
    "author": "guido.turing",
    "lines_added": 900,
    "lines_deleted": 300,
    "files_changed": 30,
    "commit_count": 6,
    "touches_infra": True,
    "planned_at": "2026-02-07T23:30:00Z",
}
#: Every action, any drop reported: the test sees every kind the model finds lower.
EVERYTHING = AdviceConfig(actions=ACTIONS, min_drop=0.0, min_relative_drop=0.0, name_authors=True)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    home = tmp_path_factory.mktemp("advice-home")
    home_with_champion(home, NAME)
    config = ServiceConfig(store_dir=home / "store", model_name=NAME, refresh_seconds=3600.0, advice=EVERYTHING)
    with TestClient(create_app(config)) as c:
        yield c


def test_advice_true_adds_lower_risk_actions_and_keeps_the_score(client: TestClient) -> None:
    plain = client.post("/v1/score", json=DEPLOY)
    advised = client.post("/v1/score", json={**DEPLOY, "advice": True})
    assert plain.status_code == 200 and advised.status_code == 200, advised.text
    a, p = advised.json(), plain.json()
    assert "advice" not in p  # without the flag the response is as before
    assert a["probability"] == p["probability"] and a["factors"] == p["factors"] and a["features"] == p["features"]
    advice = a["advice"]
    assert advice, "a Saturday-night deploy of 1,200 lines has some lower-risk alternative"
    probs = [x["probability"] for x in advice]
    assert probs == sorted(probs) and all(x < a["probability"] for x in probs)
    assert all(abs(x["change"] - (x["probability"] - a["probability"])) < 1e-12 for x in advice)
    assert len({x["action"] for x in advice}) == len(advice)  # the best of each kind
    for x in advice:
        if x["action"] == "next_business_morning":
            assert x["ship_at"].startswith("2026-02-09T08:00:00")  # Monday 09:00 in Europe/Berlin
        if x["action"] == "split":
            assert x["parts"] in (2, 3, 4)


def test_advice_in_the_batch_route_and_the_default_material_set(client: TestClient) -> None:
    r = client.post("/v1/score/batch", json={"deploys": [{**DEPLOY, "advice": True}, DEPLOY]})
    assert r.status_code == 200
    first, second = r.json()["scores"]
    assert first["probability"] == second["probability"]
    assert isinstance(first["advice"], list) and second.get("advice") is None
    assert client.post("/v1/score", json={**DEPLOY, "advice": "yes"}).status_code == 422


def test_default_config_offers_only_the_confirmed_actions(tmp_path: Path) -> None:
    from models.scoring.advice import DEFAULT_ACTIONS

    assert ServiceConfig(store_dir=tmp_path).advice.actions == DEFAULT_ACTIONS
