"""Schedules from the client: add, list, show the next runs, pause, resume, remove.

    app = Orchestrator.connect()
    app.schedules.add("report", Schedule(cron="0 9 * * MON-FRI", timezone="Europe/Paris"))
    app.schedules.next_runs("report", 3)

What is added is checked against the loaded workflows first (the workflow exists, its
input carries the key it correlates by), and nothing is written when it fails. The
applier's scheduler (orchestrator.runtime.scheduler) starts the instances.
"""

from __future__ import annotations

import time

from orchestrator.core.errors import InputError
from orchestrator.core.schedule import Schedule, check
from orchestrator.runtime.registry import Registry
from orchestrator.store.schedules import Schedules, Stored


class ScheduleClient:
    def __init__(self, store: Schedules, registry: Registry) -> None:
        self.store = store
        self.registry = registry

    def add(self, workflow: str, schedule: Schedule) -> Stored:
        definition = self.registry.get(workflow)
        spec = check(schedule, definition.name, declared=False)
        key = definition.correlate_by
        if key is not None and key not in spec.input:
            raise InputError(
                f"workflow {definition.name} correlates by {key!r}, which the schedule's "
                f"input lacks (give it, e.g. --input '{{\"{key}\": ...}}'); nothing added"
            )
        self.store.add(spec, time.time())
        return self.store.get(spec.name)

    def all(self) -> list[Stored]:
        return self.store.all()

    def get(self, name: str) -> Stored:
        return self.store.get(name)

    def next_runs(self, name: str, count: int = 5) -> list[float]:
        """The next `count` ticks (Unix seconds); none while paused."""
        found = self.store.get(name)
        if found.standing.paused:
            return []
        return found.spec.after(max(time.time(), found.standing.last), count)

    def pause(self, name: str) -> None:
        self.store.pause(name)

    def resume(self, name: str) -> None:
        self.store.resume(name, time.time())

    def remove(self, name: str) -> None:
        self.store.remove(name)
