"""The weekly risk digest: per squad (and rolled up per tribe), what the week's deploys did.

Pure functions of the history, its attribution and the champion's scores of the week's deploys:
deploys, change failure rate and time to restore against the previous weeks' average; predicted
failures (the sum of the scores) against realised ones (attributed, mature or not); the riskiest
deploys and what happened to them; the incidents and what caused them (the cause an incident names,
else the suspects model's ranking, the one ordering the live question and the API give: no second
ordering here); toggle debt (stale enabled flags, the oldest of them, the flags flipped most).
``digest_message`` turns one into Block Kit; the flow (pipelines/flows/digest.py) adds the chart, MLflow and Slack.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from features.history.schema import FLIP_ACTIONS, History
from features.labels.attribution import Attribution
from features.labels.dora import UNKNOWN, DoraConfig, dora_metrics
from models.notify import blocks as bk
from models.notify.config import Links, Routing
from models.notify.sender import Message
from models.scoring.suspects import SuspectContext, SuspectsError, incident_suspects

Level = Literal["squad", "tribe"]
WEEK = pd.Timedelta(days=7)


@dataclass(frozen=True)
class DigestConfig:
    """Which week (starting Monday 00:00 UTC) and how much of each list to show."""

    week_start: pd.Timestamp
    trend_weeks: int = 4
    riskiest: int = 5
    incidents: int = 5
    suspects: int = 3
    stale_days: int = 30
    top_flags: int = 3

    def __post_init__(self) -> None:
        ts = pd.Timestamp(self.week_start)
        if ts.tzinfo is None or ts != ts.normalize() or ts.dayofweek != 0:
            raise ValueError(f"week_start must be a Monday at 00:00 UTC, not {self.week_start}")
        if min(self.trend_weeks, self.riskiest, self.incidents, self.suspects, self.stale_days, self.top_flags) < 1:
            raise ValueError("trend_weeks, riskiest, incidents, suspects, stale_days and top_flags must be at least 1")

    @property
    def week_end(self) -> pd.Timestamp:
        return self.week_start + WEEK


def last_full_week(as_of: pd.Timestamp) -> pd.Timestamp:
    """The Monday starting the last complete week before ``as_of`` (UTC)."""
    day = pd.Timestamp(as_of).tz_convert("UTC").normalize()
    return day - pd.Timedelta(days=day.dayofweek) - WEEK


@dataclass
class TeamDigest:
    """One squad's (or tribe's) week."""

    team: str
    level: Level
    tribe: str | None
    week_start: pd.Timestamp
    metrics: dict[str, float | None]  # deployments, change_failure_rate, time_to_restore_hours, and prev_* averages
    predicted: float | None  # sum of the champion's probabilities over the week's production deploys
    realised: int  # of those, attributed failures so far
    immature: int  # of those, still inside the attribution window
    riskiest: pd.DataFrame  # deploy_id, service, author, probability, band, failed, incident
    incidents: pd.DataFrame  # incident_id, title, severity, service, url, suspects (list of str: incident_causes)
    toggle_debt: dict[str, Any]  # stale_enabled, oldest (flag, since), most_flipped [(flag, n)]
    squads: list[dict[str, Any]] = field(default_factory=list)  # tribe roll-up: one line per squad
    trend_weeks: int = 4


def _teams(history: History) -> pd.DataFrame:
    """service -> squad, tribe (each service's latest deploy naming them; ownership already applied)."""
    from features.labels.dora import service_teams

    return service_teams(history.deploys).set_index("service")


def _trend(metrics: pd.DataFrame, group: str, config: DigestConfig) -> dict[str, float | None]:
    rows = metrics[metrics["group"] == group].set_index("period_start")
    out: dict[str, float | None] = {}
    prev = [config.week_start - WEEK * k for k in range(1, config.trend_weeks + 1)]
    for column in ("deployments", "change_failure_rate", "time_to_restore_hours", "incidents"):
        now = rows[column].get(config.week_start) if len(rows) else None
        before = rows[column].reindex(prev) if len(rows) else pd.Series(dtype=float)
        out[column] = None if now is None or pd.isna(now) else float(now)
        mean = before.astype(float).mean() if column != "deployments" else before.astype(float).fillna(0).mean()
        out[f"prev_{column}"] = None if pd.isna(mean) else float(mean)
    if out["deployments"] is None:
        out["deployments"] = 0.0
    return out


#: What an incident of the week shows when it names no cause and there is no ranking (no champion).
NO_RANKING = "suspects not ranked (no champion)"


def rank_incidents(
    ctx: SuspectContext, incident_ids: Iterable[str], as_of: pd.Timestamp, k: int
) -> dict[str, dict[str, Any]]:
    """The suspects model's answer (``incident_suspects``, as the API gives it) for each incident, asked at ``as_of``
    (the week's end: rollbacks by then count); incidents it cannot rank (no service, not production) are left out."""
    out: dict[str, dict[str, Any]] = {}
    for incident_id in incident_ids:
        try:
            out[str(incident_id)] = incident_suspects(ctx, str(incident_id), top=k, as_of=as_of)
        except SuspectsError:
            continue
    return out


def _change_name(kind: str, change: str, deploys: pd.DataFrame, toggles: pd.DataFrame) -> str:
    if kind == "deploy" and change in deploys.index:
        d = deploys.loc[change]
        who = f" by {d['author']}" if isinstance(d["author"], str) else ""
        return f"deploy {change} of {d['service']}{who}"
    if kind == "toggle" and change in toggles.index:
        t = toggles.loc[change]
        return f"flag {t['flag_key']} {t['action']}"
    return f"{kind} {change}"


def incident_causes(
    attribution: Attribution,
    history: History,
    incident_ids: pd.Series,
    answers: Mapping[str, Mapping[str, Any]] | None,
    k: int,
) -> dict[str, list[str]]:
    """incident -> what the digest says about its cause.

    A cause the incident names (an explicit link) is a record, not a guess: it is shown alone. An incident marked
    not change-related says so. Otherwise the suspects model's answer (``answers``, from ``rank_incidents``) in its
    own order, "no recent change" placed by its share: the digest never orders suspects itself. No answer (no
    champion): ``NO_RANKING``."""
    links = attribution.links
    named = links[links["method"].eq("explicit") & links["incident_id"].isin(incident_ids)]
    deploys = history.deploys.set_index("deploy_id")
    toggles = history.toggle_events.set_index("event_id")
    inc = history.incidents.drop_duplicates("incident_id")
    marked = inc.set_index("incident_id")["not_change_related"].astype("boolean").fillna(False)
    out: dict[str, list[str]] = {}
    for incident_id in incident_ids:
        key = str(incident_id)
        mine = named[named["incident_id"].eq(incident_id)]
        if len(mine):
            r = mine.iloc[0]
            out[key] = [f"{_change_name(r['change_kind'], r['change_id'], deploys, toggles)} (named by the incident)"]
        elif bool(marked.get(incident_id, False)):
            out[key] = ["marked not change-related"]
        elif answers is not None and key in answers:
            answer = answers[key]
            items = [
                (float(sx["share"]), _change_name(sx["change_kind"], sx["change_id"], deploys, toggles))
                for sx in answer["suspects"][:k]
            ]
            background = float(answer["background_share"])
            at = next((i for i, (share, _) in enumerate(items) if background >= share), len(items))
            items.insert(at, (background, "no recent change"))
            out[key] = [f"{name} ({share:.0%})" for share, name in items[: k + 1]]
        else:
            out[key] = [NO_RANKING]
    return out


def toggle_debt(toggles: pd.DataFrame, end: pd.Timestamp, start: pd.Timestamp, stale_days: int, top: int) -> dict:
    """Flags still enabled at ``end`` whose last flip is over ``stale_days`` old, the oldest of them,
    and the flags flipped most in ``[start, end)``."""
    before = toggles[toggles["occurred_at"] < end]
    if before.empty:
        return {"stale_enabled": 0, "oldest": None, "most_flipped": []}
    ordered = before.sort_values("occurred_at", kind="stable")
    state_events = ordered[ordered["action"].isin(["enabled", "disabled", "archived", "deleted"])]
    last_state = state_events.groupby("flag_key")["action"].last()
    enabled = last_state[last_state == "enabled"].index
    flips = ordered[ordered["action"].isin(FLIP_ACTIONS)]
    last_flip = flips.groupby("flag_key")["occurred_at"].max()
    first_seen = ordered.groupby("flag_key")["occurred_at"].min()
    stale = [f for f in enabled if last_flip.get(f, first_seen[f]) < end - pd.Timedelta(days=stale_days)]
    oldest = min(stale, key=lambda f: first_seen[f]) if stale else None
    week = flips[flips["occurred_at"] >= start].groupby("flag_key").size().sort_values(ascending=False, kind="stable")
    return {
        "stale_enabled": len(stale),
        "oldest": None if oldest is None else (str(oldest), first_seen[oldest]),
        "most_flipped": [(str(f), int(n)) for f, n in week.head(top).items()],
    }


def build_digests(
    history: History,
    attribution: Attribution,
    scores: pd.DataFrame | None,
    config: DigestConfig,
    suspects: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[TeamDigest]:
    """A digest per squad with activity in the week, and one per tribe rolling its squads up.

    ``scores``: deploy_id, probability, band of the week's deploys (None: no champion, so no
    predictions). ``suspects``: the suspects model's answer per incident (``rank_incidents``; None: no
    champion, so incidents naming no cause show none). Squads are the deploys' (catalog ownership applied
    when the history was read).
    """
    start, end = config.week_start, config.week_end
    teams = _teams(history)
    labels = attribution.deploy_labels
    week = labels[labels["eligible"] & (labels["change_time"] >= start) & (labels["change_time"] < end)].copy()
    week["squad"] = week["service"].map(teams["squad"]).fillna(UNKNOWN)
    week["tribe"] = week["service"].map(teams["tribe"]).fillna(UNKNOWN)
    deploys = history.deploys.set_index("deploy_id")
    week["author"] = week["deploy_id"].map(deploys["author"])
    if scores is not None and len(scores):
        s = scores.drop_duplicates("deploy_id").set_index("deploy_id")
        week["probability"] = week["deploy_id"].map(s["probability"]).astype(float)
        week["band"] = week["deploy_id"].map(s["band"])
    else:
        week["probability"] = np.nan
        week["band"] = None
    caused = attribution.links[attribution.links["change_kind"].eq("deploy") & attribution.links["incident_id"].notna()]
    titles = history.incidents.set_index("incident_id")["title"]
    first_incident = caused.drop_duplicates("change_id").set_index("change_id")["incident_id"]
    week["incident"] = week["deploy_id"].map(first_incident).map(titles)

    inc = history.incidents[(history.incidents["created_at"] >= start) & (history.incidents["created_at"] < end)].copy()
    inc["squad"] = inc["service"].map(teams["squad"]).fillna(UNKNOWN)
    inc["tribe"] = inc["service"].map(teams["tribe"]).fillna(UNKNOWN)
    causes = incident_causes(attribution, history, inc["incident_id"], suspects, config.suspects)
    inc["suspects"] = [causes.get(str(i), []) for i in inc["incident_id"]]
    tog = history.toggle_events.copy()
    tog["squad"] = tog["service"].map(teams["squad"]).fillna(UNKNOWN)
    tog["tribe"] = tog["service"].map(teams["tribe"]).fillna(UNKNOWN)

    out: list[TeamDigest] = []
    for level in ("squad", "tribe"):
        metrics = dora_metrics(history, attribution, DoraConfig(by=level, period="week"))
        active = sorted(set(week[level]) | set(inc[level]))
        for team in active:
            if team == UNKNOWN:
                continue
            mine = week[week[level] == team]
            scored = mine["probability"].notna()
            digest = TeamDigest(
                team=team,
                level=level,  # type: ignore[arg-type]
                tribe=team if level == "tribe" else (str(mine["tribe"].iloc[0]) if len(mine) else None),
                week_start=start,
                metrics=_trend(metrics, team, config),
                predicted=float(mine.loc[scored, "probability"].sum()) if scored.any() else None,
                realised=int((mine["failed"].astype(bool)).sum()),
                immature=int((~mine["mature"].astype(bool)).sum()),
                riskiest=mine[scored]
                .sort_values("probability", ascending=False, kind="stable")
                .head(config.riskiest)[["deploy_id", "service", "author", "probability", "band", "failed", "incident"]]
                .reset_index(drop=True),
                incidents=inc[inc[level] == team]
                .sort_values(["severity", "created_at"], kind="stable")
                .head(config.incidents)[["incident_id", "title", "severity", "service", "url", "suspects"]]
                .reset_index(drop=True),
                toggle_debt=toggle_debt(tog[tog[level] == team], end, start, config.stale_days, config.top_flags),
                trend_weeks=config.trend_weeks,
            )
            if digest.tribe is None and len(inc[inc[level] == team]):
                digest.tribe = str(inc.loc[inc[level] == team, "tribe"].iloc[0])
            out.append(digest)
    by_tribe: dict[str, list[dict[str, Any]]] = {}
    for d in out:
        if d.level == "squad" and d.tribe:
            by_tribe.setdefault(d.tribe, []).append(
                {
                    "squad": d.team,
                    "deployments": d.metrics["deployments"],
                    "cfr": d.metrics["change_failure_rate"],
                    "predicted": d.predicted,
                    "realised": d.realised,
                }  # fmt: skip
            )
    for d in out:
        if d.level == "tribe":
            d.squads = sorted(by_tribe.get(d.team, []), key=lambda r: str(r["squad"]))
    return out


# --------------------------------------------------------------------------------------------
# Messages


def _pct(value: float | None) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.0%}"


def _num(value: float | None, unit: str = "") -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3g}{unit}"


def _arrow(now: float | None, before: float | None) -> str:
    if now is None or before is None or any(isinstance(v, float) and math.isnan(v) for v in (now, before)):
        return ""
    if abs(now - before) <= 1e-9 + 0.05 * abs(before):
        return " →"
    return " ↑" if now > before else " ↓"


def digest_message(d: TeamDigest, channel: str, chart_url: str | None, links: Links) -> Message:
    """The Block Kit digest of one squad or tribe."""
    m = d.metrics
    week = d.week_start.strftime("%d %b %Y")
    who = f"{d.level} {d.team}"
    fields = [
        f"*Deploys*\n{_num(m['deployments'])}{_arrow(m['deployments'], m['prev_deployments'])}"
        f" (avg {_num(m['prev_deployments'])} before)",
        f"*Change failure rate*\n{_pct(m['change_failure_rate'])}"
        f"{_arrow(m['change_failure_rate'], m['prev_change_failure_rate'])}"
        f" (avg {_pct(m['prev_change_failure_rate'])} before)",
        f"*Time to restore*\n{_num(m['time_to_restore_hours'], ' h')}"
        f"{_arrow(m['time_to_restore_hours'], m['prev_time_to_restore_hours'])}"
        f" (avg {_num(m['prev_time_to_restore_hours'], ' h')} before)",
        f"*Predicted vs realised failures*\n{_num(d.predicted)} predicted · {d.realised} realised"
        + (f" ({d.immature} deploys not yet mature)" if d.immature else ""),
    ]
    blocks: list[bk.Block] = [
        bk.header(f"Weekly deploy risk: {who}, week of {week}"),
        bk.section(
            f"*{bk.escape(who)}*: the week of {week} against the {d.trend_weeks} previous weeks' average.", fields
        ),
    ]
    if d.level == "tribe" and d.squads:
        lines = [
            f"• *{bk.escape(r['squad'])}*: {_num(r['deployments'])} deploys, CFR {_pct(r['cfr'])}, "
            f"{_num(r['predicted'])} predicted / {r['realised']} realised failures"
            for r in d.squads
        ]
        blocks.append(bk.section("*Squads*\n" + "\n".join(lines)))
    risky = []
    for r in d.riskiest.to_dict("records"):
        url = links.deploy(r["service"], r["deploy_id"], None)
        outcome = f"incident: {bk.escape(r['incident'])}" if isinstance(r["incident"], str) else (
            "failed" if bool(r["failed"]) else "no incident")  # fmt: skip
        by = f" by {bk.escape(r['author'])}" if isinstance(r["author"], str) else ""
        name = f"{r['service']} {r['deploy_id']}"
        risky.append(f"• {bk.link(url, name)}{by}: {_pct(r['probability'])} ({r['band']}) → {outcome}")
    blocks.append(bk.section("*Riskiest deploys*\n" + ("\n".join(risky) or "_no scored deploys this week_")))
    incidents = []
    for r in d.incidents.to_dict("records"):
        sev = r["severity"] if isinstance(r["severity"], str) else "no severity"
        url = r["url"] if isinstance(r["url"], str) else None
        title = bk.link(url, r["title"] if isinstance(r["title"], str) else r["incident_id"])
        suspects = "; ".join(bk.escape(s) for s in r["suspects"]) or NO_RANKING
        incidents.append(f"• {title} ({sev}, {bk.escape(r['service'])}): {suspects}")
    blocks.append(bk.section("*Incidents and top suspects*\n" + ("\n".join(incidents) or "_no incidents this week_")))
    debt = d.toggle_debt
    oldest = (
        f"; oldest: `{bk.escape(debt['oldest'][0])}` (since {debt['oldest'][1]:%d %b %Y})" if debt["oldest"] else ""
    )
    flipped = ", ".join(f"`{bk.escape(f)}` ({n})" for f, n in debt["most_flipped"]) or "none"
    blocks.append(
        bk.section(
            f"*Toggle debt*\n{debt['stale_enabled']} stale enabled flags{oldest}\nFlipped most this week: {flipped}"
        )
    )
    actions = bk.buttons([("Chart in MLflow", chart_url)])
    if actions is not None:
        blocks.append(actions)
    blocks.append(bk.context("incident-risk weekly digest · change failure rate counts mature deploys only"))
    text = (
        f"Weekly deploy risk for {who}: {_num(m['deployments'])} deploys, CFR {_pct(m['change_failure_rate'])}, "
        f"{_num(d.predicted)} predicted / {d.realised} realised failures"
    )
    return Message(channel, text, bk.limit_blocks(blocks))


def digest_messages(
    digests: list[TeamDigest],
    routing: Routing,
    catalog_channels: Mapping[str, str],
    chart_url: str | None,
    links: Links,
) -> list[Message]:
    """One message per squad (to its channel) and per tribe (to the tribe's)."""
    out = []
    for d in digests:
        if d.level == "squad":
            channel = routing.channel(d.team, d.tribe, catalog_channels)
        else:
            channel = routing.channel(None, d.team, catalog_channels)
        out.append(digest_message(d, channel, chart_url, links))
    return out


def plot_digest(digests: list[TeamDigest], path: Path) -> None:
    """One PNG: predicted vs realised failures per squad this week, and deploys per tribe."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    squads = [d for d in digests if d.level == "squad"]
    tribes = [d for d in digests if d.level == "tribe"]
    fig, axes = plt.subplots(1, 2, figsize=(14, max(4, 0.3 * len(squads) + 1.5)))
    try:
        y = np.arange(len(squads))
        axes[0].barh(y - 0.2, [d.predicted or 0.0 for d in squads], height=0.4, label="predicted")
        axes[0].barh(y + 0.2, [d.realised for d in squads], height=0.4, label="realised")
        axes[0].set_yticks(y, [d.team for d in squads], fontsize="small")
        axes[0].set_title("failures per squad: predicted vs realised")
        axes[0].legend()
        t = np.arange(len(tribes))
        axes[1].bar(t - 0.2, [d.metrics["prev_deployments"] or 0.0 for d in tribes], width=0.4, label="avg before")
        axes[1].bar(t + 0.2, [d.metrics["deployments"] or 0.0 for d in tribes], width=0.4, label="this week")
        axes[1].set_xticks(t, [d.team for d in tribes], rotation=30, ha="right")
        axes[1].set_title("deploys per tribe")
        axes[1].legend()
        week = digests[0].week_start.strftime("%d %b %Y") if digests else ""
        fig.suptitle(f"incident-risk weekly digest, week of {week}")
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
