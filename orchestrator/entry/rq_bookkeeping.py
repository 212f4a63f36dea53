"""RQ's bookkeeping of a job, in fewer round trips, for the engine's own jobs.

Around every job RQ's worker wrote its own heartbeat five times (each an HSET and two
EXPIREs in three round trips), its state "idle" twice, the job's heartbeat once more
after it ran and, once it returned, read the job's dependents, its stored status and,
twice, its execution registry before one transaction: 23 round trips a job, with
MONITOR, where 5 are needed (take it, read it, its execution record and start with the
task's first heartbeat, the task's answer, the success with the look at `rq suspend`).

- `OneTripHeartbeat`: a heartbeat is one round trip, and none when one at least as long
  was sent less than a second ago (the worker's key lives minutes: `rq info` shows it
  alive all the same; the engine's watchdog has heartbeats of its own).
- `OneTripStart` (a worker running jobs in its own process, RQ's SimpleWorker): a job's
  execution record and its start are one transaction, not two one after the other; a
  task job's first heartbeat (its key set, its try looked up: orchestrator.runtime.
  heartbeat) rides in it too, once the guard has let the job in, and the job's
  Heartbeat uses that answer instead of a round trip of its own.
- `OneTripSuccess`: a plain job's success (what the engine's dispatcher enqueues: no
  kept result, no dependents, repeats, group, rate limit or callbacks) is the same
  transaction RQ writes, sent with nothing read first, the worker's state "idle" in it,
  and with the worker's heartbeat and the look at `rq suspend` that RQ sends right after
  in a trip of its own; and that state is not written again when it already is what it
  is set to.

Measured in paired probes against RQ's own handling, alternating (bench/README.md,
fourth session): 600 three-step workflows one after another on a private server with
`worker --processes 2`, CPU of every engine process 16.8-19.1 -> 13.5-14.8 ms a workflow
and of redis-server 4.8-5.5 -> 3.8-4.1; workflows/s at W=1,000 +9% (median of three
pairs); round trips a step at load 1.02 -> 0.69 in the full benchmark. The one-trip
start, with the heartbeat thread kept by the process (orchestrator.runtime.heartbeat):
a lone task's job 2.1-2.5 -> 1.55-1.8 ms in an in-process probe (the task worker's
side of one step, no contention). A job needing
more goes through RQ's handling unchanged; tests/entry/test_rq_bookkeeping.py compares
the keyspace both leave.
"""

from __future__ import annotations

import time
from typing import Any

import redis
from redis.client import Pipeline
from rq.executions import Execution
from rq.intermediate_queue import IntermediateQueue
from rq.job import Job
from rq.queue import Queue
from rq.registry import StartedJobRegistry
from rq.results import Result
from rq.suspension import WORKERS_SUSPENDED
from rq.utils import now
from rq.worker.base import WorkerStatus

from orchestrator.runtime.guard import GuardedJob, RefusedJob
from orchestrator.runtime.heartbeat import first_beat_sent, queue_beat
from orchestrator.runtime.payloads import RUN_TASK, RUN_TASKS
from orchestrator.runtime.tasks import beats_of, packed_beats_of

BEAT_AGAIN_AFTER = 1.0  # seconds within which a heartbeat is not sent again


class OneTripHeartbeat:
    """RQ's worker heartbeat (an HSET and two EXPIREs) in one round trip, not three, and
    not again within BEAT_AGAIN_AFTER of one that kept the worker alive as long."""

    connection: redis.Redis
    worker_ttl: int
    _beat_at = float("-inf")  # monotonic time of the last beat sent on its own...
    _beat_for = 0  # ...and the seconds it kept the worker's keys

    def heartbeat(self, timeout: int | None = None, pipeline: Pipeline | None = None) -> None:
        if pipeline is not None:  # in someone's transaction: costs no round trip of its own
            super().heartbeat(timeout, pipeline)  # type: ignore[misc]
            return
        keeps = timeout or self.worker_ttl + 60  # RQ's default
        if time.monotonic() - self._beat_at < BEAT_AGAIN_AFTER and keeps <= self._beat_for:
            return
        with self.connection.pipeline(transaction=False) as pipe:
            super().heartbeat(timeout, pipe)  # type: ignore[misc]
            pipe.execute()
        self.beat_sent(keeps)

    def beat_sent(self, keeps: int) -> None:
        """A beat keeping the worker `keeps` seconds went out (here, or in a transaction
        of someone's): none is sent on its own within BEAT_AGAIN_AFTER of it."""
        self._beat_at, self._beat_for = time.monotonic(), keeps


class OneTripStart:
    """SimpleWorker mixin: a job's execution record and its start in one transaction.

    RQ's SimpleWorker writes the execution (`prepare_execution`: its record, the started
    registry, the worker "busy") in one transaction and then, with nothing read or run
    between them, the job's start (`prepare_job_execution`: the heartbeats, the job
    "started", out of the intermediate queue) in another. Here the first is queued and
    sent with the second: the same commands, in the same order, one round trip before
    every job's first line instead of two. (Not for a forking worker: there the second
    is the work-horse's.)"""

    connection: redis.Redis
    executions: dict[str, Any]
    name: str
    _starting: Pipeline | None = None  # the execution's transaction, not sent yet

    def prepare_execution(self, job: Job) -> Execution:
        self._send_starting()  # never left behind (a job that never reached its start)
        pipe = self.connection.pipeline()
        ttl = self.get_heartbeat_ttl(job)  # type: ignore[attr-defined]
        execution = Execution.create(job, ttl, pipeline=pipe, worker_name=self.name)
        self.executions[execution.id] = execution
        self.set_state(WorkerStatus.BUSY, pipeline=pipe)  # type: ignore[attr-defined]
        self._starting = pipe
        return execution

    def prepare_job_execution(self, job: Job, remove_from_intermediate_queue: bool = False) -> None:
        pipe, self._starting = self._starting, None
        if pipe is None:
            super().prepare_job_execution(job, remove_from_intermediate_queue)  # type: ignore[misc]
            return
        with pipe:  # RQ's prepare_job_execution, in the execution's transaction
            ttl = self.get_heartbeat_ttl(job)  # type: ignore[attr-defined]
            self.heartbeat(ttl, pipeline=pipe)  # type: ignore[attr-defined]
            job.heartbeat(now(), ttl, pipeline=pipe)
            job.prepare_for_execution(self.name, pipeline=pipe)
            pipe.persist(job.key)
            if remove_from_intermediate_queue:  # its key, without making a Queue for it
                queued = Queue.redis_queue_namespace_prefix + job.origin
                pipe.lrem(IntermediateQueue.get_intermediate_queue_key(queued), 1, job.id)
            beats = first_beats(job)
            queue_beat(pipe, beats, beats.values())
            found = pipe.execute()
            if beats:
                first_beat_sent(beats, found[-len(beats) :])
        self.procline(f"Processing {job.func_name} from {job.origin} since {time.time()}")  # type: ignore[attr-defined]

    def execute_job(self, job: Job, queue: Queue) -> None:
        try:
            super().execute_job(job, queue)  # type: ignore[misc]
        finally:
            self._send_starting()

    def _send_starting(self) -> None:
        pipe, self._starting = self._starting, None
        if pipe is not None:
            with pipe:
                pipe.execute()


class OneTripSuccess:
    """RQ worker mixin: a plain job's end written in one transaction, nothing read, with
    the worker's heartbeat and the look at `rq suspend` that RQ sends next in a round
    trip of its own (rq.suspension.is_suspended): the worker's next look uses that answer.

    The look is used once, right after the job that made it (nothing runs between them
    in RQ's loop); any other look (after a wait with nothing to do) is RQ's own."""

    connection: redis.Redis
    default_result_ttl: int
    executions: dict[str, Any]
    worker_ttl: int
    _state: str
    _looked = False  # the last job's end read "not suspended", and no look has used it

    def check_for_suspension(self, burst: bool) -> None:
        if self._looked:
            self._looked = False
            return
        super().check_for_suspension(burst)  # type: ignore[misc]

    def set_state(self, state: str, pipeline: Pipeline | None = None) -> None:
        """RQ sets "idle" as a job ends and again as it waits for the next."""
        if pipeline is None and state == self._state:
            return
        super().set_state(state, pipeline)  # type: ignore[misc]

    def handle_execution_ended(self, job: Job, queue: Queue, heartbeat_ttl: int) -> None:
        """RQ beats for the job once more here, to keep it alive through its callbacks: a
        plain job has none, and its end is written next."""
        if not plain(job, self.default_result_ttl):
            super().handle_execution_ended(job, queue, heartbeat_ttl)  # type: ignore[misc]
            return
        job.ended_at = now()

    def handle_job_success(
        self, job: Job, queue: Queue, started_job_registry: StartedJobRegistry, execution: Any
    ) -> None:
        if not plain(job, self.default_result_ttl):
            super().handle_job_success(job, queue, started_job_registry, execution)  # type: ignore[misc]
            return
        executions = job.execution_registry
        result = Result.get_key(job.id)  # type: ignore[no-untyped-call]
        with self.connection.pipeline() as pipe:  # MULTI ... EXEC, as RQ's own
            self.increment_successful_job_count(pipeline=pipe)  # type: ignore[attr-defined]
            assert job.started_at is not None and job.ended_at is not None
            worked = job.ended_at - job.started_at
            self.increment_total_working_time(worked, pipe)  # type: ignore[attr-defined]
            pipe.zrem(started_job_registry.key, execution.composite_key)
            pipe.delete(execution.key)
            pipe.zrem(executions.key, execution.id)
            pipe.srem(execution.worker_executions_key, execution.composite_key)
            pipe.delete(executions.key)
            pipe.delete(job.key, job.dependents_key, job.dependencies_key, result)
            idle = not self.executions.keys() - {execution.id}  # its last job: idle now
            if idle:  # (RQ sets it next, a trip of its own). Written here, but the worker
                # reads as busy until it is: a stop asked meanwhile (SIGTERM) then waits for
                # this transaction instead of raising StopRequested in the middle of it
                pipe.hset(self.key, "state", WorkerStatus.IDLE)  # type: ignore[attr-defined]
            keeps = self.worker_ttl + 60  # RQ's heartbeat before its look at `rq suspend`
            self.heartbeat(keeps, pipeline=pipe)  # type: ignore[attr-defined]
            pipe.exists(WORKERS_SUSPENDED)
            suspended = pipe.execute()[-1]
        if idle:
            self._state = WorkerStatus.IDLE
        self.beat_sent(keeps)  # type: ignore[attr-defined]  # (OneTripHeartbeat's)
        self._looked = not suspended  # suspended: RQ's own look waits for `rq resume`
        self.executions.pop(execution.id, None)


def first_beats(job: Job) -> dict[str, tuple[str, str]]:
    """A task job's heartbeat keys and where each try is registered as outstanding, for
    its first beat to go out with its start; none for any other job, nor for one the
    guard refuses (that one fails as it runs, before anything of it is written)."""
    if not isinstance(job, GuardedJob):
        return {}
    try:
        job.admit()  # checked once: the job's run asks again and has the answer
    except RefusedJob:
        return {}
    if job.func_name not in (RUN_TASK, RUN_TASKS):
        return {}
    payload = job.kwargs["payload"]
    return beats_of(payload) if job.func_name == RUN_TASK else packed_beats_of(payload)


def plain(job: Job, default_result_ttl: int) -> bool:
    """A job whose end needs nothing read: what the engine's dispatcher enqueues."""
    return (
        job.get_result_ttl(default_result_ttl) == 0
        and not job.repeats_left
        and not job.group_id
        and not getattr(job, "has_rate_limit", False)
        and job.success_callback is None
        and job.failure_callback is None
    )
