"""Dramatiq's fan-out/fan-in: a group of 100 no-op messages with a completion callback.

`dramatiq bench.fan.dramatiq_app --processes 2 --threads 8`, as bench.flows
runs Dramatiq (its defaults: 8 threads and a prefetch of 16 per process; see
bench.flows.dramatiq_app for why not fewer threads). A group's completion
callback needs the GroupCallbacks middleware and a rate-limiter backend for its
barrier: the Redis one, on the same server. `group.run()` creates the barrier
(the group's size); each message that completes decrements it (a Lua script),
and the one that opens it enqueues the callback, which records the finish time.
No result backend: nothing waits on results (`group.wait()` would need the
Results middleware and every message's result stored and polled).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware.group_callbacks import GroupCallbacks
from dramatiq.rate_limits.backends import RedisBackend

from bench.fan.workflows import WIDTH
from bench.flows import steps
from bench.flows.base import System

QUEUE = "benchfan"
PROCESSES = 2
THREADS = 8  # per worker process, as bench.flows.dramatiq_app (Dramatiq's default)


def broker_for(url: str) -> RedisBroker:
    broker = RedisBroker(url=url)  # type: ignore[no-untyped-call]
    broker.add_middleware(GroupCallbacks(RedisBackend(url=url)))
    return broker


_url = os.environ.get(steps.URL_ENV)
dramatiq.set_broker(broker_for(_url) if _url else StubBroker())


@dramatiq.actor(queue_name=QUEUE, actor_name="benchfan_item")
def item() -> None:
    """A group's message: nothing at all."""


@dramatiq.actor(queue_name=QUEUE, actor_name="benchfan_fan_in")
def fan_in(wf: str) -> None:
    steps.finish(wf)


def bind(url: str) -> RedisBroker:
    """Point the actors at the run's server (the driver's side; workers read the env)."""
    broker = broker_for(url)
    dramatiq.set_broker(broker)
    for actor in (item, fan_in):
        actor.broker = broker
        broker.declare_actor(actor)
    return broker


class DramatiqFan(System):
    name = "dramatiq"
    workers_note = (
        f"`dramatiq --processes {PROCESSES} --threads {THREADS}`: {PROCESSES} worker "
        f"processes (+ the parent), Dramatiq's defaults otherwise; Redis broker, "
        f"GroupCallbacks with the Redis rate-limiter backend; group([item.message()] * "
        f"{WIDTH}).add_completion_callback(fan_in.message(wf)).run()"
    )

    def __init__(self, url: str, folder: Path) -> None:
        super().__init__(url, folder)
        self.broker = bind(url)
        self.preloaded = 0
        self.key = f"{self.broker.namespace}:{QUEUE}"

    def submit(self, wf: str) -> None:
        messages = [item.message() for _ in range(WIDTH)]
        fanned = dramatiq.group(messages, broker=self.broker)  # type: ignore[no-untyped-call]
        fanned.add_completion_callback(fan_in.message(wf))  # type: ignore[no-untyped-call]
        fanned.run()  # type: ignore[no-untyped-call]

    def preload(self, ids: list[str]) -> None:
        super().preload(ids)
        self.preloaded = int(self.redis.llen(self.key))

    def start_workers(self) -> None:
        argv = [sys.executable, "-m", "dramatiq", "bench.fan.dramatiq_app"]
        argv += ["--processes", str(PROCESSES), "--threads", str(THREADS), "--queues", QUEUE]
        self.workers.spawn("dramatiq", argv, self.env)

    def ready(self) -> bool:
        return int(self.redis.zcard(f"{self.broker.namespace}:__heartbeats__")) >= PROCESSES

    def taken(self) -> bool:
        return int(self.redis.llen(self.key)) < self.preloaded

    def state(self) -> dict[str, Any]:
        messages = self.redis.hlen(f"{self.key}.msgs")
        return {"queued": self.redis.llen(self.key), "messages": messages}

    def close(self) -> None:
        super().close()
        self.broker.close()
