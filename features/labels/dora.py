"""DORA metrics per service, squad or tribe and per week or month, from the attributed history.

Definitions follow DORA (see ``docs/labels.md`` for where and why ours differ):

- deployment frequency: shipped production deploys per period (and per day of the period);
- change failure rate: failed / all production deploys, over deploys whose label is mature;
- time to restore: median(resolved_at - created_at) of production incidents;
- failed deployment recovery time: median(incident resolved_at - causing deploy finished_at) over
  the incident links of failed deploys.

Pure functions of the history and its ``Attribution``; periods start Monday 00:00 UTC (weeks) or
on the 1st 00:00 UTC (months).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import pandas as pd

from features.history.choices import check_choice
from features.history.schema import History
from features.labels.attribution import Attribution

Grouping = Literal["service", "squad", "tribe", "all"]
Period = Literal["week", "month"]

#: Group of a record whose service (or its squad/tribe) is unknown.
UNKNOWN = "(unknown)"
ALL = "all"

METRIC_COLUMNS = (
    "group",
    "period_start",
    "deployments",
    "deploys_per_day",
    "mature_deployments",
    "failed_deployments",
    "change_failure_rate",
    "flips",
    "failed_flips",
    "incidents",
    "resolved_incidents",
    "time_to_restore_hours",
    "recoveries",
    "failed_deployment_recovery_hours",
)


@dataclass(frozen=True)
class DoraConfig:
    """How DORA metrics are grouped and bucketed.

    production_only: count only production incidents (those with no environment are kept).
    """

    by: Grouping = "service"
    period: Period = "week"
    production_only: bool = True

    def __post_init__(self) -> None:
        check_choice("by", self.by, Grouping)
        check_choice("period", self.period, Period)


def period_start(times: pd.Series, period: Period) -> pd.Series:
    """The start (UTC midnight) of the week (Monday) or month each timestamp falls in."""
    day = times.dt.tz_convert("UTC").dt.floor("D")
    if period == "week":
        return day - pd.to_timedelta(day.dt.dayofweek, unit="D")
    return day - pd.to_timedelta(day.dt.day - 1, unit="D")


def period_days(starts: pd.Series, period: Period) -> pd.Series:
    """Length in days of each period beginning at ``starts``."""
    if period == "week":
        return pd.Series(7, index=starts.index, dtype="int64")
    return starts.dt.days_in_month.astype("int64")


#: A deploy's team columns: filled from its service's history when a deploy to score lacks them.
TEAM_COLUMNS = ("squad", "tribe")
#: service -> (squad, tribe), either possibly None: ``service_teams`` as plain values for lookups.
Teams = Mapping[str, tuple[str | None, str | None]]


def service_teams(deploys: pd.DataFrame) -> pd.DataFrame:
    """service -> squad, tribe, taken from each service's latest deploy that names them."""
    cols = ["service", "created_at", "squad", "tribe"]
    d = deploys[cols].sort_values("created_at", kind="stable")
    d = d[d["service"].notna()]
    out = pd.DataFrame({"service": d["service"].drop_duplicates().to_numpy()})
    for team in TEAM_COLUMNS:
        latest = d[d[team].notna()].drop_duplicates("service", keep="last").set_index("service")[team]
        out[team] = out["service"].map(latest)
    return out.astype("string")


def team_lookup(deploys: pd.DataFrame) -> dict[str, tuple[str | None, str | None]]:
    """``service_teams`` as a plain mapping, for filling one request without pandas."""
    teams = service_teams(deploys)
    return {
        str(service): (None if pd.isna(squad) else str(squad), None if pd.isna(tribe) else str(tribe))
        for service, squad, tribe in zip(teams["service"], teams["squad"], teams["tribe"], strict=True)
    }


def fill_teams(
    service: str | None, squad: str | None, tribe: str | None, teams: Teams
) -> tuple[str | None, str | None, tuple[str, ...]]:
    """The one team-filling rule: a missing squad or tribe takes the service's latest known one.

    Returns (squad, tribe, the names of the columns that were filled). Given values are never replaced.
    """
    known = teams.get(service) if service is not None else None
    if known is None:
        return squad, tribe, ()
    new_squad = squad if squad is not None else known[0]
    new_tribe = tribe if tribe is not None else known[1]
    filled = tuple(name for name, old, new in (("squad", squad, new_squad), ("tribe", tribe, new_tribe)) if old != new)
    return new_squad, new_tribe, filled


def group_of(services: pd.Series, teams: pd.DataFrame, by: Grouping) -> pd.Series:
    """The group (service, its squad or tribe, or "all") of each service; unknown -> UNKNOWN."""
    if by == ALL:
        return pd.Series(ALL, index=services.index, dtype="string")
    s = services.astype("string")
    if by == "service":
        return s.fillna(UNKNOWN)
    mapping = teams.set_index("service")[by]
    return s.map(mapping).astype("string").fillna(UNKNOWN)


def _median_hours(values: pd.Series, keys: list[pd.Series]) -> pd.Series:
    hours = values.dt.total_seconds() / 3600.0
    return hours.groupby(keys).median()


def dora_metrics(history: History, attribution: Attribution, config: DoraConfig) -> pd.DataFrame:
    """One row per (group, period) with the four DORA metrics and their counts.

    Deploys count by the time they reached production (``finished_at``, else ``created_at``);
    incidents by ``created_at``; recoveries by the causing deploy's period.
    """
    teams = service_teams(history.deploys)
    labels = attribution.deploy_labels
    prod = labels[labels["eligible"]]
    reached = _reached_production(history.deploys)
    d_time = _lookup(reached, prod["deploy_id"])
    d_keys = [
        group_of(prod["service"], teams, config.by).rename("group"),
        period_start(d_time, config.period).rename("period_start"),
    ]
    mature = prod["mature"].astype(bool)
    deploys = pd.DataFrame(
        {
            "deployments": prod["deploy_id"].groupby(d_keys).size(),
            "mature_deployments": mature.groupby(d_keys).sum(),
            "failed_deployments": (mature & prod["failed"].astype(bool)).groupby(d_keys).sum(),
        }
    )

    tl = attribution.toggle_labels
    flips = tl[tl["is_flip"]]
    f_keys = [
        group_of(flips["service"], teams, config.by).rename("group"),
        period_start(flips["occurred_at"], config.period).rename("period_start"),
    ]
    toggles = pd.DataFrame(
        {
            "flips": flips["event_id"].groupby(f_keys).size(),
            "failed_flips": (flips["failed"].astype(bool) & flips["mature"].astype(bool)).groupby(f_keys).sum(),
        }
    )

    inc = history.incidents
    if attribution.as_of is not None:
        inc = inc[inc["created_at"].le(attribution.as_of).fillna(False).astype(bool)]
    if config.production_only:
        env = inc["environment"]
        inc = inc[(env.isna() | env.eq("production")).astype(bool)]
    i_keys = [
        group_of(inc["service"], teams, config.by).rename("group"),
        period_start(inc["created_at"], config.period).rename("period_start"),
    ]
    restore = inc["resolved_at"] - inc["created_at"]
    incidents = pd.DataFrame(
        {
            "incidents": inc["incident_id"].groupby(i_keys).size(),
            "resolved_incidents": restore.notna().groupby(i_keys).sum(),
            "time_to_restore_hours": _median_hours(restore, i_keys),
        }
    )

    recovery = _recoveries(history, attribution)
    r_keys = [
        group_of(recovery["service"], teams, config.by).rename("group"),
        period_start(recovery["deploy_time"], config.period).rename("period_start"),
    ]
    recoveries = pd.DataFrame(
        {
            "recoveries": recovery["recovery"].notna().groupby(r_keys).sum(),
            "failed_deployment_recovery_hours": _median_hours(recovery["recovery"], r_keys),
        }
    )

    out = deploys.join([toggles, incidents, recoveries], how="outer")
    counts = [
        "deployments",
        "mature_deployments",
        "failed_deployments",
        "flips",
        "failed_flips",
        "incidents",
        "resolved_incidents",
        "recoveries",
    ]
    out[counts] = out[counts].fillna(0).astype("int64")
    out = out.reset_index()
    days = period_days(out["period_start"], config.period)
    out["deploys_per_day"] = out["deployments"] / days
    mature_n = out["mature_deployments"].where(out["mature_deployments"] > 0)
    out["change_failure_rate"] = out["failed_deployments"] / mature_n
    out["group"] = out["group"].astype("string")
    out = out.sort_values(["group", "period_start"], kind="stable").reset_index(drop=True)
    return out[list(METRIC_COLUMNS)].astype({c: "float64" for c in _FLOAT_COLUMNS})


_FLOAT_COLUMNS = (
    "deploys_per_day",
    "change_failure_rate",
    "time_to_restore_hours",
    "failed_deployment_recovery_hours",
)


def _lookup(values: pd.Series, keys: pd.Series) -> pd.Series:
    """``values`` (indexed by a unique key) looked up for each of ``keys``, aligned to ``keys``."""
    return pd.Series(values.reindex(keys.to_numpy()).to_numpy(), index=keys.index, dtype=values.dtype)


def _reached_production(deploys: pd.DataFrame) -> pd.Series:
    """When each deploy went live (finished_at, else created_at), by deploy_id."""
    return deploys["finished_at"].fillna(deploys["created_at"]).set_axis(deploys["deploy_id"].to_numpy())


def _recoveries(history: History, attribution: Attribution) -> pd.DataFrame:
    """One row per (incident, failed deploy) link: the deploy's service, finish time and the
    time from that finish to the incident's resolution (NaT while unresolved)."""
    links = attribution.links
    links = links[links["change_kind"].eq("deploy") & links["incident_id"].notna()]
    labels = attribution.deploy_labels.set_index("deploy_id")
    failed = labels["failed"].reindex(links["change_id"].to_numpy()).fillna(False).to_numpy(dtype=bool)
    links = links[failed]
    service = history.deploys.set_index("deploy_id")["service"]
    resolved = history.incidents.set_index("incident_id")["resolved_at"]
    deploy_time = _lookup(_reached_production(history.deploys), links["change_id"])
    recovery = _lookup(resolved, links["incident_id"]) - deploy_time
    return pd.DataFrame(
        {
            "service": _lookup(service, links["change_id"]).astype("string"),
            "deploy_time": deploy_time,
            "recovery": recovery,
        }
    ).reset_index(drop=True)
