"""What the driver needs of each system under test.

A system submits one workflow (three steps, the last records its finish),
preloads many with its workers stopped, starts exactly two worker processes,
and says when its workers first took from the preloaded backlog.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.flows.procs import Workers
from bench.flows.steps import URL_ENV
from bench.flows.trips import counted_client

STRANDED_KEY = "stranded (ready registry)"


class System:
    name = "?"
    workers_note = "?"  # what runs, for the report

    def __init__(self, url: str, folder: Path) -> None:
        self.url = url
        # every request the driver polls with is counted, to leave it out of the server's counts
        self.redis, self.driver_count = counted_client(url)
        self.workers = Workers(folder)
        self.env = {URL_ENV: url}

    def submit(self, wf: str) -> None:
        raise NotImplementedError

    def preload(self, ids: list[str]) -> None:
        """Submit with the workers stopped; a system may override it with a bulk path."""
        for wf in ids:
            self.submit(wf)

    def start_workers(self) -> None:
        raise NotImplementedError

    def ready(self) -> bool:
        """Are both worker processes (and anything else the system runs) up?"""
        raise NotImplementedError

    def taken(self) -> bool:
        """Has a worker taken anything from the preloaded backlog yet?"""
        raise NotImplementedError

    def state(self) -> dict[str, Any]:
        """Counts of the system's own bookkeeping, to see work left behind."""
        return {}

    def settle(self, timeout: float) -> None:
        """Wait (up to `timeout` s) for bookkeeping that follows the last step's finish."""

    def trace(self, wf: str) -> str:
        """Where an unfinished workflow is stuck, when the system can tell."""
        return ""

    def close(self) -> None:
        self.workers.stop()
        self.redis.close()
