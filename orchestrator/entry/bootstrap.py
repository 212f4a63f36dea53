"""The composition root: settings in, connected parts out.

Every process is an `App` over one `Settings`, read once at its start:

    CLI               cli.main builds Settings.from_env() (and its options) and the App
    applier, workers  orchestrator.entry.worker: the supervisor hands the CLI's settings
                      to each process it starts, which builds its own App from them
    HTTP server       `orchestrator serve`: the CLI's App; its config is `settings.http`
    demo              the CLI's settings, pointed at the demo's Redis
    a script          Orchestrator.connect(): Settings.from_env() unless given

Nothing connects at import time. Each part is built on first use, so a
command that only reads definitions (`graph`, `workflows`) never touches
Redis, and a forked worker process builds its own connections. The channels'
settings travel in `settings.channels`; no part reads the environment.
"""

from __future__ import annotations

import sys
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import redis

from orchestrator.entry.client import Orchestrator
from orchestrator.entry.connection import connect, keys_for
from orchestrator.entry.settings import Settings
from orchestrator.store.keys import Keys

if TYPE_CHECKING:  # imported where used: a command that reads (status, list) needs none
    from orchestrator.runtime.applier import Applier
    from orchestrator.runtime.guard import GuardedJob
    from orchestrator.runtime.registry import Registry


class App:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @cached_property
    def registry(self) -> Registry:
        from orchestrator.runtime.registry import Registry

        importable(Path.cwd())
        return Registry.from_modules(self.settings.workflows)

    @cached_property
    def redis(self) -> redis.Redis:
        return connect(self.settings)

    @cached_property
    def keys(self) -> Keys:
        return keys_for(self.redis, self.settings)

    @cached_property
    def client(self) -> Orchestrator:
        # the workflows loaded when the client first needs one: reads need none
        return Orchestrator(self.redis, self.keys, lambda: self.registry, self.settings.retention)

    @cached_property
    def job_class(self) -> type[GuardedJob]:
        """The job class of this process's RQ workers: it runs only declared work."""
        from orchestrator.runtime.guard import JobCheck, guarded

        return guarded(JobCheck(self.registry, self.keys, self.settings.job_key))

    def applier(self, batch_size: int = 200) -> Applier:
        from orchestrator.runtime.applier import Applier
        from orchestrator.runtime.publisher import Publishing

        return Applier(
            self.redis,
            self.keys,
            self.registry,
            batch_size=batch_size,
            lease_ttl=self.settings.lease_ttl,
            retention=self.settings.retention,
            crash_at=self.settings.crash_at,
            job_key=self.settings.job_key,
            publishing=Publishing(self.settings.publish_lifecycle, self.settings.events_max_len),
            events_retention=self.settings.events_retention,
        )


def importable(folder: Path) -> None:
    """The folder a command runs from holds the user's workflow modules, as with `python
    -m`, uvicorn or celery: `ORCHESTRATOR_WORKFLOWS=myapp.workflows orchestrator worker`
    works from the folder that holds `myapp/`. The console script alone would not see it."""
    path = str(folder)
    if path not in sys.path:
        sys.path.insert(0, path)


def bootstrap(settings: Settings) -> App:
    return App(settings)
