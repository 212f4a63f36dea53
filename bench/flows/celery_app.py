"""(c) Celery: a chain of three tasks, Redis broker, two solo-pool worker processes.

The worker processes load this module (`celery -A bench.flows.celery_app`),
which reads the broker URL from BENCH_REDIS_URL; the driver sends the same
tasks by name through an app of its own on the run's server. No result
backend: a chain's next steps ride in the message, and results are ignored.
Gossip, mingle and heartbeat are off (cluster events between workers, no part
of running a chain).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from celery import Celery, chain  # type: ignore[import-untyped]

from bench.flows import steps
from bench.flows.base import System

QUEUE = "celery"  # the default queue, a Redis list of that name
STEPS = ("step", "step", "last")

app = Celery("bench3", broker=os.environ.get(steps.URL_ENV, "memory://"))
app.conf.update(
    task_ignore_result=True,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)


@app.task(name="bench3.step")  # type: ignore[untyped-decorator]
def step(wf: str) -> None:
    steps.noop(wf)


@app.task(name="bench3.last")  # type: ignore[untyped-decorator]
def last(wf: str) -> None:
    steps.finish(wf)


class CelerySystem(System):
    name = "celery"
    workers_note = (
        "2 `celery worker -P solo` processes (1 task at a time each; default prefetch), "
        "Redis broker, no result backend; chain(step.si, step.si, last.si).apply_async()"
    )

    def __init__(self, url: str, folder: Path) -> None:
        super().__init__(url, folder)
        # The driver's own app, on this run's server: the module's app (the workers')
        # would keep connections to an earlier run's server for ever.
        self.app = Celery("bench3-driver", broker=url, set_as_current=False)
        self.app.conf.update(task_ignore_result=True)
        self.preloaded = 0

    def submit(self, wf: str) -> None:
        sigs = [self.app.signature(f"bench3.{name}", args=(wf,), immutable=True) for name in STEPS]
        chain(*sigs).apply_async()

    def preload(self, ids: list[str]) -> None:
        super().preload(ids)
        self.preloaded = int(self.redis.llen(QUEUE))

    def start_workers(self) -> None:
        for index in range(2):
            argv = [sys.executable, "-m", "celery", "-A", "bench.flows.celery_app", "worker"]
            argv += ["-P", "solo", "-c", "1", "-n", f"bench{index}@%h", "-l", "WARNING"]
            argv += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
            self.workers.spawn(f"celery-{index}", argv, self.env)

    def ready(self) -> bool:
        return len(self.app.control.ping(timeout=0.5)) >= 2

    def taken(self) -> bool:
        return int(self.redis.llen(QUEUE)) < self.preloaded

    def state(self) -> dict[str, Any]:
        return {"queued": self.redis.llen(QUEUE), "unacked": self.redis.hlen("unacked")}

    def close(self) -> None:
        super().close()
        self.app.close()
