"""The worker process's context: the one thing a worker's composition root installs.

Job code runs inside RQ, which calls an entry point with the job's payload and
nothing else; what the job needs from its process (the channel registry, whose
SMTP connections and HTTP sessions live from one send to the next, and the channel
settings) it reads here. The root (orchestrator.entry.worker) builds it once, at
the process's start-up, from the settings, and installs it; nothing here reads the
environment. Job code that runs without one fails at once, saying so.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from notifiers.registry import Notifiers


class NoWorkerContext(RuntimeError):
    """Job code ran in a process whose composition root installed no WorkerContext."""


@dataclass(frozen=True)
class WorkerContext:
    """What the job code of one worker process shares: the channel registry, built from
    `channels` (the channel settings, read once at start-up), and the process that
    installed it (a forked work-horse, which ends with its job, runs in another)."""

    notifiers: Notifiers
    channels: Mapping[str, str] = field(repr=False)
    notify_threads: int  # notifications sent at the same time, at most (Settings')
    pid: int = field(default_factory=os.getpid)

    def installed_here(self) -> bool:
        """Whether this process is the one that installed it, and outlives its jobs."""
        return os.getpid() == self.pid

    def close(self) -> None:
        self.notifiers.close()


_installed: WorkerContext | None = None


def install(context: WorkerContext) -> WorkerContext:
    """Make `context` the process's (at start-up: the composition root calls this once)."""
    global _installed
    _installed = context
    return context


def installed() -> WorkerContext | None:
    """The process's context, or None if none was installed."""
    return _installed


def current() -> WorkerContext:
    """The process's context; NoWorkerContext if its composition root installed none."""
    if _installed is None:
        raise NoWorkerContext(
            "no worker context installed: orchestrator jobs run in a worker started by "
            "orchestrator.entry.worker, which installs one at start-up"
        )
    return _installed
