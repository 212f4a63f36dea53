"""(a) The engine: `python -m cli.main worker`, instances started with `Orchestrator.start`.

The worker command runs a supervisor with one applier process, the task
worker processes asked for, and at least one notification worker (the CLI's
minimum; it idles here). Measured twice: with the default isolation (jobs
run in the worker process, as the peers run theirs) as "orchestrator", and
with `--isolation job` (a forked work-horse per RQ job) as "orchestrator-job".
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rq.worker_registration import WORKERS_BY_QUEUE_KEY

from bench.flows import flow3
from bench.flows.base import System
from orchestrator.entry.bootstrap import bootstrap
from orchestrator.entry.settings import Settings
from orchestrator.runtime.dispatch import TASK_QUEUE
from orchestrator.store.keys import INBOX_GROUP

MODULE = "bench.flows.flow3"
TASK_PROCESSES = 2


class OrchestratorSystem(System):
    name = "orchestrator"
    isolation = "process"  # the CLI's default: jobs run in the worker process
    module = MODULE  # the workflows the driver and the workers load (bench.fan: its own)

    def __init__(self, url: str, folder: Path) -> None:
        super().__init__(url, folder)
        self.app = bootstrap(Settings(redis_url=url, workflows=(self.module,)))
        self.client = self.app.client
        self.keys = self.app.keys
        self.instances: dict[str, str] = {}
        self.workers_note = (
            f"`python -m cli.main worker --processes {TASK_PROCESSES} --notifiers 0 "
            f"--isolation {self.isolation}`: {TASK_PROCESSES} task workers + 1 applier; "
            "instances started one by one with Orchestrator.start"
        )

    def submit(self, wf: str) -> None:
        self.instances[wf] = self.client.start(flow3.NAME, {"wf": wf})

    def settle(self, timeout: float) -> None:
        """The applier moves an instance to `done` after its last task recorded its finish."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pipe = self.redis.pipeline(transaction=False)
            for status in ("pending", "running"):
                pipe.scard(self.keys.by_status(status))
            if not any(pipe.execute()):
                return
            time.sleep(0.05)

    def trace(self, wf: str) -> str:
        found = self.client.status(self.instances[wf])
        return f"{found.status} in {found.state}, try {found.attempt}"

    def start_workers(self) -> None:
        env = {
            **self.env,
            "REDIS_URL": self.url,
            "ORCHESTRATOR_WORKFLOWS": self.module,
            "ORCHESTRATOR_ACCEPT_RISK": "1",  # the private server keeps no AOF
        }
        args = ["-m", "cli.main", "worker", "--processes", str(TASK_PROCESSES), "--notifiers", "0"]
        args += ["--isolation", self.isolation]
        self.workers.python("orchestrator-worker", args, env)

    def ready(self) -> bool:
        pipe = self.redis.pipeline(transaction=False)
        pipe.scard(WORKERS_BY_QUEUE_KEY % TASK_QUEUE)
        pipe.exists(self.keys.lease(0))  # the applier holds the partitions
        workers, leased = pipe.execute()
        return bool(workers >= TASK_PROCESSES and leased)

    def taken(self) -> bool:
        pipe = self.redis.pipeline(transaction=False)
        for partition in range(self.keys.partitions):
            pipe.xinfo_groups(self.keys.inbox(partition))
        for groups in pipe.execute(raise_on_error=False):
            if isinstance(groups, Exception):
                continue
            for group in groups:
                if group["name"] == INBOX_GROUP.encode() and group["last-delivered-id"] != b"0-0":
                    return True
        return False

    def state(self) -> dict[str, Any]:
        pipe = self.redis.pipeline(transaction=False)
        statuses = ("pending", "running", "completed", "failed")
        for status in statuses:
            pipe.scard(self.keys.by_status(status))
        pipe.llen("rq:queue:tasks")
        found = pipe.execute()
        return {f"instances {s}": n for s, n in zip(statuses, found, strict=False)} | {
            "rq tasks queue": found[-1]
        }

    def close(self) -> None:
        super().close()
        self.app.redis.close()


class OrchestratorForking(OrchestratorSystem):
    """A work-horse forked for each RQ job, as RQ's default Worker runs jobs."""

    name = "orchestrator-job"
    isolation = "job"
