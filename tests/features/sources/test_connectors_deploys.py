"""Deploy connectors on real payloads: GitHub, GitLab, Bitbucket, Bamboo, DevLake webhook."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from features.history.schema import RECORD_COLUMN
from tests.features.sources.test_connectors_common import FIXTURES, by_id, run, ts, write


def load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def jsonl(tmp_path: Path, name: str, records: list[Any]) -> Path:
    return write(tmp_path, name, "\n".join(json.dumps(r) for r in records) + "\n")


def assert_fields(row: Mapping[Any, Any], expected: dict[str, Any]) -> None:
    got = {k: (None if pd.isna(row[k]) else row[k]) for k in expected}
    assert got == expected


# --------------------------------------------------------------------------------------------
# GitHub


def test_github_graphql_devlake_pascal_case_nodes() -> None:
    parsed, conformed = run("github_deployments", FIXTURES / "github/deployments_graphql.json")
    assert conformed.rejects.empty and parsed.other_counts == {}
    rows = by_id(conformed.valid, "deploy_id")
    assert list(rows) == [
        "3881429895",
        "3839563910",
        "1670973641",
        "1693412381",
        "1696032217",
        "1701084484",
        "1707033729",
    ]
    assert_fields(
        rows["3881429895"],
        {
            "service": "facebook/OpenBIC",
            "environment": "production",
            "environment_raw": "github-pages",
            "commit_sha": "0916a0afdfa825779c892a8951bde706a054d352",
            "commit_shas": "0916a0afdfa825779c892a8951bde706a054d352",
            "ref": "gh-pages",
            "status": "success",
            "status_raw": "success",
            "created_at": ts("2026-02-20T00:30:37Z"),
            "started_at": ts("2026-02-20T00:30:40Z"),
            "finished_at": ts("2026-02-20T00:30:59Z"),
            "updated_at": ts("2026-02-20T00:30:59Z"),
            "author": None,
            "lines_added": None,
            "source": "src",
        },
    )
    # latest status is INACTIVE (superseded) after SUCCESS: the SUCCESS decides, and dates the finish
    assert_fields(
        rows["3839563910"], {"status": "success", "status_raw": "success", "finished_at": ts("2026-02-14T00:32:36Z")}
    )
    # only LatestStatus INACTIVE known: GitHub adds inactive only to deployments that had succeeded
    assert_fields(rows["1670973641"], {"status": "success", "status_raw": "inactive", "finished_at": None})
    assert json.loads(rows["3881429895"]["raw"])["CommitOid"] == "0916a0afdfa825779c892a8951bde706a054d352"


def test_github_environment_map_overrides_builtin_names() -> None:
    _, conformed = run(
        "github_deployments", FIXTURES / "github/deployments_graphql.json", environment_map={"github-pages": "staging"}
    )
    assert set(conformed.valid["environment"]) == {"staging"}


def test_github_plain_camel_case_graphql_response(tmp_path: Path) -> None:
    node = {
        "id": "DE_x",
        "databaseId": 42,
        "commitOid": "a" * 40,
        "environment": "prod-eu",
        "state": "FAILURE",
        "createdAt": "2024-05-01T10:00:00Z",
        "updatedAt": "2024-05-01T10:05:00Z",
        "ref": {"name": "main"},
        "creator": {"login": "octo"},
        "repository": {"nameWithOwner": "acme/api"},
        "payload": '{"lines_added": 120, "lines_deleted": 7, "squad": "payments"}',
        "statuses": {
            "nodes": [
                {"state": "IN_PROGRESS", "createdAt": "2024-05-01T10:01:00Z"},
                {"state": "FAILURE", "createdAt": "2024-05-01T10:04:00Z"},
            ]
        },
    }
    path = write(tmp_path, "gql.json", {"data": {"repository": {"deployments": {"nodes": [node]}}}})
    _, conformed = run("github_deployments", path)
    assert conformed.rejects.empty
    assert_fields(
        conformed.valid.iloc[0].to_dict(),
        {
            "deploy_id": "42",
            "service": "acme/api",
            "environment": "production",
            "environment_raw": "prod-eu",
            "status": "failure",
            "status_raw": "failure",
            "author": "octo",
            "ref": "main",
            "started_at": ts("2024-05-01T10:01:00Z"),
            "finished_at": ts("2024-05-01T10:04:00Z"),
            "lines_added": 120,
            "lines_deleted": 7,
            "squad": "payments",
        },
    )


def test_github_webhooks_alone() -> None:
    _, status_hook = run("github_deployments", FIXTURES / "github/deployment_status_webhook.json")
    assert_fields(
        status_hook.valid.iloc[0].to_dict(),
        {
            "deploy_id": "145988746",
            "service": "Codertocat/Hello-World",
            "environment": "production",
            "commit_sha": "f95f852bd8fca8fcc58a9a2d6c842781e32a215e",
            "ref": "master",
            "status": "success",
            "status_raw": "success",
            "created_at": ts("2019-05-15T15:20:53Z"),
            "finished_at": ts("2019-05-15T15:20:55Z"),
            "author": "Codertocat",
            "url": "https://api.github.com/repos/Codertocat/Hello-World/deployments/145988746",
        },
    )
    # a just-created deployment has no status yet: GitHub calls it pending
    _, created_hook = run("github_deployments", FIXTURES / "github/deployment_webhook.json")
    assert_fields(
        created_hook.valid.iloc[0].to_dict(), {"status": "running", "status_raw": "pending", "finished_at": None}
    )


def test_github_webhook_deliveries_fold_into_one_deploy_with_the_latest_status(tmp_path: Path) -> None:
    """A realistic delivery sequence built from the two octokit payloads: created, in_progress, failure."""
    created = load("github/deployment_webhook.json")
    progress = load("github/deployment_status_webhook.json")
    progress["deployment_status"].update(state="in_progress", created_at="2019-05-15T15:20:54Z", id=1)
    failed = copy.deepcopy(progress)
    failed["deployment_status"].update(state="failure", created_at="2019-05-15T15:21:30Z", id=2)
    failed["deployment"]["updated_at"] = "2019-05-15T15:21:30Z"
    path = jsonl(tmp_path, "hooks.jsonl", [failed, created, progress])  # delivery order is not status order
    parsed, conformed = run("github_deployments", path)
    assert len(conformed.valid) == 1 and conformed.rejects.empty and parsed.records_read == 3
    assert_fields(
        conformed.valid.iloc[0].to_dict(),
        {
            "deploy_id": "145988746",
            "status": "failure",
            "status_raw": "failure",
            "created_at": ts("2019-05-15T15:20:53Z"),
            "started_at": ts("2019-05-15T15:20:54Z"),
            "finished_at": ts("2019-05-15T15:21:30Z"),
            "updated_at": ts("2019-05-15T15:21:30Z"),
        },
    )
    assert len(json.loads(conformed.valid.iloc[0]["raw"])) == 3


def test_github_rest_record_with_statuses_payload_and_compare(tmp_path: Path) -> None:
    """REST shape from the octokit payload's deployment object, plus the exported statuses/compare."""
    dep = load("github/deployment_webhook.json")["deployment"]
    dep["payload"] = {
        "commit_count": 4,
        "touches_infra": False,
        "is_rollback": True,
        "reverts_deployment_id": "145988700",
        "tribe": "commerce",
        "service": "hello",
    }
    dep["statuses"] = [
        {"state": "success", "created_at": "2019-05-15T15:25:00Z"},
        {"state": "queued", "created_at": "2019-05-15T15:21:00Z"},
    ]
    dep["compare"] = {
        "total_commits": 4,
        "files": [
            {"filename": "terraform/main.tf", "additions": 5, "deletions": 1},
            {"filename": "app.py", "additions": 20, "deletions": 3},
        ],
    }
    path = write(tmp_path, "deployments.json", [dep])
    _, conformed = run("github_deployments", path)
    assert_fields(
        conformed.valid.iloc[0].to_dict(),
        {
            "service": "hello",
            "status": "success",
            "finished_at": ts("2019-05-15T15:25:00Z"),
            "lines_added": 25,
            "lines_deleted": 4,
            "files_changed": 2,
            "commit_count": 4,
            "touches_infra": False,  # the payload (what the deployer says) wins over the file names
            "is_rollback": True,
            "reverts_deploy_id": "145988700",
            "tribe": "commerce",
        },
    )


def test_github_unknown_state_is_other_and_counted_missing_time_quarantined(tmp_path: Path) -> None:
    dep = load("github/deployment_webhook.json")["deployment"]
    odd = dict(dep, id=1, statuses=[{"state": "exploded", "created_at": "2019-05-15T15:25:00Z"}])
    undated = dict(dep, id=2, created_at=None)
    parsed, conformed = run("github_deployments", write(tmp_path, "d.json", [odd, undated]))
    assert parsed.other_counts == {"exploded": 1}
    assert conformed.valid["status"].tolist() == ["other"]
    assert conformed.rejects[["record", "field", "reason"]].values.tolist() == [
        [2, "created_at", "required field is missing"]
    ]


# --------------------------------------------------------------------------------------------
# GitLab


def test_gitlab_rest_deployments() -> None:
    parsed, conformed = run("gitlab_deployments", FIXTURES / "gitlab/deployments.json")
    assert conformed.rejects.empty
    assert parsed.other_counts == {"completed": 1, "undeployed": 1}  # not GitLab statuses (DevLake test edits)
    rows = by_id(conformed.valid, "deploy_id")
    assert_fields(
        rows["13426753"],
        {
            "service": "merico-dev/ee/vdev.co",
            "environment": "staging",
            "environment_raw": "staging",
            "commit_sha": "add237f6852e6108ee8e0246780a54ce909c6087",
            "ref": "master",
            "status": "success",
            "status_raw": "success",
            "created_at": ts("2019-03-13T14:14:24.109Z"),
            "started_at": ts("2019-03-13T14:17:33.559Z"),
            "finished_at": ts("2019-03-13T14:17:47.640Z"),
            "author": "hackwaly",
            "updated_at": ts("2019-03-13T14:17:47.647Z"),
            "url": "https://gitlab.com/merico-dev/ee/vdev.co/-/jobs/176919795",
        },
    )
    assert {k: (r["status"], r["status_raw"], r["environment"]) for k, r in rows.items()} == {
        "13426753": ("success", "success", "staging"),
        "13432654": ("other", "completed", "staging"),
        "13432768": ("failure", "failed", "staging"),
        "13436532": ("canceled", "canceled", "production"),
        "13436763": ("running", "created", "production"),
        "13436778": ("running", "running", "staging"),
        "13436986": ("running", "blocked", "production"),
        "13436915": ("other", "undeployed", "staging"),
    }
    assert pd.isna(rows["13436778"]["finished_at"])  # still running: no finish time yet


def test_gitlab_stats_and_compare_and_missing_field(tmp_path: Path) -> None:
    records = load("gitlab/deployments.json")[:2]
    records[0]["deployable"]["commit"]["stats"] = {"additions": 14, "deletions": 3, "total": 17}
    records[1]["compare"] = {
        "commits": [{"id": "a1"}, {"id": "b2"}],
        "diffs": [{"old_path": ".gitlab-ci.yml", "new_path": ".gitlab-ci.yml", "diff": "@@ -1 +1 @@\n-old\n+new\n"}],
    }
    records[1]["environment"] = None
    _, conformed = run("gitlab_deployments", write(tmp_path, "d.json", records))
    assert_fields(conformed.valid.iloc[0].to_dict(), {"lines_added": 14, "lines_deleted": 3, "files_changed": None})
    assert conformed.rejects[["record", "field", "reason"]].values.tolist() == [
        [2, "environment", "required field is missing"]
    ]


def test_gitlab_deployment_webhooks_fold(tmp_path: Path) -> None:
    """Deployment events as GitLab documents them (object_kind deployment), one per status change."""
    base = {
        "object_kind": "deployment",
        "deployment_id": 15,
        "deployable_id": 796,
        "deployable_url": "http://example.com/root/test-deployment-events/-/jobs/796",
        "environment": "production",
        "environment_tier": "production",
        "ref": "main",
        "project": {"path_with_namespace": "root/test-deployment-events"},
        "short_sha": "8a0f7f33",
        "user": {"username": "root"},
        "commit_url": "http://example.com/root/test-deployment-events/-/commit/"
        "8a0f7f33d0f34c4d9a4e80e0e6b4e5a9b5a0e7f1",
    }
    events = [
        dict(base, status="success", status_changed_at="2021-04-28 21:55:12 +0200"),
        dict(base, status="running", status_changed_at="2021-04-28 21:50:00 +0200"),
    ]
    _, conformed = run("gitlab_deployments", jsonl(tmp_path, "hooks.jsonl", events))
    assert conformed.rejects.empty
    assert_fields(
        conformed.valid.iloc[0].to_dict(),
        {
            "deploy_id": "15",
            "service": "root/test-deployment-events",
            "environment": "production",
            "commit_sha": "8a0f7f33d0f34c4d9a4e80e0e6b4e5a9b5a0e7f1",
            "status": "success",
            "created_at": ts("2021-04-28T19:50:00Z"),
            "started_at": ts("2021-04-28T19:50:00Z"),
            "finished_at": ts("2021-04-28T19:55:12Z"),
            "author": "root",
        },
    )


# --------------------------------------------------------------------------------------------
# Bitbucket


def test_bitbucket_deployments() -> None:
    parsed, conformed = run("bitbucket_deployments", FIXTURES / "bitbucket/deployments.json")
    assert conformed.rejects.empty and len(conformed.valid) == 27
    assert parsed.other_counts == {"UNDEPLOYED": 4, "UNKNOWN": 1}
    rows = by_id(conformed.valid, "deploy_id")
    assert_fields(
        rows["{fcb46cbc-8733-5264-b362-c05a8f9eb2f8}"],
        {
            "service": "likyh/likyhphp",
            "environment": "staging",
            "environment_raw": "Staging",
            "commit_sha": "ca4302e0e56c89332711e1b1051ab2f0110d4412",
            "status": "success",
            "status_raw": "COMPLETED",
            "created_at": ts("2023-02-20T09:38:47.20339Z"),
            "started_at": ts("2023-02-20T09:38:47.20339Z"),
            "finished_at": ts("2023-02-20T09:38:52.307323Z"),
            "updated_at": ts("2023-02-20T09:38:52.307323Z"),
        },
    )
    tail = conformed.valid.iloc[18:][["status_raw", "status"]].values.tolist()
    assert tail == [
        ["SUCCESSFUL", "success"],
        ["FAILED", "failure"],
        ["STOPPED", "canceled"],
        ["CANCELLED", "canceled"],
        ["IN_PROGRESS", "running"],
        ["UNDEPLOYED", "other"],
        ["PENDING", "running"],
        ["ROLLED_BACK", "rolled_back"],
        ["UNKNOWN", "other"],
    ]
    assert conformed.valid["environment"].value_counts().to_dict() == {"production": 14, "testing": 9, "staging": 4}


def test_bitbucket_completed_state_uses_its_result(tmp_path: Path) -> None:
    rec = load("bitbucket/deployments.json")[0]
    rec["state"]["status"] = {"name": "FAILED", "type": "deployment_state_completed_status_failed"}
    _, conformed = run("bitbucket_deployments", write(tmp_path, "d.json", {"values": [rec], "page": 1}))
    assert_fields(conformed.valid.iloc[0].to_dict(), {"status": "failure", "status_raw": "FAILED"})


# --------------------------------------------------------------------------------------------
# Bamboo


def test_bamboo_deploy_results() -> None:
    parsed, conformed = run("bamboo_deploys", FIXTURES / "bamboo/deploy_builds.json", environment="Production")
    assert conformed.rejects.empty and parsed.other_counts == {}
    first = conformed.valid.iloc[0].to_dict()
    assert_fields(
        first,
        {
            "deploy_id": "1540117",
            "service": "TEST-PLA2",
            "environment": "production",
            "environment_raw": "Production",
            "ref": "main",
            "status": "success",
            "status_raw": "FINISHED/SUCCESS",
            "created_at": pd.Timestamp(1691056147746, unit="ms", tz="UTC"),
            "started_at": pd.Timestamp(1691056147768, unit="ms", tz="UTC"),
            "finished_at": pd.Timestamp(1691056147770, unit="ms", tz="UTC"),
        },
    )
    assert conformed.valid[["status_raw", "status"]].values.tolist()[4:] == [
        ["FINISHED/FAILED", "failure"],
        ["FINISHED/FAILED", "failure"],
        ["FINISHED/SUCCESS", "success"],
        ["IN_PROGRESS/FAILED", "running"],
        ["PENDING/REPLACED", "running"],
        ["QUEUED/SKIPPED", "running"],
        ["NOT_BUILT/NEVER", "canceled"],
        ["NOT_BUILT/QUEUED", "canceled"],
        ["NOT_BUILT/IN PROGRESS", "canceled"],
        ["NOT_BUILT/NOT BUILT", "canceled"],
    ]


def test_bamboo_without_environment_is_quarantined_and_unknown_state_counted(tmp_path: Path) -> None:
    rec = load("bamboo/deploy_builds.json")[0]
    parsed, conformed = run(
        "bamboo_deploys", write(tmp_path, "r.json", {"results": [rec, dict(rec, id=2, deploymentState="UNKNOWN")]})
    )
    assert set(conformed.rejects["field"]) == {"environment"}
    assert set(conformed.rejects["reason"]) == {"required field is missing"}
    assert parsed.other_counts == {"FINISHED/UNKNOWN": 1}


# --------------------------------------------------------------------------------------------
# DevLake webhook


def test_devlake_deployment_bodies_one_deploy_per_repo_commit() -> None:
    parsed, conformed = run("devlake_webhook", FIXTURES / "devlake_webhook/deployment_payloads.json")
    assert conformed.rejects.empty and parsed.records_read == 2
    rows = conformed.valid.to_dict("records")
    assert [r["deploy_id"] for r in rows] == [
        "required-pipeline-id:https://github.com/apache/incubator-devlake/:015e3d3b480e417aede5a1293bd61de9b0fd051d",
        "required-pipeline-id:repo-1:c1",
        "required-pipeline-id:repo-2:c2",
    ]
    assert [(r["service"], r["commit_sha"], r["commit_shas"]) for r in rows] == [
        (
            "apache/incubator-devlake",
            "015e3d3b480e417aede5a1293bd61de9b0fd051d",
            "015e3d3b480e417aede5a1293bd61de9b0fd051d",
        ),
        ("repo-1", "c1", "c1"),
        ("repo-2", "c2", "c2"),
    ]
    for r in rows:
        assert_fields(
            r,
            {
                "environment": "production",
                "environment_raw": "PRODUCTION",
                "status": "failure",
                "status_raw": "FAILURE",
                "ref": "optional-release-v0.17",
                "created_at": ts("2020-01-01T11:00:00+00:00"),
                "started_at": ts("2020-01-01T12:00:00+00:00"),
                "finished_at": ts("2020-01-02T13:00:00+00:00"),
            },
        )
    assert list(parsed.frame[RECORD_COLUMN]) == [1, 2, 2]


def test_devlake_defaults_and_missing_pipeline(tmp_path: Path) -> None:
    minimal = {
        "pipeline_id": "p9",
        "repo_url": "https://github.com/acme/api",
        "commit_sha": "abc1234",
        "start_time": "2024-01-01T00:00:00+00:00",
    }
    manual = dict(minimal, pipeline_id="p10", result="MANUAL", environment="staging")
    orphan = {
        "repo_url": "https://github.com/acme/api",
        "commit_sha": "abc1234",
        "start_time": "2024-01-01T00:00:00+00:00",
    }
    parsed, conformed = run("devlake_webhook", jsonl(tmp_path, "b.jsonl", [minimal, manual, orphan]))
    assert conformed.valid[["status", "environment"]].values.tolist() == [
        ["success", "production"],
        ["other", "staging"],
    ]
    assert parsed.other_counts == {"MANUAL": 1}
    assert conformed.rejects[["record", "field", "reason"]].values.tolist() == [
        [3, "deploy_id", "required field is missing"]
    ]
