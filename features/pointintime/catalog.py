"""The declared feature catalog: every column ``compute_features`` returns, with dtype, group, window and why.

In the spirit of Feast's feature views, the catalog is the contract: tests hold the computed frame
to it (names, order, dtypes), ``docs/features.md`` is checked against it, and the feature-set
version models record is a hash of it, so a change to a name, dtype or window changes the version
without anyone remembering to bump it. ``extra_*`` change metrics are declared per source, so the
catalog lists them as one pattern (``EXTRA_PATTERN``), not by name.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

Dtype = Literal["float64", "string"]
Group = Literal["change_size", "toggles", "service_history", "author", "failure_rates", "timing", "change_kind", "team"]

#: The ``extra_*`` pass-through columns (and their ``_missing`` indicators), placed after change size.
EXTRA_PATTERN = ("extra_<name>", "extra_<name>_missing")


@dataclass(frozen=True)
class FeatureSpec:
    """One feature column: ``window`` says which past it reads (``-`` for the deploy's own fields)."""

    name: str
    dtype: Dtype
    group: Group
    window: str
    doc: str


def _f(name: str, group: Group, window: str, doc: str, dtype: Dtype = "float64") -> FeatureSpec:
    return FeatureSpec(name, dtype, group, window, doc)


#: Every feature column in the order ``compute_features`` returns it (numeric, then categorical).
CATALOG: tuple[FeatureSpec, ...] = (
    _f("lines_added", "change_size", "-", "lines added as declared; missing -> 0"),
    _f("lines_deleted", "change_size", "-", "lines deleted as declared; missing -> 0"),
    _f("files_changed", "change_size", "-", "files changed as declared; missing -> 0"),
    _f("commit_count", "change_size", "-", "commits as declared; missing -> 0"),
    _f("churn", "change_size", "-", "lines added + deleted (the known parts)"),
    _f("log_lines_added", "change_size", "-", "log1p of lines_added"),
    _f("log_lines_deleted", "change_size", "-", "log1p of lines_deleted"),
    _f("log_files_changed", "change_size", "-", "log1p of files_changed"),
    _f("log_commit_count", "change_size", "-", "log1p of commit_count"),
    _f("log_churn", "change_size", "-", "log1p of churn"),
    _f("lines_missing", "change_size", "-", "1 if lines added or lines deleted was missing"),
    _f("files_changed_missing", "change_size", "-", "1 if files_changed was missing"),
    _f("commit_count_missing", "change_size", "-", "1 if commit_count was missing"),
    _f("toggle_flips_1h", "toggles", "1h", "flips of the service's flags"),
    _f("toggle_flips_24h", "toggles", "24h", "flips of the service's flags"),
    _f("toggle_flips_7d", "toggles", "7d", "flips of the service's flags"),
    _f("toggle_flips_recent", "toggles", "flip_window_minutes", "flips just before the deploy (default 30 min)"),
    _f("toggle_actors_24h", "toggles", "24h", "distinct actors flipping the service's flags"),
    _f("no_toggle_history", "toggles", "all past", "1 if the service has no toggle event before the deploy"),
    _f("toggles_enabled", "toggles", "state", "flags enabled at the deploy"),
    _f("toggles_stale", "toggles", "state+stale_after_days", "enabled flags untouched for over stale_after_days"),
    _f("toggle_oldest_stale_days", "toggles", "state", "days since the longest-untouched stale flag was touched"),
    _f("service_deploys_24h", "service_history", "24h", "counted deploys of the service"),
    _f("service_deploys_7d", "service_history", "7d", "counted deploys of the service"),
    _f("service_prior_deploys", "service_history", "all past", "all counted deploys of the service before"),
    _f("hours_since_prev_deploy", "service_history", "max_gap_days", "gap to the previous deploy, capped"),
    _f("no_prev_deploy", "service_history", "all past", "1 if the service has no earlier deploy"),
    _f("service_incidents_7d", "service_history", "7d", "incidents of the service"),
    _f("service_incidents_30d", "service_history", "30d", "incidents of the service"),
    _f("days_since_last_incident", "service_history", "max_gap_days", "gap to the last incident, capped"),
    _f("no_prev_incident", "service_history", "all past", "1 if the service has no earlier incident"),
    _f("author_prior_deploys", "author", "all past", "counted deploys by the author"),
    _f("author_deploys_7d", "author", "7d", "counted deploys by the author"),
    _f("author_service_prior_deploys", "author", "all past", "counted deploys by the author to this service"),
    _f("author_missing", "author", "-", "1 if the deploy has no author"),
    _f("service_failure_rate", "failure_rates", "matured labels", "smoothed past change-failure rate"),
    _f("service_matured_labels", "failure_rates", "matured labels", "matured labels behind that rate"),
    _f("author_failure_rate", "failure_rates", "matured labels", "smoothed past failure rate of the author"),
    _f("author_matured_labels", "failure_rates", "matured labels", "matured labels behind that rate"),
    _f("hour_of_day", "timing", "-", "local hour of the deploy (service_timezones, else UTC)"),
    _f("day_of_week", "timing", "-", "local weekday, Monday = 0"),
    _f("is_weekend", "timing", "-", "1 on Saturday and Sunday"),
    _f("is_friday_afternoon", "timing", "-", "1 on Friday from friday_afternoon_hour"),
    _f("is_outside_business_hours", "timing", "-", "1 on weekends or outside business_hours"),
    _f("touches_infra", "change_kind", "-", "1 if the change touches infrastructure; missing -> 0"),
    _f("touches_infra_missing", "change_kind", "-", "1 if touches_infra was missing"),
    _f("is_rollback", "change_kind", "-", "1 if the deploy is a rollback; missing -> 0"),
    _f("is_rollback_missing", "change_kind", "-", "1 if is_rollback was missing"),
    _f("service", "team", "-", "the service; '(missing)' when absent", "string"),
    _f("squad", "team", "-", "the squad; '(missing)' when absent", "string"),
    _f("tribe", "team", "-", "the tribe; '(missing)' when absent", "string"),
)


def catalog_names() -> tuple[str, ...]:
    return tuple(spec.name for spec in CATALOG)


#: Markers around the generated catalog table in ``docs/features.md``.
DOC_START = "<!-- feature catalog: generated by `python -m features.pointintime.catalog`; do not edit -->"
DOC_END = "<!-- end of feature catalog -->"


def catalog_markdown(catalog: tuple[FeatureSpec, ...] = CATALOG) -> str:
    """The catalog as the markdown table ``docs/features.md`` carries between ``DOC_START`` and ``DOC_END``."""
    rows = [f"| `{s.name}` | {s.dtype} | {s.group} | {s.window} | {s.doc} |" for s in catalog]
    extra = f"| `{EXTRA_PATTERN[0]}`, `{EXTRA_PATTERN[1]}` | float64 | change_size | - | declared change metrics |"
    head = ["| column | dtype | group | window | definition |", "|---|---|---|---|---|"]
    return "\n".join([DOC_START, "", *head, *rows, extra, "", DOC_END])


def with_catalog(doc: str) -> str:
    """``doc`` with its catalog block replaced by the current ``catalog_markdown()``."""
    start, end = doc.index(DOC_START), doc.index(DOC_END) + len(DOC_END)
    return doc[:start] + catalog_markdown() + doc[end:]


if __name__ == "__main__":  # regenerate the table in docs/features.md
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "docs" / "features.md"
    path.write_text(with_catalog(path.read_text(encoding="utf-8")), encoding="utf-8")


def catalog_fingerprint(catalog: tuple[FeatureSpec, ...] = CATALOG) -> str:
    """A short hash of the catalog's names, dtypes and windows (doc lines and groups do not count)."""
    text = "\n".join(f"{s.name}:{s.dtype}:{s.window}" for s in catalog) + "\n" + ",".join(EXTRA_PATTERN)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


#: The feature set models record: derived from the catalog, never bumped by hand.
FEATURE_SET_VERSION = f"pit-{catalog_fingerprint()}"
