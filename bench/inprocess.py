"""The whole engine in this process: one Applier, and an RQ SimpleWorker for the jobs.

The memory, scale and start-up workloads need real finished instances, made
by the engine's own code: the client starts them, the applier applies their
events and enqueues their tasks, a worker runs the tasks (the engine's own
job class and queues, without a fork per job), round after round until
nothing is left. The applier's wall time, this process's CPU time and the
server's CPU time (`INFO cpu`) during `drain()` are added up on the side, so
a caller can time the applying alone: the CPU times are the work done,
which a busy machine does not inflate the way it inflates wall time.
"""

from __future__ import annotations

import signal
import tempfile
import time
from pathlib import Path
from typing import Any

from rq import Queue
from rq.serializers import JSONSerializer

from bench.rq_workers import QuietSimpleWorker
from orchestrator.entry.bootstrap import App, bootstrap
from orchestrator.entry.settings import Settings
from orchestrator.entry.worker import QUEUES, start_worker_process

WORKFLOWS = ("bench.three_steps", "bench.workflows")


class Engine:
    def __init__(self, url: str, partitions: int = 8) -> None:
        settings = Settings(
            redis_url=url,
            workflows=WORKFLOWS,
            partitions=partitions,
            data_dir=Path(tempfile.gettempdir()),  # unused: the URL is given
        )
        self.app: App = bootstrap(settings)
        self.applier = self.app.applier()
        self.applier.leases.maintain(force=True)
        self.apply_seconds = 0.0  # wall time spent in applier.drain() so far
        self.apply_cpu = 0.0  # CPU time of this process in it
        self.apply_server_cpu = 0.0  # CPU time of the redis-server meanwhile
        self.applied = 0  # events it applied

    def start(self, workflow: str, count: int) -> list[str]:
        client = self.app.client
        return [client.start(workflow) for _ in range(count)]

    def drain(self) -> int:
        server = self._server_cpu()
        begin, cpu = time.perf_counter(), time.process_time()
        applied = self.applier.drain()
        self.apply_seconds += time.perf_counter() - begin
        self.apply_cpu += time.process_time() - cpu
        self.apply_server_cpu += self._server_cpu() - server
        self.applied += applied
        return applied

    def reset_counts(self) -> None:
        self.apply_seconds = self.apply_cpu = self.apply_server_cpu = 0.0
        self.applied = 0

    def _server_cpu(self) -> float:
        info: dict[str, Any] = self.app.redis.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    def run_jobs(self) -> bool:
        """Run every queued job once, in this process; whether there was any."""
        start_worker_process(self.app, again=False)
        queues = [
            Queue(
                name,
                connection=self.app.redis,
                serializer=JSONSerializer,
                job_class=self.app.job_class,
            )
            for name in QUEUES
        ]
        worker = QuietSimpleWorker(
            queues,
            connection=self.app.redis,
            serializer=JSONSerializer,
            job_class=self.app.job_class,
        )
        handlers: dict[int, Any] = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            return bool(worker.work(burst=True, logging_level="WARNING"))
        finally:
            for signum, handler in handlers.items():
                signal.signal(signum, handler)

    def run_to_end(self, max_rounds: int = 100) -> None:
        """Apply and run jobs until a round finds nothing to do (no timers: none armed)."""
        for _ in range(max_rounds):
            applied = self.drain()
            ran = self.run_jobs()
            if not applied and not ran:
                return
        raise RuntimeError(f"instances still moving after {max_rounds} rounds")

    def statuses(self, ids: list[str]) -> dict[str, int]:
        """How many of the instances are in each status."""
        pipe = self.app.redis.pipeline(transaction=False)
        for instance_id in ids:
            pipe.hget(self.app.keys.instance(instance_id), "status")
        counts: dict[str, int] = {}
        for raw in pipe.execute():
            status = raw.decode() if raw else "missing"
            counts[status] = counts.get(status, 0) + 1
        return counts

    def finish(self, workflow: str, count: int) -> list[str]:
        """Start `count` instances and run them to their end; all must complete."""
        ids = self.start(workflow, count)
        self.run_to_end()
        counts = self.statuses(ids)
        if counts.get("completed", 0) != count:
            raise RuntimeError(f"{count} instances of {workflow} started, statuses {counts}")
        return ids

    def close(self) -> None:
        self.applier.leases.release_all()
        self.app.redis.close()
