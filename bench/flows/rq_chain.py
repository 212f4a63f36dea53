"""(b) Raw RQ: a `depends_on` chain of three jobs, two SimpleWorker processes.

JSON serializer, RQ's defaults otherwise, except the workers' maintenance:
every second instead of every 10 minutes (maintenance_interval=1), and an
idle worker's BLPOP wakes every second to run it (worker_ttl=16; the BLPOP
lasts worker_ttl - 15 s, 405 s by default). Two workers finishing jobs at
once conflict on the ready registry: the loser's WATCH fails and RQ leaves
that dependent job in the ready registry ("skipping for now") until a
maintenance pass re-enqueues it (issue #6). The workers log those lines, and
the driver counts them.

`python -m bench.flows.rq_chain URL NAME` is one worker process.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import redis
from rq import Queue
from rq.job import Job
from rq.registry import (
    DeferredJobRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    ReadyJobRegistry,
    StartedJobRegistry,
)
from rq.serializers import JSONSerializer
from rq.worker_registration import WORKERS_BY_QUEUE_KEY

from bench.flows import steps
from bench.flows.base import STRANDED_KEY, System
from bench.rq_workers import QuietSimpleWorker

QUEUE = "bench3"
MAINTENANCE_INTERVAL = 1  # seconds
WORKER_TTL = 16  # so that an idle worker's BLPOP returns after 1 s
STRANDED = "skipping for now"  # RQ's log line for a dependent left in the ready registry


class RqSystem(System):
    name = "rq"
    workers_note = (
        "2 SimpleWorker processes, JSON serializer, maintenance_interval=1 s "
        "(worker_ttl=16: idle BLPOP wakes every 1 s); "
        "chain = enqueue, enqueue(depends_on=), enqueue(depends_on=)"
    )

    def __init__(self, url: str, folder: Any) -> None:
        super().__init__(url, folder)
        self.queue = Queue(QUEUE, connection=self.redis, serializer=JSONSerializer)
        self.preloaded = 0

    def submit(self, wf: str) -> None:
        first = self.queue.enqueue(steps.noop, wf, job_id=f"{wf}-s1")
        second = self.queue.enqueue(steps.noop, wf, job_id=f"{wf}-s2", depends_on=first)
        self.queue.enqueue(steps.finish, wf, job_id=f"{wf}-s3", depends_on=second)

    def preload(self, ids: list[str]) -> None:
        super().preload(ids)
        self.preloaded = self.queue.count

    def start_workers(self) -> None:
        for index in range(2):
            name = f"rq-{index}"
            self.workers.python(name, ["-m", "bench.flows.rq_chain", self.url, name], self.env)

    def ready(self) -> bool:
        return int(self.redis.scard(WORKERS_BY_QUEUE_KEY % QUEUE)) >= 2

    def taken(self) -> bool:
        return self.queue.count < self.preloaded

    def state(self) -> dict[str, Any]:
        kinds = {
            "queued": None,
            "deferred": DeferredJobRegistry,
            "ready": ReadyJobRegistry,
            "started": StartedJobRegistry,
            "failed": FailedJobRegistry,
            "finished": FinishedJobRegistry,
        }
        found: dict[str, Any] = {"queued": self.queue.count}
        for kind, registry in kinds.items():
            if registry is not None:
                found[kind] = registry(queue=self.queue, serializer=JSONSerializer).count
        found[STRANDED_KEY] = sum(
            log.read_text(errors="replace").count(STRANDED) for log in self.workers.logs()
        )
        return found

    def trace(self, wf: str) -> str:
        jobs = Job.fetch_many(
            [f"{wf}-s{n}" for n in (1, 2, 3)], connection=self.redis, serializer=JSONSerializer
        )
        return " ".join(
            f"s{n}:{job.get_status(refresh=False) if job else 'gone'}"
            for n, job in enumerate(jobs, 1)
        )


class _Stranded(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or STRANDED in record.getMessage()


def main(url: str, name: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_Stranded())
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    registry_log = logging.getLogger("rq.registry")
    registry_log.setLevel(logging.INFO)
    registry_log.addHandler(handler)
    registry_log.propagate = False
    connection = redis.Redis.from_url(url)
    queue = Queue(QUEUE, connection=connection, serializer=JSONSerializer)
    worker = QuietSimpleWorker(
        [queue],
        connection=connection,
        serializer=JSONSerializer,
        name=name,
        maintenance_interval=MAINTENANCE_INTERVAL,
        worker_ttl=WORKER_TTL,
    )
    worker.work(logging_level="WARNING")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
