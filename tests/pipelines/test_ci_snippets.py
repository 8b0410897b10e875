"""The CI snippets of docs/ci-gate.md, run as CI would: the step's script, with bash and with sh.

The scripts are read from the document (so the doc cannot drift from what is tested) and run in a
real git repository against a local scoring service, with ``incident-risk`` on PATH.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from models.serving.app import ServiceConfig
from pipelines.cli.gate import EXIT_ABOVE, EXIT_OK, EXIT_UNAVAILABLE
from tests.helpers.paths import REPO
from tests.helpers.scoring import home_with_champion
from tests.helpers.service import free_port, running_service

NAME = "incident-risk"  # the snippets use the default model name
ZEROS = "0" * 40
SHELLS = ["bash", "sh"]


def _snippet(section: str) -> dict[str, Any]:
    """The first YAML block under the ``## section`` heading of docs/ci-gate.md."""
    text = (REPO / "docs" / "ci-gate.md").read_text()
    body = text.split(f"## {section}\n", 1)[1]
    block = re.search(r"```yaml\n(.*?)```", body, re.S)
    assert block is not None, f"no yaml block under {section}"
    return dict(yaml.safe_load(block.group(1)))


def github_step() -> dict[str, Any]:
    steps = _snippet("GitHub Actions")["jobs"]["risk-gate"]["steps"]
    return next(s for s in steps if s.get("name") == "How risky is this deploy?")


def gitlab_script() -> str:
    return "\n".join(_snippet("GitLab CI")["risk-gate"]["script"])


def _threshold(script: str, value: str) -> str:
    assert "--fail-above 0.7" in script
    return script.replace("--fail-above 0.7", f"--fail-above {value}")


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("snippet-home")
    home_with_champion(home, NAME)
    config = ServiceConfig(store_dir=home / "store", model_name=NAME, refresh_seconds=3600, max_data_age_hours=1e9)
    with running_service(config) as base:
        yield base


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A clone with two commits; returns (its path, the first commit = the base of the change)."""
    path = tmp_path_factory.mktemp("clone")

    def git(*args: str) -> str:
        env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
        out = subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
            cwd=path,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip()

    git("init", "-q")
    (path / "app.py").write_text("a = 1\n")
    git("add", ".")
    git("commit", "-qm", "base")
    base = git("rev-parse", "HEAD")
    (path / "app.py").write_text("a = 2\n" + "b = 3\n" * 40)
    (path / "infra.tf").write_text("x\n")
    git("add", ".")
    git("commit", "-qm", "change")
    return path, base


@pytest.fixture(scope="module")
def bin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``incident-risk`` on PATH: this checkout's entry point in this interpreter."""
    path = tmp_path_factory.mktemp("bin")
    exe = path / "incident-risk"
    exe.write_text(f'#!/bin/sh\nexec "{sys.executable}" -c "from pipelines.cli.main import main; main()" "$@"\n')
    exe.chmod(0o755)
    return path


def run(shell: str, script: str, repo: tuple[Path, str], bin_dir: Path, env: dict[str, str]) -> tuple[int, str, str]:
    path, _ = repo
    (path / "risk.json").unlink(missing_ok=True)
    full = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(REPO),
        "INCIDENT_RISK_HOME": str(path.parent / "cli-home"),
        "INCIDENT_RISK_TOKEN": "unused",
        "HOME": str(path.parent),
        "GIT_CONFIG_NOSYSTEM": "1",
        **env,
    }
    done = subprocess.run([shell, "-c", script], cwd=path, env=full, capture_output=True, text=True, timeout=120)
    return done.returncode, done.stdout, done.stderr


@pytest.mark.parametrize("shell", SHELLS)
def test_github_step_keeps_exit_3_and_fails_open_without_a_base(shell: str, url: str, repo, bin_dir) -> None:
    step = github_step()
    assert "github.event.pull_request.base.sha" in step["env"]["BASE_SHA"]  # pull_request events
    assert "github.event.before" in step["env"]["BASE_SHA"]  # pushes
    env = {"INCIDENT_RISK_URL": url, "SERVICE": "reviews-svc", "GITHUB_SHA": "abc123", "GITHUB_ACTOR": "guido.turing"}
    path, base = repo

    code, out, err = run(shell, _threshold(step["run"], "0.0"), repo, bin_dir, {**env, "BASE_SHA": base})
    assert code == EXIT_ABOVE, err
    scored = json.loads((path / "risk.json").read_text())
    assert scored["features"]["lines_added"] == 42 and scored["features"]["files_changed"] == 2
    assert json.loads(out) == scored  # the step's log shows the score too
    code, _, err = run(shell, _threshold(step["run"], "1.0"), repo, bin_dir, {**env, "BASE_SHA": base})
    assert code == EXIT_OK, err

    for missing in (ZEROS, "", "1" * 40):  # a new branch's first push; no before; a commit not in the clone
        code, out, _ = run(shell, step["run"], repo, bin_dir, {**env, "BASE_SHA": missing})
        assert code == EXIT_OK and "not gating (fail-open)" in out and not (path / "risk.json").exists()

    dead = {**env, "BASE_SHA": base, "INCIDENT_RISK_URL": f"http://127.0.0.1:{free_port()}"}
    code, _, err = run(shell, step["run"], repo, bin_dir, dead)
    assert code == EXIT_OK and "fail-open" in err


@pytest.mark.parametrize("shell", SHELLS)
def test_gitlab_script_keeps_exit_3_under_sh_and_fails_open_without_a_base(shell: str, url: str, repo, bin_dir):
    script = gitlab_script()
    assert "| tee" not in script  # a pipe would report tee's status under sh (no pipefail)
    env = {"INCIDENT_RISK_URL": url, "CI_PROJECT_NAME": "reviews-svc", "CI_COMMIT_SHA": "abc123"}
    env["GITLAB_USER_LOGIN"] = "guido.turing"
    path, base = repo

    code, out, err = run(shell, _threshold(script, "0.0"), repo, bin_dir, {**env, "CI_COMMIT_BEFORE_SHA": base})
    assert code == EXIT_ABOVE, err
    assert json.loads((path / "risk.json").read_text())["features"]["lines_deleted"] == 1
    merge_request = {**env, "CI_COMMIT_BEFORE_SHA": ZEROS, "CI_MERGE_REQUEST_DIFF_BASE_SHA": base}
    assert run(shell, _threshold(script, "0.0"), repo, bin_dir, merge_request)[0] == EXIT_ABOVE
    assert run(shell, _threshold(script, "1.0"), repo, bin_dir, {**env, "CI_COMMIT_BEFORE_SHA": base})[0] == EXIT_OK

    code, out, _ = run(shell, script, repo, bin_dir, {**env, "CI_COMMIT_BEFORE_SHA": ZEROS})
    assert code == EXIT_OK and "not gating (fail-open)" in out and not (path / "risk.json").exists()

    dead = {**env, "CI_COMMIT_BEFORE_SHA": base, "INCIDENT_RISK_URL": f"http://127.0.0.1:{free_port()}"}
    code, _, err = run(shell, script, repo, bin_dir, dead)
    assert code == EXIT_UNAVAILABLE and "fail-closed" in err  # allow_failure.exit_codes: [4] in the snippet
    assert _snippet("GitLab CI")["risk-gate"]["allow_failure"] == {"exit_codes": [4]}
