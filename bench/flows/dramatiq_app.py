"""(d) Dramatiq: a pipeline of three actors, Redis broker, two worker processes.

`dramatiq bench.flows.dramatiq_app --processes 2 --threads 1`: one parent and
two worker processes with one worker thread each. The broker URL comes from
BENCH_REDIS_URL in the workers; the driver binds the actors to the run's
server itself. The later steps ignore the earlier ones' results (pipe_ignore),
so no result backend is needed. Dramatiq's default middleware otherwise.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker

from bench.flows import steps
from bench.flows.base import System

QUEUE = "bench3"

_url = os.environ.get(steps.URL_ENV)
dramatiq.set_broker(RedisBroker(url=_url) if _url else StubBroker())  # type: ignore[no-untyped-call]


@dramatiq.actor(queue_name=QUEUE, actor_name="bench3_step")
def step(wf: str) -> None:
    steps.noop(wf)


@dramatiq.actor(queue_name=QUEUE, actor_name="bench3_last")
def last(wf: str) -> None:
    steps.finish(wf)


def bind(url: str) -> RedisBroker:
    """Point the actors at the run's server (the driver's side; workers read the env)."""
    broker = RedisBroker(url=url)  # type: ignore[no-untyped-call]
    dramatiq.set_broker(broker)
    for actor in (step, last):
        actor.broker = broker
        broker.declare_actor(actor)
    return broker


class DramatiqSystem(System):
    name = "dramatiq"
    workers_note = (
        "`dramatiq --processes 2 --threads 1`: 2 worker processes of 1 thread (+ the parent), "
        "Redis broker, default middleware; pipeline([step, step, last]).run()"
    )

    def __init__(self, url: str, folder: Path) -> None:
        super().__init__(url, folder)
        self.broker = bind(url)
        self.preloaded = 0
        self.key = f"{self.broker.namespace}:{QUEUE}"

    def submit(self, wf: str) -> None:
        dramatiq.pipeline(
            [
                step.message(wf),
                step.message_with_options(args=(wf,), pipe_ignore=True),
                last.message_with_options(args=(wf,), pipe_ignore=True),
            ]
        ).run()  # type: ignore[no-untyped-call]

    def preload(self, ids: list[str]) -> None:
        super().preload(ids)
        self.preloaded = int(self.redis.llen(self.key))

    def start_workers(self) -> None:
        argv = [sys.executable, "-m", "dramatiq", "bench.flows.dramatiq_app"]
        argv += ["--processes", "2", "--threads", "1", "--queues", QUEUE]
        self.workers.spawn("dramatiq", argv, self.env)

    def ready(self) -> bool:
        """Each worker process's broker beats in this sorted set when it fetches (so does
        ours when it enqueues: asked before the driver's first message only)."""
        return int(self.redis.zcard(f"{self.broker.namespace}:__heartbeats__")) >= 2

    def taken(self) -> bool:
        return int(self.redis.llen(self.key)) < self.preloaded

    def state(self) -> dict[str, Any]:
        messages = self.redis.hlen(f"{self.key}.msgs")
        return {"queued": self.redis.llen(self.key), "messages": messages}

    def close(self) -> None:
        super().close()
        self.broker.close()
