"""The analysts' view of attribution: every incident -> change link with its method, and why the rest are unlinked.

Two rule sets side by side: ``default`` (the project's attribution, ``AttributionConfig()``) and
``devlake`` (Apache DevLake's ``ConnectIncidentToDeployment``: the latest successful production
deploy finished before the incident, per project; see ``AttributionConfig.devlake``). Pure
functions of the canonical tables.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

import numpy as np
import pandas as pd

from features.history.schema import History
from features.labels.attribution import AttributionConfig, attribute

Rules = Literal["default", "devlake"]
RULES: tuple[str, ...] = ("default", "devlake")
LINK_EXPORT_COLUMNS = (
    "rules",
    "incident_id",
    "incident_service",
    "incident_at",
    "change_kind",
    "change_id",
    "change_service",
    "change_at",
    "method",
    "matched_on",
    "evidence",
    "lag_hours",
)
UNLINKED_COLUMNS = ("rules", "incident_id", "incident_service", "incident_at", "reason")


def rules_config(rules: str, max_lag_hours: float | None = None) -> AttributionConfig:
    """The attribution config of a rule set, with ``max_lag`` overridden when given."""
    if rules not in RULES:
        raise ValueError(f"rules: expected one of {', '.join(RULES)}, got {rules!r}")
    config = AttributionConfig.devlake() if rules == "devlake" else AttributionConfig()
    if max_lag_hours is not None:
        if not max_lag_hours > 0:
            raise ValueError(f"max_lag: must be positive hours, got {max_lag_hours}")
        config = replace(config, max_lag=pd.Timedelta(hours=max_lag_hours))
    return config


def _unlinked_reason(incidents: pd.DataFrame, config: AttributionConfig) -> np.ndarray:
    """Why each incident has no link, in the rules' order of precedence."""
    not_change = incidents["not_change_related"].astype("boolean").fillna(False).to_numpy(dtype=bool)
    env = incidents["environment"].astype("string")
    non_prod = (env.notna() & env.ne("production")).fillna(False).to_numpy(dtype=bool) & config.production_only
    named = (
        incidents[["caused_by_deploy_id", "caused_by_commit_sha", "caused_by_flag_key"]].notna().any(axis=1)
    ).to_numpy(dtype=bool) & config.use_explicit
    no_service = incidents["service"].isna().to_numpy(dtype=bool) & (config.scope == "service")
    window = f"within {config.max_lag}" if config.max_lag is not None else "before it"
    reason = np.full(len(incidents), f"no change {window}", dtype=object)
    named_unmatched = named & (not config.fallback_on_unmatched_explicit)
    for mask, text in reversed(
        [
            (not_change, "marked not change-related"),
            (non_prod, "non-production incident"),
            (named_unmatched, "named cause matches no change"),
            (no_service, "incident has no service"),
        ]
    ):
        reason[mask] = text
    return reason


def export_links(
    history: History, rules: str = "default", max_lag_hours: float | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(links, unlinked incidents) under one rule set: the links attribution made, with services, times and lag;
    the incidents left unlinked with the reason."""
    config = rules_config(rules, max_lag_hours)
    att = attribute(history, config)
    inc = history.incidents
    inc_ix = inc.set_index(inc["incident_id"].astype("string"))
    d = history.deploys.set_index(history.deploys["deploy_id"].astype("string"))
    t = history.toggle_events.set_index(history.toggle_events["event_id"].astype("string"))
    links = att.links[att.links["incident_id"].notna()]
    is_deploy = links["change_kind"].eq("deploy").to_numpy(dtype=bool)
    change_service = np.where(
        is_deploy,
        links["change_id"].map(d["service"]).astype(object),
        links["change_id"].map(t["service"]).astype(object),
    )
    incident_at = links["incident_id"].map(inc_ix["created_at"])
    out = pd.DataFrame(
        {
            "rules": rules,
            "incident_id": links["incident_id"].astype("string"),
            "incident_service": links["incident_id"].map(inc_ix["service"]).astype("string"),
            "incident_at": incident_at,
            "change_kind": links["change_kind"],
            "change_id": links["change_id"],
            "change_service": pd.array(change_service, dtype="string"),
            "change_at": incident_at - links["lag"],
            "method": links["method"],
            "matched_on": links["matched_on"],
            "evidence": links["evidence"],
            "lag_hours": links["lag"].dt.total_seconds() / 3600.0,
        }
    )
    out = out.sort_values(["incident_at", "incident_id", "change_id"], kind="stable").reset_index(drop=True)
    linked = inc["incident_id"].astype("string").isin(out["incident_id"]).to_numpy(dtype=bool)
    end = att.as_of
    rest = inc[~linked & (inc["created_at"] <= end).to_numpy(dtype=bool)] if end is not None else inc[~linked]
    unlinked = pd.DataFrame(
        {
            "rules": rules,
            "incident_id": rest["incident_id"].astype("string"),
            "incident_service": rest["service"].astype("string"),
            "incident_at": rest["created_at"],
            "reason": _unlinked_reason(rest, config),
        }
    )
    return out, unlinked.sort_values(["incident_at", "incident_id"], kind="stable").reset_index(drop=True)
