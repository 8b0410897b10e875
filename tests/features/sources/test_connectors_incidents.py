"""Incident connectors on real payloads: PagerDuty, Opsgenie, Jira, DevLake webhook issues."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from features.sources.jira import compile_filter
from tests.features.sources.test_connectors_common import FIXTURES, by_id, run, ts, write
from tests.features.sources.test_connectors_deploys import assert_fields, jsonl, load

# --------------------------------------------------------------------------------------------
# PagerDuty


def test_pagerduty_rest_incidents() -> None:
    parsed, conformed = run("pagerduty_incidents", FIXTURES / "pagerduty/incidents.json")
    assert conformed.rejects.empty and parsed.other_counts == {}
    rows = by_id(conformed.valid, "incident_id")
    assert_fields(
        rows["Q3YON8WNWTZMRQ"],
        {
            "title": "Crash reported",
            "service": "DevService",
            "severity": "sev2",
            "priority": None,
            "urgency": "high",
            "status": "open",
            "status_raw": "triggered",
            "created_at": ts("2022-11-03T06:23:06Z"),
            "acknowledged_at": ts("2022-11-03T06:23:07Z"),  # first acknowledge_log_entry; re-triggered since
            "resolved_at": None,
            "url": "https://keon-test.pagerduty.com/incidents/Q3YON8WNWTZMRQ",
            "caused_by_commit_sha": None,
            "not_change_related": None,
        },
    )
    assert_fields(rows["Q3CZAU7Q4008QD"], {"status": "acknowledged", "acknowledged_at": ts("2022-11-03T06:44:37Z")})
    # resolved with no resolved_at field: last_status_change_at is when it was resolved
    assert_fields(
        rows["Q1OHFWFP3GPXOG"],
        {"status": "resolved", "severity": "sev4", "urgency": "low", "resolved_at": ts("2022-11-03T06:51:44Z")},
    )


def test_pagerduty_priority_causes_and_marker(tmp_path: Path) -> None:
    inc = load("pagerduty/incidents.json")[2]
    inc.update(
        priority={"id": "P1X", "summary": "P1", "type": "priority"},
        title="Checkout down - root cause: 0916A0AFDFA825779C892A8951BDE706A054D352",
        custom_fields=[
            {"name": "change_related", "value": "no"},
            {"name": "caused_by_flag_key", "value": "new-checkout"},
        ],
    )
    other = dict(
        load("pagerduty/incidents.json")[0],
        id="Q2",
        status="snoozed",
        priority={"summary": "Urgent"},
        custom_fields=[{"name": "not_change", "value": True}],
    )
    page = {"incidents": [inc, other], "more": False}
    parsed, conformed = run(
        "pagerduty_incidents",
        write(tmp_path, "p.json", page),
        not_change_related_field="custom_fields.not_change",
        priority_map={"urgent": "sev1"},
    )
    rows = by_id(conformed.valid, "incident_id")
    assert_fields(
        rows["Q1OHFWFP3GPXOG"],
        {
            "severity": "sev1",
            "priority": "P1",
            "caused_by_commit_sha": "0916a0afdfa825779c892a8951bde706a054d352",
            "caused_by_flag_key": "new-checkout",
            "not_change_related": False,
        },
    )
    assert_fields(
        rows["Q2"], {"severity": "sev1", "status": "open", "status_raw": "snoozed", "not_change_related": True}
    )
    assert parsed.other_counts == {"snoozed": 1}


def test_pagerduty_v3_webhooks_fold_per_incident(tmp_path: Path) -> None:
    """The three Zulip v3 fixtures are different incidents; a full lifecycle of one incident is
    built from them by giving the acknowledged/resolved deliveries the triggered incident's id."""
    triggered = load("pagerduty/webhook_v3_triggered.json")
    acked = load("pagerduty/webhook_v3_acknowledged.json")
    resolved = load("pagerduty/webhook_v3_resolved.json")
    for hook, at in ((acked, "2021-06-04T13:40:00.000Z"), (resolved, "2021-06-04T14:00:00.000Z")):
        hook["event"]["data"].update(
            id="PFQZPSY",
            number=9,
            title="Test Incident 3",
            html_url="https://pig208.pagerduty.com/incidents/PFQZPSY",
            self="https://api.pagerduty.com/incidents/PFQZPSY",
        )
        hook["event"]["occurred_at"] = at
    note = {
        "event": {
            "id": "N1",
            "event_type": "incident.annotated",
            "resource_type": "incident",
            "occurred_at": "2021-06-04T13:50:00.000Z",
            "data": {
                "incident": {"id": "PFQZPSY", "type": "incident_reference"},
                "content": "Root cause: deadbeefcafe",
                "type": "incident_note",
            },
        }
    }
    service_event = {
        "event": {
            "id": "S1",
            "event_type": "service.updated",
            "resource_type": "service",
            "occurred_at": "2021-06-04T13:50:00.000Z",
            "data": {"id": "PA2P440"},
        }
    }
    path = jsonl(tmp_path, "hooks.jsonl", [resolved, note, triggered, acked, service_event])
    parsed, conformed = run("pagerduty_incidents", path)
    assert conformed.rejects.empty and parsed.rejects.empty and len(conformed.valid) == 1
    assert parsed.other_counts == {"skipped:service.updated": 1}
    assert_fields(
        conformed.valid.iloc[0].to_dict(),
        {
            "incident_id": "PFQZPSY",
            "title": "Test Incident 3",
            "service": "pig208",
            "severity": "sev2",
            "status": "resolved",
            "status_raw": "resolved",
            "created_at": ts("2021-06-04T13:35:29.781Z"),
            "acknowledged_at": ts("2021-06-04T13:40:00Z"),
            "resolved_at": ts("2021-06-04T14:00:00Z"),
            "caused_by_commit_sha": "deadbeefcafe",
            "url": "https://pig208.pagerduty.com/incidents/PFQZPSY",
        },
    )
    assert len(json.loads(conformed.valid.iloc[0]["raw"])) == 4


def test_pagerduty_webhook_without_its_trigger_is_quarantined_with_a_reason() -> None:
    parsed, conformed = run("pagerduty_incidents", FIXTURES / "pagerduty/webhook_v3_resolved.json")
    assert conformed.valid.empty
    assert parsed.rejects[["record", "field", "value"]].values.tolist() == [[1, "created_at", "PCPZE64"]]
    assert "include its incident.triggered delivery" in parsed.rejects["reason"].iloc[0]


def test_pagerduty_missing_id_is_quarantined(tmp_path: Path) -> None:
    inc = load("pagerduty/incidents.json")[0]
    _, conformed = run("pagerduty_incidents", write(tmp_path, "p.json", [dict(inc, id=None)]))
    assert conformed.rejects[["record", "field", "reason"]].values.tolist() == [
        [1, "incident_id", "required field is missing"]
    ]


# --------------------------------------------------------------------------------------------
# Opsgenie


def test_opsgenie_incidents() -> None:
    parsed, conformed = run("opsgenie_incidents", FIXTURES / "opsgenie/incidents.json")
    assert conformed.rejects.empty and parsed.other_counts == {}
    rows = by_id(conformed.valid, "incident_id")
    assert_fields(
        rows["3a74524a-f492-4172-b3f5-6041c7cb404a"],
        {
            "title": "Incident#1",
            "service": "695bce3d-4621-4630-8ae1-24eb89c22d6e",
            "severity": "sev3",
            "priority": "P3",
            "status": "open",
            "status_raw": "open",
            "created_at": ts("2023-09-06T14:30:56.346Z"),
            "resolved_at": None,
            "updated_at": ts("2023-09-06T14:30:57.035Z"),
            "url": "https://sandesvitor.app.opsgenie.com/incident/detail/3a74524a-f492-4172-b3f5-6041c7cb404a",
        },
    )
    assert_fields(
        rows["3f84e009-7548-4e7d-832a-fa82c1ceb6b1"],
        {"severity": "sev5", "status": "resolved", "resolved_at": ts("2023-09-05T18:21:21.49Z")},
    )


def test_opsgenie_causes_tags_and_unknown_status(tmp_path: Path) -> None:
    base = load("opsgenie/incidents.json")
    first = dict(
        base[0],
        description="Rollback. Root cause: 74962aec9820",
        tags=["no-change"],
        extraProperties={"caused_by_deploy_id": "1540117"},
        ownerTeam="payments",
    )
    second = dict(base[1], status="closed", impactEndDate=None, updatedAt="2023-09-05T19:00:00Z")
    third = dict(base[1], id="x3", status="muted")
    page = {"data": [first, second, third], "took": 0.1, "requestId": "r"}
    parsed, conformed = run(
        "opsgenie_incidents",
        write(tmp_path, "o.json", page),
        not_change_related_label="No-Change",
        service_field="owner_team",
    )
    rows = by_id(conformed.valid, "incident_id")
    assert_fields(
        rows["3a74524a-f492-4172-b3f5-6041c7cb404a"],
        {
            "service": "payments",
            "caused_by_commit_sha": "74962aec9820",
            "caused_by_deploy_id": "1540117",
            "not_change_related": True,
        },
    )
    assert_fields(
        rows["3f84e009-7548-4e7d-832a-fa82c1ceb6b1"],
        {
            "status": "resolved",
            "status_raw": "closed",
            "resolved_at": ts("2023-09-05T19:00:00Z"),
            "not_change_related": False,
        },
    )
    assert_fields(rows["x3"], {"status": "resolved", "status_raw": "muted"})
    assert parsed.other_counts == {"muted": 1}


# --------------------------------------------------------------------------------------------
# Jira (the fixture's issue types are Chinese-localised: 故事 story, 任务 task)


def test_jira_selection_by_localised_issue_type() -> None:
    parsed, conformed = run("jira_incidents", FIXTURES / "jira/issues.json", issue_types=["故事"])
    assert conformed.rejects.empty
    assert list(conformed.valid["incident_id"]) == ["EE-1", "EE-2", "EE-3", "EE-4", "EE-6"]
    assert parsed.other_counts == {"skipped:任务": 3}
    rows = by_id(conformed.valid, "incident_id")
    assert_fields(
        rows["EE-2"],
        {
            "title": "\u200b问题堆叠分布排序图",
            "service": None,
            "severity": "sev3",
            "priority": "Medium",
            "status": "resolved",
            "status_raw": "已完成",
            "created_at": ts("2020-06-12T08:15:36.123+0800"),
            "resolved_at": ts("2020-06-23T18:20:58.999+0800"),
            "url": "https://merico.atlassian.net/browse/EE-2",
        },
    )
    # EE-1's status category is "new" although it carries a resolutiondate (reopened): open, no resolution
    assert_fields(rows["EE-1"], {"status": "open", "resolved_at": None})


def test_jira_default_selects_incident_type_only() -> None:
    parsed, conformed = run("jira_incidents", FIXTURES / "jira/issues.json")
    assert conformed.valid.empty and parsed.other_counts == {"skipped:任务": 3, "skipped:故事": 5}


@pytest.mark.parametrize(
    ("jql", "keys"),
    [
        (
            "issuetype in (故事, 任务) AND labels = frontEnd",
            ["EE-1", "EE-2", "EE-3", "EE-4", "EE-5", "EE-6", "EE-8", "EE-9"],
        ),
        ("type = 任务", ["EE-5", "EE-8", "EE-9"]),
        ('issuetype = "故事" AND statusCategory = new', ["EE-1"]),
        ("issuetype = 任务 OR key = EE-1", ["EE-1", "EE-5", "EE-8", "EE-9"]),
        ("labels = production", []),
        ("NOT (issuetype = 故事) AND labels not in (mobile)", ["EE-5", "EE-8", "EE-9"]),
        ("components is EMPTY AND summary ~ backend", ["EE-9"]),
        ("priority != Medium", []),
    ],
)
def test_jira_filter_language(jql: str, keys: list[str]) -> None:
    _, conformed = run("jira_incidents", FIXTURES / "jira/issues.json", filter=jql)
    assert list(conformed.valid["incident_id"]) == keys


@pytest.mark.parametrize("bad", ["labels in (a", "labels", "labels = ", "(type = x", "type = x AND", "type ~~ x"])
def test_jira_filter_errors(bad: str) -> None:
    with pytest.raises(ValueError, match="filter: "):
        compile_filter(bad)


def test_jira_service_severity_cause_marker_and_webhook(tmp_path: Path) -> None:
    issue = load("jira/issues.json")[1]
    fields = issue["fields"]
    fields["issuetype"]["name"] = "Incident"
    fields["labels"] = ["service:checkout", "not-a-change"]
    fields["priority"]["name"] = "Highest"
    fields["description"] = {
        "type": "doc",
        "content": [
            {
                "type": "paragraph",
                "content": [{"type": "text", "text": "Root cause: 3f8aa35aa5d792e9890c804ba629c065f8609c7a"}],
            }
        ],
    }
    fields["customfield_10040"] = {"value": "Sev 2"}
    webhook = {"webhookEvent": "jira:issue_updated", "timestamp": 1, "issue": issue}
    unknown = json.loads(json.dumps(issue))
    unknown["key"] = "EE-99"
    unknown["fields"]["status"]["statusCategory"]["key"] = "undefined"
    _, conformed = run(
        "jira_incidents",
        jsonl(tmp_path, "j.jsonl", [webhook, unknown]),
        service_field="label:service:",
        not_change_related_label="not-a-change",
    )
    rows = by_id(conformed.valid, "incident_id")
    assert_fields(
        rows["EE-2"],
        {
            "service": "checkout",
            "severity": "sev1",
            "priority": "Highest",
            "not_change_related": True,
            "caused_by_commit_sha": "3f8aa35aa5d792e9890c804ba629c065f8609c7a",
        },
    )
    assert_fields(rows["EE-99"], {"status": "resolved"})  # unknown category, has a resolutiondate
    _, custom = run(
        "jira_incidents",
        jsonl(tmp_path, "j.jsonl", [webhook]),
        severity_field="fields.customfield_10040",
        service_field="project",
    )
    assert_fields(custom.valid.iloc[0].to_dict(), {"severity": "sev2", "service": "EE"})


def test_jira_missing_created_is_quarantined(tmp_path: Path) -> None:
    issue = load("jira/issues.json")[0]
    issue["fields"]["created"] = "yesterday"
    _, conformed = run(
        "jira_incidents", write(tmp_path, "j.json", {"issues": [issue], "total": 1}), issue_types=["故事"]
    )
    assert conformed.rejects[["record", "field", "reason", "value"]].values.tolist() == [
        [1, "created_at", "not an ISO 8601 timestamp", "yesterday"]
    ]


# --------------------------------------------------------------------------------------------
# DevLake webhook issues


def test_devlake_issue_body(tmp_path: Path) -> None:
    parsed, conformed = run("devlake_webhook", FIXTURES / "devlake_webhook/incident_payload.json", table="incidents")
    assert conformed.rejects.empty and parsed.table == "incidents"
    assert_fields(
        conformed.valid.iloc[0].to_dict(),
        {
            "incident_id": "DLK-1234",
            "title": "a feature from DLK",
            "status": "open",
            "status_raw": "TODO",
            "created_at": ts("2020-01-01T12:00:00+00:00"),
            "severity": None,
            "url": None,
        },
    )
    body = load("devlake_webhook/incident_payload.json")
    bug = dict(body, issue_key="DLK-2", type="BUG")
    done = dict(
        body,
        issue_key="DLK-3",
        status="DONE",
        resolution_date="2020-01-02T12:00:00+00:00",
        severity="P2",
        component="api",
        description="root cause: abcdef0",
    )
    parsed, conformed = run("devlake_webhook", jsonl(tmp_path, "i.jsonl", [bug, done]), table="incidents")
    assert parsed.other_counts == {"skipped:BUG": 1}
    assert_fields(
        conformed.valid.iloc[0].to_dict(),
        {
            "status": "resolved",
            "resolved_at": ts("2020-01-02T12:00:00+00:00"),
            "severity": "sev2",
            "service": "api",
            "caused_by_commit_sha": "abcdef0",
        },
    )
    assert pd.isna(conformed.valid.iloc[0]["acknowledged_at"])
