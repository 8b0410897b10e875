"""Who owns a service, from the software catalog: service -> squad, tribe and Slack channel.

The catalog table (``features.history.schema.CATALOG``, read from Backstage by
``features.sources.backstage``) maps each Component or System to its owning Group; Groups form a
tree through ``parent`` whose ``type`` says squad or tribe. Deploy rows carry squad/tribe only when
the deploy tool knew them, so ``apply_ownership`` fills them from the catalog when reading the
history (or overrides them, for catalogs declared with ``ownership: override``): the team is the
catalog's owner wherever the catalog knows the service.
"""

from __future__ import annotations

import pandas as pd

#: Group types that make a group the tribe of the squads below it.
TRIBE_TYPES = ("tribe",)
#: How far up the group tree a tribe is looked for (also guards against a cyclic ``parent``).
MAX_DEPTH = 16
TEAM_COLUMNS = ("service", "squad", "tribe", "owner", "slack_channel", "ownership")


def _text(value: object) -> str | None:
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return None
    text = str(value).strip()
    return text or None


def service_teams(catalog: pd.DataFrame) -> pd.DataFrame:
    """One row per catalogued service: its squad, tribe, owner, channel and ownership mode.

    Components win over Systems of the same name; a Component without an owner takes its
    System's. The squad is the owning group (unless that group is itself a tribe); the tribe is
    the first group of type ``tribe`` on the way up from the owner. The channel is the service's
    own ``slack.com/channel`` annotation, else its squad's, else its tribe's.
    """
    if catalog.empty:
        return pd.DataFrame({c: pd.Series(dtype="string") for c in TEAM_COLUMNS})
    groups = catalog[catalog["kind"] == "group"]
    group_type = {str(n): _text(t) for n, t in zip(groups["name"], groups["type"], strict=True)}
    group_parent = {str(n): _text(p) for n, p in zip(groups["name"], groups["parent"], strict=True)}
    group_channel = {str(n): _text(c) for n, c in zip(groups["name"], groups["slack_channel"], strict=True)}
    systems = catalog[catalog["kind"] == "system"]
    system_owner = {str(n): _text(o) for n, o in zip(systems["name"], systems["owner"], strict=True)}

    rows: dict[str, dict[str, str | None]] = {}
    for kind in ("system", "component"):  # components last: they win
        part = catalog[catalog["kind"] == kind]
        for rec in part[["name", "owner", "system", "slack_channel", "ownership"]].itertuples(index=False):
            owner = _text(rec.owner) or (system_owner.get(str(rec.system)) if _text(rec.system) else None)
            squad, tribe = _squad_and_tribe(owner, group_type, group_parent)
            channel = _text(rec.slack_channel) or group_channel.get(squad or "") or group_channel.get(tribe or "")
            rows[str(rec.name)] = {
                "service": str(rec.name),
                "squad": squad,
                "tribe": tribe,
                "owner": owner,
                "slack_channel": channel.lstrip("#") if channel else None,
                "ownership": _text(rec.ownership) or "fill",
            }
    out = pd.DataFrame(list(rows.values()), columns=list(TEAM_COLUMNS))
    return out.astype("string").sort_values("service", kind="stable").reset_index(drop=True)


def _squad_and_tribe(
    owner: str | None, group_type: dict[str, str | None], group_parent: dict[str, str | None]
) -> tuple[str | None, str | None]:
    if owner is None or ":" in owner:  # a user (``user:jane``) owns it: no squad to name
        return None, None
    squad = None if group_type.get(owner) in TRIBE_TYPES else owner
    node: str | None = owner
    for _ in range(MAX_DEPTH):
        if node is None:
            break
        if group_type.get(node) in TRIBE_TYPES:
            return squad, node
        node = group_parent.get(node)
    return squad, None


def squad_channels(catalog: pd.DataFrame) -> dict[str, str]:
    """Squad (or tribe) group name -> its Slack channel, from the groups' annotation."""
    if catalog.empty:
        return {}
    groups = catalog[(catalog["kind"] == "group") & catalog["slack_channel"].notna()]
    return {str(n): str(c).lstrip("#") for n, c in zip(groups["name"], groups["slack_channel"], strict=True)}


def group_tribes(catalog: pd.DataFrame) -> dict[str, str]:
    """Group name -> the tribe above it (a tribe maps to itself); for rolling squads up."""
    if catalog.empty:
        return {}
    groups = catalog[catalog["kind"] == "group"]
    group_type = {str(n): _text(t) for n, t in zip(groups["name"], groups["type"], strict=True)}
    group_parent = {str(n): _text(p) for n, p in zip(groups["name"], groups["parent"], strict=True)}
    out = {}
    for name in group_type:
        _, tribe = _squad_and_tribe(name, group_type, group_parent)
        if tribe is not None:
            out[name] = tribe
    return out


def apply_ownership(deploys: pd.DataFrame, catalog: pd.DataFrame) -> pd.DataFrame:
    """Deploys with squad/tribe from the catalog: filled where blank, replaced under ``override``.

    Returns the input itself when the catalog knows none of its services (no copy); otherwise a
    new frame, the input untouched.
    """
    teams = service_teams(catalog)
    if teams.empty or deploys.empty:
        return deploys
    known = teams[teams["squad"].notna() | teams["tribe"].notna()].set_index("service")
    if known.empty:
        return deploys
    service = deploys["service"].astype("string")
    hit = service.isin(known.index).to_numpy()
    if not hit.any():
        return deploys
    out = deploys.copy()
    override = service.map(known["ownership"]).eq("override").fillna(False).to_numpy()
    for column in ("squad", "tribe"):
        from_catalog = service.map(known[column]).astype(out[column].dtype)
        blank = out[column].isna().to_numpy() | out[column].astype("string").str.strip().eq("").fillna(False).to_numpy()
        take = hit & from_catalog.notna().to_numpy() & (blank | override)
        out.loc[take, column] = from_catalog[take]
    return out
