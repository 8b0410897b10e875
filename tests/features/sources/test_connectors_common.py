"""Vendor connectors: what every kind must do, and the shared normalisation (features/sources/normalize.py).

The helpers here (``run``, ``write``) are imported by the per-table connector tests.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from features.history.schema import Conformed, conform, table_spec
from features.sources.base import ParsedFile, SourceError
from features.sources.config import load_sources_config
from features.sources.kinds import source_kinds
from features.sources.normalize import (
    compare_stats,
    environment,
    explicit_causes,
    root_cause_sha,
    severity,
    touches_infra,
)
from features.sources.records import repo_from_url
from tests.helpers.paths import FIXTURES

VENDOR_KINDS = sorted(k for k in source_kinds() if k != "generic")


def run(kind: str, path: Path, **options: Any) -> tuple[ParsedFile, Conformed]:
    """Parse a file with a kind, then conform it as ingest would (source set, timestamps passed)."""
    k = source_kinds()[kind]
    parsed = k.parse(path, path.name, k.options.model_validate(options))
    frame = parsed.frame.assign(source="src")
    conformed = conform(table_spec(parsed.table), frame, source="src", file=path.name, timestamps=parsed.timestamps)
    return parsed, conformed


def write(tmp_path: Path, name: str, payload: Any) -> Path:
    path = tmp_path / name
    path.write_text(payload if isinstance(payload, str) else json.dumps(payload), encoding="utf-8")
    return path


def ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(text).tz_convert("UTC")


def by_id(frame: pd.DataFrame, key: str) -> dict[str, dict[Any, Any]]:
    return {str(r[key]): r for r in frame.to_dict("records")}


# --------------------------------------------------------------------------------------------
# Every fixture is accepted by exactly its own kind; every other kind refuses it clearly.

#: fixture -> (kind, options that read it, canonical rows it yields). The LaunchDarkly webhook
#: sample is an environment change (skipped); the PagerDuty acknowledged/resolved webhooks lack
#: the incident's creation time on their own (quarantined: see test_connectors_incidents).
OWNER: dict[str, tuple[str, dict[str, Any], int]] = {
    "bamboo/deploy_builds.json": ("bamboo_deploys", {"environment": "Production"}, 14),
    "bitbucket/deployments.json": ("bitbucket_deployments", {}, 27),
    "devlake_webhook/deployment_payloads.json": ("devlake_webhook", {}, 3),
    "devlake_webhook/incident_payload.json": ("devlake_webhook", {"table": "incidents"}, 1),
    "flagsmith/audit.json": ("flagsmith_audit", {}, 1),
    "flagsmith/environment_webhook_flag_updated.json": ("flagsmith_audit", {}, 1),
    "github/deployment_status_webhook.json": ("github_deployments", {}, 1),
    "github/deployment_webhook.json": ("github_deployments", {}, 1),
    "github/deployments_graphql.json": ("github_deployments", {}, 7),
    "gitlab/deployments.json": ("gitlab_deployments", {}, 8),
    "jira/issues.json": ("jira_incidents", {"issue_types": ["故事"]}, 5),
    "launchdarkly/auditlog.json": ("launchdarkly_auditlog", {}, 2),
    "launchdarkly/webhook_payload.json": ("launchdarkly_auditlog", {}, 0),
    "opsgenie/incidents.json": ("opsgenie_incidents", {}, 2),
    "pagerduty/incidents.json": ("pagerduty_incidents", {}, 3),
    "pagerduty/webhook_v3_acknowledged.json": ("pagerduty_incidents", {}, 0),
    "pagerduty/webhook_v3_resolved.json": ("pagerduty_incidents", {}, 0),
    "pagerduty/webhook_v3_triggered.json": ("pagerduty_incidents", {}, 1),
    "unleash/event_type_examples.json": ("unleash_events", {}, 19),
    "unleash/events.json": ("unleash_events", {}, 5),
    "unleash/events_project_response.json": ("unleash_events", {}, 2),
}


def test_every_vendor_kind_is_registered_with_a_description() -> None:
    kinds = source_kinds()
    assert set(VENDOR_KINDS) == {
        "github_deployments",
        "gitlab_deployments",
        "bitbucket_deployments",
        "bamboo_deploys",
        "devlake_webhook",
        "launchdarkly_auditlog",
        "unleash_events",
        "flagsmith_audit",
        "pagerduty_incidents",
        "opsgenie_incidents",
        "jira_incidents",
        "backstage_catalog",
    }
    for name in VENDOR_KINDS:
        assert kinds[name].name == name
        assert 20 < len(kinds[name].description) <= 120 and "\n" not in kinds[name].description


@pytest.mark.parametrize("fixture", sorted(OWNER))
def test_fixture_is_read_by_its_kind_and_refused_by_every_other(fixture: str) -> None:
    path = FIXTURES / fixture
    own_kind, own_options, rows = OWNER[fixture]
    parsed, conformed = run(own_kind, path, **own_options)
    assert len(parsed.frame) == rows
    assert conformed.rejects.empty and len(conformed.valid) == len(parsed.frame)
    for name in VENDOR_KINDS:
        variants: list[dict[str, Any]] = [{}, {"table": "incidents"}] if name == "devlake_webhook" else [{}]
        for options in variants:
            if name == own_kind and options.get("table") == own_options.get("table"):
                continue
            kind = source_kinds()[name]
            with pytest.raises(SourceError) as err:
                kind.parse(path, fixture, kind.options.model_validate(options))
            message = str(err.value)
            assert message.startswith(f"{fixture}: does not look like a {name} export: expected ")
            assert "first record has keys" in message


@pytest.mark.parametrize("kind", VENDOR_KINDS)
def test_truncated_json_is_a_source_error_naming_the_file(kind: str, tmp_path: Path) -> None:
    path = write(tmp_path, "export.json", '{"items": [{"id": 1, "status": "ok"}, {"id": 2,')
    k = source_kinds()[kind]
    with pytest.raises(SourceError, match=r"^export\.json: line 1: invalid or truncated JSON"):
        k.parse(path, "export.json", k.options.model_validate({}))


@pytest.mark.parametrize("kind", VENDOR_KINDS)
def test_truncated_json_lines_name_the_line(kind: str, tmp_path: Path) -> None:
    path = write(tmp_path, "export.jsonl", '{"a": 1}\n{"b": 2\n')
    k = source_kinds()[kind]
    with pytest.raises(SourceError, match=r"^export\.jsonl: line 2: invalid JSON"):
        k.parse(path, "export.jsonl", k.options.model_validate({}))


def test_records_that_are_not_objects_are_rejected_by_the_kind(tmp_path: Path) -> None:
    good = json.loads((FIXTURES / "opsgenie/incidents.json").read_text())[0]
    path = write(tmp_path, "mixed.json", [good, 42, "text"])
    parsed, conformed = run("opsgenie_incidents", path)
    assert len(conformed.valid) == 1 and conformed.rejects.empty
    assert parsed.rejects[["record", "field", "reason", "value"]].values.tolist() == [
        [2, "record", "not a JSON object", "42"],
        [3, "record", "not a JSON object", "text"],
    ]
    assert parsed.records_read == 3


def test_sources_yaml_validates_kind_options(tmp_path: Path) -> None:
    write(tmp_path, "pd.json", {"incidents": []})
    cfg = tmp_path / "sources.yaml"
    cfg.write_text(
        "sources:\n"
        "  - name: pd\n    kind: pagerduty_incidents\n    path: pd.json\n    service_field: team\n"
        "    priority_map: {Urgent: sev1}\n"
        "  - name: lake\n    kind: devlake_webhook\n    path: pd.json\n    table: incidents\n",
        encoding="utf-8",
    )
    loaded = load_sources_config(cfg, source_kinds())
    assert [s.table for s in loaded.sources] == ["incidents", "incidents"]
    assert loaded.sources[0].options.service_field == "team"  # type: ignore[attr-defined]
    cfg.write_text(
        "sources:\n  - name: j\n    kind: jira_incidents\n    path: pd.json\n    issue_type: [Bug]\n", encoding="utf-8"
    )
    with pytest.raises(
        SourceError,
        match=r"line 5: sources\[0\]\.issue_type: unknown key 'issue_type' for kind "
        r"jira_incidents",
    ):
        load_sources_config(cfg, source_kinds())
    cfg.write_text(
        "sources:\n  - name: j\n    kind: jira_incidents\n    path: pd.json\n    filter: 'labels in (a'\n",
        encoding="utf-8",
    )
    with pytest.raises(SourceError, match=r"sources\[0\]\.filter: .*filter: unexpected end"):
        load_sources_config(cfg, source_kinds())


# --------------------------------------------------------------------------------------------
# Shared normalisation


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("production", "production"),
        ("Production", "production"),
        ("PRD", "production"),
        ("prod-eu-1", "production"),
        ("us-east-prod", "production"),
        ("live", "production"),
        ("pre-production", "staging"),
        ("preprod", "staging"),
        ("Staging", "staging"),
        ("stg", "staging"),
        ("UAT", "staging"),
        ("Test", "testing"),
        ("qa", "testing"),
        ("development", "development"),
        ("dev", "development"),
        ("local-dev", "development"),
        ("github-pages", "other"),
        ("default", "other"),
        ("productivity", "other"),
    ],
)
def test_environment_names(raw: str, expected: str) -> None:
    assert environment(raw) == expected


def test_environment_map_overrides_case_insensitively() -> None:
    assert environment("Default", {"default": "production"}) == "production"
    assert environment(None) is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("P1", "sev1"),
        ("p5", "sev5"),
        ("SEV-2", "sev2"),
        ("Sev 3", "sev3"),
        ("S4", "sev4"),
        ("1", "sev1"),
        ("critical", "sev1"),
        ("High", "sev2"),
        ("medium", "sev3"),
        ("Low", "sev4"),
        ("info", "sev5"),
        ("P6", None),
        ("whatever", None),
        ("", None),
        (None, None),
    ],
)
def test_severity_names(raw: str | None, expected: str | None) -> None:
    assert severity(raw) == expected


def test_priority_map_wins_over_built_in_names() -> None:
    assert severity("High", {"high": "sev1"}) == "sev1"
    assert severity("Urgent!!", {"URGENT!!": "sev1"}) == "sev1"


@pytest.mark.parametrize(
    ("text", "sha"),
    [
        ("Root cause: 0916a0afdfa825779c892a8951bde706a054d352", "0916a0afdfa825779c892a8951bde706a054d352"),
        ("outage. root cause: ABCDEF1 (bad config)", "abcdef1"),
        ("ROOT CAUSE:abc1234", "abc1234"),
        ("root-cause = 1234567890abcdef", "1234567890abcdef"),
        ("root cause: abc12", None),  # too short
        ("root cause: unknown", None),
        ("caused by abcdef1234", None),  # not the convention
    ],
)
def test_root_cause_convention(text: str, sha: str | None) -> None:
    assert root_cause_sha(text) == sha


def test_explicit_causes_prefer_fields_then_configured_field_then_text() -> None:
    record = {"title": "root cause: aaaaaaa", "details": {"caused_by_deploy_id": "d-7"}, "cf": "bbbbbbb"}
    assert explicit_causes(record, [record["details"]], [record["title"]], "cf") == {
        "caused_by_deploy_id": "d-7",
        "caused_by_commit_sha": "bbbbbbb",
    }
    assert explicit_causes(record, [], [record["title"]], None) == {"caused_by_commit_sha": "aaaaaaa"}
    custom = [{"name": "caused_by_flag_key", "value": "new-checkout"}]
    assert explicit_causes({}, [custom], [], None) == {"caused_by_flag_key": "new-checkout"}


@pytest.mark.parametrize(
    ("paths", "expected"),
    [
        (["src/app.py", "README.md"], False),
        (["infra/main.tf"], True),
        (["deploy/k8s/service.yaml"], True),
        (["charts/api/values.yaml"], True),
        ([".github/workflows/ci.yml"], True),
        ([".gitlab-ci.yml"], True),
        (["services/api/Dockerfile"], True),
        (["docs/terraform-guide.md"], False),
        ([], None),
    ],
)
def test_touches_infra(paths: list[str], expected: bool | None) -> None:
    assert touches_infra(paths) is expected


def test_compare_stats_github_and_gitlab_shapes() -> None:
    github = {
        "total_commits": 3,
        "commits": [{"sha": "a1"}, {"sha": "b2"}, {"sha": "c3"}],
        "files": [
            {"filename": "app.py", "additions": 10, "deletions": 2},
            {"filename": "main.tf", "additions": 1, "deletions": 0},
        ],
    }
    assert compare_stats(github) == {
        "lines_added": 11,
        "lines_deleted": 2,
        "files_changed": 2,
        "commit_count": 3,
        "commit_shas": "a1 b2 c3",
        "touches_infra": True,
    }
    gitlab = {
        "commits": [{"id": "a1"}],
        "diffs": [{"new_path": "a.py", "old_path": "a.py", "diff": "@@ -1,2 +1,3 @@\n-x\n+y\n+z\n w\n"}],
    }
    assert compare_stats(gitlab) == {
        "lines_added": 2,
        "lines_deleted": 1,
        "files_changed": 1,
        "commit_count": 1,
        "commit_shas": "a1",
        "touches_infra": False,
    }


@pytest.mark.parametrize(
    ("url", "repo"),
    [
        ("https://api.github.com/repos/Codertocat/Hello-World", "Codertocat/Hello-World"),
        ("https://github.com/facebook/OpenBIC", "facebook/OpenBIC"),
        ("https://github.com/apache/incubator-devlake/", "apache/incubator-devlake"),
        ("https://gitlab.com/merico-dev/ee/vdev.co/-/pipelines/51653436", "merico-dev/ee/vdev.co"),
        ("https://bitbucket.org/likyh/likyhphp/commits/ca4302e0", "likyh/likyhphp"),
        ("git@example.com:org/repo.git", "git@example.com:org/repo"),
        ("repo-1", "repo-1"),
    ],
)
def test_repo_from_url(url: str, repo: str) -> None:
    assert repo_from_url(url) == repo
