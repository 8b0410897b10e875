"""The registry of source kinds: one entry per connector, looked up by ``kind`` in sources.yaml."""

from __future__ import annotations

from features.sources.backstage import BACKSTAGE_CATALOG
from features.sources.bamboo import BAMBOO_DEPLOYS
from features.sources.base import SourceKind
from features.sources.bitbucket import BITBUCKET_DEPLOYMENTS
from features.sources.devlake import DEVLAKE_WEBHOOK
from features.sources.flagsmith import FLAGSMITH_AUDIT
from features.sources.generic import GENERIC
from features.sources.github import GITHUB_DEPLOYMENTS
from features.sources.gitlab import GITLAB_DEPLOYMENTS
from features.sources.jira import JIRA_INCIDENTS
from features.sources.launchdarkly import LAUNCHDARKLY_AUDITLOG
from features.sources.opsgenie import OPSGENIE_INCIDENTS
from features.sources.pagerduty import PAGERDUTY_INCIDENTS
from features.sources.unleash import UNLEASH_EVENTS


def source_kinds() -> dict[str, SourceKind]:
    """Every connector, by kind name (``generic`` and the vendor connectors)."""
    kinds: list[SourceKind] = [
        GENERIC,
        GITHUB_DEPLOYMENTS,
        GITLAB_DEPLOYMENTS,
        BITBUCKET_DEPLOYMENTS,
        BAMBOO_DEPLOYS,
        DEVLAKE_WEBHOOK,
        LAUNCHDARKLY_AUDITLOG,
        UNLEASH_EVENTS,
        FLAGSMITH_AUDIT,
        PAGERDUTY_INCIDENTS,
        OPSGENIE_INCIDENTS,
        JIRA_INCIDENTS,
        BACKSTAGE_CATALOG,
    ]
    return {k.name: k for k in kinds}
