"""Synthetic training tables with a known risk function, for tests and benchmarks of models/.

models/ must not depend on the feature pipeline, so its tests build tables here: deploys over
time with change-size, infra, experience and service features (among them the service's past
failure rate from labels matured one day after their deploy, as the feature pipeline gives it), a
few missing values, and labels drawn from a known probability (returned as ``p_true``) with a
non-linear interaction.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from models.training.train import TrainingTable

NUMERIC = (
    "lines_added",
    "lines_deleted",
    "files_changed",
    "touches_infra",
    "author_experience",
    "hour",
    "service_failure_rate",
)
CATEGORICAL = ("service", "tribe")


def synthetic_table(
    n: int = 2000, seed: int = 0, base_rate: float = 0.12, days: int = 180
) -> tuple[TrainingTable, np.ndarray]:
    """A time-sorted table of ``n`` deploys and the true failure probability of each."""
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2024-01-01", tz="UTC")
    offsets = np.sort(rng.uniform(0, days * 86400, n))
    created = start + pd.to_timedelta(offsets, unit="s")
    services = np.array([f"svc-{i}" for i in range(8)], dtype=object)
    service = services[rng.integers(0, len(services), n)]
    service_effect = dict(zip(services, rng.normal(0, 0.6, len(services)), strict=True))
    tribe = np.where(np.isin(service, services[:4]), "payments", "platform").astype(object)
    squad = np.array([f"{t}-{s[-1]}" for t, s in zip(tribe, service, strict=True)], dtype=object)
    added = np.round(rng.lognormal(4.0, 1.5, n))
    deleted = np.round(added * rng.uniform(0.1, 1.0, n))
    files = 1 + rng.poisson(np.sqrt(added) / 3)
    infra = (rng.random(n) < 0.15).astype(np.float64)
    experience = rng.gamma(2.0, 50.0, n)
    hour = rng.integers(0, 24, n).astype(np.float64)
    logit = (
        np.log(base_rate / (1 - base_rate))
        + 0.45 * (np.log1p(added) - 4.0)
        + 0.9 * infra
        - 0.4 * (np.log1p(experience) - 4.3)
        + 0.6 * ((hour >= 17) & (infra > 0))  # late infra changes are worse: an interaction
        + np.vectorize(service_effect.get)(service)
    )
    p_true = 1.0 / (1.0 + np.exp(-logit))
    label = (rng.random(n) < p_true).astype(np.int64)
    experience_seen = np.where(rng.random(n) < 0.05, np.nan, experience)  # missing for new authors
    matured = created + pd.Timedelta(days=1)
    failure_rate = np.empty(n)
    for name in services:  # smoothed rate of the service's labels matured before each deploy
        rows = np.flatnonzero(service == name)
        seen = np.searchsorted(matured[rows].to_numpy(), created[rows].to_numpy(), side="left")
        fails = np.r_[0, np.cumsum(label[rows])]
        failure_rate[rows] = (fails[seen] + 10 * base_rate) / (seen + 10)
    frame = pd.DataFrame(
        {
            "deploy_id": [f"sim:{i:06d}" for i in range(n)],
            "created_at": created,
            "label": label,
            "lines_added": added,
            "lines_deleted": deleted,
            "files_changed": files.astype(np.float64),
            "touches_infra": infra,
            "author_experience": experience_seen,
            "hour": hour,
            "service_failure_rate": failure_rate,
            "service": service,
            "tribe": tribe,
            "squad": squad,
            "effort": added + deleted,
            "baseline_lines_added": added,
            "matured_at": matured,
        }
    )
    table = TrainingTable(
        frame, NUMERIC, CATEGORICAL, excluded={"immature": 0}, label_rule="synthetic", feature_set_version="synthetic-1"
    )
    return table, p_true
