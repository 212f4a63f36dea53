"""Notification jobs to run later (orchestrator.runtime.notify.later) against a real Redis
and real RQ queues: entries wait in a sorted set by due time; only due ones move, each
onto the notifications queue as a watched job in one transaction with its removal, and
exactly once; an unreadable entry goes to the dead letters with its bytes, and the
entries behind it still move.

Every test writes under its own namespace; notification keys carry a token of the test,
and each test takes its jobs out of RQ's shared queues at the end.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis.client import Pipeline
from rq.job import Job
from rq.serializers import JSONSerializer

from orchestrator.core.events import Unreadable
from orchestrator.runtime.dispatch import NOTIFICATION_QUEUE, Dispatcher
from orchestrator.runtime.guard import JobCheck
from orchestrator.runtime.notify.later import Later, read_payload
from orchestrator.runtime.payloads import (
    NOTIFICATION_TIMEOUT,
    SEND_NOTIFICATION,
    NotificationPayload,
    notification_payload,
)
from orchestrator.runtime.registry import Registry
from orchestrator.runtime.watchdog import INTERMEDIATE
from orchestrator.store.deadletters import DeadLetters
from orchestrator.store.keys import Keys
from tests.conftest import TEST_WORKFLOWS

PARTITIONS = 4
QUEUE = "rq:queue:" + NOTIFICATION_QUEUE


@pytest.fixture
def token() -> str:
    return uuid.uuid4().hex[:12]


@pytest.fixture
def keys(token: str) -> Keys:
    return Keys(namespace=f"t-later-{token}", partitions=PARTITIONS)


@pytest.fixture
def rq_clean(client: redis.Redis, token: str) -> Iterator[None]:
    """Take this test's jobs (their ids carry its token) out of RQ's shared keys."""
    yield
    for key in (QUEUE, *INTERMEDIATE):
        members: Any = client.lrange(key, 0, -1)
        for member in set(members):
            if token.encode() in member:
                client.lrem(key, 0, member)
    for job_key in client.scan_iter(match=f"rq:job:*{token}*"):
        client.delete(job_key)


@pytest.fixture
def dispatcher(client: redis.Redis, keys: Keys, rq_clean: None) -> Dispatcher:
    return Dispatcher(client, keys)


@pytest.fixture
def later(client: redis.Redis, keys: Keys) -> Later:
    return Later(client, keys)


def payload(keys: Keys, token: str, n: int, attempt: int | None = None) -> NotificationPayload:
    instance = f"order-{token}-{n}"
    made = notification_payload(
        keys,
        key=f"{instance}-3-0",
        instance=instance,
        workflow="order",
        version=1,
        channel="email",
        to=f"user{n}@example.com",
        template="order_shipped",
        templates="workflows.order",
        urgent=False,
        context={"order_id": n},
    )
    if attempt is not None:
        made["attempt"] = attempt
    return made


def queued(client: redis.Redis, token: str) -> list[str]:
    members: Any = client.lrange(QUEUE, 0, -1)
    return [m.decode() for m in members if token.encode() in m]


def entries(client: redis.Redis, keys: Keys) -> list[tuple[bytes, float]]:
    found: Any = client.zrange(keys.notify_later, 0, -1, withscores=True)
    return list(found)


def watched(client: redis.Redis, keys: Keys) -> set[str]:
    jobs: set[str] = set()
    for partition in range(PARTITIONS):
        found: Any = client.hkeys(keys.outstanding_jobs(partition))
        jobs |= {j.decode() for j in found}
    return jobs


def test_nothing_waiting_moves_nothing(later: Later, dispatcher: Dispatcher) -> None:
    assert later.next_due() is None
    assert later.move_due(dispatcher, now=1e12) == 0


def test_only_due_entries_move_each_as_a_watched_job(
    client: redis.Redis,
    keys: Keys,
    later: Later,
    dispatcher: Dispatcher,
    token: str,
) -> None:
    first, second, third = (payload(keys, token, n) for n in range(3))
    later.add(second, 20.0)
    later.add(first, 10.0)
    later.add(third, 30.0)
    assert later.next_due() == 10.0
    now = 25.0
    assert later.move_due(dispatcher, now=now) == 2
    stamp = int(now * 1000)
    expected = [f"{first['key']}-a1-{stamp}", f"{second['key']}-a1-{stamp}"]
    assert queued(client, token) == expected  # in due order
    for job_id, moved in zip(expected, (first, second), strict=True):
        job = Job.fetch(job_id, connection=client, serializer=JSONSerializer)
        assert job.func_name == SEND_NOTIFICATION
        assert job.timeout == NOTIFICATION_TIMEOUT
        assert job.kwargs["payload"] == moved
    assert watched(client, keys) == set(expected)
    # the one not yet due stays, and is next
    ((member, due),) = entries(client, keys)
    assert json.loads(member) == third
    assert due == 30.0
    assert later.next_due() == 30.0


def test_an_entry_due_exactly_now_moves_and_a_late_one_too(
    client: redis.Redis, keys: Keys, later: Later, dispatcher: Dispatcher, token: str
) -> None:
    later.add(payload(keys, token, 0), 100.0)
    later.add(payload(keys, token, 1), 1.0)  # long overdue
    assert later.move_due(dispatcher, now=100.0) == 2
    assert entries(client, keys) == []
    assert len(queued(client, token)) == 2


def test_each_entry_moves_exactly_once(
    client: redis.Redis, keys: Keys, later: Later, dispatcher: Dispatcher, token: str
) -> None:
    for n in range(3):
        later.add(payload(keys, token, n), 5.0)
    assert later.move_due(dispatcher, now=10.0) == 3
    assert later.move_due(dispatcher, now=10.0) == 0
    # a second mover, after the first, finds nothing either
    assert Later(client, keys).move_due(Dispatcher(client, keys), now=11.0) == 0
    jobs = queued(client, token)
    assert len(jobs) == 3 == len(set(jobs))
    assert watched(client, keys) == set(jobs)


def test_two_movers_at_once_move_every_entry(
    client: redis.Redis, keys: Keys, dispatcher: Dispatcher, token: str, redis_server: str
) -> None:
    """Two movers whose reads interleave: between the first's read of the due entries and
    its transaction, the second moves them all. Every entry still moves, and none stays."""
    other = redis.Redis.from_url(redis_server)
    try:
        for n in range(4):
            Later(client, keys).add(payload(keys, token, n), 1.0)
        second = Later(other, keys)
        moved_by_second: list[int] = []

        class Overlapping:
            """The first mover's enqueuer: the second mover runs as it starts its first."""

            def enqueue_notification(
                self, pipe: Pipeline, note: NotificationPayload, job: str
            ) -> None:
                if not moved_by_second:
                    moved_by_second.append(second.move_due(Dispatcher(other, keys), now=2.0))
                dispatcher.enqueue_notification(pipe, note, job)

        Later(client, keys).move_due(Overlapping(), now=3.0)
        assert moved_by_second == [4]
        assert entries(client, keys) == []
        keys_queued = {job.rsplit("-a", 1)[0] for job in queued(client, token)}
        assert keys_queued == {payload(keys, token, n)["key"] for n in range(4)}
    finally:
        other.close()


def test_two_movers_at_once_move_each_entry_exactly_once(
    client: redis.Redis, keys: Keys, dispatcher: Dispatcher, token: str, redis_server: str
) -> None:
    other = redis.Redis.from_url(redis_server)
    try:
        for n in range(4):
            Later(client, keys).add(payload(keys, token, n), 1.0)
        second = Later(other, keys)
        moved: list[int] = []

        class Overlapping:
            def enqueue_notification(
                self, pipe: Pipeline, note: NotificationPayload, job: str
            ) -> None:
                if not moved:
                    moved.append(second.move_due(Dispatcher(other, keys), now=2.0))
                dispatcher.enqueue_notification(pipe, note, job)

        moved.append(Later(client, keys).move_due(Overlapping(), now=3.0))
        assert sum(moved) == 4
        assert len(queued(client, token)) == 4
    finally:
        other.close()


def test_a_move_is_capped_by_its_limit(
    client: redis.Redis, keys: Keys, later: Later, dispatcher: Dispatcher, token: str
) -> None:
    for n in range(5):
        later.add(payload(keys, token, n), float(n))
    assert later.move_due(dispatcher, now=100.0, limit=2) == 2
    assert [json.loads(m)["key"] for m, _ in entries(client, keys)] == [
        payload(keys, token, n)["key"] for n in range(2, 5)
    ]
    assert later.move_due(dispatcher, now=100.0, limit=10) == 3


def test_the_same_job_added_twice_waits_once_at_its_last_due_time(
    client: redis.Redis, keys: Keys, later: Later, dispatcher: Dispatcher, token: str
) -> None:
    note = payload(keys, token, 0)
    later.add(note, 50.0)
    later.add(dict(reversed(list(note.items()))), 70.0)  # type: ignore[arg-type]
    assert [score for _, score in entries(client, keys)] == [70.0]
    assert later.move_due(dispatcher, now=60.0) == 0
    assert later.move_due(dispatcher, now=70.0) == 1
    assert len(queued(client, token)) == 1


def test_the_attempt_names_the_job_and_the_entry_travels_whole(
    client: redis.Redis, keys: Keys, later: Later, dispatcher: Dispatcher, token: str
) -> None:
    note = payload(keys, token, 0, attempt=3)
    note["lost"] = 2
    later.add(note, 1.0)
    assert later.move_due(dispatcher, now=2.5) == 1
    (job_id,) = queued(client, token)
    assert job_id == f"{note['key']}-a3-2500"
    job = Job.fetch(job_id, connection=client, serializer=JSONSerializer)
    assert job.kwargs["payload"] == note
    JobCheck(Registry.from_modules(TEST_WORKFLOWS), keys).check(job)


def test_an_add_in_a_transaction_waits_for_its_commit(
    client: redis.Redis, keys: Keys, later: Later
) -> None:
    pipe = client.pipeline(transaction=True)
    later.add(payload(keys, "x", 0), 5.0, pipe)
    assert later.next_due() is None
    pipe.execute()
    assert later.next_due() == 5.0
    discarded = client.pipeline(transaction=True)
    later.add(payload(keys, "x", 1), 1.0, discarded)
    discarded.reset()
    assert later.next_due() == 5.0


UNREADABLE = {
    "not UTF-8": (b'{"key": "\xff\xfe"}', "not UTF-8"),
    "not JSON": (b"{nope", "not JSON"),
    "not an object": (b'["key"]', "JSON object, not list"),
    "no key": (b'{"channel": "email"}', "'key' must be a string"),
    "key not a string": (b'{"key": 12}', "'key' must be a string"),
    "attempt not an integer": (b'{"key": "k", "attempt": "2"}', "'attempt' must be an integer"),
    "attempt a boolean": (b'{"key": "k", "attempt": true}', "'attempt' must be an integer"),
    "partition not a number": (b'{"key": "k", "partition": 1.5}', "'partition' must be"),
}


@pytest.mark.parametrize("raw,why", UNREADABLE.values(), ids=list(UNREADABLE))
def test_an_unreadable_entry_is_dead_lettered_with_its_bytes_and_the_rest_move(
    client: redis.Redis,
    keys: Keys,
    later: Later,
    dispatcher: Dispatcher,
    token: str,
    raw: bytes,
    why: str,
) -> None:
    # Given an unreadable entry due first, and a good one behind it
    client.zadd(keys.notify_later, {raw: 1.0})
    good = payload(keys, token, 0)
    later.add(good, 2.0)
    # When the mover runs
    assert later.move_due(dispatcher, now=10.0) == 1
    # Then the good one moved, and the unreadable one is in the dead letters
    assert entries(client, keys) == []
    assert [job.rsplit("-a", 1)[0] for job in queued(client, token)] == [good["key"]]
    (letter,) = DeadLetters(client, keys).read()
    assert letter["source"] == "notify-later"
    assert letter["key"] == keys.notify_later
    assert why in letter["reason"]
    if "raw" in letter:
        assert base64.b64decode(letter["raw"]) == raw
    else:
        try:
            expected: Any = json.loads(raw)
        except ValueError:
            expected = raw.decode()
        assert letter["event"] == expected
    # and the next move finds nothing
    assert later.move_due(dispatcher, now=20.0) == 0
    assert len(DeadLetters(client, keys).read()) == 1


def test_read_payload_returns_a_readable_entry_unchanged(keys: Keys) -> None:
    note = payload(keys, "t", 0, attempt=2)
    assert read_payload(json.dumps(note).encode()) == note
    assert dict(read_payload(b'{"key": "k"}')) == {"key": "k"}  # the worker's guard checks the rest
    with pytest.raises(Unreadable, match="JSON object, not int"):
        read_payload(b"5")
