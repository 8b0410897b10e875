"""Alerts: what a high-risk deploy's message says and where it goes, and the service sending it off
the request path (fake Slack on loopback): one message per deploy, latency kept when Slack is down."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from slack_sdk.models.blocks import Block

from features.history.store import HistoryStore
from models.notify.alerts import Alerts, Owner, alert_message, deploy_key, stacked_changes
from models.notify.blocks import check_message
from models.notify.config import AlertRule, Links, NotifyConfig, Routing, SlackConfig
from models.notify.sender import Message
from models.serving.app import ServiceConfig, create_app
from tests.helpers.scoring import home_with_champion, simulated
from tests.helpers.slack import TOKEN, closed_port_url, fake_slack

NAME = "incident-risk-test-alerts"
LINKS = Links("https://github.com/acme/{service}/deployments/{deploy_id}", "http://mlflow:5000")


class Recorder:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    def post(self, message: Message) -> None:
        self.messages.append(message)


@pytest.fixture(scope="module")
def history() -> Any:
    return simulated().history


def _payload(service: str, at: str, **kw: Any) -> dict[str, Any]:
    return {
        "deploy_id": "d-1",
        "service": service,
        "scored_for": at,
        "probability": 0.42,
        "band": "high",
        "factors": [{"feature": "lines_added", "value": 1200.0, "contribution": 0.8, "direction": "up"}],
        "features": {"squad": "(missing)", "tribe": "(missing)"},
        "model": {"name": "incident-risk", "version": "3", "run_id": "abc123"},
        "store_version": 7,
        **kw,
    }


def test_stacked_changes_are_the_services_recent_flips_and_open_incidents(history: Any) -> None:
    inc = history.incidents.dropna(subset=["service"]).iloc[len(history.incidents) // 2]
    at = inc["created_at"] + pd.Timedelta(minutes=1)
    stack = stacked_changes(history, inc["service"], at, pd.Timedelta(hours=24))
    assert inc["incident_id"] in set(stack.open_incidents["incident_id"])
    tog = history.toggle_events
    mine = tog[(tog["service"] == inc["service"]) & (tog["occurred_at"] < at)]
    mine = mine[(mine["occurred_at"] >= at - pd.Timedelta(hours=24)) & mine["action"].isin(["enabled", "disabled",
                "targeting_changed", "rollout_changed", "variants_changed"])]  # fmt: skip
    assert set(stack.flips["flag_key"]) == set(mine["flag_key"])
    assert (stack.flips["occurred_at"] < at).all()


def test_message_names_service_author_probability_factors_stack_and_links(history: Any) -> None:
    inc = history.incidents.dropna(subset=["service"]).iloc[0]
    at = inc["created_at"] + pd.Timedelta(minutes=1)
    stack = stacked_changes(history, inc["service"], at, pd.Timedelta(hours=24))
    payload = _payload(inc["service"], at.isoformat())
    msg = alert_message(payload, "ada.lovelace", Owner("pay-falcon", "pay", "#squad-pay-falcon"), stack, LINKS)
    assert msg.channel == "#squad-pay-falcon"
    assert check_message(msg.as_dict()) == []
    for block in msg.blocks:  # slack_sdk's own models accept and re-serialise every block
        assert Block.parse(block).to_dict()["type"] == block["type"]
    text = str(msg.blocks)
    assert inc["service"] in msg.text and "ada.lovelace" in text and "42%" in text and "high" in text
    assert "lines_added" in text and "pay-falcon / pay" in text
    assert "incident" in text and "open since" in text
    urls = [e["url"] for b in msg.blocks if b["type"] == "actions" for e in b["elements"]]
    assert urls == [
        f"https://github.com/acme/{inc['service']}/deployments/d-1",
        "http://mlflow:5000/#/runs/abc123",
    ]


def test_the_alert_carries_the_advice_computed_off_the_request_path(history: Any) -> None:
    """Advice is built by the sender thread when the alert is (never for scores that do not alert)."""
    asked: list[str] = []
    advice = [{"action": "next_business_morning", "detail": "ship at the next business morning",
               "probability": 0.21, "change": -0.21}]  # fmt: skip

    def advise() -> list[dict[str, Any]]:
        asked.append("advice")
        return advice

    recorder = Recorder()
    alerts = Alerts(NotifyConfig(), poster=recorder)
    at = history.deploys["created_at"].max().isoformat()
    service = str(history.deploys["service"].iloc[0])
    assert not alerts.offer(history, _payload(service, at, band="low", probability=0.01), "ada", None, advise)
    assert alerts.offer(history, _payload(service, at), "ada", None, advise)
    assert alerts.flush() and asked == ["advice"]
    (msg,) = recorder.messages
    text = str(msg.blocks)
    assert "Safer ways to ship" in text and "ship at the next business morning: 21% (-21%)" in text
    assert check_message(msg.as_dict()) == []
    alerts.close()


def test_hostile_text_stays_within_block_kit_limits() -> None:
    many = [{"feature": f"f<{i}>|&", "value": "x" * 400, "contribution": 0.1, "direction": "up"} for i in range(40)]
    payload = _payload("s" * 300, "2026-02-01T00:00:00+00:00", factors=many, deploy_id="<script>|x")
    empty = pd.DataFrame(columns=["flag_key", "action", "occurred_at", "actor"])
    stack_inc = pd.DataFrame(
        {
            "incident_id": ["i"],
            "title": ["<b>|boom"],
            "severity": [None],
            "created_at": [pd.Timestamp("2026-01-01", tz="UTC")],
            "url": ["javascript:alert(1)"],
        }  # fmt: skip
    )
    from models.notify.alerts import Stack

    msg = alert_message(payload, None, Owner(None, None, "#deploy-risk"), Stack(empty, stack_inc), Links())
    assert check_message(msg.as_dict()) == []


def test_rule_dedup_key_and_routing(history: Any) -> None:
    assert AlertRule().fires("high", 0.1) and not AlertRule().fires("medium", 0.9)
    assert AlertRule(("high",), 0.3).fires("medium", 0.35)
    assert deploy_key({"deploy_id": "x", "service": "s"}, "abc") == "id:x"
    assert deploy_key({"deploy_id": None, "service": "s"}, "abc") == "sha:s:abc"
    catalog_service = history.catalog[history.catalog["kind"] == "component"].iloc[0]
    routing = Routing("#deploy-risk", {str(catalog_service["owner"]): "C0123ABC"})
    alerts = Alerts(NotifyConfig(routing=routing), poster=Recorder())
    owned = alerts.owner(history, {"service": catalog_service["name"], "features": {}})
    assert owned.squad == catalog_service["owner"] and owned.channel == "C0123ABC"  # the file's mapping wins
    plain = Alerts(NotifyConfig(), poster=Recorder())
    assert plain.owner(history, {"service": catalog_service["name"]}).channel == f"#squad-{catalog_service['owner']}"
    unknown = plain.owner(history, {"service": "nobody-owns", "features": {"squad": "(missing)"}})
    assert unknown == Owner(None, None, "#deploy-risk")


# --------------------------------------------------------------------------------------------
# In the service


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("alerts-home")
    home_with_champion(home, NAME)
    return home


def _client(home: Path, base_url: str, **rule: Any) -> TestClient:
    notify = NotifyConfig(
        slack=SlackConfig(token=TOKEN, base_url=base_url, timeout_seconds=1, max_retries=1),
        rule=AlertRule(**rule) if rule else AlertRule(("low", "medium", "high")),
        links=LINKS,
    )
    config = ServiceConfig(store_dir=home / "store", model_name=NAME, refresh_seconds=3600.0)
    return TestClient(create_app(config, notify=notify))


def _deploy(i: int, service: str = "reviews-svc") -> dict[str, Any]:
    return {"service": service, "author": "guido.turing", "lines_added": 100 + i, "deploy_id": f"dep-{i}",
            "planned_at": "2026-02-04T10:00:00Z"}  # fmt: skip


def _metric(client: TestClient, outcome: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(f'incident_risk_alerts_total{{outcome="{outcome}"}}'):
            return float(line.split()[-1])
    raise AssertionError(f"no alerts metric for {outcome}")


def test_the_service_alerts_the_owning_squad_once_per_deploy(served: Path) -> None:
    with fake_slack() as slack, _client(served, slack.api_url) as client:
        for _ in range(3):
            assert client.post("/v1/score", json=_deploy(1)).status_code == 200
        assert client.post("/v1/score/batch", json={"deploys": [_deploy(1), _deploy(2)]}).status_code == 200
        assert slack.wait_for(2)
        time.sleep(0.3)
        assert len(slack.messages) == 2 and slack.problems == []
        deploys = HistoryStore(served / "store").read_history().deploys
        squad = deploys.loc[deploys["service"] == "reviews-svc", "squad"].iloc[-1]
        assert {m["channel"] for m in slack.messages} == {f"#squad-{squad}"}
        assert _metric(client, "sent") == 2 and _metric(client, "duplicate") == 3


def test_below_the_rule_nothing_is_sent(served: Path) -> None:
    with fake_slack() as slack, _client(served, slack.api_url, bands=(), min_probability=0.999) as client:
        assert client.post("/v1/score", json=_deploy(3)).status_code == 200
        time.sleep(0.3)
        assert slack.requests == 0


def _p50_ms(client: TestClient, n: int, offset: int) -> float:
    times = []
    for i in range(n):
        started = time.perf_counter()
        assert client.post("/v1/score", json=_deploy(offset + i)).status_code == 200
        times.append(time.perf_counter() - started)
    return 1000 * sorted(times)[n // 2]


@pytest.mark.parametrize("script", [[("sleep", 3.0)] * 50, [(429, {"Retry-After": "2"})] * 50, [(500, {})] * 50])
def test_a_slow_rate_limited_or_failing_slack_never_slows_scoring(served: Path, script: list[Any]) -> None:
    with fake_slack(script) as slack, _client(served, slack.api_url) as client:
        _p50_ms(client, 5, 100)  # warm
        p50 = _p50_ms(client, 20, 200)
        assert p50 < 100, p50  # the scoring path pays a queue put, not Slack's seconds
        assert slack.problems == []


def test_a_slack_that_is_down_is_counted_not_felt(served: Path) -> None:
    with _client(served, closed_port_url() + "/api/") as client:
        started = time.perf_counter()
        for i in range(5):
            assert client.post("/v1/score", json=_deploy(300 + i)).status_code == 200
        assert time.perf_counter() - started < 2.0
        deadline = time.monotonic() + 10
        while _metric(client, "failed") < 5 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _metric(client, "failed") == 5 and _metric(client, "sent") == 0
