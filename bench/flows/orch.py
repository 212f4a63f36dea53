"""(a) The engine: `python -m cli.main worker`, instances started with `Orchestrator.start`.

The worker command runs a supervisor with one applier process, the task
worker processes asked for, and at least one notification worker (the CLI's
minimum; it idles here). Measured twice: with the default isolation (jobs
run in the worker process, as the peers run theirs) as "orchestrator", and
with `--isolation job` (a forked work-horse per RQ job) as "orchestrator-job".

"orchestrator-publishing" (issue #17) runs the same three steps as a version that
publishes (flow3_published.py: a business event on entering each state, four a
workflow), and one subscriber process (subscriber.py: a consumer group reading every
published event) started before the load; after the throughput run it says how far
behind the subscriber was when the last workflow finished, and how long it took to
catch up (`subscriber_report`).

"orchestrator-metrics-off" (issue #16) is the default worker with ORCHESTRATOR_METRICS=0:
the engine's throughput over it, same run, is what counting for `/metrics` costs. After
each throughput run the engine's `/metrics` collector is scraped and its counts (workflows
completed, events applied) compared with the bench's own (`metrics_report`).
"""

from __future__ import annotations

import json
import math
import subprocess
import time
from pathlib import Path
from typing import Any, ClassVar

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from rq.worker_registration import WORKERS_BY_QUEUE_KEY

from bench.flows import flow3, flow3_published
from bench.flows.base import System
from bench.flows.driver import WorkersDied, percentile
from bench.flows.steps import DONE
from bench.flows.subscriber import GROUP, Board
from bench.flows.trips import DriverCount
from orchestrator.entry.bootstrap import bootstrap
from orchestrator.entry.http.metrics import registry_of
from orchestrator.entry.settings import Settings
from orchestrator.runtime.dispatch import TASK_QUEUE
from orchestrator.runtime.metrics import FLUSH_EVERY
from orchestrator.store.keys import INBOX_GROUP

MODULE = "bench.flows.flow3"
TASK_PROCESSES = 2
EVENTS_PER_WORKFLOW = 4  # applied: its start and its three tasks' answers
METRICS_WAIT = FLUSH_EVERY + 5.0  # s the scrape waits for every process's last write


class OrchestratorSystem(System):
    name = "orchestrator"
    isolation = "process"  # the CLI's default: jobs run in the worker process
    module = MODULE  # the workflows the driver and the workers load (bench.fan: its own)
    workflow = flow3.NAME  # the one the driver starts
    worker_env: ClassVar[dict[str, str]] = {}  # added to the worker's environment
    counts_metrics = True  # ORCHESTRATOR_METRICS is on (the default)
    scraped_after_run = True  # its /metrics checked after the throughput run (metrics_report)

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
        self.instances[wf] = self.client.start(self.workflow, {"wf": wf})

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
        args = ["-m", "cli.main", "worker", "--processes", str(TASK_PROCESSES), "--notifiers", "0"]
        args += ["--isolation", self.isolation]
        self.workers.python("orchestrator-worker", args, self.worker_environment())

    def worker_environment(self) -> dict[str, str]:
        """What `orchestrator worker` runs with: this server, these workflows."""
        return {
            **self.env,
            "REDIS_URL": self.url,
            "ORCHESTRATOR_WORKFLOWS": self.module,
            "ORCHESTRATOR_ACCEPT_RISK": "1",  # the private server keeps no AOF
            **self.worker_env,
        }

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

    def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """What `/metrics` would answer now (its collector, on the driver's counted
        connection, so that its requests stay out of the engine's counts)."""
        text = generate_latest(registry_of(self.redis, self.keys)).decode()
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def metrics_report(self, finished: int) -> dict[str, Any]:
        """Scraped once the throughput run settled: the workflows completed and the events
        applied that every process counted (summed by the collector), against what the
        bench counted; waited for up to METRICS_WAIT s (each process writes every
        FLUSH_EVERY s). With metrics off, nothing may have been written."""
        expected = {"completed": finished, "events_applied": EVENTS_PER_WORKFLOW * finished}
        completed = ("orchestrator_instances_finished_total", (("status", "completed"),))
        began = time.monotonic()
        while True:
            found = self.scrape()
            processes = int(found.get(("orchestrator_metrics_processes", ()), 0))
            scraped = {
                "completed": int(
                    found.get((completed[0], (*completed[1], ("workflow", self.workflow))), 0)
                ),
                "events_applied": int(
                    found.get(
                        ("orchestrator_events_applied_total", (("workflow", self.workflow),)), 0
                    )
                ),
            }
            agree = scraped == expected if self.counts_metrics else processes == 0
            waited = time.monotonic() - began
            if agree or waited > METRICS_WAIT:
                break
            time.sleep(0.25)
        return {
            "metrics_on": self.counts_metrics,
            "scraped": scraped,
            "counted": expected,
            "processes": processes,
            "agree": agree,
            "waited_seconds": round(waited, 3),
        }


class OrchestratorMetricsOff(OrchestratorSystem):
    """The default worker with ORCHESTRATOR_METRICS=0: no process counts or writes
    metrics. The engine's throughput over this one, same run, is what counting costs."""

    name = "orchestrator-metrics-off"
    counts_metrics = False
    worker_env: ClassVar[dict[str, str]] = {"ORCHESTRATOR_METRICS": "0"}

    def __init__(self, url: str, folder: Path) -> None:
        super().__init__(url, folder)
        self.workers_note += "; ORCHESTRATOR_METRICS=0"


class OrchestratorForking(OrchestratorSystem):
    """A work-horse forked for each RQ job, as RQ's default Worker runs jobs."""

    name = "orchestrator-job"
    isolation = "job"


CATCH_UP_LIMIT = 30.0  # s after the engine settled that the subscriber is waited for, at most
CATCH_UP_POLL = 0.005  # s


class WithSubscriber(DriverCount):
    """The driver's own requests plus the subscriber's (its board): both left out of the
    server's counts (bench.flows.trips.Meter reads them through `copy`)."""

    def __init__(self, driver: DriverCount, board: Board) -> None:
        super().__init__()
        self.driver = driver
        self.board = board

    def copy(self) -> DriverCount:
        mine = self.driver.copy()
        trips, size, commands = self.board.requests()
        return DriverCount(mine.trips + trips, mine.input_bytes + size, mine.commands + commands)


class OrchestratorPublishingUnread(OrchestratorSystem):
    """The default worker, running the version of the workflow that publishes, with the
    lifecycle events on; nothing reads them (to tell the engine's cost from the
    subscriber's: bench.flows.run measures it for throughput only)."""

    name = "orchestrator-publishing-unread"
    scraped_after_run = False  # checked on the engine's own run
    module = "bench.flows.flow3_published"
    workflow = flow3_published.NAME
    worker_env: ClassVar[dict[str, str]] = {"ORCHESTRATOR_PUBLISH_LIFECYCLE": "1"}

    def __init__(self, url: str, folder: Path) -> None:
        super().__init__(url, folder)
        self.streams = self.keys.all_published()
        self.workers_note += (
            f"; workflow {self.workflow}: {flow3_published.BUSINESS} business events "
            "(one per state entered)"
            + (", ORCHESTRATOR_PUBLISH_LIFECYCLE=1" if self.worker_env else "")
        )

    def published(self) -> int:
        """Events in the streams (an entry holds the events of one commit, one a field)."""
        return self._published_by(float("inf"))

    def _published_by(self, moment: float) -> int:
        """Events whose stream entry was written at or before `moment` (ms precision)."""
        last = "+" if math.isinf(moment) else f"{math.floor(moment * 1000)}-18446744073709551615"
        count = 0
        for stream in self.streams:
            low = "-"
            while True:
                page: Any = self.redis.xrange(stream, low, last, count=1000)
                count += sum(len(fields) for _, fields in page)
                if len(page) < 1000:
                    break
                low = f"({page[-1][0].decode()}"
        return count

    def state(self) -> dict[str, Any]:
        return {**super().state(), "events published": self.published()}


class OrchestratorPublishing(OrchestratorPublishingUnread):
    """The workflow's business events only (the lifecycle events are opt-in), with a
    subscriber process consuming all of them."""

    name = "orchestrator-publishing"
    without_subscriber = OrchestratorPublishingUnread
    worker_env: ClassVar[dict[str, str]] = {}

    def __init__(self, url: str, folder: Path) -> None:
        super().__init__(url, folder)
        self.board = Board.create(folder / "subscriber.board")
        self.result = folder / "subscriber.json"
        self.subscriber: subprocess.Popen[bytes] | None = None
        self.driver_count = WithSubscriber(self.driver_count, self.board)
        self.workers_note += (
            "; one subscriber process (`python -m bench.flows.subscriber`: "
            f"Orchestrator.subscribe, group {GROUP!r}, from the start), started first, its "
            "requests left out of the count"
        )

    def start_workers(self) -> None:
        """The subscriber first, its group on every partition, then the engine's worker."""
        args = ["-m", "bench.flows.subscriber", self.url, str(self.board.path), str(self.result)]
        self.workers.python("subscriber", args, self.env)
        self.subscriber = self.workers.processes[-1][0]
        deadline = time.monotonic() + 60
        while not self._joined():
            if time.monotonic() > deadline:
                raise WorkersDied(f"the subscriber joined no group in 60 s: {self.workers.dead()}")
            if dead := self.workers.dead():
                raise WorkersDied("; ".join(dead))
            time.sleep(0.02)
        super().start_workers()

    def _joined(self) -> bool:
        pipe = self.redis.pipeline(transaction=False)
        for stream in self.streams:
            pipe.xinfo_groups(stream)
        found = pipe.execute(raise_on_error=False)
        return all(
            not isinstance(groups, Exception) and any(g["name"] == GROUP.encode() for g in groups)
            for groups in found
        )

    def ready(self) -> bool:
        return super().ready() and self._joined()

    def state(self) -> dict[str, Any]:
        return {**super().state(), "events consumed": self.board.consumed}

    def subscriber_report(self, timeout: float = CATCH_UP_LIMIT) -> dict[str, Any]:
        """After the throughput run has settled (every instance ended, so every event is
        published): wait (up to `timeout` s) until the subscriber has consumed them all,
        stop it, and read what it consumed. The lag at the last finish (the latest time
        a workflow's last step recorded) is the events published by then and not yet
        consumed then; caught up: when the subscriber consumed the last of them."""
        if self.subscriber is None:
            return {"error": "no subscriber was started"}
        published = self.published()
        deadline = time.monotonic() + timeout
        while self.board.consumed < published and time.monotonic() < deadline:
            if self.subscriber.poll() is not None:
                break
            time.sleep(CATCH_UP_POLL)
        self.board.stop()
        try:
            self.subscriber.wait(10)
        except subprocess.TimeoutExpired:
            return {"error": "the subscriber did not stop within 10 s of being told to"}
        if self.subscriber.returncode != 0 or not self.result.exists():
            return {"error": f"the subscriber exited {self.subscriber.returncode} with no result"}
        found: dict[str, Any] = json.loads(self.result.read_text())
        consumed_at: list[float] = found.pop("consumed_at")
        published_ms: list[int] = found.pop("published_ms")
        ends = [float(v) for v in self.redis.hvals(DONE)]
        last_finish = max(ends, default=0.0)
        by_then = self._published_by(last_finish)
        consumed_by_then = sum(1 for at in consumed_at if at <= last_finish)
        written_last = max(published_ms, default=0) / 1000
        caught_up = bool(consumed_at) and found["consumed"] >= published
        delays = sorted(at - ms / 1000 for at, ms in zip(consumed_at, published_ms, strict=True))
        trips = found["requests"]["round_trips"]
        return {
            **found,
            "workflows": len(ends),
            "published": published,
            "events_per_workflow": round(published / len(ends), 3) if ends else None,
            "expected_per_workflow": flow3_published.PER_WORKFLOW,
            "business_per_workflow": flow3_published.BUSINESS,
            "lifecycle_per_workflow": flow3_published.LIFECYCLE if self.worker_env else 0,
            "catch_up_limit": timeout,
            "last_finish": last_finish,
            "published_by_last_finish": by_then,
            "consumed_by_last_finish": consumed_by_then,
            "lag_at_last_finish": by_then - consumed_by_then,
            "last_written_after_seconds": round(written_last - last_finish, 3),
            "caught_up": caught_up,
            "caught_up_seconds": (round(max(consumed_at) - last_finish, 3) if caught_up else None),
            "unconsumed": published - found["consumed"],
            "delay_ms": {  # from the entry's write (its id's ms) to the subscriber's loop
                "p50": round(percentile(delays, 50) * 1000, 1) if delays else None,
                "p99": round(percentile(delays, 99) * 1000, 1) if delays else None,
                "max": round(delays[-1] * 1000, 1) if delays else None,
            },
            "round_trips_per_event": round(trips / found["consumed"], 3) if caught_up else None,
        }

    def close(self) -> None:
        super().close()
        self.board.close()
