"""Rebuilding an instance from its history, to check it against the stored one.

The history holds every event applied, in order; the transition function is
pure; so applying those events to the instance as it was created must give
the stored instance exactly. Where it does not, the first history entry
whose recorded move differs from the recomputed one says where.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from orchestrator.core.events import Event
from orchestrator.core.instance import Instance
from orchestrator.core.machine import PASSED, already_applied, transition
from orchestrator.core.spec import Definition


@dataclass(frozen=True)
class ReplayReport:
    instance_id: str
    events: int
    matches: bool
    rebuilt: Instance
    differences: dict[str, tuple[str, str]] = field(default_factory=dict)  # field: stored, rebuilt
    first_divergence: dict[str, Any] | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.instance_id,
            "events": self.events,
            "matches": self.matches,
            "differences": {
                k: {"stored": s, "rebuilt": r} for k, (s, r) in self.differences.items()
            },
            "first_divergence": self.first_divergence,
        }


def created_shell(stored: Instance) -> Instance:
    """The instance as the door created it, before any event."""
    return Instance(
        id=stored.id,
        workflow=stored.workflow,
        version=stored.version,
        created_at=stored.created_at,
        updated_at=stored.created_at,
        correlation=stored.correlation,
    )


def replay(definition: Definition, stored: Instance, history: list[dict[str, Any]]) -> ReplayReport:
    instance = created_shell(stored)
    divergence: dict[str, Any] | None = None
    seen: set[str] = set()
    for entry in history:
        if entry["outcome"] == PASSED:  # part of the next entry's step, not an event
            continue
        raw = entry["event"]
        event = Event(
            raw["id"], raw["type"], raw["instance"], float(raw["at"]), raw.get("data") or {}
        )
        if event.id in seen:
            instance = already_applied(instance, event).instance
        else:
            instance = transition(definition, instance, event).instance
        seen.add(event.id)
        recorded = (entry["seq"], entry["to"], entry["status"])
        recomputed = (instance.seq, instance.state, instance.status)
        if divergence is None and recorded != recomputed:
            divergence = {
                "seq": entry["seq"],
                "event": event.type,
                "recorded": {"seq": recorded[0], "state": recorded[1], "status": recorded[2]},
                "rebuilt": {"seq": recomputed[0], "state": recomputed[1], "status": recomputed[2]},
            }
    want, got = stored.to_fields(), instance.to_fields()
    differences = {k: (want[k], got.get(k, "")) for k in want if want[k] != got.get(k, "")}
    return ReplayReport(
        instance_id=stored.id,
        events=len(history),
        matches=not differences and divergence is None,
        rebuilt=instance,
        differences=differences,
        first_divergence=divergence,
    )
