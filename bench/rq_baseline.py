"""The baseline: raw RQ jobs processed per second, for a job that does nothing.

Setup (not timed): enqueue N jobs of `noop` with RQ's defaults and the JSON
serializer, in pipelined batches. Timed: one `rq.SimpleWorker` (no fork per
job) in burst mode, in this process, until the queue is empty.
"""

from __future__ import annotations

import signal
from typing import Any

import redis
from rq import Queue
from rq.registry import FinishedJobRegistry
from rq.serializers import JSONSerializer

from bench.counting import counted_client
from bench.measure import Measurement, timed
from bench.rq_workers import QuietSimpleWorker

QUEUE = "bench"
ENQUEUE_CHUNK = 1000


def noop() -> None:
    """The job: nothing at all."""


def measure_rq(url: str, *, jobs: int) -> Measurement:
    admin = redis.Redis.from_url(url)
    admin.flushdb()
    client, trips = counted_client(url)
    queue = Queue(QUEUE, connection=client, serializer=JSONSerializer)
    for start in range(0, jobs, ENQUEUE_CHUNK):
        count = min(ENQUEUE_CHUNK, jobs - start)
        queue.enqueue_many([Queue.prepare_data(noop) for _ in range(count)])
    if queue.count != jobs:
        raise RuntimeError(f"{queue.count} jobs queued, expected {jobs}")
    worker = QuietSimpleWorker([queue], connection=client, serializer=JSONSerializer)

    result = Measurement("rq")
    handlers: dict[int, Any] = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with timed(result, admin, trips):
            worker.work(burst=True, logging_level="WARNING")
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    done = FinishedJobRegistry(QUEUE, connection=admin, serializer=JSONSerializer).count
    if queue.count or done != jobs:
        raise RuntimeError(f"{done} of {jobs} jobs finished; {queue.count} still queued")
    result.items = done
    result.extra = {"worker": "SimpleWorker", "serializer": "JSONSerializer"}
    client.close()
    admin.close()
    return result
