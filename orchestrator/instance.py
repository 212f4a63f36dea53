"""An instance: where one run of a workflow stands.

Immutable: the transition function returns a new one. Stored as one Redis
hash; `to_fields`/`from_fields` are the only place that knows its layout.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from orchestrator.events import Event

Status = Literal["pending", "running", "compensating", "completed", "failed", "cancelled"]
STATUSES: tuple[str, ...] = (
    "pending",
    "running",
    "compensating",
    "completed",
    "failed",
    "cancelled",
)
FINAL_STATUSES: frozenset[str] = frozenset({"completed", "cancelled"})
"""Statuses after which nothing runs. `failed` is final only in a final state;
an instance whose compensation failed is `failed` but resumable."""


@dataclass(frozen=True)
class Instance:
    id: str
    workflow: str
    version: int
    created_at: float
    state: str | None = None  # None until the start event is applied
    status: Status = "pending"
    seq: int = 0  # events applied so far; the history's last entry number
    entered_seq: int = 0  # seq that entered the current state or compensation step
    attempt: int = 0  # try number of the outstanding task, 0 when none runs
    context: dict[str, Any] = field(default_factory=dict)
    compensations: tuple[str, ...] = ()  # states whose compensation is due, newest last
    compensating_to: str | None = None
    parked: tuple[Event, ...] = ()
    timers: tuple[str, ...] = ()  # ids of armed timers, cancelled when the entry is left
    correlation: str | None = None  # "key=value" this instance answers to
    reason: str | None = None
    updated_at: float = 0.0

    @property
    def finished(self) -> bool:
        return self.status in FINAL_STATUSES or (
            self.status == "failed" and self.compensating_to is None
        )

    def evolve(self, **changes: Any) -> Instance:
        return replace(self, **changes)

    def to_fields(self) -> dict[str, str]:
        return {
            "id": self.id,
            "workflow": self.workflow,
            "version": str(self.version),
            "state": self.state or "",
            "status": self.status,
            "seq": str(self.seq),
            "entered_seq": str(self.entered_seq),
            "attempt": str(self.attempt),
            "context": _dump(self.context),
            "compensations": _dump(list(self.compensations)),
            "compensating_to": self.compensating_to or "",
            "parked": _dump([json.loads(e.to_json()) for e in self.parked]),
            "timers": _dump(list(self.timers)),
            "correlation": self.correlation or "",
            "reason": self.reason or "",
            "created_at": repr(self.created_at),
            "updated_at": repr(self.updated_at),
        }

    @classmethod
    def from_fields(cls, raw: dict[str, str]) -> Instance:
        return cls(
            id=raw["id"],
            workflow=raw["workflow"],
            version=int(raw["version"]),
            state=raw.get("state") or None,
            status=raw.get("status", "pending"),  # type: ignore[arg-type]
            seq=int(raw.get("seq", 0)),
            entered_seq=int(raw.get("entered_seq", 0)),
            attempt=int(raw.get("attempt", 0)),
            context=json.loads(raw.get("context") or "{}"),
            compensations=tuple(json.loads(raw.get("compensations") or "[]")),
            compensating_to=raw.get("compensating_to") or None,
            parked=tuple(
                Event.from_json(json.dumps(e)) for e in json.loads(raw.get("parked") or "[]")
            ),
            timers=tuple(json.loads(raw.get("timers") or "[]")),
            correlation=raw.get("correlation") or None,
            reason=raw.get("reason") or None,
            created_at=float(raw["created_at"]),
            updated_at=float(raw.get("updated_at") or raw["created_at"]),
        )

    def summary(self) -> dict[str, Any]:
        """The public view: what `status --json` prints."""
        return {
            "id": self.id,
            "workflow": self.workflow,
            "version": self.version,
            "state": self.state,
            "status": self.status,
            "context": self.context,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "seq": self.seq,
            "compensations_pending": list(self.compensations),
            "parked_events": [e.type for e in self.parked],
            "correlation": self.correlation,
            "reason": self.reason,
        }


def _dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)
