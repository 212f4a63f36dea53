"""RQ's bookkeeping of a job in fewer round trips (orchestrator.entry.rq_bookkeeping),
checked against RQ's own handling on a real server: the same keys left, fewer trips."""

from __future__ import annotations

import json
import re
import signal
import time
from typing import Any

import pytest
import redis
from rq import Callback, Queue, SimpleWorker, get_current_job
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.suspension import suspend

from orchestrator.entry import rq_bookkeeping
from orchestrator.entry.bootstrap import App
from orchestrator.entry.rq_bookkeeping import (
    BEAT_AGAIN_AFTER,
    OneTripHeartbeat,
    OneTripSuccess,
)
from orchestrator.entry.worker import DeadlineWorker, NoRemoteCommands, start_worker_process
from orchestrator.runtime.payloads import RUN_TASK, alive_of

pytestmark = pytest.mark.usefixtures("redis_url")


class StockWorker(NoRemoteCommands, SimpleWorker):
    """The engine's task worker with RQ's own bookkeeping."""


class StartInTwoTrips(OneTripSuccess, OneTripHeartbeat, NoRemoteCommands, SimpleWorker):
    """The engine's task worker but for its one-trip start."""


class LookOnItsOwn(DeadlineWorker):
    """The engine's task worker but looking at `rq suspend` after a job as RQ does."""

    def check_for_suspension(self, burst: bool) -> None:
        SimpleWorker.check_for_suspension(self, burst)


def succeeds(n: int) -> int:
    return n + 1


def fails(n: int) -> int:
    raise ValueError(f"no {n}")


def looks(n: int) -> int:
    """Notes what RQ has written by the time the job's first line runs."""
    job = get_current_job()
    assert job is not None
    client = job.connection
    workers = [k.decode() for k in client.smembers("rq:workers")]
    stored = {k.decode(): v for k, v in client.hgetall(job.key).items()}  # data: zlib
    seen = {
        "status": stored["status"].decode(),
        "written": sorted(
            k for k in ("worker_name", "started_at", "last_heartbeat") if stored.get(k)
        ),
        "ttl": client.ttl(job.key),
        "worker_state": [client.hget(w, "state").decode() for w in workers],
        "started_registry": client.zcard("rq:wip:tasks"),
        "executions": client.zcard(f"rq:executions:{job.id}"),
        "intermediate": client.llen("rq:queue:tasks:intermediate"),
    }
    client.set("looked", json.dumps(seen))
    return n


def suspends(n: int) -> int:
    """`rq suspend`, from inside a job."""
    job = get_current_job()
    assert job is not None
    suspend(job.connection)
    return n


def noted(job: Job, connection: redis.Redis, result: Any) -> None:
    """A success callback: RQ keeps the job alive for it."""


def _enqueue(client: redis.Redis, func: Any, **options: Any) -> Job:
    """A job as the engine's dispatcher makes one (orchestrator.runtime.dispatch._enqueue)."""
    queue = Queue("tasks", connection=client, serializer=JSONSerializer)
    job = Job.create(
        func,
        kwargs={"n": 1},
        id="a-job",
        timeout=30,
        failure_ttl=3600,
        connection=client,
        serializer=JSONSerializer,
        origin="tasks",
        **{"result_ttl": 0, **options},
    )
    return queue.enqueue_job(job)


def _keyspace(client: redis.Redis, worker_name: str) -> dict[str, Any]:
    """Every key, the worker's name and the execution ids made alike, with what it holds
    (a hash by its fields, timestamps and times of work left out)."""
    found: dict[str, Any] = {}
    for raw in client.keys("*"):
        key = raw.decode().replace(worker_name, "W")
        kind = client.type(raw).decode()
        if kind == "hash":
            held: Any = sorted(k.decode() for k in client.hgetall(raw))
        elif kind == "set":
            held = sorted(m.decode().replace(worker_name, "W") for m in client.smembers(raw))
        elif kind == "zset":
            held = sorted(m.decode() for m in client.zrange(raw, 0, -1))
        elif kind == "list":
            held = [m.decode() for m in client.lrange(raw, 0, -1)]
        else:
            held = kind
        found[re.sub(r":[0-9a-f]{32}", ":EXEC", key)] = held
    return found


def _run(
    client: redis.Redis, kind: type[SimpleWorker], func: Any, **options: Any
) -> dict[str, Any]:
    """One job through a burst of `kind`: the keyspace left, the worker's counts and
    state, the requests the server read while the worker ran."""
    client.flushdb()
    job = _enqueue(client, func, **options)
    worker = kind([Queue("tasks", connection=client)], connection=client, serializer=JSONSerializer)
    before = client.info("stats")["total_reads_processed"]
    worker.work(burst=True, logging_level="WARNING")
    trips = client.info("stats")["total_reads_processed"] - before - 1
    stored = client.hgetall(worker.key)
    return {
        "keys": _keyspace(client, worker.name),
        "worker": {
            k: stored.get(k.encode()) for k in ("successful_job_count", "failed_job_count", "state")
        },
        "status": Job.fetch(job.id, connection=client).get_status()
        if client.exists(job.key)
        else None,
        "trips": trips,
    }


def test_a_plain_job_leaves_what_rqs_own_handling_leaves_in_fewer_round_trips(
    redis_url: str,
) -> None:
    # Given a job as the dispatcher enqueues one (no result kept, no dependents)
    client = redis.Redis.from_url(redis_url)
    # When RQ's own handling runs it, then the engine's worker
    stock = _run(client, StockWorker, succeeds)
    ours = _run(client, DeadlineWorker, succeeds)
    # Then both leave the same keys holding the same members: the job, its execution
    # and its registries gone, the worker's success counted, the worker idle
    assert ours["keys"] == stock["keys"]
    assert not any(key.startswith("rq:job:") for key in ours["keys"])
    counted = {"successful_job_count": b"1", "failed_job_count": None, "state": b"idle"}
    assert ours["worker"] == stock["worker"] == counted
    # in at most half the requests (RQ beats five times a job, reads its dependents,
    # status and executions twice, sets "idle" twice)
    assert ours["trips"] * 2 <= stock["trips"]


@pytest.mark.parametrize(
    ("func", "options", "kept"),
    [
        (succeeds, {"result_ttl": 60}, "finished"),
        (fails, {}, "failed"),
        (succeeds, {"on_success": Callback(noted)}, None),
    ],
    ids=["result-kept", "failing", "success-callback"],
)
def test_a_job_needing_more_goes_through_rqs_own_handling(
    redis_url: str, func: Any, options: dict[str, Any], kept: str | None
) -> None:
    # Given a job that keeps its result, fails, or has a success callback
    client = redis.Redis.from_url(redis_url)
    # When each worker runs it
    stock = _run(client, StockWorker, func, **options)
    ours = _run(client, DeadlineWorker, func, **options)
    # Then the engine's worker leaves exactly what RQ's own handling leaves
    assert ours["keys"] == stock["keys"]
    assert ours["worker"] == stock["worker"]
    assert ours["status"] == stock["status"] == kept  # kept with its result, or failed


def test_the_worker_heartbeat_is_one_round_trip_and_not_repeated_within_a_second(
    redis_url: str,
) -> None:
    # Given an engine's task worker registered with RQ, its executions set present
    client = redis.Redis.from_url(redis_url)
    worker = DeadlineWorker([Queue("tasks", connection=client)], connection=client)
    worker.register_birth()
    client.sadd(worker.executions_key, "a-job:an-execution")

    def reads() -> int:
        return int(client.info("stats")["total_reads_processed"])

    try:
        # When it beats (the server's reads counted around it: each INFO is one read)
        before = reads()
        worker.heartbeat(timeout=120)
        # Then its three commands came in one request (RQ sends three)
        assert reads() - before - 1 == 1
        # and the worker's hash holds the beat, both keys living for the timeout
        assert client.hget(worker.key, "last_heartbeat")
        assert 115 <= client.ttl(worker.key) <= 120
        assert 115 <= client.ttl(worker.executions_key) <= 120
        # When it beats again at once for no longer: nothing is sent
        before = reads()
        worker.heartbeat(timeout=120)
        worker.heartbeat(timeout=60)
        assert reads() - before - 1 == 0
        # but a beat keeping it longer is sent, as is one after a second
        before = reads()
        worker.heartbeat(timeout=600)
        assert reads() - before - 1 == 1
        assert client.ttl(worker.key) > 590
        time.sleep(BEAT_AGAIN_AFTER + 0.05)
        before = reads()
        worker.heartbeat(timeout=600)
        assert reads() - before - 1 == 1
    finally:
        worker.register_death()


def test_a_jobs_execution_and_start_are_one_round_trip_leaving_what_rqs_two_leave(
    redis_url: str,
) -> None:
    # Given a job that notes, as its first line runs, what RQ has written of its start
    client = redis.Redis.from_url(redis_url)
    seen: dict[type[SimpleWorker], Any] = {}
    trips: dict[type[SimpleWorker], int] = {}
    for kind in (StockWorker, StartInTwoTrips, DeadlineWorker):
        found = _run(client, kind, looks)
        seen[kind], trips[kind] = json.loads(client.get("looked") or "null"), found["trips"]
        assert found["worker"]["successful_job_count"] == b"1"
    # Then the job found the same written with RQ's two transactions and with one:
    # started, beating, its execution registered, its worker busy, out of the queue
    assert seen[DeadlineWorker] == seen[StockWorker] == seen[StartInTwoTrips]
    assert seen[DeadlineWorker] == {
        "status": "started",
        "written": ["last_heartbeat", "started_at", "worker_name"],
        "ttl": -1,
        "worker_state": ["busy"],
        "started_registry": 1,
        "executions": 1,
        "intermediate": 0,
    }
    # one round trip fewer a job
    assert trips[DeadlineWorker] == trips[StartInTwoTrips] - 1


def test_a_jobs_end_carries_the_look_at_rq_suspend_and_the_workers_heartbeat(
    redis_url: str,
) -> None:
    # Given a plain job, run by the engine's worker and by one looking on its own after it
    client = redis.Redis.from_url(redis_url)
    _run(client, DeadlineWorker, succeeds)  # the client's connections opened, not counted
    ours = _run(client, DeadlineWorker, succeeds)
    theirs = _run(client, LookOnItsOwn, succeeds)
    # Then the same keys are left, in one round trip fewer
    assert ours["keys"] == theirs["keys"]
    assert ours["worker"] == theirs["worker"]
    assert ours["trips"] == theirs["trips"] - 1


def test_the_worker_keeps_living_past_a_job_as_rqs_look_kept_it(redis_url: str) -> None:
    # Given a worker that ran a job (its start sets the worker's keys to live briefly)
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    _enqueue(client, succeeds)
    queues = [Queue("tasks", connection=client, serializer=JSONSerializer)]
    worker = DeadlineWorker(queues, connection=client, serializer=JSONSerializer)
    worker.register_birth()
    try:
        found = Queue.dequeue_any(queues, None, connection=client, serializer=JSONSerializer)
        assert found is not None
        job, queue = found
        worker.execute_job(job, queue)
        # Then its end beat for RQ's worker_ttl + 60 s, as RQ's look at `rq suspend` does
        assert client.ttl(worker.key) > worker.worker_ttl
    finally:
        worker.register_death()


def _two_jobs(redis_url: str, first: Any) -> tuple[redis.Redis, Queue, Job, Job]:
    """An empty server's "tasks" queue holding a job of `first`, then one that succeeds."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    one = _enqueue(client, first)
    queue = Queue("tasks", connection=client, serializer=JSONSerializer)
    return client, queue, one, queue.enqueue(succeeds, kwargs={"n": 2}, result_ttl=0)


def test_suspension_from_inside_a_job_is_seen_as_the_job_ends(redis_url: str) -> None:
    # Given two jobs queued, the first of which runs `rq suspend`
    client, queue, first, second = _two_jobs(redis_url, suspends)
    # When a burst worker runs
    worker = DeadlineWorker([queue], connection=client, serializer=JSONSerializer)
    worker.work(burst=True, logging_level="WARNING")
    # Then it stopped after the first job, as RQ's own look stops a suspended burst
    assert not client.exists(first.key)  # done and gone
    assert queue.job_ids == [second.id]


def _task_job_run(app: App, trips_of: dict[str, int], label: str) -> str:
    """A saga's first task, dispatched by the applier and run by the engine's task worker
    (RQ's burst loop); the instance id. The server's reads while the worker ran go in
    `trips_of[label]`."""
    iid = app.client.start("saga", {})
    applier = app.applier()
    applier.drain()
    applier.leases.release_all()
    queue = Queue("tasks", connection=app.redis, serializer=JSONSerializer)
    worker = DeadlineWorker(
        [queue], connection=app.redis, serializer=JSONSerializer, job_class=app.job_class
    )
    before = app.redis.info("stats")["total_reads_processed"]
    worker.work(burst=True, logging_level="WARNING")
    trips_of[label] = app.redis.info("stats")["total_reads_processed"] - before - 1
    return iid


def test_a_task_jobs_first_beat_goes_out_with_its_start(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    start_worker_process(app)
    trips: dict[str, int] = {}
    _task_job_run(app, trips, "warm")  # connections opened, scripts loaded
    # When a task job runs with its first beat in its start, and one without
    ours = _task_job_run(app, trips, "ours")
    monkeypatch.setattr(rq_bookkeeping, "first_beats", lambda job: {})
    theirs = _task_job_run(app, trips, "theirs")
    # Then both tasks ran and answered, and the first beat cost no round trip of its own
    for iid in (ours, theirs):
        assert [h["event"]["type"] for h in app.client.history(iid)][-1:] != ["task.failed"]
        assert any(e["type"] == "task.completed" for e in _inbox_events(app, iid))
    assert trips["ours"] == trips["theirs"] - 1


def _inbox_events(app: App, iid: str) -> list[dict[str, Any]]:
    found = []
    for partition in range(app.keys.partitions):
        for _, fields in app.redis.xrange(app.keys.inbox(partition)):
            event = json.loads(fields[b"e"])
            if event["instance"] == iid:
                found.append(event)
    return found


def test_a_refused_job_gets_no_heartbeat_written_at_its_start(app: App) -> None:
    # Given a task job as the dispatcher made it, but forged to run an undeclared task
    app.client.start("saga", {})
    applier = app.applier()
    applier.drain()
    applier.leases.release_all()
    client = app.redis
    queue = Queue("tasks", connection=client, serializer=JSONSerializer)
    (real,) = queue.get_jobs()
    payload = {**real.kwargs["payload"], "task": "os:system"}
    queue.empty()
    forged = Job.create(
        RUN_TASK,
        kwargs={"payload": payload},
        id=real.id,
        connection=client,
        serializer=JSONSerializer,
        origin="tasks",
        result_ttl=0,
    )
    queue.enqueue_job(forged)
    # When the engine's task worker takes it
    worker = DeadlineWorker(
        [queue], connection=client, serializer=JSONSerializer, job_class=app.job_class
    )
    worker.work(burst=True, logging_level="CRITICAL")
    # Then it failed, refused, and no heartbeat was ever written for its try
    assert forged.id in queue.failed_job_registry.get_job_ids()
    assert not client.exists(alive_of(payload, payload["job"]))


class StopAskedAsItsEndIsWritten(DeadlineWorker):
    """SIGTERM's handler run while a job's end transaction is being made, as a signal
    arriving then would run it."""

    asked = False

    def heartbeat(self, timeout: Any = None, pipeline: Any = None) -> Any:
        made = super().heartbeat(timeout, pipeline=pipeline)
        if pipeline is not None and timeout == self.worker_ttl + 60 and not self.asked:
            self.asked = True  # the end's heartbeat: inside OneTripSuccess's transaction
            self.request_stop(signal.SIGTERM, None)
        return made


def test_a_stop_asked_while_a_jobs_end_is_written_lets_it_finish_then_stops(
    redis_url: str,
) -> None:
    # Given two jobs queued, and a stop asked while the first one's end is being written
    client, queue, first, second = _two_jobs(redis_url, succeeds)
    worker = StopAskedAsItsEndIsWritten([queue], connection=client, serializer=JSONSerializer)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        # When the worker runs
        worker.work(burst=True, logging_level="WARNING")
    finally:
        for number, handler in handlers.items():
            signal.signal(number, handler)
    # Then the first job's end was written whole (a warm shutdown: the job finishes), and
    # the worker stopped before the second
    assert worker.asked
    assert not client.exists(first.key)  # done and gone, not failed half-way
    assert len(queue.failed_job_registry) == 0
    assert queue.job_ids == [second.id]
