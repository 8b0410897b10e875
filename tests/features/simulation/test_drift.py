"""Simulated drift: the true hazard changes from the given day only, as each kind says, and the truth is recorded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from features.simulation.drift import HazardDrift, drifted_config
from features.simulation.simulator import SimulationConfig, simulate
from pipelines.cli.simulate import register

BASE = SimulationConfig(days=60, services=20, seed=3)
AT_DAY = 30


def _truth(config: SimulationConfig) -> pd.DataFrame:
    sim = simulate(config)
    frame = sim.history.deploys.merge(sim.deploy_truth, on="deploy_id")
    frame = frame[(frame["environment"] == "production") & ~frame["is_rollback"].astype(bool)]
    frame["after"] = frame["created_at"] >= pd.Timestamp(BASE.start, tz="UTC") + pd.Timedelta(days=AT_DAY)
    frame["log_size"] = np.log1p(frame["lines_added"].astype(float) + frame["lines_deleted"].astype(float))
    return frame.set_index("deploy_id")


@pytest.fixture(scope="module")
def undrifted() -> pd.DataFrame:
    return _truth(BASE)


@pytest.mark.parametrize("kind", ["toggles", "shipping", "squad"])
def test_the_hazard_is_unchanged_before_the_day_and_changed_after(undrifted: pd.DataFrame, kind: str) -> None:
    drifted = _truth(drifted_config(BASE, kind, AT_DAY))
    before = undrifted.index[~undrifted["after"]]
    assert np.allclose(drifted.loc[before, "p_incident"], undrifted.loc[before, "p_incident"])
    after = drifted[drifted["after"]]
    assert not np.allclose(after["p_incident"], undrifted.reindex(after.index)["p_incident"].fillna(-1))


def test_shipping_makes_size_stop_mattering_at_about_the_same_rate(undrifted: pd.DataFrame) -> None:
    drifted = _truth(drifted_config(BASE, "shipping", AT_DAY))
    after, old = drifted[drifted["after"]], undrifted[undrifted["after"]]
    size_effect = lambda f: np.corrcoef(f["log_size"], f["p_incident"])[0, 1]  # noqa: E731
    assert size_effect(old) > 0.4 and size_effect(after) < 0.25
    assert after["p_incident"].mean() == pytest.approx(old["p_incident"].mean(), rel=0.15)


def test_squad_raises_the_risk_of_a_third_of_the_squads(undrifted: pd.DataFrame) -> None:
    drifted = _truth(drifted_config(BASE, "squad", AT_DAY))
    after = drifted[drifted["after"]]
    assert after["p_incident"].mean() > 1.2 * undrifted[undrifted["after"]]["p_incident"].mean()


def test_bad_drift_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown drift kind"):
        HazardDrift("weather", 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="drift-at-day"):
        drifted_config(BASE, "squad", 61)


def test_simulate_cli_records_the_drift_in_the_ground_truth(tmp_path: Path) -> None:
    app = typer.Typer()
    register(app)
    out = tmp_path / "sim"
    args = ["--out", str(out), "--days", "20", "--services", "4", "--drift", "toggles", "--drift-at-day", "5"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    truth = json.loads((out / "ground_truth" / "drift.json").read_text())
    assert truth["kind"] == "toggles" and truth["at_day"] == 5 and truth["at_iso"].startswith("2026-01-10")
    alone = CliRunner().invoke(app, ["--out", str(tmp_path / "x"), "--drift", "squad"])
    assert alone.exit_code == 2
