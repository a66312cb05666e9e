"""Argument checks every floor shares, so that one kind of mistake gets one kind of message:
``<name> must be <expected>; got <value>``."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

MAX_LISTED = 12  # a 23-block net has 350 keys: error messages show this many, then a count


def describe(value: Any) -> str:
    """How many entries a sequence has, else its repr: for error messages."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        return f"{len(value)} entr{'y' if len(value) == 1 else 'ies'}"
    return repr(value)


def listing(items: Sequence[str]) -> str:
    """``[a, b, … and N more] (total)``, at most :data:`MAX_LISTED` shown."""
    shown = ", ".join(items[:MAX_LISTED])
    more = f", … and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else ""
    return f"[{shown}{more}] ({len(items)})"


def check_positive_int(name: str, value: Any) -> None:
    """ValueError unless ``value`` is an int ≥ 1 (bools are not ints here)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int; got {value!r}")


def check_nonnegative_int(name: str, value: Any) -> None:
    """ValueError unless ``value`` is an int ≥ 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{name} must be an int ≥ 0; got {value!r}")


def check_bool(name: str, value: Any) -> None:
    """TypeError unless ``value`` is True or False."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool; got {value!r}")


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> None:
    """ValueError unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}; got {value!r}")
