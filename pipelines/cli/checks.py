"""Checks of arguments and config that run before any orchestration starts.

Starting Prefect costs seconds and buries a mistake in tracebacks, so every mistake a command
can see from its arguments, its config or a quick look at the store is refused here first:
one line naming the problem and the fix, and a non-zero exit, in about a second.
"""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import typer

if TYPE_CHECKING:
    import pandas as pd


class CheckError(ValueError):
    """A mistake found before running anything; its text is the problem and the fix, one line."""


def refuse(error: CheckError, code: int, prefix: str = "error") -> NoReturn:
    """Print the check's one line on stderr and exit with ``code``."""
    print(f"{prefix}: {error}", file=sys.stderr)
    raise typer.Exit(code=code)


def check_sources_config(path: Path) -> None:
    """sources.yaml parses, every source's kind and keys are valid and every glob matches a file."""
    from features.sources.base import SourceError
    from features.sources.config import load_sources_config
    from features.sources.kinds import source_kinds

    try:
        load_sources_config(path, source_kinds())
    except SourceError as exc:
        raise CheckError(f"{exc} (fix {path.name}; keys of every kind: docs/sources.md)") from None


def planned_at(text: str | None) -> str | None:
    """``--at``: an ISO 8601 time with a UTC offset, returned in ISO form; None stays None (now)."""
    if text is None:
        return None
    example = "e.g. --at 2026-03-02T14:00:00Z, or leave --at out for now"
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise CheckError(f"--at {text!r} is not an ISO 8601 time; write the time with its offset, {example}") from None
    if when.tzinfo is None:
        raise CheckError(f"--at {text!r} has no UTC offset, so its instant is unknown; add one, {example}")
    return when.isoformat()


def environment_name(value: str) -> str:
    """``--environment``: one of the canonical environments; a tool's word gets a suggestion.

    The names come from the pandas-free ``features.history.environments``: the CI gate's remote
    mode checks them without importing the data stack (the suggestion, on the error path, may).
    """
    from features.history.environments import ENVIRONMENTS

    if value in ENVIRONMENTS:
        return value
    from features.sources.normalize import environment

    guess = environment(value)
    hint = f" (did you mean --environment {guess}?)" if guess not in (None, "other") else ""
    raise CheckError(f"--environment {value!r} is not an environment; use one of {', '.join(ENVIRONMENTS)}{hint}")


def check_training_rows(
    store_dir: Path, min_train_rows: int, test_fraction: float, test_start: pd.Timestamp | None
) -> None:
    """The store holds enough matured deploys, with both outcomes, before the test period.

    Counted from labels alone with the same attribution and split as training, so it refuses
    what training would refuse, without computing features or starting a flow.
    """
    from features.history.store import HistoryStore, StoreError
    from features.labels.attribution import AttributionConfig
    from models.training.split import training_period

    try:
        history = HistoryStore(store_dir).read_history()
    except StoreError as exc:
        raise CheckError(f"{exc} (point --home at a readable store, or re-run incident-risk ingest)") from None
    if history.deploys.empty:
        raise CheckError(
            f"the store at {store_dir} holds no deploys; run `incident-risk ingest --config sources.yaml` first"
        )
    period = training_period(history, AttributionConfig(), test_fraction, test_start)
    not_matured = period.excluded.get("immature", 0)
    if period.split_error is not None:
        raise CheckError(
            f"{period.split_error} among {period.matured} matured production deploys; "
            "move --test-start (or --test-fraction) so both periods hold deploys"
        )
    if period.train_rows < min_train_rows:
        raise CheckError(
            f"the training period has {period.train_rows} matured production deploys "
            f"({period.matured} matured in all, {not_matured} not matured yet); training needs at least "
            f"{min_train_rows}: ingest more history, or lower --min-train-rows (docs/training.md)"
        )
    if period.train_failures in (0, period.train_rows):
        outcome = "no failures" if period.train_failures == 0 else "only failures"
        raise CheckError(
            f"the training period's {period.train_rows} matured deploys have {outcome}; a model needs both "
            "outcomes: ingest more history (incidents too), or move --test-start / --test-fraction"
        )
