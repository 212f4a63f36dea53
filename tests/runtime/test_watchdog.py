"""The watchdog (orchestrator.runtime.watchdog, with outstanding and heartbeat) against a
real Redis and real RQ jobs: jobs are registered in the commit that enqueues them; a job
RQ marked failed without an answer, or started with no heartbeat, becomes exactly one
`TaskLost` answer; a beating, queued or answered job is left alone; a lost notification
job runs again, at most MAX_LOST_RUNS times, then goes to the dead letters; an unreadable
record goes to the dead letters and the check goes on.

Time passes through `check`'s `now`; RQ's job states are written as RQ writes them.
Every test writes under its own namespace; RQ's shared keys are cleaned of its jobs.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from rq.job import Job

from orchestrator.core.effects import Effect, RunTask, SendNotification
from orchestrator.core.events import Event, Unreadable
from orchestrator.core.instance import Instance
from orchestrator.entry.bootstrap import App, bootstrap
from orchestrator.entry.settings import Settings
from orchestrator.entry.worker import rq_worker
from orchestrator.runtime.dispatch import NOTIFICATION_QUEUE, TASK_QUEUE, Dispatcher, Ready
from orchestrator.runtime.heartbeat import HEARTBEAT_TTL, Heartbeat
from orchestrator.runtime.notify.later import Later
from orchestrator.runtime.notify.ledger import Ledger, record_key
from orchestrator.runtime.outstanding import CHECK_EVERY
from orchestrator.runtime.payloads import carrier_id
from orchestrator.runtime.watchdog import INTERMEDIATE, MAX_LOST_RUNS, Watchdog
from orchestrator.store.deadletters import DeadLetters
from orchestrator.store.keys import Keys
from tests.conftest import TEST_WORKFLOWS

PARTITIONS = 4
ALL = list(range(PARTITIONS))
STEP = "tests.sample_workflows:step"
QUEUE_KEYS = ("rq:queue:" + TASK_QUEUE, "rq:queue:" + NOTIFICATION_QUEUE, *INTERMEDIATE)
LATER = 1000.0  # seconds on: every registered job is due for a check


@pytest.fixture
def token() -> str:
    return uuid.uuid4().hex[:12]


@pytest.fixture
def keys(token: str) -> Keys:
    return Keys(namespace=f"t-watchdog-{token}", partitions=PARTITIONS)


@pytest.fixture
def rq_clean(client: redis.Redis, token: str) -> Iterator[None]:
    """Take this test's jobs (their ids carry its token) out of RQ's shared keys."""
    yield
    for key in QUEUE_KEYS:
        members: Any = client.lrange(key, 0, -1)
        for member in set(members):
            if token.encode() in member:
                client.lrem(key, 0, member)
    for job_key in client.scan_iter(match=f"rq:*{token}*"):
        client.delete(job_key)


@pytest.fixture
def dispatcher(client: redis.Redis, keys: Keys, rq_clean: None) -> Dispatcher:
    return Dispatcher(client, keys)


@pytest.fixture
def watchdog(client: redis.Redis, keys: Keys) -> Watchdog:
    return Watchdog(client, keys)


def instance(token: str, n: int = 0, workflow: str = "saga") -> Instance:
    return Instance(
        id=f"{workflow}-{token}-{n}", workflow=workflow, version=1, created_at=time.time()
    )


def task(kind: Any = "task", attempt: int = 2) -> RunTask:
    return RunTask(
        task=STEP if kind == "task" else "tests.sample_workflows:undo",
        kind=kind,
        state="one",
        attempt=attempt,
        entered_seq=3,
        timeout=5,
    )


def note() -> SendNotification:
    return SendNotification(
        channel="email", to="a@example.com", template="order_shipped", templates="workflows.order"
    )


def commit(
    client: redis.Redis, dispatcher: Dispatcher, effects: list[tuple[Instance, int, int, Effect]]
) -> None:
    ready = Ready()
    pipe = client.pipeline(transaction=True)
    pipe.multi()
    for inst, seq, index, effect in effects:
        dispatcher.add(pipe, inst, seq, index, effect, ready)
    dispatcher.enqueue_ready(pipe, ready)
    pipe.execute()


def rq_state(client: redis.Redis, job: str, status: str, started: float | None = None) -> None:
    """What RQ writes of a job's state (started_at as RQ formats it)."""
    fields = {"status": status}
    if started is not None:
        fields["started_at"] = datetime.fromtimestamp(started, UTC).strftime(
            "%Y-%m-%dT%H:%M:%S.%fZ"
        )
    client.hset(Job.key_for(job), mapping=fields)  # type: ignore[arg-type]


def inbox(client: redis.Redis, keys: Keys) -> list[Event]:
    events: list[Event] = []
    for partition in ALL:
        entries: Any = client.xrange(keys.inbox(partition))
        events += [Event.from_json(fields[b"e"]) for _, fields in entries]
    return events


def registered(client: redis.Redis, keys: Keys) -> dict[str, float]:
    """Job id -> next check time, over every partition, with a record each."""
    found: dict[str, float] = {}
    for partition in ALL:
        raw: Any = client.zrange(keys.outstanding(partition), 0, -1, withscores=True)
        found.update({k.decode(): score for k, score in raw})
        assert client.hlen(keys.outstanding_jobs(partition)) == len(raw)
    return found


def later_entries(client: redis.Redis, keys: Keys) -> list[tuple[dict[str, Any], float]]:
    raw: Any = client.zrange(keys.notify_later, 0, -1, withscores=True)
    return [(json.loads(member), score) for member, score in raw]


def test_a_started_job_without_a_heartbeat_is_reported_lost_exactly_once(
    client: redis.Redis, keys: Keys, dispatcher: Dispatcher, watchdog: Watchdog, token: str
) -> None:
    inst = instance(token)
    commit(client, dispatcher, [(inst, 7, 0, task())])
    job = f"{inst.id}-7-0"
    assert set(registered(client, keys)) == {job}  # registered in the enqueuing commit
    now = time.time()
    rq_state(client, job, "started", started=now)
    # not due for a check yet, and within the heartbeat's grace when it is
    assert watchdog.check(ALL, now) == 0
    assert watchdog.check(ALL, now + CHECK_EVERY + 0.1) == 0
    assert inbox(client, keys) == []
    # When its heartbeat's time to live has passed with no heartbeat
    later = now + CHECK_EVERY + HEARTBEAT_TTL + 1
    assert watchdog.check(ALL, later) == 1
    # Then one task.failed TaskLost, bound to the same try, and the job is forgotten
    (event,) = inbox(client, keys)
    assert event.id == f"{job}-lost"
    assert event.type == "task.failed"
    assert event.instance_id == inst.id
    assert event.at == later
    assert event.data["error_type"] == "TaskLost"
    assert "no heartbeat" in event.data["message"]
    assert {k: event.data[k] for k in ("job", "task", "state", "attempt", "entered_seq")} == {
        "job": job,
        "task": STEP,
        "state": "one",
        "attempt": 2,
        "entered_seq": 3,
    }
    assert "rq_job" not in event.data and "kind" not in event.data
    assert registered(client, keys) == {}
    assert watchdog.check(ALL, later + LATER) == 0
    assert len(inbox(client, keys)) == 1


def test_a_job_whose_heartbeat_comes_back_before_the_report_is_not_reported(
    client: redis.Redis, keys: Keys, dispatcher: Dispatcher, watchdog: Watchdog, token: str
) -> None:
    # Given a started job with no heartbeat, judged lost (a pause past the heartbeat's life)
    inst = instance(token)
    commit(client, dispatcher, [(inst, 7, 0, task())])
    job = f"{inst.id}-7-0"
    now = time.time()
    rq_state(client, job, "started", started=now)
    partition = keys.partition_of(inst.id)
    record = json.loads(client.hget(keys.outstanding_jobs(partition), job))  # type: ignore[arg-type]
    record.pop("rq_job", None)
    # When its work-horse beats again before the report is written
    client.set(keys.alive(partition, job), 1, ex=HEARTBEAT_TTL)
    reported = watchdog._report_lost(partition, job, job, record, "no heartbeat", now)
    # Then nothing is reported and the try stays registered: the horse runs and answers it
    assert reported == 0
    assert inbox(client, keys) == []
    assert set(registered(client, keys)) == {job}


def test_a_try_reported_lost_before_it_started_is_not_run(
    app: App, token: str, tmp_path: Path
) -> None:
    # Given a task job whose try the watchdog reported lost before any worker started it
    client, keys = app.redis, app.keys
    dispatcher = Dispatcher(client, keys)
    watchdog = Watchdog(client, keys)
    inst = instance(token)
    commit(client, dispatcher, [(inst, 1, 0, task(attempt=1))])
    job = f"{inst.id}-1-0"
    partition = keys.partition_of(inst.id)
    record = json.loads(client.hget(keys.outstanding_jobs(partition), job))  # type: ignore[arg-type]
    record.pop("rq_job", None)
    assert watchdog._report_lost(partition, job, job, record, "no heartbeat", time.time()) == 1
    # When a worker takes the job after all (RQ still had it)
    rq_worker(app, burst=True).work(burst=True, logging_level="WARNING")
    assert client.llen(f"rq:queue:{TASK_QUEUE}") == 0
    # Then the task is not run: only the lost report answers the try, and no heartbeat stays
    (lost,) = inbox(client, keys)
    assert (lost.id, lost.data["error_type"]) == (f"{job}-lost", "TaskLost")
    assert client.exists(keys.alive(partition, job)) == 0


@pytest.mark.parametrize("status", ["failed", "stopped", "canceled"])
def test_a_job_rq_ended_without_an_answer_is_lost(
    client: redis.Redis,
    keys: Keys,
    dispatcher: Dispatcher,
    watchdog: Watchdog,
    token: str,
    status: str,
) -> None:
    inst = instance(token)
    commit(client, dispatcher, [(inst, 2, 1, task())])
    job = f"{inst.id}-2-1"
    rq_state(client, job, status)
    assert watchdog.check(ALL, time.time() + LATER) == 1
    (event,) = inbox(client, keys)
    assert (event.id, event.data["error_type"]) == (f"{job}-lost", "TaskLost")
    assert f"ended {status}" in event.data["message"]
    assert registered(client, keys) == {}


def test_a_lost_compensation_fails_as_a_compensation(
    client: redis.Redis, keys: Keys, dispatcher: Dispatcher, watchdog: Watchdog, token: str
) -> None:
    inst = instance(token)
    commit(client, dispatcher, [(inst, 5, 0, task(kind="compensation"))])
    rq_state(client, f"{inst.id}-5-0", "failed")
    assert watchdog.check(ALL, time.time() + LATER) == 1
    (event,) = inbox(client, keys)
    assert event.type == "compensation.failed"
    assert event.data["task"] == "tests.sample_workflows:undo"


def test_a_beating_job_is_left_alone_until_its_heartbeat_stops(
    client: redis.Redis, keys: Keys, dispatcher: Dispatcher, watchdog: Watchdog, token: str
) -> None:
    inst = instance(token)
    commit(client, dispatcher, [(inst, 1, 0, task())])
    job = f"{inst.id}-1-0"
    rq_state(client, job, "started", started=time.time() - 3600)
    alive = keys.alive(keys.partition_of(inst.id), job)
    with Heartbeat(client, [alive]):
        assert 0 < client.ttl(alive) <= HEARTBEAT_TTL
        now = time.time() + LATER
        assert watchdog.check(ALL, now) == 0
        # checked again one period later, not before
        assert registered(client, keys) == {job: now + CHECK_EVERY}
        assert watchdog.check(ALL, now + 1) == 0
    assert client.exists(alive) == 0  # the heartbeat ends with its work
    assert inbox(client, keys) == []
    assert watchdog.check(ALL, now + CHECK_EVERY) == 1
    assert [e.id for e in inbox(client, keys)] == [f"{job}-lost"]


def test_a_queued_job_and_a_finished_one_are_not_lost(
    client: redis.Redis, keys: Keys, dispatcher: Dispatcher, watchdog: Watchdog, token: str
) -> None:
    waiting, finished = instance(token, 1), instance(token, 2)
    commit(client, dispatcher, [(waiting, 1, 0, task()), (finished, 1, 0, task())])
    # a finished job is deleted by RQ (result_ttl 0): its answer is on its way
    client.delete(Job.key_for(f"{finished.id}-1-0"))
    now = time.time() + LATER
    assert watchdog.check(ALL, now) == 0
    assert inbox(client, keys) == []
    assert registered(client, keys) == {
        f"{waiting.id}-1-0": now + CHECK_EVERY,
        f"{finished.id}-1-0": now + CHECK_EVERY,
    }


def test_a_job_with_an_unreadable_start_time_and_no_heartbeat_is_lost(
    client: redis.Redis, keys: Keys, dispatcher: Dispatcher, watchdog: Watchdog, token: str
) -> None:
    inst = instance(token)
    commit(client, dispatcher, [(inst, 1, 0, task())])
    client.hset(Job.key_for(f"{inst.id}-1-0"), mapping={"status": "started", "started_at": "?"})
    assert watchdog.check(ALL, time.time() + LATER) == 1
    (event,) = inbox(client, keys)
    assert "start time is unreadable" in event.data["message"]


@pytest.fixture
def app(redis_server: str, keys: Keys, tmp_path: Path, rq_clean: None) -> App:
    settings = Settings(
        redis_url=redis_server,
        workflows=TEST_WORKFLOWS,
        namespace=keys.namespace,
        partitions=PARTITIONS,
        data_dir=tmp_path,
    )
    return bootstrap(settings)


def test_a_job_that_answered_is_forgotten(app: App, token: str) -> None:
    # Given a task job dispatched and run by a real worker, which sent its answer
    client, keys = app.redis, app.keys
    dispatcher = Dispatcher(client, keys)
    watchdog = Watchdog(client, keys)
    inst = instance(token)
    commit(client, dispatcher, [(inst, 1, 0, task(attempt=1))])
    job = f"{inst.id}-1-0"
    assert rq_worker(app, burst=True).work(burst=True, logging_level="WARNING")
    (answer,) = inbox(client, keys)
    assert (answer.id, answer.type) == (f"{job}-task.completed", "task.completed")
    assert client.exists(Job.key_for(job)) == 0
    # While its answer waits to be applied, the job is not lost: it stays registered
    now = time.time() + LATER
    assert watchdog.check(ALL, now) == 0
    assert set(registered(client, keys)) == {job}
    # When the commit applying its answer unregisters it
    pipe = client.pipeline(transaction=True)
    watchdog.answered(pipe, keys.partition_of(inst.id), job)
    pipe.execute()
    # Then the watchdog has nothing left of it, and reports nothing, ever
    assert registered(client, keys) == {}
    assert watchdog.check(ALL, now + LATER) == 0
    assert len(inbox(client, keys)) == 1


def test_a_job_whose_record_is_gone_is_dropped_from_the_schedule(
    client: redis.Redis, keys: Keys, dispatcher: Dispatcher, watchdog: Watchdog, token: str
) -> None:
    inst = instance(token)
    commit(client, dispatcher, [(inst, 1, 0, task())])
    job = f"{inst.id}-1-0"
    partition = keys.partition_of(inst.id)
    rq_state(client, job, "failed")
    client.hdel(keys.outstanding_jobs(partition), job)  # answered meanwhile
    client.zadd(keys.outstanding(partition), {"never-registered": 1.0})  # an unknown id
    assert watchdog.check(ALL, time.time() + LATER) == 0
    assert client.zcard(keys.outstanding(partition)) == 0
    assert inbox(client, keys) == []
    assert DeadLetters(client, keys).read() == []


def test_each_task_of_a_packed_job_is_judged_by_its_own_heartbeat(
    client: redis.Redis, keys: Keys, dispatcher: Dispatcher, watchdog: Watchdog, token: str
) -> None:
    insts = [instance(token, n) for n in range(3)]
    commit(client, dispatcher, [(i, 4, 0, task()) for i in insts])
    ids = [f"{i.id}-4-0" for i in insts]
    carrier = carrier_id(ids)
    assert client.exists(Job.key_for(carrier)) == 1
    rq_state(client, carrier, "started", started=time.time() - 3600)
    client.set(keys.alive(keys.partition_of(insts[1].id), ids[1]), 1, ex=60)
    assert watchdog.check(ALL, time.time() + LATER) == 2
    lost = inbox(client, keys)
    assert sorted(e.id for e in lost) == sorted([f"{ids[0]}-lost", f"{ids[2]}-lost"])
    assert {e.data["job"] for e in lost} == {ids[0], ids[2]}
    assert set(registered(client, keys)) == {ids[1]}


def test_a_job_stranded_in_rqs_intermediate_list_is_lost_after_a_check_period(
    client: redis.Redis, keys: Keys, dispatcher: Dispatcher, watchdog: Watchdog, token: str
) -> None:
    inst = instance(token)
    commit(client, dispatcher, [(inst, 1, 0, task())])
    job = f"{inst.id}-1-0"
    # a worker took it off the queue and died before starting it
    client.lrem("rq:queue:" + TASK_QUEUE, 0, job)
    client.rpush(INTERMEDIATE[0], job)
    now = time.time() + LATER
    assert watchdog.check(ALL, now) == 0  # first seen so: a live worker may be starting it
    assert client.exists(keys.stranded(job)) == 1
    assert watchdog.check(ALL, now + CHECK_EVERY + 0.1) == 1
    (event,) = inbox(client, keys)
    assert event.id == f"{job}-lost"
    assert "died before starting" in event.data["message"]
    assert client.lpos(INTERMEDIATE[0], job) is None  # RQ will not start it after all
    assert client.exists(keys.stranded(job)) == 0
    assert registered(client, keys) == {}


def test_a_lost_notification_job_runs_again_later(
    client: redis.Redis, keys: Keys, dispatcher: Dispatcher, watchdog: Watchdog, token: str
) -> None:
    inst = instance(token, workflow="order")
    commit(client, dispatcher, [(inst, 3, 0, note())])
    key = f"{inst.id}-3-0"
    rq_state(client, key, "failed")
    now = time.time() + LATER
    assert watchdog.check(ALL, now) == 1
    assert inbox(client, keys) == []  # a notification is no task: nothing to answer
    assert registered(client, keys) == {}
    ((payload, due),) = later_entries(client, keys)
    assert due == now
    assert payload["key"] == key
    assert payload["lost"] == 1
    assert payload["channel"] == "email"


def test_a_notification_job_lost_max_times_goes_to_the_dead_letters(
    client: redis.Redis, keys: Keys, dispatcher: Dispatcher, watchdog: Watchdog, token: str
) -> None:
    inst = instance(token, workflow="order")
    commit(client, dispatcher, [(inst, 3, 0, note())])
    key = f"{inst.id}-3-0"
    ledger = Ledger(client, keys)
    record = record_key(key, "a@example.com")
    assert ledger.claim(record, "worker-1", {"instance": inst.id}).outcome == "claimed"
    later = Later(client, keys)
    runs = [key]
    now = time.time() + LATER
    for loss in range(1, MAX_LOST_RUNS + 1):
        rq_state(client, runs[-1], "failed")
        assert watchdog.check(ALL, now) == 1
        if loss < MAX_LOST_RUNS:
            ((payload, _),) = later_entries(client, keys)
            assert payload["lost"] == loss
            assert later.move_due(dispatcher, now=now) == 1
            (run,) = set(registered(client, keys))
            assert run.startswith(f"{key}-a1-")
            runs.append(run)
        now += LATER
    assert len(runs) == MAX_LOST_RUNS == len(set(runs))
    # Then it is not run again: in the dead letters, its ledger record failed
    assert later_entries(client, keys) == []
    assert registered(client, keys) == {}
    (letter,) = DeadLetters(client, keys).read()
    assert letter["source"] == "notification"
    assert letter["entry"] == runs[-1]
    assert f"lost {MAX_LOST_RUNS} times" in letter["reason"]
    assert letter["event"]["key"] == key
    kept = ledger.get(record)
    assert kept is not None
    assert kept["status"] == "failed"
    assert f"lost {MAX_LOST_RUNS} times" in kept["reason"]


UNREADABLE = {
    "not UTF-8": b"\xff\xfe{}",
    "not JSON": b"{not json",
    "not an object": b"[1, 2]",
    "rq_job not a string": b'{"kind": "task", "instance": "I", "rq_job": 5}',
    "unknown kind": b'{"kind": "bogus", "instance": "I"}',
    "notification without a key": b'{"kind": "notification", "key": 7}',
    "instance not a string": b'{"kind": "task", "instance": 5}',
}


@pytest.mark.parametrize("raw", UNREADABLE.values(), ids=list(UNREADABLE))
def test_an_unreadable_record_is_dead_lettered_and_the_check_goes_on(
    client: redis.Redis,
    keys: Keys,
    dispatcher: Dispatcher,
    watchdog: Watchdog,
    token: str,
    raw: bytes,
) -> None:
    # Given a lost job, and an unreadable record in the same partition
    inst = instance(token)
    commit(client, dispatcher, [(inst, 1, 0, task())])
    rq_state(client, f"{inst.id}-1-0", "failed")
    partition = keys.partition_of(inst.id)
    bad = f"{inst.id}-9-9"
    client.hset(keys.outstanding_jobs(partition), bad, raw.replace(b'"I"', inst.id.encode()))
    client.zadd(keys.outstanding(partition), {bad: 1.0})
    # When the watchdog checks
    assert watchdog.check(ALL, time.time() + LATER) == 1
    # Then the lost job is reported, and the unreadable one set aside with its bytes
    assert [e.id for e in inbox(client, keys)] == [f"{inst.id}-1-0-lost"]
    assert registered(client, keys) == {}
    (letter,) = DeadLetters(client, keys).read()
    assert letter["source"] == "watchdog"
    assert letter["key"] == keys.outstanding_jobs(partition)
    assert letter["entry"] == bad
    assert "unreadable record" in letter["reason"]
    stored = raw.replace(b'"I"', inst.id.encode())
    if "raw" in letter:
        assert base64.b64decode(letter["raw"]) == stored
    else:
        try:
            expected: Any = json.loads(stored)
        except ValueError:
            expected = stored.decode()
        assert letter["event"] == expected


def test_a_task_record_of_another_partitions_instance_is_dead_lettered(
    client: redis.Redis, keys: Keys, watchdog: Watchdog, token: str
) -> None:
    stranger = next(f"i-{token}-{n}" for n in range(100) if keys.partition_of(f"i-{token}-{n}"))
    record = json.dumps({"kind": "task", "instance": stranger, "rq_job": "x"})
    client.hset(keys.outstanding_jobs(0), "job-x", record)
    client.zadd(keys.outstanding(0), {"job-x": 1.0})
    assert watchdog.check([0], time.time()) == 0
    (letter,) = DeadLetters(client, keys).read()
    assert "is not one of partition 0" in letter["reason"]
    assert letter["event"] == json.loads(record)
    assert client.hlen(keys.outstanding_jobs(0)) == 0
    assert client.zcard(keys.outstanding(0)) == 0


def test_a_job_id_that_is_not_utf8_is_dead_lettered_with_its_bytes(
    client: redis.Redis, keys: Keys, watchdog: Watchdog
) -> None:
    job = b"job-\xff\xfe"
    client.zadd(keys.outstanding(2), {job: 1.0})
    client.hset(keys.outstanding_jobs(2), job, b"{}")
    assert watchdog.check(ALL, time.time()) == 0
    (letter,) = DeadLetters(client, keys).read()
    assert letter["source"] == "watchdog"
    assert letter["key"] == keys.outstanding(2)
    assert letter["entry"] == "job-\\xff\\xfe"
    assert base64.b64decode(letter["raw"]) == job
    assert "not UTF-8" in letter["reason"]
    assert client.zcard(keys.outstanding(2)) == 0
    assert client.hlen(keys.outstanding_jobs(2)) == 0


def test_read_record_accepts_what_the_dispatcher_writes_and_says_what_is_wrong(
    keys: Keys, watchdog: Watchdog
) -> None:
    instance_id = "inst-a"
    partition = keys.partition_of(instance_id)
    good = {"kind": "task", "instance": instance_id, "rq_job": "j", "attempt": 1}
    assert watchdog.read_record(json.dumps(good).encode(), partition) == good
    notification = {"kind": "notification", "key": "k", "instance": None}
    assert watchdog.read_record(json.dumps(notification).encode(), 3) == notification
    with pytest.raises(Unreadable, match="not JSON"):
        watchdog.read_record(b"{", partition)
    with pytest.raises(Unreadable, match="JSON object, not list"):
        watchdog.read_record(b"[]", partition)
    with pytest.raises(Unreadable, match="'kind' must be"):
        watchdog.read_record(b'{"kind": null}', partition)
    with pytest.raises(Unreadable, match="not one of partition"):
        watchdog.read_record(json.dumps(good).encode(), (partition + 1) % PARTITIONS)


def test_answered_many_unregisters_only_the_named_jobs(
    client: redis.Redis, keys: Keys, dispatcher: Dispatcher, watchdog: Watchdog, token: str
) -> None:
    insts = [instance(token, n) for n in range(3)]
    commit(client, dispatcher, [(i, 1, 0, task()) for i in insts])
    jobs = {f"{i.id}-1-0": keys.partition_of(i.id) for i in insts}
    pipe = client.pipeline(transaction=True)
    for job, partition in list(jobs.items())[:2]:
        watchdog.answered_many(pipe, partition, [job])
    watchdog.answered_many(pipe, 0, [])  # nothing to do
    pipe.execute()
    assert set(registered(client, keys)) == {f"{insts[2].id}-1-0"}
