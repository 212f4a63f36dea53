"""What the harness itself knows happened: acknowledged calls and injected faults.

The journal is the client's side of the contract: a start or emit call that
returned is an event the engine accepted, and the checker demands to find it
exactly once in its instance's history. An entry is written only after the
call returned, so a call that raised is never claimed.

The fault log holds every kill with its time, the process ids and their
roles, so the checker can tell a duplicate notification inside the
documented window (a notification worker died between the provider's
acceptance and the ledger's `sent`) from one nothing explains.

Both are JSON lines, flushed as written, and readable back as plain dicts.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from orchestrator.entry.client import Orchestrator


class JsonLines:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: list[dict[str, Any]] = []
        self._file = path.open("a", encoding="utf-8")

    def write(self, entry: dict[str, Any]) -> None:
        self.entries.append(entry)
        self._file.write(json.dumps(entry, separators=(",", ":")) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def read_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class Journal(JsonLines):
    """Every acknowledged start and emit: {"kind", "instance", "event_id", "type", "at"}."""


class FaultLog(JsonLines):
    """Every kill: {"at", "action", "pids", "roles", "worker"}; restarts too (action "restart")."""

    def kill(self, action: str, pids: list[int], roles: list[str], worker: int | None) -> None:
        self.write(
            {
                "at": time.time(),
                "action": action,
                "pids": pids,
                "roles": sorted(set(roles)),
                "worker": worker,
            }
        )

    def restart(self, worker: int, pid: int) -> None:
        self.write({"at": time.time(), "action": "restart", "pids": [pid], "worker": worker})


class JournaledClient:
    """The Python client, with every acknowledged start and emit written to the journal."""

    def __init__(self, client: Orchestrator, journal: Journal) -> None:
        self.client = client
        self.journal = journal

    def start(self, workflow: str, data: dict[str, Any], instance_id: str) -> str:
        started = self.client.start(workflow, data, instance_id=instance_id)
        self.journal.write(
            {
                "kind": "start",
                "instance": started,
                "event_id": f"start-{started}",
                "type": "workflow.started",
                "at": time.time(),
            }
        )
        return started

    def emit(self, event_type: str, instance_id: str, event_id: str, data: dict[str, Any]) -> str:
        emitted = self.client.emit(event_type, data, instance_id=instance_id, event_id=event_id)
        self.journal.write(
            {
                "kind": "emit",
                "instance": emitted.instance_id,
                "event_id": emitted.event_id,
                "type": event_type,
                "at": time.time(),
            }
        )
        return emitted.event_id
