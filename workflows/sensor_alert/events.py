"""What the sensor alert workflow publishes: its business events' payloads (recorded
versions in schemas/)."""

from __future__ import annotations

from pydantic import BaseModel


class AlertOpened(BaseModel):
    """A reading over its threshold opened an alert; the on-call person is paged."""

    sensor_id: str | int
    value: float | None = None
    threshold: float | None = None


class AlertEscalated(BaseModel):
    """Nobody acknowledged the page in time: the alert went to the escalation contacts."""

    sensor_id: str | int


class AlertResolved(BaseModel):
    """A reading back under the threshold closed the alert."""

    sensor_id: str | int
