"""What the sensor alert decides from a reading: start condition and guards.

A reading is the data of a `sensor.reading` event: `sensor_id`, a numeric
`value` and, on the reading that opens an alert, the sensor's `threshold`
and its on-call contacts (`oncall_phone`, `escalation_push`,
`escalation_email`), which the gateway emitting the readings attaches. A
reading is over the threshold when its value is strictly greater than it;
a value equal to the threshold counts as back to normal.

The alert runs no task: these functions are evaluated by the engine itself,
`over_threshold` by the client when a reading arrives with no alert open,
the guards by the applier. A reading without a numeric value (or an opening
reading without a threshold) raises `BadReading`: from `emit` it is a
one-line error for the caller; applied to an open alert, the event goes to
the dead letters with that reason.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from orchestrator import OrchestratorError


class BadReading(OrchestratorError):
    """A reading the alert cannot compare with its threshold."""


def _number(mapping: Mapping[str, Any], key: str, what: str) -> float:
    raw = mapping.get(key)
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise BadReading(f"{what} needs a numeric {key!r}, got {raw!r}")
    try:
        number = float(raw)
    except ValueError:
        raise BadReading(f"{what} needs a numeric {key!r}, got {raw!r}") from None
    if not math.isfinite(number):
        raise BadReading(f"{what} needs a finite {key!r}, got {raw!r}")
    return number


def over_threshold(data: dict[str, Any]) -> bool:
    """Start condition: does this reading, arriving with no alert open, open one?"""
    sensor = f"reading of sensor {data.get('sensor_id')!r}"
    return _number(data, "value", sensor) > _number(data, "threshold", sensor)


def back_to_normal(ctx: dict[str, Any], data: dict[str, Any]) -> bool:
    """Guard: a later reading at or under the threshold the alert was opened with."""
    sensor = f"reading of sensor {ctx.get('sensor_id')!r}"
    return _number(data, "value", sensor) <= _number(ctx, "threshold", "the alert")


def still_alarming(ctx: dict[str, Any], data: dict[str, Any]) -> bool:
    """Guard: a later reading still over the threshold (the opposite of back_to_normal)."""
    return not back_to_normal(ctx, data)


def sms_failed(ctx: dict[str, Any], data: dict[str, Any]) -> bool:
    """A `notification.failed` about the SMS page (not about another channel)."""
    return data.get("channel") == "sms"
