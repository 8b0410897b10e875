"""High-risk deploy alerts: a scored deploy -> one Block Kit message in its owning squad's channel.

``Alerts.offer`` is what the scoring service calls after a score: it checks the rule and queues a
function that builds the message later, in the sender's thread, so the request pays for a
comparison and a queue put, nothing more. The message names the service, author, probability
and band, the top factors, the changes the deploy stacks on (its service's recent flag flips and
open incidents), and links to the deploy and to the model's MLflow run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from features.history.ownership import service_teams, squad_channels
from features.history.schema import FLIP_ACTIONS, History
from features.pointintime.compute import MISSING_CATEGORY
from models.notify import blocks as bk
from models.notify.config import NotifyConfig
from models.notify.sender import BackgroundSender, Message, Outcome, Poster, SlackSender

#: Most flips and open incidents listed in one alert.
MAX_LISTED = 5


@dataclass(frozen=True)
class Stack:
    """What a deploy lands on: its service's flag flips in the window before it, and open incidents."""

    flips: pd.DataFrame  # flag_key, action, occurred_at, actor
    open_incidents: pd.DataFrame  # incident_id, title, severity, created_at, url


def stacked_changes(history: History, service: str, at: pd.Timestamp, window: pd.Timedelta) -> Stack:
    """The service's flips in ``[at - window, at)`` (newest first) and its incidents open at ``at``."""
    tog = history.toggle_events
    flips = tog[
        tog["service"].eq(service).fillna(False)
        & tog["action"].isin(FLIP_ACTIONS)
        & (tog["occurred_at"] >= at - window)
        & (tog["occurred_at"] < at)
    ]
    inc = history.incidents
    started = inc["service"].eq(service).fillna(False) & (inc["created_at"] <= at)
    still_open = inc["resolved_at"].isna() | (inc["resolved_at"] > at)
    open_incidents = inc[started & still_open.fillna(True)]
    return Stack(
        flips=flips.sort_values("occurred_at", ascending=False)[["flag_key", "action", "occurred_at", "actor"]],
        open_incidents=open_incidents.sort_values("created_at", ascending=False)[
            ["incident_id", "title", "severity", "created_at", "url"]
        ],
    )


@dataclass(frozen=True)
class Owner:
    squad: str | None
    tribe: str | None
    channel: str


def _when(ts: Any) -> str:
    return pd.Timestamp(ts).strftime("%a %d %b %H:%M UTC")


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def alert_message(payload: Mapping[str, Any], author: str | None, owner: Owner, stack: Stack, links: Any) -> Message:
    """The Block Kit alert of one scored deploy (``payload`` is the service's score response)."""
    service = str(payload.get("service") or "?")
    p = float(payload["probability"])
    band = str(payload["band"])
    model = payload.get("model") or {}
    deploy_id = payload.get("deploy_id")
    factors = "\n".join(
        f"• `{bk.escape(f['feature'])}` = {bk.escape(_value(f['value']))} "
        f"({'↑' if f['contribution'] > 0 else '↓'} {f['contribution']:+.2f})"
        for f in payload.get("factors", [])
    )
    lines = [
        f"• flag {bk.escape(r.flag_key)} {bk.escape(r.action)} {_when(r.occurred_at)}"
        + (f" by {bk.escape(r.actor)}" if isinstance(r.actor, str) else "")
        for r in stack.flips.head(MAX_LISTED).itertuples(index=False)
    ]
    if len(stack.flips) > MAX_LISTED:
        lines.append(f"• …and {len(stack.flips) - MAX_LISTED} more flips")
    lines += [
        f"• incident {bk.link(r.url if isinstance(r.url, str) else None, r.title or r.incident_id)}"
        f" ({r.severity if isinstance(r.severity, str) else 'no severity'}, open since {_when(r.created_at)})"
        for r in stack.open_incidents.head(MAX_LISTED).itertuples(index=False)
    ]
    if len(stack.open_incidents) > MAX_LISTED:
        lines.append(f"• …and {len(stack.open_incidents) - MAX_LISTED} more open incidents")
    team = " / ".join(t for t in (owner.squad, owner.tribe) if t) or "unknown team"
    blocks: list[bk.Block] = [
        bk.header(f"{band.capitalize()} deploy risk: {service}"),
        bk.section(
            f"*{bk.escape(service)}* deploy by *{bk.escape(author or 'unknown author')}*: "
            f"*{p:.0%}* chance of causing an incident ({band} band).",
            fields=[
                f"*Probability*\n{p:.1%}",
                f"*Band*\n{band}",
                f"*Team*\n{bk.escape(team)}",
                f"*Deploy*\n{bk.link(links.deploy(service, deploy_id, payload.get('commit_sha')), deploy_id or 'n/a')}",
            ],
        ),
        bk.section(f"*Top factors*\n{factors or '_none stood out_'}"),
        bk.section("*Stacks on*\n" + ("\n".join(lines) if lines else "_no recent flag flips or open incidents_")),
    ]
    safer = [
        f"• {bk.escape(a['detail'])}: {float(a['probability']):.0%} ({float(a['change']):+.0%})"
        for a in payload.get("advice") or []
    ]
    if safer:
        blocks.append(bk.section("*Safer ways to ship the same change* (docs/advice.md)\n" + "\n".join(safer)))
    actions = bk.buttons(
        [
            ("Deploy", links.deploy(service, deploy_id, payload.get("commit_sha"))),
            ("Model run in MLflow", links.run(model.get("run_id"))),
        ]
    )
    if actions is not None:
        blocks.append(actions)
    blocks.append(
        bk.context(
            f"model {bk.escape(model.get('name', '?'))} v{bk.escape(model.get('version', '?'))}"
            f" · store v{payload.get('store_version', '?')} · scored for {bk.escape(payload.get('scored_for', ''))}"
        )
    )
    text = f"{band.capitalize()} deploy risk: {service} ({p:.0%}) by {author or 'unknown author'}"
    return Message(owner.channel, text, bk.limit_blocks(blocks))


def deploy_key(payload: Mapping[str, Any], commit_sha: str | None) -> str:
    """One alert per deploy: its id, else its commit on the service, else the service and planned time."""
    service = payload.get("service") or ""
    if payload.get("deploy_id"):
        return f"id:{payload['deploy_id']}"
    if commit_sha:
        return f"sha:{service}:{commit_sha}"
    return f"at:{service}:{payload.get('scored_for')}"


class Alerts:
    """Alerts of one scoring service: the rule, the owner lookup and the background sender."""

    def __init__(
        self, config: NotifyConfig, poster: Poster | None = None, on_outcome: Callable[[Outcome], None] | None = None
    ) -> None:
        self.config = config
        self.sender = BackgroundSender(
            poster if poster is not None else SlackSender(config.slack),
            queue_size=config.queue_size,
            on_outcome=on_outcome or (lambda _: None),
        )
        self._teams: tuple[pd.DataFrame, pd.DataFrame, dict[str, str]] | None = None  # per catalog frame

    def offer(
        self,
        history: History,
        payload: Mapping[str, Any],
        author: str | None,
        commit_sha: str | None,
        advice: Callable[[], list[dict[str, Any]]] | None = None,
    ) -> bool:
        """Queue the alert of a score when the rule fires; returns at once (True when queued).

        ``advice``, when the score did not carry it, is computed by the sender thread, off the request path.
        """
        if not self.config.rule.fires(str(payload["band"]), float(payload["probability"])):
            return False
        data = {**payload, "commit_sha": commit_sha}

        def build() -> Message:
            if advice is not None and "advice" not in data:
                data["advice"] = advice()
            return self.build(history, data, author)

        return self.sender.submit(deploy_key(payload, commit_sha), build)

    def owner(self, history: History, payload: Mapping[str, Any]) -> Owner:
        """Squad, tribe and channel: the catalog first, then the teams the score used."""
        catalog = history.catalog
        cached = self._teams
        if cached is None or cached[0] is not catalog:  # a new snapshot: its catalog, its teams
            cached = (catalog, service_teams(catalog).set_index("service"), squad_channels(catalog))
            self._teams = cached
        _, teams, channels = cached
        service = str(payload.get("service"))
        features = payload.get("features") or {}
        squad = tribe = service_channel = None
        if service in teams.index:
            row = teams.loc[service]
            squad, tribe, service_channel = (_known(row[c]) for c in ("squad", "tribe", "slack_channel"))
        squad = squad or _known(features.get("squad"))
        tribe = tribe or _known(features.get("tribe"))
        return Owner(squad, tribe, self.config.routing.channel(squad, tribe, channels, service_channel))

    def build(self, history: History, payload: Mapping[str, Any], author: str | None) -> Message:
        at = pd.Timestamp(str(payload["scored_for"]))
        window = pd.Timedelta(hours=self.config.stack_window_hours)
        stack = stacked_changes(history, str(payload.get("service")), at, window)
        return alert_message(payload, author, self.owner(history, payload), stack, self.config.links)

    def flush(self, timeout: float = 10.0) -> bool:
        return self.sender.flush(timeout)

    def close(self) -> None:
        self.sender.close()


def _known(value: Any) -> str | None:
    if not isinstance(value, str) or not value or value == MISSING_CATEGORY:
        return None
    return value
