"""Poison: no entry read back from Redis can wedge the engine.

Anyone who can write to Redis (or a bug, or a disk) can leave an entry the
engine cannot read: bytes that are not UTF-8, JSON of the wrong shape, a
corrupt instance hash. Each test plants one kind while orders are in flight
and checks that every other order still finishes, and that the poison sits in
the dead letters with its raw bytes and the reason, removed from where it was.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from orchestrator.core.errors import InputError
from orchestrator.core.events import Event
from orchestrator.entry.bootstrap import App
from orchestrator.entry.worker import run_burst
from orchestrator.store.keys import INBOX_GROUP
from tests.conftest import ROOT, cli_env

ORDERS = 6


def orders_in_flight(app: App, count: int = ORDERS, prefix: str = "P") -> list[str]:
    """Start orders and apply their start events: each has its first task out."""
    ids = [
        app.client.start("order", {"order_id": f"{prefix}{n}", "work_seconds": 0})
        for n in range(count)
    ]
    applier = app.applier()
    applier.drain()
    applier.leases.release_all()
    assert all(app.client.status(i).state == "reserving" for i in ids)
    return ids


def assert_shipped(app: App, ids: list[str]) -> None:
    states = {i: app.client.status(i).state for i in ids}
    assert states == dict.fromkeys(ids, "shipped")


def letters(app: App) -> list[dict[str, Any]]:
    return app.client.dead_letters.read(limit=10_000)


def raw_of(app: App, letter: dict[str, Any]) -> bytes:
    """The exact bytes a letter keeps: its text, or base64 when they were not UTF-8."""
    entries: Any = app.redis.xrange(app.keys.deadletters, letter["id"], letter["id"])
    ((_, fields),) = entries
    if b"raw" in fields:
        return base64.b64decode(fields[b"raw"])
    return bytes(fields[b"event"])


def pending(app: App) -> int:
    return sum(
        app.redis.xpending(app.keys.inbox(p), INBOX_GROUP)["pending"]
        for p in range(app.keys.partitions)
    )


def plant(app: App, partition: int, raw: bytes | str) -> str:
    """Append a raw entry to an inbox partition; returns its stream entry id."""
    entry: Any = app.redis.xadd(app.keys.inbox(partition), {"e": raw})
    return str(entry.decode())


def event_json(**changes: Any) -> bytes:
    doc: dict[str, Any] = {
        "id": "poison",
        "type": "task.completed",
        "instance": "nobody",
        "at": 1.0,
        "data": {},
    }
    doc.update(changes)
    return json.dumps(doc).encode()


INBOX_POISON = [
    pytest.param(b'{"id":"p","type":"t","instance":"o\xff\xfe","at":1}', "not UTF-8", id="utf8"),
    pytest.param(event_json().decode().encode("utf-16"), "not UTF-8", id="utf16"),
    pytest.param(event_json(instance=5), "'instance' must be a string", id="instance-int"),
    pytest.param(event_json(instance=[1]), "'instance' must be a string", id="instance-list"),
    pytest.param(event_json(instance=None), "'instance' must be a string", id="instance-null"),
    pytest.param(event_json(id={"a": 1}), "'id' must be a string", id="id-object"),
    pytest.param(event_json(type=7), "'type' must be a string", id="type-int"),
    pytest.param(event_json(data=[1, 2]), "'data' must be an object", id="data-list"),
    pytest.param(event_json(data=5), "'data' must be an object", id="data-number"),
    pytest.param(event_json(at=True), "'at' must be a finite number", id="at-bool"),
    pytest.param(b"[1, 2]", "must be a JSON object", id="json-array"),
    pytest.param(b"null", "must be a JSON object", id="json-null"),
    pytest.param(b"{not json", "not JSON", id="not-json"),
    pytest.param(b"[" * 100_000, "nested too deeply", id="deep-nesting"),
]


@pytest.mark.parametrize(("raw", "reason"), INBOX_POISON)
def test_a_poisoned_inbox_entry_goes_to_the_dead_letters_and_orders_finish(
    app: App, raw: bytes, reason: str
) -> None:
    # Given orders in flight, and an unreadable entry in every inbox partition
    ids = orders_in_flight(app)
    planted = {p: plant(app, p, raw) for p in range(app.keys.partitions)}
    # When the engine runs
    run_burst(app)
    # Then every order finished, nothing is left pending in any inbox
    assert_shipped(app, ids)
    assert pending(app) == 0
    # And each poison is a dead letter, with where it was, its exact bytes and the reason
    found = {(letter["key"], letter["entry"]): letter for letter in letters(app)}
    for partition, entry_id in planted.items():
        letter = found[app.keys.inbox(partition), entry_id]
        assert letter["source"] == "inbox"
        assert reason in letter["reason"], letter["reason"]
        assert raw_of(app, letter) == raw


def test_an_event_in_another_instances_partition_is_not_applied(app: App) -> None:
    # Given orders in flight, and a cancel for one of them appended to a partition
    # that is not its own (its own partition's applier alone may apply its events)
    ids = orders_in_flight(app)
    victim = ids[0]
    wrong = (app.keys.partition_of(victim) + 1) % app.keys.partitions
    cancel = Event(id="misrouted", type="workflow.cancel", instance_id=victim, at=time.time())
    entry = plant(app, wrong, cancel.to_json())
    # When the engine runs
    run_burst(app)
    # Then nothing applied it: every order shipped, and the cancel is a dead letter
    assert_shipped(app, ids)
    (letter,) = letters(app)
    assert (letter["entry"], letter["key"]) == (entry, app.keys.inbox(wrong))
    assert f"belongs to partition {app.keys.partition_of(victim)}" in letter["reason"]


def test_a_poisoned_timer_event_goes_to_the_dead_letters(app: App) -> None:
    # Given orders in flight, and in every partition a due timer whose event is garbage
    ids = orders_in_flight(app)
    for p in range(app.keys.partitions):
        app.redis.hset(app.keys.timer_events(p), "poison-timer", b"\x80garbage{")
        app.redis.zadd(app.keys.timers(p), {"poison-timer": 0})
    # When the engine runs
    run_burst(app)
    # Then the orders finished, the timers fired once, and each garbage event is a letter
    assert_shipped(app, ids)
    assert all(app.redis.zcard(app.keys.timers(p)) == 0 for p in range(app.keys.partitions))
    poisoned = [letter for letter in letters(app) if raw_of(app, letter) == b"\x80garbage{"]
    assert len(poisoned) == app.keys.partitions
    assert all("not UTF-8" in letter["reason"] for letter in poisoned)


NOTIFY_LATER_POISON = [
    pytest.param(b"\xffnot json", "not UTF-8", id="utf8"),
    pytest.param(b"{not json", "not JSON", id="not-json"),
    pytest.param(b"[1, 2]", "must be a JSON object", id="json-array"),
    pytest.param(b'{"attempt": 1}', "'key' must be a string", id="no-key"),
    pytest.param(b'{"key": "k", "partition": "x"}', "'partition'", id="bad-partition"),
]


@pytest.mark.parametrize(("member", "reason"), NOTIFY_LATER_POISON)
def test_a_poisoned_notify_later_entry_goes_to_the_dead_letters(
    app: App, member: bytes, reason: str
) -> None:
    # Given orders in flight, and an unreadable notification job due now
    ids = orders_in_flight(app)
    app.redis.zadd(app.keys.notify_later, {member: 0})
    # When the engine runs
    run_burst(app)
    # Then the orders finished, and the entry left the set for the dead letters
    assert_shipped(app, ids)
    assert app.redis.zscore(app.keys.notify_later, member) is None
    (letter,) = letters(app)
    assert (letter["source"], letter["key"]) == ("notify-later", app.keys.notify_later)
    assert reason in letter["reason"], letter["reason"]
    assert raw_of(app, letter) == member


WATCHDOG_POISON = [
    pytest.param(b"\xffnot json", "not UTF-8", id="utf8"),
    pytest.param(b"{not json", "not JSON", id="not-json"),
    pytest.param(b"[1, 2]", "must be a JSON object", id="json-array"),
    pytest.param(b'{"rq_job": "JOB"}', "'kind'", id="no-kind"),
    pytest.param(b'{"kind": "task", "rq_job": "JOB"}', "'instance'", id="no-instance"),
]


@pytest.mark.parametrize(("record", "reason"), WATCHDOG_POISON)
def test_a_poisoned_watchdog_record_goes_to_the_dead_letters(
    app: App, record: bytes, reason: str
) -> None:
    # Given orders in flight, and in every partition an outstanding job whose record is
    # garbage, its RQ job ended failed (so the watchdog reports it lost)
    ids = orders_in_flight(app)
    for p in range(app.keys.partitions):
        job = f"poison-job-{p}"
        app.redis.hset(app.keys.outstanding_jobs(p), job, record.replace(b"JOB", job.encode()))
        app.redis.zadd(app.keys.outstanding(p), {job: 0})
        app.redis.hset(f"rq:job:{job}", "status", "failed")
    # When the engine runs
    run_burst(app)
    # Then the orders finished, and each record left the watchdog for the dead letters
    assert_shipped(app, ids)
    found = {letter["entry"]: letter for letter in letters(app)}
    for p in range(app.keys.partitions):
        job = f"poison-job-{p}"
        assert app.redis.hget(app.keys.outstanding_jobs(p), job) is None
        assert app.redis.zscore(app.keys.outstanding(p), job) is None
        letter = found[job]
        assert (letter["source"], letter["key"]) == ("watchdog", app.keys.outstanding_jobs(p))
        assert reason in letter["reason"], letter["reason"]
        assert raw_of(app, letter) == record.replace(b"JOB", job.encode())


def test_an_outstanding_job_id_that_is_not_utf8_is_dropped(app: App) -> None:
    # Given orders in flight, and a job id of invalid UTF-8 due for a check
    ids = orders_in_flight(app)
    app.redis.zadd(app.keys.outstanding(0), {b"\xff\xfejob": 0})
    # When the engine runs
    run_burst(app)
    # Then the orders finished and the id is gone, kept in the dead letters
    assert_shipped(app, ids)
    assert app.redis.zcard(app.keys.outstanding(0)) == 0
    (letter,) = letters(app)
    assert letter["source"] == "watchdog" and "not UTF-8" in letter["reason"]
    assert raw_of(app, letter) == b"\xff\xfejob"


INSTANCE_POISON = [
    pytest.param("context", b"{not json", "'context'", id="context-not-json"),
    pytest.param("context", b"[1, 2]", "'context' must be a JSON object", id="context-array"),
    pytest.param("status", b"\xffrunning", "not UTF-8", id="status-utf8"),
    pytest.param("status", b"sleeping", "'status'", id="status-unknown"),
    pytest.param("seq", b"many", "'seq'", id="seq-not-int"),
    pytest.param("parked", b'[{"id": 1}]', "'parked'", id="parked-garbage"),
    pytest.param("compensations", b'"abc"', "'compensations'", id="compensations-string"),
]


@pytest.mark.parametrize(("name", "value", "reason"), INSTANCE_POISON)
def test_an_unreadable_instance_hash_dead_letters_its_events_only(
    app: App, name: str, value: bytes, reason: str
) -> None:
    # Given orders in flight, one of whose instance hashes has a corrupt field
    ids = orders_in_flight(app)
    victim, others = ids[0], ids[1:]
    key = app.keys.instance(victim)
    original = app.redis.hget(key, name)
    app.redis.hset(key, name, value)
    # When the engine runs
    run_burst(app)
    # Then every other order finished; the victim's hash is left as it was (the evidence),
    # and its events are dead letters naming the hash and the field
    assert_shipped(app, others)
    assert app.redis.hget(key, name) == value
    assert pending(app) == 0
    mine = letters(app)
    assert mine and all(letter["event"]["instance"] == victim for letter in mine)
    assert all(key in letter["reason"] and reason in letter["reason"] for letter in mine)
    # And once the hash is repaired, its letters replay and it finishes too
    assert original is not None
    app.redis.hset(key, name, original)
    app.client.dead_letters.replay(None)
    run_burst(app)
    assert_shipped(app, ids)


def test_a_late_event_for_a_finished_instance_with_a_corrupt_archive(app: App) -> None:
    # Given a finished order whose archived history is corrupt, and orders in flight
    (done,) = orders_in_flight(app, count=1, prefix="D")
    run_burst(app)
    assert_shipped(app, [done])
    app.redis.set(app.keys.archive(done), b"not zlib at all")
    ids = orders_in_flight(app)
    # When a late copy of an event arrives for the finished one
    late = Event(id="late-copy", type="task.completed", instance_id=done, at=time.time())
    app.client.inbox.append(late)
    run_burst(app)
    # Then the others finished, and the late copy is a dead letter naming the archive
    assert_shipped(app, ids)
    (letter,) = letters(app)
    assert letter["event"]["id"] == "late-copy"
    assert app.keys.archive(done) in letter["reason"]
    # And reading that history says what is wrong, rather than crashing
    with pytest.raises(ValueError, match="archive"):
        app.client.history(done)


EXPIRING_POISON = [
    pytest.param(b"\xffgarbage", id="utf8"),
    pytest.param(b"[1, 2]", id="json-array"),
    pytest.param(b'{"id": "x"}', id="no-workflow"),
]


@pytest.mark.parametrize("member", EXPIRING_POISON)
def test_a_poisoned_retention_entry_is_a_dead_letter(app: App, member: bytes) -> None:
    # Given orders in flight, an unreadable entry due in the retention index, and a
    # finished instance due after it
    ids = orders_in_flight(app)
    app.redis.zadd(app.keys.expiring, {member: 0})
    readable = json.dumps(
        {"id": "gone", "workflow": "order", "status": "completed", "state": "shipped"}
    )
    app.redis.zadd(app.keys.all_instances, {"gone": 0})
    app.redis.zadd(app.keys.expiring, {readable: 1})
    # When the engine runs (the janitor first of all)
    run_burst(app)
    # Then the orders finished, the entry is a dead letter with its bytes, and the
    # readable entry after it was still cleaned
    assert_shipped(app, ids)
    (letter,) = letters(app)
    assert letter["source"] == "expiring" and app.keys.expiring in letter["reason"]
    assert raw_of(app, letter) == member
    assert app.redis.zscore(app.keys.expiring, member) is None
    assert app.redis.zscore(app.keys.all_instances, "gone") is None


def test_letters_that_are_not_events_are_listed_but_not_replayed(app: App) -> None:
    # Given a dead letter from the notify-later set (a notification job, not an event)
    orders_in_flight(app, count=1)
    app.redis.zadd(app.keys.notify_later, {b'{"key": 1}': 0})
    run_burst(app)
    (letter,) = letters(app)
    # When an operator replays it, then it is refused with the reason, and kept
    with pytest.raises(InputError, match="notify-later"):
        app.client.dead_letters.replay([letter["id"]])
    assert [x["id"] for x in letters(app)] == [letter["id"]]


def test_a_worker_process_keeps_going_through_every_kind_of_poison(
    app: App, tmp_path: Path
) -> None:
    # Given every kind of poison planted before a real worker starts
    for p in range(app.keys.partitions):
        app.redis.xadd(app.keys.inbox(p), {"e": b"\xff\xfe"})
        app.redis.xadd(app.keys.inbox(p), {"e": event_json(instance=5)})
        app.redis.hset(app.keys.timer_events(p), "poison-timer", b"[1]")
        app.redis.zadd(app.keys.timers(p), {"poison-timer": 0})
        app.redis.hset(app.keys.outstanding_jobs(p), f"poison-{p}", b"{not json")
        app.redis.zadd(app.keys.outstanding(p), {f"poison-{p}": 0})
    app.redis.zadd(app.keys.notify_later, {b"\xffnot json": 0})
    ids = [app.client.start("order", {"order_id": f"W{n}", "work_seconds": 0}) for n in range(16)]
    corrupt = ids[0]
    app.redis.hset(app.keys.instance(corrupt), "context", b"{not json")
    env = cli_env(app.settings.redis_url, tmp_path, ORCHESTRATOR_LEASE_TTL="2")
    worker = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "worker", "--processes", "2"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output = ""
    try:
        # When it runs for a while
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if all(app.client.status(i).state == "shipped" for i in ids[1:]):
                break
            time.sleep(0.2)
    finally:
        worker.terminate()
        output, _ = worker.communicate(timeout=30)
    # Then every order but the corrupt one shipped within 30 s, and each poison is a letter
    assert_shipped(app, ids[1:])
    sources = [letter["source"] for letter in letters(app)]
    assert sources.count("inbox") >= 3 * app.keys.partitions + 1, output[-3000:]
    assert sources.count("notify-later") == 1
    assert sources.count("watchdog") == app.keys.partitions
    assert "Traceback" not in output, output[-3000:]
