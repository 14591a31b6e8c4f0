"""Checks every public entry point applies to its own arguments (the CLI only parses and prints).

Each raises :class:`flipguard.errors.UsageError` with one sentence naming the bad value and what
to give instead, so a Python caller gets the same message a shell user does.
"""

from __future__ import annotations

import math

from flipguard.errors import UsageError


def check_schemes(schemes: list[str] | str | None, known: list[str], default: list[str] | None = None) -> list[str]:
    """Scheme names lower-cased and deduplicated, in order (``None``: ``default`` or every known one);
    a comma-separated string is split. UsageError names an unknown one."""
    if isinstance(schemes, str):
        schemes = schemes.split(",")
    if schemes is None:
        schemes = list(default or known)
    names = [str(s).strip().lower() for s in schemes if str(s).strip()]
    for name in names:
        if name not in known:
            raise UsageError(f"unknown scheme {name!r}; choose from {', '.join(known)}.")
    if not names:
        raise UsageError(f"no scheme given; choose from {', '.join(known)}.")
    return list(dict.fromkeys(names))


def check_open_interval(name: str, value: float, low: float, high: float) -> float:
    """``value`` as a float strictly between ``low`` and ``high``; UsageError otherwise."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UsageError(f"{name} must be a number between {low} and {high}, got {value!r}.") from None
    if not (math.isfinite(number) and low < number < high):
        raise UsageError(f"{name} must be between {low} and {high} (exclusive), got {value!r}.")
    return number
