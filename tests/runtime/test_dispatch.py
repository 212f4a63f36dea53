"""Dispatch (orchestrator.runtime.dispatch) against a real Redis and real RQ queues: the
effects of a committed transition become exactly their RQ jobs, with ids derived from
the instance, the sequence number and the effect's index, typed payloads the workers'
guard lets through, and a watchdog record each in the same commit; a lone task gets a
job of its own, many ready ones are packed (spread over the idle workers, capped at
TASKS_PER_JOB); timers are armed and cancelled in the commit.

Every test writes under its own namespace, with instance ids carrying a token of its
own; RQ's queues are shared (rq:*), so each test takes its jobs out of them at the end.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.worker_registration import WORKERS_BY_QUEUE_KEY

from orchestrator.core.effects import CancelTimers, Effect, RunTask, SendNotification, StartTimer
from orchestrator.core.events import Event
from orchestrator.core.instance import Instance
from orchestrator.runtime.dispatch import (
    LINGER_PER_JOB,
    NOTIFICATION_QUEUE,
    NOTIFICATIONS_PER_JOB,
    TASK_QUEUE,
    TASKS_PER_JOB,
    Dispatcher,
    Ready,
    job_id,
)
from orchestrator.runtime.guard import JobCheck, RefusedJob
from orchestrator.runtime.outstanding import CHECK_EVERY
from orchestrator.runtime.payloads import (
    NOTIFICATION_TIMEOUT,
    RUN_TASK,
    RUN_TASKS,
    SEND_NOTIFICATION,
    SEND_NOTIFICATIONS,
    carrier_id,
    notification_payload,
    read_notification,
    read_task,
    seal,
)
from orchestrator.runtime.registry import Registry
from orchestrator.runtime.watchdog import INTERMEDIATE
from orchestrator.store.keys import Keys
from tests.conftest import TEST_WORKFLOWS

PARTITIONS = 4
STEP = "tests.sample_workflows:step"
UNDO = "tests.sample_workflows:undo"
QUEUE_KEYS = ("rq:queue:" + TASK_QUEUE, "rq:queue:" + NOTIFICATION_QUEUE, *INTERMEDIATE)


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.from_modules(TEST_WORKFLOWS)


@pytest.fixture
def token() -> str:
    return uuid.uuid4().hex[:12]


@pytest.fixture
def keys(token: str) -> Keys:
    return Keys(namespace=f"t-dispatch-{token}", partitions=PARTITIONS)


@pytest.fixture
def rq_clean(client: redis.Redis, token: str) -> Iterator[None]:
    """Take this test's jobs (their ids carry its token) out of RQ's shared keys."""
    yield
    for key in QUEUE_KEYS:
        members: Any = client.lrange(key, 0, -1)
        for member in set(members):
            if token.encode() in member:
                client.lrem(key, 0, member)
    for job_key in client.scan_iter(match=f"rq:job:*{token}*"):
        client.delete(job_key)


@pytest.fixture
def dispatcher(client: redis.Redis, keys: Keys, rq_clean: None) -> Dispatcher:
    return Dispatcher(client, keys)


def instance(token: str, n: int = 0, workflow: str = "saga", version: int = 1) -> Instance:
    return Instance(
        id=f"{workflow}-{token}-{n}",
        workflow=workflow,
        version=version,
        created_at=time.time(),
        state="one",
        status="running",
    )


def run_task(state: str = "one", kind: Any = "task", attempt: int = 1, seq: int = 1) -> RunTask:
    return RunTask(
        task=STEP if kind == "task" else UNDO,
        kind=kind,
        state=state,
        attempt=attempt,
        entered_seq=seq,
        timeout=2.5,
        context={"n": 1, "nested": {"a": [1, 2]}},
    )


def shipped(channel: str = "email", to: str | None = "a@example.com") -> SendNotification:
    return SendNotification(
        channel=channel,
        to=to,
        template="order_shipped",
        context={"order_id": "o-1"},
        templates="workflows.order",
    )


def commit(
    client: redis.Redis,
    dispatcher: Dispatcher,
    effects: list[tuple[Instance, int, int, Effect]],
) -> Ready:
    """One commit as the batch writer makes it: each effect added, then the ready work."""
    ready = Ready()
    pipe = client.pipeline(transaction=True)
    pipe.multi()
    for inst, seq, index, effect in effects:
        dispatcher.add(pipe, inst, seq, index, effect, ready)
    dispatcher.enqueue_ready(pipe, ready)
    dispatcher.committed(pipe.execute())
    return ready


def queued(client: redis.Redis, queue: str, token: str) -> list[str]:
    """This test's job ids waiting in `queue`, in queue order (duplicates kept)."""
    members: Any = client.lrange("rq:queue:" + queue, 0, -1)
    return [m.decode() for m in members if token.encode() in m]


def fetch(client: redis.Redis, job: str) -> Job:
    return Job.fetch(job, connection=client, serializer=JSONSerializer)


def records(client: redis.Redis, keys: Keys) -> dict[str, dict[str, Any]]:
    """The watchdog's register: job id -> record, over every partition."""
    found: dict[str, dict[str, Any]] = {}
    for partition in range(keys.partitions):
        raw: Any = client.hgetall(keys.outstanding_jobs(partition))
        found.update({k.decode(): json.loads(v) for k, v in raw.items()})
    return found


def scheduled(client: redis.Redis, keys: Keys) -> dict[str, float]:
    found: dict[str, float] = {}
    for partition in range(keys.partitions):
        raw: Any = client.zrange(keys.outstanding(partition), 0, -1, withscores=True)
        found.update({k.decode(): score for k, score in raw})
    return found


def test_job_ids_derive_from_instance_sequence_and_index() -> None:
    assert job_id("inst-1", 7, 0) == "inst-1-7-0"
    assert job_id("inst-1", 7, 12) == "inst-1-7-12"
    assert job_id("a-b", 10, 1) != job_id("a-b", 1, 1)


def test_a_task_effect_becomes_one_typed_job_watched_in_the_same_commit(
    client: redis.Redis, keys: Keys, dispatcher: Dispatcher, registry: Registry, token: str
) -> None:
    inst = instance(token)
    before = time.time()
    commit(client, dispatcher, [(inst, 7, 0, run_task(seq=5))])
    job_name = f"{inst.id}-7-0"
    assert queued(client, TASK_QUEUE, token) == [job_name]
    assert queued(client, NOTIFICATION_QUEUE, token) == []
    job = fetch(client, job_name)
    assert job.func_name == RUN_TASK
    assert job.origin == TASK_QUEUE
    assert job.timeout == 3  # 2.5 s rounded up
    assert job.result_ttl == 0
    assert not job.args
    payload = job.kwargs["payload"]
    assert payload == {
        "instance": inst.id,
        "workflow": "saga",
        "version": 1,
        "task": STEP,
        "kind": "task",
        "state": "one",
        "attempt": 1,
        "entered_seq": 5,
        "context": {"n": 1, "nested": {"a": [1, 2]}},
        "job": job_name,
        "timeout": 3,
        "namespace": keys.namespace,
        "partitions": PARTITIONS,
        "partition": keys.partition_of(inst.id),
    }
    assert read_task(payload) == payload  # the typed shape, strict
    JobCheck(registry, keys).check(job)  # and the workers' guard lets it run
    # the watchdog knows it, in its instance's partition, due for a first check soon
    partition = keys.partition_of(inst.id)
    assert client.hexists(keys.outstanding_jobs(partition), job_name)
    assert records(client, keys) == {
        job_name: {
            "instance": inst.id,
            "task": STEP,
            "kind": "task",
            "state": "one",
            "attempt": 1,
            "entered_seq": 5,
            "rq_job": job_name,
        }
    }
    due = scheduled(client, keys)[job_name]
    assert before + CHECK_EVERY <= due <= time.time() + CHECK_EVERY


def test_a_compensation_keeps_its_kind_and_passes_the_guard(
    client: redis.Redis, keys: Keys, dispatcher: Dispatcher, registry: Registry, token: str
) -> None:
    inst = instance(token)
    commit(client, dispatcher, [(inst, 3, 1, run_task(kind="compensation", seq=2))])
    job = fetch(client, f"{inst.id}-3-1")
    assert job.kwargs["payload"]["kind"] == "compensation"
    assert job.kwargs["payload"]["task"] == UNDO
    JobCheck(registry, keys).check(job)
    assert records(client, keys)[job.id]["kind"] == "compensation"


def test_a_notification_effect_becomes_a_notification_job_watched_for_a_rerun(
    client: redis.Redis, keys: Keys, dispatcher: Dispatcher, registry: Registry, token: str
) -> None:
    inst = instance(token, workflow="order")
    commit(client, dispatcher, [(inst, 4, 2, shipped())])
    key = f"{inst.id}-4-2"
    assert queued(client, NOTIFICATION_QUEUE, token) == [key]
    assert queued(client, TASK_QUEUE, token) == []
    job = fetch(client, key)
    assert job.func_name == SEND_NOTIFICATION
    assert job.origin == NOTIFICATION_QUEUE
    assert job.timeout == NOTIFICATION_TIMEOUT
    payload = job.kwargs["payload"]
    assert read_notification(payload) == payload
    assert payload["key"] == key
    assert payload["kind"] == "notification"
    assert (payload["channel"], payload["to"], payload["template"]) == (
        "email",
        "a@example.com",
        "order_shipped",
    )
    assert (payload["workflow"], payload["version"]) == ("order", 1)
    assert payload["partition"] == keys.partition_of(inst.id)
    JobCheck(registry, keys).check(job)
    # the watchdog keeps the whole payload, to run it again if it is lost
    assert records(client, keys) == {key: {**payload, "rq_job": key}}


def test_exactly_the_jobs_of_a_results_effects_and_its_timers(
    client: redis.Redis, keys: Keys, dispatcher: Dispatcher, registry: Registry, token: str
) -> None:
    inst = instance(token, workflow="order")
    timer = StartTimer(id=f"tm-{token}", due=1234.5, event_type="state.timeout", data={"x": 1})
    order_task = RunTask(
        task="workflows.order.tasks:reserve_stock",
        kind="task",
        state="reserving",
        attempt=1,
        entered_seq=9,
        timeout=30,
    )
    effects: list[Effect] = [order_task, shipped("email"), shipped("sms", "+15550001"), timer]
    commit(client, dispatcher, [(inst, 9, i, e) for i, e in enumerate(effects)])
    # one task job of its own; the two notifications (no idle worker) packed in one
    assert queued(client, TASK_QUEUE, token) == [f"{inst.id}-9-0"]
    carrier = carrier_id([f"{inst.id}-9-1", f"{inst.id}-9-2"])
    assert carrier == f"{inst.id}-9-1-n2"
    assert queued(client, NOTIFICATION_QUEUE, token) == [carrier]
    packed = fetch(client, carrier)
    assert packed.func_name == SEND_NOTIFICATIONS
    assert packed.timeout == NOTIFICATION_TIMEOUT * 2
    items = packed.kwargs["payload"]["items"]
    assert [(i["key"], i["channel"]) for i in items] == [
        (f"{inst.id}-9-1", "email"),
        (f"{inst.id}-9-2", "sms"),
    ]
    check = JobCheck(registry, keys)
    check.check(packed)
    check.check(fetch(client, f"{inst.id}-9-0"))
    found = records(client, keys)
    assert set(found) == {f"{inst.id}-9-0", f"{inst.id}-9-1", f"{inst.id}-9-2"}
    assert found[f"{inst.id}-9-0"]["rq_job"] == f"{inst.id}-9-0"
    assert found[f"{inst.id}-9-1"]["rq_job"] == carrier
    assert found[f"{inst.id}-9-2"]["rq_job"] == carrier
    # and the timer is armed in its instance's partition, as the event it becomes
    partition = keys.partition_of(inst.id)
    assert client.zscore(keys.timers(partition), timer.id) == 1234.5
    raw: Any = client.hget(keys.timer_events(partition), timer.id)
    event = Event.from_json(raw)
    assert (event.id, event.type, event.instance_id, event.at) == (
        f"timer-{timer.id}",
        "state.timeout",
        inst.id,
        1234.5,
    )
    assert event.data == {"x": 1}


def test_cancelling_timers_removes_them_and_their_events(
    client: redis.Redis, keys: Keys, dispatcher: Dispatcher, token: str
) -> None:
    inst = instance(token)
    partition = keys.partition_of(inst.id)
    arm = [StartTimer(id=f"t{n}-{token}", due=100.0 + n, event_type="tick") for n in range(3)]
    commit(client, dispatcher, [(inst, 1, i, t) for i, t in enumerate(arm)])
    assert client.zcard(keys.timers(partition)) == 3
    cancel = CancelTimers(ids=(arm[0].id, arm[2].id, "never-armed"))
    commit(client, dispatcher, [(inst, 2, 0, cancel)])
    members: Any = client.zrange(keys.timers(partition), 0, -1)
    assert [m.decode() for m in members] == [arm[1].id]
    fields: Any = client.hkeys(keys.timer_events(partition))
    assert [f.decode() for f in fields] == [arm[1].id]
    assert queued(client, TASK_QUEUE, token) == []


def test_a_repeated_dispatch_of_the_same_result_makes_no_new_job(
    client: redis.Redis, keys: Keys, dispatcher: Dispatcher, token: str
) -> None:
    inst, other = instance(token, 1), instance(token, 2, workflow="order")
    effects: list[tuple[Instance, int, int, Effect]] = [
        (inst, 4, 0, run_task(seq=4)),
        (other, 6, 1, shipped()),
    ]
    commit(client, dispatcher, effects)
    jobs_before = sorted(k.decode() for k in client.scan_iter(match=f"rq:job:*{token}*"))
    records_before = records(client, keys)
    payload_before = fetch(client, f"{inst.id}-4-0").kwargs
    # When the same commit is written again (an apply retried)
    commit(client, Dispatcher(client, keys), effects)
    # Then the same jobs, with the same payloads and the same watchdog records
    jobs_after = sorted(k.decode() for k in client.scan_iter(match=f"rq:job:*{token}*"))
    assert jobs_after == jobs_before
    assert jobs_before == sorted([f"rq:job:{inst.id}-4-0", f"rq:job:{other.id}-6-1"])
    assert records(client, keys) == records_before
    assert fetch(client, f"{inst.id}-4-0").kwargs == payload_before
    assert set(queued(client, TASK_QUEUE, token)) == {f"{inst.id}-4-0"}
    assert set(queued(client, NOTIFICATION_QUEUE, token)) == {f"{other.id}-6-1"}


@pytest.mark.xfail(
    strict=True,
    reason="a repeated dispatch pushes each job id onto its RQ queue again (Queue.enqueue_job "
    "RPUSHes unconditionally): the same job then waits twice and two workers can run it",
)
def test_a_repeated_dispatch_leaves_each_job_in_its_queue_once(
    client: redis.Redis, keys: Keys, dispatcher: Dispatcher, token: str
) -> None:
    inst, other = instance(token, 1), instance(token, 2, workflow="order")
    effects: list[tuple[Instance, int, int, Effect]] = [
        (inst, 4, 0, run_task(seq=4)),
        (other, 6, 1, shipped()),
    ]
    commit(client, dispatcher, effects)
    commit(client, Dispatcher(client, keys), effects)
    assert queued(client, TASK_QUEUE, token) == [f"{inst.id}-4-0"]
    assert queued(client, NOTIFICATION_QUEUE, token) == [f"{other.id}-6-1"]


def test_many_ready_tasks_are_packed_up_to_the_limit(
    client: redis.Redis, keys: Keys, dispatcher: Dispatcher, registry: Registry, token: str
) -> None:
    # Given no worker registered on the tasks queue, and more ready tasks than a job holds
    assert client.scard(WORKERS_BY_QUEUE_KEY % TASK_QUEUE) == 0
    count = 2 * TASKS_PER_JOB + 7
    insts = [instance(token, n) for n in range(count)]
    commit(client, dispatcher, [(i, 3, 0, run_task(seq=3)) for i in insts])
    # Then they ride in three jobs, in order, the first two full
    ids = [f"{i.id}-3-0" for i in insts]
    packs = [ids[:TASKS_PER_JOB], ids[TASKS_PER_JOB : 2 * TASKS_PER_JOB], ids[2 * TASKS_PER_JOB :]]
    carriers = [carrier_id(p) for p in packs]
    assert queued(client, TASK_QUEUE, token) == carriers
    check = JobCheck(registry, keys)
    for carrier, pack in zip(carriers, packs, strict=True):
        job = fetch(client, carrier)
        assert job.func_name == RUN_TASKS
        items = job.kwargs["payload"]["items"]
        assert [item["job"] for item in items] == pack
        assert job.timeout == 3 * len(pack)  # the sum of its tasks' own timeouts
        check.check(job)
    found = records(client, keys)
    assert len(found) == count
    for carrier, pack in zip(carriers, packs, strict=True):
        assert {found[job]["rq_job"] for job in pack} == {carrier}
    assert set(scheduled(client, keys)) == set(ids)


def test_many_ready_notifications_are_packed_up_to_their_limit(
    client: redis.Redis, keys: Keys, dispatcher: Dispatcher, registry: Registry, token: str
) -> None:
    count = NOTIFICATIONS_PER_JOB + 1
    insts = [instance(token, n, workflow="order") for n in range(count)]
    commit(client, dispatcher, [(i, 8, 1, shipped()) for i in insts])
    keys_ = [f"{i.id}-8-1" for i in insts]
    # ceil(51 / 1 idle worker) is more than a job holds: one full job and the rest
    expected = [carrier_id(keys_[:NOTIFICATIONS_PER_JOB]), keys_[NOTIFICATIONS_PER_JOB]]
    assert queued(client, NOTIFICATION_QUEUE, token) == expected
    full = fetch(client, expected[0])
    assert full.func_name == SEND_NOTIFICATIONS
    assert len(full.kwargs["payload"]["items"]) == NOTIFICATIONS_PER_JOB
    JobCheck(registry, keys).check(full)
    alone = fetch(client, expected[1])
    assert alone.func_name == SEND_NOTIFICATION
    JobCheck(registry, keys).check(alone)
    assert set(records(client, keys)) == set(keys_)


@pytest.fixture
def idle_workers(client: redis.Redis, token: str) -> Iterator[int]:
    """Three idle workers registered with RQ on the tasks queue (names only), removed after."""
    registered = WORKERS_BY_QUEUE_KEY % TASK_QUEUE
    waiting = int(client.llen("rq:queue:" + TASK_QUEUE))
    names = [f"fake-worker-{token}-{n}" for n in range(waiting + 3)]
    client.sadd(registered, *names)
    yield 3
    client.srem(registered, *names)


def test_ready_tasks_spread_over_the_idle_workers(
    client: redis.Redis, keys: Keys, dispatcher: Dispatcher, token: str, idle_workers: int
) -> None:
    # Given three idle workers, six ready tasks go in three jobs of two
    insts = [instance(token, n) for n in range(6)]
    commit(client, dispatcher, [(i, 2, 0, run_task(seq=2)) for i in insts])
    ids = [f"{i.id}-2-0" for i in insts]
    expected = [carrier_id(ids[n : n + 2]) for n in range(0, 6, 2)]
    assert queued(client, TASK_QUEUE, token) == expected
    assert dispatcher.linger == 0.0


def test_no_more_tasks_than_idle_workers_get_a_job_each(
    client: redis.Redis, keys: Keys, dispatcher: Dispatcher, token: str, idle_workers: int
) -> None:
    insts = [instance(token, n) for n in range(idle_workers)]
    commit(client, dispatcher, [(i, 2, 0, run_task(seq=2)) for i in insts])
    ids = [f"{i.id}-2-0" for i in insts]
    assert queued(client, TASK_QUEUE, token) == ids
    assert {fetch(client, i).func_name for i in ids} == {RUN_TASK}


def test_a_lone_task_gets_its_own_job_even_with_a_backlog_and_the_applier_lingers(
    client: redis.Redis, keys: Keys, dispatcher: Dispatcher, token: str
) -> None:
    assert client.scard(WORKERS_BY_QUEUE_KEY % TASK_QUEUE) == 0
    assert client.llen("rq:queue:" + TASK_QUEUE) == 0  # the other tests took theirs out
    commit(client, dispatcher, [(instance(token, 0), 1, 0, run_task())])
    assert dispatcher.linger == 0.0
    # one job waits and no worker takes it: the next commit meets a backlog
    waiting = int(client.llen("rq:queue:" + TASK_QUEUE))
    commit(client, dispatcher, [(instance(token, 1), 1, 0, run_task())])
    assert queued(client, TASK_QUEUE, token) == [
        f"{instance(token, 0).id}-1-0",
        f"{instance(token, 1).id}-1-0",
    ]
    assert fetch(client, f"{instance(token, 1).id}-1-0").func_name == RUN_TASK
    assert dispatcher.linger == pytest.approx(min(0.05, LINGER_PER_JOB * waiting))
    assert dispatcher.linger > 0
    # a commit with nothing ready resets it
    commit(client, dispatcher, [])
    assert dispatcher.linger == 0.0


class Recording(redis.Redis):
    """A client that notes the commands it sends on its own (outside pipelines)."""

    sent: list[str]

    def execute_command(self, *args: Any, **options: Any) -> Any:
        self.sent.append(str(args[0]).upper())
        return super().execute_command(*args, **options)


def test_a_lone_task_costs_no_round_trip_before_its_commit_many_read_the_backlog_first(
    client: redis.Redis, redis_server: str, keys: Keys, rq_clean: None, token: str
) -> None:
    recording = Recording.from_url(redis_server)
    recording.sent = []
    dispatcher = Dispatcher(recording, keys)
    # one ready task: one job whatever the backlog; its queue is not read on its own
    commit(recording, dispatcher, [(instance(token, 0), 1, 0, run_task())])
    assert "LLEN" not in recording.sent
    # another lone task meets the first waiting: the linger comes from the commit's read
    commit(recording, dispatcher, [(instance(token, 1), 1, 0, run_task())])
    assert "LLEN" not in recording.sent
    assert dispatcher.linger == pytest.approx(LINGER_PER_JOB * 1)  # no worker counts as one
    # several: how to pack them depends on the backlog, read before the commit
    commit(recording, dispatcher, [(instance(token, n), 1, 0, run_task()) for n in (2, 3)])
    assert recording.sent.count("LLEN") == 1
    assert dispatcher.linger == pytest.approx(LINGER_PER_JOB * 2)
    recording.close()


def test_a_job_key_seals_every_job_and_the_guard_checks_the_seal(
    client: redis.Redis, keys: Keys, registry: Registry, token: str, rq_clean: None
) -> None:
    secret = b"k" * 32
    sealed = Dispatcher(client, keys, job_key=secret)
    insts = [instance(token, n) for n in range(3)]
    commit(client, sealed, [(insts[0], 1, 0, run_task())])
    commit(client, sealed, [(i, 1, 0, run_task()) for i in insts[1:]])
    for name in (f"{insts[0].id}-1-0", carrier_id([f"{i.id}-1-0" for i in insts[1:]])):
        job = fetch(client, name)
        assert job.meta["mac"] == seal(secret, job.id, job.data)
        JobCheck(registry, keys, secret).check(job)
        with pytest.raises(RefusedJob, match="seal"):
            JobCheck(registry, keys, b"x" * 32).check(job)
    # without a key, no seal is written, and a worker with a key refuses the job
    commit(client, Dispatcher(client, keys), [(instance(token, 9), 1, 0, run_task())])
    unsealed = fetch(client, f"{instance(token, 9).id}-1-0")
    assert "mac" not in unsealed.meta
    with pytest.raises(RefusedJob, match="seal"):
        JobCheck(registry, keys, secret).check(unsealed)


def test_a_payload_from_before_keys_travelled_one_way_is_cleaned_on_enqueue(
    client: redis.Redis, keys: Keys, dispatcher: Dispatcher, registry: Registry, token: str
) -> None:
    inst = instance(token, workflow="order")
    note = notification_payload(
        keys,
        key=f"{inst.id}-5-0",
        instance=inst.id,
        workflow="order",
        version=1,
        channel="email",
        to="a@example.com",
        template="order_shipped",
        templates="workflows.order",
        urgent=False,
        context={},
    )
    stale: Any = {**note, "inbox": "orch:{p0}:inbox", "alive": "orch:{p0}:alive:x"}
    job = f"{note['key']}-a1-1000"
    pipe = client.pipeline(transaction=True)
    pipe.multi()
    dispatcher.enqueue_notification(pipe, stale, job)
    pipe.execute()
    written = fetch(client, job)
    assert written.kwargs["payload"] == note
    JobCheck(registry, keys).check(written)
    assert records(client, keys)[job]["rq_job"] == job
    assert "inbox" not in records(client, keys)[job]


def test_a_forged_payload_of_another_namespace_is_refused_by_the_guard(
    client: redis.Redis, keys: Keys, registry: Registry, token: str, rq_clean: None
) -> None:
    # the dispatcher of another deployment writes a job into the shared queue
    foreign = Dispatcher(client, Keys(namespace=f"elsewhere-{token}", partitions=PARTITIONS))
    inst = instance(token)
    commit(client, foreign, [(inst, 1, 0, run_task())])
    with pytest.raises(RefusedJob, match="namespace"):
        JobCheck(registry, keys).check(fetch(client, f"{inst.id}-1-0"))
