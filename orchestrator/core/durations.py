"""Durations as people write them in settings and read them in messages: 90, 15m, 12h, 7d."""

from __future__ import annotations

from orchestrator.core.errors import ConfigurationError

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(text: str, name: str) -> float:
    """Seconds from "90", "90s", "15m", "12h" or "7d"; positive, or a ConfigurationError."""
    number, unit = (text[:-1], text[-1]) if text[-1:] in UNITS else (text, "s")
    try:
        seconds = float(number) * UNITS[unit]
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise ConfigurationError(
            f"{name} must be a positive duration such as 90, 15m, 12h or 7d, not {text!r}"
        )
    return seconds


def show_duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def seconds(value: object, name: str, *, zero_ok: bool = False) -> float:
    """Seconds given as a number or as text `duration` reads ("15m"): more than 0 (or
    exactly 0 when `zero_ok`), or a ConfigurationError naming `name`. How large a value
    may be is the caller's to say."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigurationError(f"{name} must be seconds or a duration such as 15m, not {value!r}")
    if isinstance(value, str):
        if zero_ok and value.strip() in ("0", "0s"):
            return 0.0
        return duration(value, name)
    if not (value > 0 or (zero_ok and value == 0)):  # NaN fails both
        raise ConfigurationError(f"{name} must be a positive duration (more than 0), not {value!r}")
    return float(value)
