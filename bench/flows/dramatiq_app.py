"""(d) Dramatiq: a pipeline of three actors, Redis broker, two worker processes.

`dramatiq bench.flows.dramatiq_app --processes 2 --threads 8`: one parent and
two worker processes with Dramatiq's defaults otherwise: 8 worker threads each
(`--threads` is spelt out only so that the note says what ran), a prefetch of
2 x threads = 16 messages, default middleware. The broker URL comes from
BENCH_REDIS_URL in the workers; the driver binds the actors to the run's
server itself. The later steps ignore the earlier ones' results (pipe_ignore),
so no result backend is needed.

Not `--threads 1`: with the Redis broker the prefetch, not the threads, sets
the rate. A worker process's consumer thread fetches up to `prefetch` messages
(2 x threads) and, while that many are still outstanding (fetched and not yet
acked), does not fetch again but sleeps its back-off, 5 to 10 ms at least
(`_RedisConsumer.__next__`, `compute_backoff`), even though its worker threads
finish those messages long before. So a process handles at most `prefetch`
messages per ~7.5 ms: with one thread (prefetch 2), ~270 messages/s per
process, ~180 workflows/s for two, a quarter of issue #6's calibration. The
rate scales with the prefetch whatever the threads (measured: threads 1, 2,
4, 8: ~180, ~360, ~720, ~1,400 workflows/s; threads 1 with prefetch 16 like
threads 8; threads 8 with prefetch 4 like threads 2). Dramatiq's default, 8
threads, is the fair setting; a larger prefetch (`dramatiq_queue_prefetch`)
is tuning beyond it and gained little here (prefetch 64: 1,460 to 1,820).
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
THREADS = 8  # per worker process: Dramatiq's default (prefetch 2 x 8); see above

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
        f"`dramatiq --processes 2 --threads {THREADS}`: 2 worker processes (+ the parent), "
        f"Dramatiq's defaults: {THREADS} threads and a prefetch of {2 * THREADS} each, "
        "default middleware; Redis broker; pipeline([step, step, last]).run()"
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
        argv += ["--processes", "2", "--threads", str(THREADS), "--queues", QUEUE]
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
