"""The Prometheus alerting rules shipped in docs/monitoring.md: valid for promtool, and they fire when they should.

``promtool check rules`` and ``promtool test rules`` (unit tests with synthetic series) run where
promtool is installed (CI installs Debian's ``prometheus`` package); elsewhere the rules' structure
is checked and the promtool tests are skipped, saying so.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.helpers.paths import REPO

DOC = REPO / "docs" / "monitoring.md"
MARKER = "# prometheus-rules: incident-risk"


def rules_text() -> str:
    """The YAML block of docs/monitoring.md that starts with the marker."""
    text = DOC.read_text(encoding="utf-8")
    start = text.index(MARKER)
    return text[start : text.index("```", start)]


def test_the_rules_have_the_structure_prometheus_expects() -> None:
    data = yaml.safe_load(rules_text())
    groups = {g["name"]: g for g in data["groups"]}
    assert set(groups) == {"incident-risk-service", "incident-risk-monitor"}
    alerts = [r for g in groups.values() for r in g["rules"]]
    for rule in alerts:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}
        assert rule["alert"] and rule["expr"] and rule["labels"]["severity"] and rule["annotations"]["summary"]
    names = {r["alert"] for r in alerts}
    assert {"IncidentRiskServiceDown", "IncidentRiskServerErrors", "IncidentRiskModelDecay"} <= names
    exprs = " ".join(r["expr"] for r in alerts)
    # they name metrics the service and the monitor really expose
    for metric in ("incident_risk_requests_total", "incident_risk_request_seconds_bucket",
                   "incident_risk_scores_total", "incident_risk_monitor_alarm",
                   "incident_risk_monitor_last_run_timestamp_seconds", "incident_risk_monitor_score_psi"):  # fmt: skip
        assert metric in exprs


PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (apt-get install prometheus)")

UNIT_TESTS = """
rule_files: [rules.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'incident_risk_monitor_alarm{model="incident-risk",version="7"}'
        values: '0 0 1 1 1'
      - series: 'incident_risk_requests_total{instance="a",route="/v1/score",method="POST",status="200"}'
        values: '0+100x30'
      - series: 'incident_risk_requests_total{instance="a",route="/v1/score",method="POST",status="500"}'
        values: '0+5x30'
      - series: 'incident_risk_monitor_last_run_timestamp_seconds{model="incident-risk",version="7"}'
        values: '0x30'
    alert_rule_test:
      - eval_time: 1m
        alertname: IncidentRiskModelDecay
        exp_alerts: []
      - eval_time: 3m
        alertname: IncidentRiskModelDecay
        exp_alerts:
          - exp_labels: {severity: ticket, model: incident-risk, version: "7"}
            exp_annotations:
              summary: "the monitor's decay alarm fires for incident-risk v7"
              description: "See the latest run of the MLflow experiment incident-risk-monitoring."
      - eval_time: 20m
        alertname: IncidentRiskServerErrors
        exp_alerts:
          - exp_labels: {severity: page, instance: a}
            exp_annotations:
              summary: "more than 1% of incident-risk requests fail on a"
"""


@needs_promtool
def test_promtool_checks_the_rules(tmp_path: Path) -> None:
    path = tmp_path / "rules.yml"
    path.write_text(rules_text())
    result = subprocess.run([str(PROMTOOL), "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 8 rules found" in result.stdout + result.stderr


@needs_promtool
def test_promtool_unit_tests_fire_the_decay_and_error_alerts(tmp_path: Path) -> None:
    (tmp_path / "rules.yml").write_text(rules_text())
    (tmp_path / "tests.yml").write_text(UNIT_TESTS)
    result = subprocess.run(
        [str(PROMTOOL), "test", "rules", "tests.yml"], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr
