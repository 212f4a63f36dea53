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
