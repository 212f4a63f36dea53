"""Timers (orchestrator.store.timers) against a real Redis: a due timer moves into its
partition's inbox atomically and exactly once, one not yet due stays, concurrent
movers do not duplicate, and a stale timer changes nothing. Every test writes under
its own namespace.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from orchestrator.core.events import Event
from orchestrator.entry.bootstrap import App, bootstrap
from orchestrator.entry.settings import Settings
from orchestrator.store.keys import Keys
from orchestrator.store.timers import Timers
from tests.conftest import TEST_WORKFLOWS

PARTITIONS = 4


@pytest.fixture
def keys() -> Keys:
    return Keys(namespace=f"t-timer-{uuid.uuid4().hex[:12]}", partitions=PARTITIONS)


@pytest.fixture
def timers(client: redis.Redis, keys: Keys) -> Timers:
    return Timers(client, keys)


def arm(client: redis.Redis, keys: Keys, timer_id: str, instance_id: str, due: float) -> Event:
    """As the dispatcher arms a timer: the event it becomes, and its due time."""
    event = Event(
        id=f"timer-{timer_id}",
        type="state.timeout",
        instance_id=instance_id,
        at=due,
        data={"entered_seq": 1, "timer": timer_id},
    )
    partition = keys.partition_of(instance_id)
    client.hset(keys.timer_events(partition), timer_id, event.to_json())
    client.zadd(keys.timers(partition), {timer_id: due})
    return event


def inbox(client: redis.Redis, keys: Keys, partition: int) -> list[Event]:
    entries: Any = client.xrange(keys.inbox(partition))
    return [Event.from_json(fields[b"e"]) for _, fields in entries]


def armed(client: redis.Redis, keys: Keys, partition: int) -> list[str]:
    members: Any = client.zrange(keys.timers(partition), 0, -1)
    return [m.decode() for m in members]


def events_of(client: redis.Redis, keys: Keys, partition: int) -> list[str]:
    fields: Any = client.hkeys(keys.timer_events(partition))
    return sorted(f.decode() for f in fields)


ALL = list(range(PARTITIONS))


def test_a_due_timer_moves_into_its_inbox(client: redis.Redis, keys: Keys, timers: Timers) -> None:
    event = arm(client, keys, "t1", "inst-1", due=100.0)
    partition = keys.partition_of("inst-1")
    assert timers.fire_due(ALL, now=100.5) == 1
    assert inbox(client, keys, partition) == [event]
    assert armed(client, keys, partition) == []
    assert events_of(client, keys, partition) == []


def test_a_timer_due_exactly_now_fires(client: redis.Redis, keys: Keys, timers: Timers) -> None:
    arm(client, keys, "t1", "inst-1", due=100.0)
    assert timers.fire_due(ALL, now=100.0) == 1
    assert len(inbox(client, keys, keys.partition_of("inst-1"))) == 1


def test_a_timer_not_yet_due_stays(client: redis.Redis, keys: Keys, timers: Timers) -> None:
    arm(client, keys, "later", "inst-1", due=200.0)
    partition = keys.partition_of("inst-1")
    assert timers.fire_due(ALL, now=199.999) == 0
    assert inbox(client, keys, partition) == []
    assert armed(client, keys, partition) == ["later"]
    assert events_of(client, keys, partition) == ["later"]
    assert timers.next_due(ALL) == 200.0


def test_a_timer_fires_exactly_once(client: redis.Redis, keys: Keys, timers: Timers) -> None:
    arm(client, keys, "once", "inst-1", due=10.0)
    assert timers.fire_due(ALL, now=20.0) == 1
    assert timers.fire_due(ALL, now=30.0) == 0
    assert timers.fire_due(ALL, now=1e12) == 0
    assert [e.id for e in inbox(client, keys, keys.partition_of("inst-1"))] == ["timer-once"]


def test_only_the_due_ones_move_in_due_order(
    client: redis.Redis, keys: Keys, timers: Timers
) -> None:
    # one instance: one partition, so the inbox shows the order they moved in
    arm(client, keys, "c", "inst-1", due=30.0)
    arm(client, keys, "a", "inst-1", due=10.0)
    arm(client, keys, "late", "inst-1", due=99.0)
    arm(client, keys, "b", "inst-1", due=20.0)
    partition = keys.partition_of("inst-1")
    assert timers.fire_due(ALL, now=50.0) == 3
    assert [e.id for e in inbox(client, keys, partition)] == ["timer-a", "timer-b", "timer-c"]
    assert armed(client, keys, partition) == ["late"]
    assert events_of(client, keys, partition) == ["late"]


def test_each_timer_goes_to_its_own_partition(
    client: redis.Redis, keys: Keys, timers: Timers
) -> None:
    instances = [f"inst-{n}" for n in range(12)]
    for n, instance_id in enumerate(instances):
        arm(client, keys, f"t{n}", instance_id, due=1.0)
    assert timers.fire_due(ALL, now=2.0) == 12
    for partition in ALL:
        for event in inbox(client, keys, partition):
            assert keys.partition_of(event.instance_id) == partition
    assert sum(len(inbox(client, keys, p)) for p in ALL) == 12


def test_only_the_partitions_asked_for_fire(
    client: redis.Redis, keys: Keys, timers: Timers
) -> None:
    ids = {keys.partition_of(f"i{n}"): f"i{n}" for n in range(40)}
    assert len(ids) == PARTITIONS  # an instance in each partition
    for partition, instance_id in ids.items():
        arm(client, keys, f"t-{partition}", instance_id, due=1.0)
    assert timers.fire_due([0, 2], now=5.0) == 2
    assert [len(inbox(client, keys, p)) for p in ALL] == [1, 0, 1, 0]
    assert [armed(client, keys, p) for p in ALL] == [[], ["t-1"], [], ["t-3"]]
    assert timers.fire_due([], now=5.0) == 0


def test_limit_caps_each_partition_and_the_rest_follow(
    client: redis.Redis, keys: Keys, timers: Timers
) -> None:
    for n in range(7):
        arm(client, keys, f"t{n}", "inst-1", due=float(n))
    partition = keys.partition_of("inst-1")
    assert timers.fire_due(ALL, now=100.0, limit=3) == 3
    assert [e.id for e in inbox(client, keys, partition)] == ["timer-t0", "timer-t1", "timer-t2"]
    assert timers.fire_due(ALL, now=100.0, limit=3) == 3
    assert timers.fire_due(ALL, now=100.0, limit=3) == 1
    assert [e.id for e in inbox(client, keys, partition)] == [f"timer-t{n}" for n in range(7)]


def test_a_timer_without_its_event_is_dropped_without_an_inbox_entry(
    client: redis.Redis, keys: Keys, timers: Timers
) -> None:
    """A cancellation half seen (its event deleted first) fires nothing."""
    partition = keys.partition_of("inst-1")
    client.zadd(keys.timers(partition), {"orphan": 1.0})
    assert timers.fire_due(ALL, now=2.0) == 1  # counted as moved off the timers...
    assert inbox(client, keys, partition) == []  # ...but nothing reaches the inbox
    assert armed(client, keys, partition) == []


def test_a_cancelled_timer_never_fires(client: redis.Redis, keys: Keys, timers: Timers) -> None:
    arm(client, keys, "keep", "inst-1", due=1.0)
    arm(client, keys, "cancelled", "inst-1", due=1.0)
    partition = keys.partition_of("inst-1")
    # as the dispatcher cancels timers
    client.zrem(keys.timers(partition), "cancelled")
    client.hdel(keys.timer_events(partition), "cancelled")
    assert timers.fire_due(ALL, now=2.0) == 1
    assert [e.id for e in inbox(client, keys, partition)] == ["timer-keep"]


def test_next_due(client: redis.Redis, keys: Keys, timers: Timers) -> None:
    assert timers.next_due(ALL) is None
    assert timers.next_due([]) is None
    ids = {keys.partition_of(f"i{n}"): f"i{n}" for n in range(40)}
    arm(client, keys, "x", ids[1], due=50.0)
    arm(client, keys, "y", ids[3], due=40.0)
    arm(client, keys, "z", ids[3], due=45.0)
    assert timers.next_due(ALL) == 40.0
    assert timers.next_due([1]) == 50.0
    assert timers.next_due([0, 2]) is None
    timers.fire_due([3], now=42.0)
    assert timers.next_due(ALL) == 45.0


def test_concurrent_movers_do_not_duplicate(redis_server: str, keys: Keys) -> None:
    setup = redis.Redis.from_url(redis_server)
    count = 400
    for n in range(count):
        arm(setup, keys, f"t{n}", f"inst-{n % 17}", due=float(n % 50))
    movers = 4
    moved: list[int] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(movers)

    def run() -> None:
        own = redis.Redis.from_url(redis_server)
        try:
            timers = Timers(own, keys)
            barrier.wait()
            for _ in range(10):
                moved.append(timers.fire_due(ALL, now=100.0, limit=25))
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            own.close()

    threads = [threading.Thread(target=run) for _ in range(movers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert sum(moved) == count
    fired = [e.id for p in ALL for e in inbox(setup, keys, p)]
    assert len(fired) == count
    assert sorted(fired) == sorted(f"timer-t{n}" for n in range(count))
    assert all(armed(setup, keys, p) == [] for p in ALL)
    setup.close()


# ---- a stale timer, through the applier --------------------------------------------------


@pytest.fixture
def app(redis_server: str, tmp_path: Path) -> Iterator[App]:
    """An app of its own namespace (the suite's `app` empties the database)."""
    settings = Settings(
        redis_url=redis_server,
        workflows=TEST_WORKFLOWS,
        partitions=PARTITIONS,
        data_dir=tmp_path,
        namespace=f"t-timer-app-{uuid.uuid4().hex[:12]}",
    )
    built = bootstrap(settings)
    yield built
    built.redis.close()


def test_a_stale_timer_fired_after_its_state_was_left_changes_nothing(app: App) -> None:
    client, keys, r = app.client, app.keys, app.redis
    iid = client.start("approval", {"request_id": "S1"})
    applier = app.applier()
    applier.drain()
    partition = keys.partition_of(iid)
    (timer_id,) = armed(r, keys, partition)
    stored: Any = r.hget(keys.timer_events(partition), timer_id)
    due: Any = r.zscore(keys.timers(partition), timer_id)
    assert due > time.time() + 50  # the approval's 60 s timeout

    client.emit("approve", {"amount": 5}, instance_id=iid)
    applier.drain()
    before = client.status(iid)
    assert (before.state, before.status) == ("approved", "running")
    assert armed(r, keys, partition) == []  # leaving `waiting` cancelled it

    # It fires anyway, as in the race between the cancel and the move
    r.hset(keys.timer_events(partition), timer_id, stored)
    r.zadd(keys.timers(partition), {timer_id: due})
    assert applier.timers.fire_due(applier.leases.owned, now=due + 1) == 1
    applier.drain()
    after = client.status(iid)
    assert (after.state, after.status, after.context) == ("approved", "running", before.context)
    last = client.history(iid)[-1]
    assert last["event"]["type"] == "approval.expired"
    assert last["note"].startswith("stale")
    assert (last["from"], last["to"]) == ("approved", "approved")
    # and the instance still moves on as before
    client.emit("pay", {}, instance_id=iid)
    applier.drain()
    assert client.status(iid).state == "paid"
    applier.leases.release_all()
