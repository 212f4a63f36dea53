"""Events: facts that happened, in the order they were appended to an inbox.

An event is addressed to one instance, carries JSON data, and the time at
which it was stamped at the door. Time enters the engine only here, which is
what lets the transition function stay pure and a history be replayed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

# Event types the engine itself produces or understands.
STARTED = "workflow.started"
CANCEL = "workflow.cancel"
RESUME = "workflow.retry"
TASK_COMPLETED = "task.completed"
TASK_FAILED = "task.failed"
COMPENSATION_COMPLETED = "compensation.completed"
COMPENSATION_FAILED = "compensation.failed"
RETRY_DUE = "task.retry"
NOTIFICATION_SENT = "notification.sent"
NOTIFICATION_FAILED = "notification.failed"
DEFAULT_TIMEOUT_EVENT = "state.timeout"

ENGINE_TYPES = frozenset(
    {STARTED, CANCEL, RESUME, COMPENSATION_COMPLETED, COMPENSATION_FAILED, RETRY_DUE}
)


@dataclass(frozen=True)
class Event:
    id: str
    type: str
    instance_id: str
    at: float
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {
                "id": self.id,
                "type": self.type,
                "instance": self.instance_id,
                "at": self.at,
                "data": self.data,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> Event:
        doc = json.loads(raw)
        return cls(
            id=doc["id"],
            type=doc["type"],
            instance_id=doc["instance"],
            at=float(doc["at"]),
            data=doc.get("data") or {},
        )

    @property
    def entered_seq(self) -> int | None:
        """The state entry this event answers, for events bound to one (tasks, timers)."""
        value = self.data.get("entered_seq")
        return int(value) if value is not None else None
