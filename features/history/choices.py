"""Checked choices: a config field that takes one of a fixed set of words is validated when built.

A typo in such a field (``"rocauc"``) otherwise misbehaves silently far from where it was made;
``check_choice`` refuses it at construction with an error naming the allowed values.
"""

from __future__ import annotations

from typing import Any, get_args


def choices_of(literal: Any) -> tuple[str, ...]:
    """The words a ``Literal[...]`` type allows, in declaration order."""
    values = get_args(literal)
    if not values:
        raise TypeError(f"{literal!r} is not a Literal of choices")
    return tuple(values)


def check_choice(field: str, value: object, allowed: Any) -> None:
    """Raise ``ValueError`` naming ``field`` and every allowed value unless ``value`` is one of them.

    ``allowed`` is a ``Literal[...]`` type or a tuple of values.
    """
    options = tuple(allowed) if isinstance(allowed, (tuple, list, frozenset, set)) else choices_of(allowed)
    if value not in options:
        raise ValueError(f"{field} must be one of {', '.join(map(str, options))}; got {value!r}")
