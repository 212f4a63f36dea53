"""Celery's fan-out/fan-in: chord(group of 100 no-op tasks, callback), two solo-pool workers.

As bench.flows.celery_app (the workers load this module, `celery -A
bench.fan.celery_app`, and read the server's URL from BENCH_REDIS_URL; gossip,
mingle and heartbeat off), with the one difference a chord needs: a result
backend, the same Redis server. The header's tasks keep their results (Celery
requires it of a chord's tasks); the Redis backend counts a chord's finished
parts itself (an INCR per part, no `chord_unlock` polling task) and the part that
completes it sends the callback, which records the finish time. The driver only
sends: its backend (SenderBackend) does not subscribe to each task's result channel
as Celery's client does by default (when sending a task, and for a group's result),
subscriptions it would never read (the server would deliver every header result to
it) and whose results, collected after the run's server has stopped, fail to
unsubscribe.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from celery import Celery, chord  # type: ignore[import-untyped]
from celery.backends.redis import RedisBackend  # type: ignore[import-untyped]

from bench.fan.workflows import WIDTH
from bench.flows import steps
from bench.flows.base import System

QUEUE = "celery"  # the default queue, a Redis list of that name
TASKS = 2  # worker processes

_url = os.environ.get(steps.URL_ENV)
app = Celery("benchfan", broker=_url or "memory://", backend=_url)
app.conf.update(worker_hijack_root_logger=False, broker_connection_retry_on_startup=True)


class SenderBackend(RedisBackend):  # type: ignore[misc]
    """The driver's Redis backend: chords are set up as usual, no result is waited on."""

    def on_task_call(self, producer: Any, task_id: str) -> None:
        """Celery's client subscribes here to each sent task's result channel."""

    def add_pending_result(
        self, result: Any, weak: bool = False, start_drainer: bool = True
    ) -> Any:
        """A group's results subscribe here (for GroupResult's barrier): nothing waits."""
        return result


@app.task(name="benchfan.item")  # type: ignore[untyped-decorator]
def item() -> None:
    """A header task: nothing at all."""


@app.task(name="benchfan.fan_in", ignore_result=True)  # type: ignore[untyped-decorator]
def fan_in(wf: str) -> None:
    steps.finish(wf)


class CeleryFan(System):
    name = "celery"
    workers_note = (
        f"{TASKS} `celery worker -P solo` processes (1 task at a time each; default "
        f"prefetch), Redis broker and result backend; chord([item.si()] * {WIDTH}, "
        "fan_in.si(wf)).apply_async()"
    )

    def __init__(self, url: str, folder: Path) -> None:
        super().__init__(url, folder)
        # the driver's own app, on this run's server (see bench.flows.celery_app)
        backend = f"{__name__}:SenderBackend+{url}"
        self.app = Celery("benchfan-driver", broker=url, backend=backend, set_as_current=False)
        self.preloaded = 0

    def submit(self, wf: str) -> None:
        header = [self.app.signature("benchfan.item", immutable=True) for _ in range(WIDTH)]
        body = self.app.signature("benchfan.fan_in", args=(wf,), immutable=True)
        chord(header, body, app=self.app).apply_async()

    def preload(self, ids: list[str]) -> None:
        super().preload(ids)
        self.preloaded = int(self.redis.llen(QUEUE))

    def start_workers(self) -> None:
        for index in range(TASKS):
            argv = [sys.executable, "-m", "celery", "-A", "bench.fan.celery_app", "worker"]
            argv += ["-P", "solo", "-c", "1", "-n", f"benchfan{index}@%h", "-l", "WARNING"]
            argv += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
            self.workers.spawn(f"celery-{index}", argv, self.env)

    def ready(self) -> bool:
        return len(self.app.control.ping(timeout=0.5)) >= TASKS

    def taken(self) -> bool:
        return int(self.redis.llen(QUEUE)) < self.preloaded

    def state(self) -> dict[str, Any]:
        return {"queued": self.redis.llen(QUEUE), "unacked": self.redis.hlen("unacked")}

    def close(self) -> None:
        super().close()
        self.app.close()
