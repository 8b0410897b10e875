"""Feature-flag connectors on real payloads: LaunchDarkly, Unleash, Flagsmith."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from features.sources.launchdarkly import parse_resource
from features.sources.unleash import ACTIONS, OTHER_TYPES, SKIPPED_TYPES
from tests.features.sources.test_connectors_common import FIXTURES, by_id, run, ts, write
from tests.features.sources.test_connectors_deploys import assert_fields, jsonl, load

# --------------------------------------------------------------------------------------------
# LaunchDarkly


def test_launchdarkly_openapi_example_page_has_placeholder_values() -> None:
    """The OpenAPI example is generated: ``date: 0``, ``accesses: [{action: "action", resource: "resource"}]``.

    It proves the ``{"_links", "items"}`` page shape is read, that the flag comes from
    ``target.resources`` when the accesses name none, and that an unknown action ("action")
    becomes ``other`` and is counted. Its values are not realistic; the tests below are.
    """
    parsed, conformed = run("launchdarkly_auditlog", FIXTURES / "launchdarkly/auditlog.json")
    assert conformed.rejects.empty and len(conformed.valid) == 2
    assert parsed.other_counts == {"action": 2}
    assert_fields(
        conformed.valid.iloc[0].to_dict(),
        {
            "event_id": "1234a56b7c89d012345e678f",
            "flag_key": "example-flag",
            "project": "example-project",
            "environment": "production",
            "environment_raw": "production",
            "service": "example-project",
            "action": "other",
            "action_raw": "action",
            "occurred_at": ts("1970-01-01T00:00:00Z"),
            "actor": "ariel@acme.com",
            "comment": "This is an automated test",
            "new_enabled": None,
        },
    )


def test_launchdarkly_webhook_sample_is_an_environment_change_and_is_skipped() -> None:
    parsed, conformed = run("launchdarkly_auditlog", FIXTURES / "launchdarkly/webhook_payload.json")
    assert conformed.valid.empty and conformed.rejects.empty and parsed.rejects.empty
    assert parsed.other_counts == {"skipped:environment": 1} and parsed.records_read == 1


def audit_entry_from_context(ctx: dict[str, Any]) -> dict[str, Any]:
    """A REST audit-log entry (the auditlog/webhook shape) holding an integration-framework
    sample context's values: ``date`` from timestamp.milliseconds, ``accesses`` from verbKind
    and the project/environment/flag keys, as LaunchDarkly writes them."""
    project: dict[str, Any] = ctx["project"] if isinstance(ctx.get("project"), dict) else {}
    env: dict[str, Any] = project["environment"] if isinstance(project.get("environment"), dict) else {}
    kind = ctx["kind"]
    if kind == "flag":
        resource = f"proj/{project['key']}:env/{env['key']}:flag/{ctx['key']}"
    elif kind in ("segment", "environment"):
        resource = f"proj/{project['key']}:env/{env.get('key') or ctx['key']}" + (
            f":segment/{ctx['key']}" if kind == "segment" else ""
        )
    elif kind == "project":
        resource = f"proj/{ctx['key']}"
    else:
        resource = f"{kind}/{ctx.get('key') or ctx['_id']}"
    entry = {k: ctx[k] for k in ("_links", "_id", "_accountId", "kind", "name", "member", "titleVerb", "target")}
    entry.update(
        date=ctx["timestamp"]["milliseconds"],
        title=ctx["title"]["markdown"],
        accesses=[{"action": ctx["verbKind"], "resource": resource}],
    )
    for optional in ("comment", "tags"):
        if optional in ctx:
            entry[optional] = ctx[optional]
    return entry


@pytest.fixture
def realistic_entries() -> list[dict[str, Any]]:
    contexts = load("launchdarkly/integration_framework_sample_contexts.json")
    return [audit_entry_from_context(c) for c in contexts.values()]


def test_launchdarkly_realistic_entries(tmp_path: Path, realistic_entries: list[dict[str, Any]]) -> None:
    page = {"_links": {"self": {"href": "/api/v2/auditlog"}}, "items": realistic_entries}
    parsed, conformed = run("launchdarkly_auditlog", write(tmp_path, "auditlog.json", page))
    assert conformed.rejects.empty and parsed.records_read == 17
    assert parsed.other_counts == {
        "copyFlagConfigTo": 1,
        "updateTag": 1,
        "skipped:environment": 3,
        "skipped:member": 1,
        "skipped:metric": 1,
        "skipped:project": 3,
        "skipped:segment": 2,
        "skipped:webhook": 1,
    }
    rows = by_id(conformed.valid, "event_id")
    assert {r["action_raw"]: (r["flag_key"], r["action"], r["environment_raw"]) for r in rows.values()} == {
        "updateArchived": ("a-brand-new-flag", "archived", None),
        "copyFlagConfigTo": ("demo-flag", "other", "test"),
        "createFlag": ("a-brand-new-flag", "created", None),
        "updateRules": ("demo-flag", "targeting_changed", "production"),
        "updateOn": ("demo-flag", "enabled", "production"),
        "updateTag": ("demo-flag", "other", None),
    }
    assert_fields(
        rows["5e38bf6706121d8aaf15392a"],
        {
            "flag_key": "demo-flag",
            "project": "default",
            "environment": "production",
            "service": "default",
            "action": "enabled",
            "occurred_at": ts("2020-02-04T00:48:39.650Z"),
            "actor": "testing@launchdarkly.com",
            "new_enabled": True,
            "comment": "Do it live!",
            "url": "https://app.launchdarkly.com/default/production/features/demo-flag",
        },
    )


def test_launchdarkly_service_tag_prefix_and_action_precedence(
    tmp_path: Path, realistic_entries: list[dict[str, Any]]
) -> None:
    toggle = next(e for e in realistic_entries if e["_id"] == "5e38bf6706121d8aaf15392a")
    tagged = dict(toggle, _id="t1", tags=["team:x", "service:checkout"])
    combined = dict(
        toggle,
        _id="t2",
        accesses=[
            {"action": "updateFallthrough", "resource": "proj/default:env/production:flag/demo-flag"},
            {"action": "updateOff", "resource": "proj/default;mobile:env/production:flag/demo-flag"},
        ],
    )
    off = dict(toggle, _id="t3", accesses=[{"action": "updateOff", "resource": "proj/default:env/staging:flag/x"}])
    _, conformed = run(
        "launchdarkly_auditlog", write(tmp_path, "a.json", [tagged, combined, off]), service_from="flag_prefix"
    )
    rows = by_id(conformed.valid, "event_id")
    assert rows["t1"]["service"] == "checkout"
    assert (rows["t2"]["service"], rows["t2"]["action"], rows["t2"]["new_enabled"]) == ("demo", "disabled", False)
    assert (rows["t3"]["flag_key"], rows["t3"]["environment"]) == ("x", "staging")


def test_launchdarkly_missing_date_is_quarantined(tmp_path: Path, realistic_entries: list[dict[str, Any]]) -> None:
    toggle = next(e for e in realistic_entries if e["_id"] == "5e38bf6706121d8aaf15392a")
    _, conformed = run("launchdarkly_auditlog", write(tmp_path, "a.json", [{**toggle, "date": None}]))
    assert conformed.rejects[["record", "field", "reason"]].values.tolist() == [
        [1, "occurred_at", "required field is missing"]
    ]


def test_parse_resource() -> None:
    assert parse_resource("proj/p1;tag:env/prod:flag/f-1") == {"proj": "p1", "env": "prod", "flag": "f-1"}
    assert parse_resource("proj/alexis:env/test") == {"proj": "alexis", "env": "test"}
    assert parse_resource("resource") == {}


# --------------------------------------------------------------------------------------------
# Unleash


def test_unleash_events_response() -> None:
    parsed, conformed = run("unleash_events", FIXTURES / "unleash/events.json")
    assert conformed.rejects.empty
    assert parsed.other_counts == {"feature-metadata-updated": 1, "feature-tagged": 1}
    rows = by_id(conformed.valid, "event_id")
    assert [(k, r["action"]) for k, r in rows.items()] == [
        ("187", "other"),
        ("186", "other"),
        ("184", "enabled"),
        ("183", "targeting_changed"),
        ("182", "created"),
    ]
    assert_fields(
        rows["184"],
        {
            "flag_key": "HelloEvents!",
            "project": "default",
            "environment": "other",
            "environment_raw": "default",
            "service": "default",
            "action_raw": "feature-environment-enabled",
            "occurred_at": ts("2021-11-11T09:41:03.782Z"),
            "actor": "admin",
            "new_enabled": True,
        },
    )


def test_unleash_project_events_and_environment_map() -> None:
    _, conformed = run(
        "unleash_events", FIXTURES / "unleash/events_project_response.json", environment_map={"development": "testing"}
    )
    assert conformed.valid[["event_id", "action", "new_enabled", "environment", "flag_key"]].values.tolist() == [
        ["842", "enabled", True, "testing", "my-constrained-toggle"],
        ["841", "disabled", False, "testing", "my-constrained-toggle"],
    ]


def test_unleash_every_documented_event_type_is_mapped_explicitly() -> None:
    examples = load("unleash/event_type_examples.json")
    documented = {e["type"] for e in examples}
    assert documented <= set(ACTIONS) | OTHER_TYPES | SKIPPED_TYPES
    assert not (set(ACTIONS) & OTHER_TYPES or set(ACTIONS) & SKIPPED_TYPES or OTHER_TYPES & SKIPPED_TYPES)
    parsed, conformed = run("unleash_events", FIXTURES / "unleash/event_type_examples.json")
    assert conformed.rejects.empty
    produced = {r["action_raw"]: r["action"] for r in conformed.valid.to_dict("records")}
    assert produced == {
        "feature-created": "created",
        "feature-updated": "other",
        "feature-deleted": "deleted",
        "feature-archived": "archived",
        "feature-revived": "other",
        "feature-metadata-updated": "other",
        "feature-project-change": "other",
        "feature-import": "created",
        "feature-tagged": "other",
        "feature-untagged": "other",
        "feature-tag-import": "other",
        "feature-strategy-add": "targeting_changed",
        "feature-strategy-update": "rollout_changed",  # rollout 67 -> 32
        "feature-strategy-remove": "targeting_changed",
        "feature-stale-on": "other",
        "feature-stale-off": "other",
        "feature-environment-enabled": "enabled",
        "feature-environment-disabled": "disabled",
    }
    skipped = {k[len("skipped:") :] for k in parsed.other_counts if k.startswith("skipped:")}
    assert skipped == documented - set(produced)
    assert sum(parsed.other_counts[f"skipped:{t}"] for t in skipped) + len(conformed.valid) == len(examples)
    imported = conformed.valid[conformed.valid["action_raw"] == "feature-import"].iloc[0]
    assert (imported["flag_key"], imported["project"]) == ("feature", "default")


def test_unleash_unknown_types_and_missing_flag(tmp_path: Path) -> None:
    base = load("unleash/events_project_response.json")["events"][0]
    events = [
        dict(base, id=1, type="feature-sparkled"),
        dict(base, id=2, type="widget-created"),
        dict(base, id=3, featureName=None, type="feature-environment-enabled"),
        dict(base, id=4, tags=[{"type": "service", "value": "checkout"}]),
        dict(
            base,
            id=5,
            type="feature-strategy-update",
            data={"parameters": {"rollout": "50"}},
            preData={"parameters": {"rollout": "50"}, "constraints": []},
        ),
    ]
    parsed, conformed = run("unleash_events", jsonl(tmp_path, "e.jsonl", events))
    assert parsed.other_counts == {"feature-sparkled": 1, "skipped:widget-created": 1}
    rows = by_id(conformed.valid, "event_id")
    assert (rows["1"]["action"], rows["4"]["service"], rows["5"]["action"]) == (
        "other",
        "checkout",
        "targeting_changed",
    )
    assert conformed.rejects[["record", "field", "reason"]].values.tolist() == [
        [3, "flag_key", "required field is missing"]
    ]


# --------------------------------------------------------------------------------------------
# Flagsmith


def test_flagsmith_audit_record() -> None:
    parsed, conformed = run("flagsmith_audit", FIXTURES / "flagsmith/audit.json")
    assert conformed.rejects.empty and parsed.other_counts == {}
    assert_fields(
        conformed.valid.iloc[0].to_dict(),
        {
            "event_id": "audit:FEATURE:6:2020-02-23T17:30:57.006318Z",  # the documented record has no id
            "flag_key": "my_feature",
            "project": "Project name",
            "environment": None,
            "service": "Project name",
            "action": "created",
            "action_raw": "feature_created",
            "occurred_at": ts("2020-02-23T17:30:57.006318Z"),
            "actor": "user@domain.com",
            "comment": "New Flag / Remote Config created: my_feature",
        },
    )


def test_flagsmith_flag_updated_webhook() -> None:
    _, conformed = run("flagsmith_audit", FIXTURES / "flagsmith/environment_webhook_flag_updated.json")
    assert conformed.rejects.empty
    assert_fields(
        conformed.valid.iloc[0].to_dict(),
        {
            "event_id": "FLAG_UPDATED:7168:23:2021-06-18T07:50:26.595298Z",
            "flag_key": "butter_bar",
            "project": "Flagsmith Website",
            "environment": "development",
            "environment_raw": "Development",
            "action": "enabled",
            "action_raw": "FLAG_UPDATED",
            "occurred_at": ts("2021-06-18T07:50:26.595298Z"),
            "actor": "user@domain.com",
            "new_enabled": True,
        },
    )


def test_flagsmith_messages_webhook_variants_and_skips(tmp_path: Path) -> None:
    audit = load("flagsmith/audit.json")
    hook = load("flagsmith/environment_webhook_flag_updated.json")
    records = [
        dict(audit, id=101, log="Segment rules updated for flag: my_feature in environment: Production"),
        dict(audit, id=102, log="Flag / Remote Config Deleted: my_feature"),
        dict(audit, id=103, log="Flag state / Remote Config value updated for feature: my_feature"),
        dict(audit, id=104, log="New Segment created: beta users", related_object_type="SEGMENT"),
        {"event_type": "AUDIT_LOG_CREATED", "data": dict(audit, id=105, is_system_event=False)},
        dict(audit, id=106, created_date=None),
    ]
    disabled = json.loads(json.dumps(hook))
    disabled["data"]["new_state"]["enabled"] = False
    disabled["data"]["previous_state"]["enabled"] = False
    disabled["data"]["previous_state"]["multivariate_feature_state_values"] = []
    records.append(disabled)
    parsed, conformed = run("flagsmith_audit", jsonl(tmp_path, "a.jsonl", records))
    rows = by_id(conformed.valid, "event_id")
    assert {k: (r["action"], r["environment_raw"]) for k, r in rows.items()} == {
        "101": ("targeting_changed", "Production"),
        "102": ("deleted", None),
        "103": ("other", None),
        "105": ("created", None),
        "FLAG_UPDATED:7168:23:2021-06-18T07:50:26.595298Z": ("variants_changed", "Development"),
    }
    assert parsed.other_counts == {"feature_state_updated": 1, "skipped:SEGMENT": 1}
    assert conformed.rejects[["record", "field", "reason"]].values.tolist() == [
        [6, "occurred_at", "required field is missing"]
    ]
    assert pd.isna(rows["103"]["new_enabled"])
