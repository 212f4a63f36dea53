"""Partition leases (orchestrator.store.leases) against a real Redis: one holder at a
time, takeover only after expiry, fencing of a holder that lost its lease, renewal,
fair shares and release. Every test writes under its own namespace.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest
import redis

from orchestrator.store.keys import INBOX_GROUP, Keys
from orchestrator.store.leases import Leases

PARTITIONS = 4


@pytest.fixture
def keys() -> Keys:
    return Keys(namespace=f"t-lease-{uuid.uuid4().hex[:12]}", partitions=PARTITIONS)


def holder(client: redis.Redis, keys: Keys, partition: int) -> str | None:
    raw: Any = client.get(keys.lease(partition))
    return raw.decode() if raw is not None else None


def holders(client: redis.Redis, keys: Keys) -> list[str | None]:
    return [holder(client, keys, p) for p in range(keys.partitions)]


def test_a_lone_applier_takes_every_partition(client: redis.Redis, keys: Keys) -> None:
    a = Leases(client, keys, "A", ttl=5)
    gained = a.maintain()
    assert sorted(gained) == [0, 1, 2, 3]
    assert a.owned == [0, 1, 2, 3]
    assert holders(client, keys) == ["A"] * PARTITIONS
    ttl: Any = client.pttl(keys.lease(0))
    assert 4000 < ttl <= 5000
    assert client.zscore(keys.appliers, "A") is not None
    # each gained partition has its inbox's consumer group
    for partition in range(PARTITIONS):
        groups: Any = client.xinfo_groups(keys.inbox(partition))
        assert [g["name"].decode() for g in groups] == [INBOX_GROUP]
    # maintaining again gains nothing new and keeps them
    assert a.maintain(force=True) == []
    assert a.owned == [0, 1, 2, 3]


def test_a_held_lease_is_not_taken_before_it_expires(client: redis.Redis, keys: Keys) -> None:
    a = Leases(client, keys, "A", ttl=5)
    b = Leases(client, keys, "B", ttl=5)
    a.maintain()
    assert b.maintain() == []
    assert b.owned == []
    assert holders(client, keys) == ["A"] * PARTITIONS


def test_a_second_applier_gets_its_fair_share_once_the_first_lets_go(
    client: redis.Redis, keys: Keys
) -> None:
    a = Leases(client, keys, "A", ttl=5)
    b = Leases(client, keys, "B", ttl=5)
    a.maintain()
    b.maintain()  # announces itself; every lease is A's still
    assert a.maintain(force=True) == []  # two live: A keeps its share of 2, lets go of 2
    assert len(a.owned) == 2
    gained = b.maintain(force=True)
    assert sorted(gained) == sorted(set(range(PARTITIONS)) - set(a.owned))
    assert set(a.owned).isdisjoint(b.owned)
    assert sorted(a.owned + b.owned) == [0, 1, 2, 3]
    for partition in range(PARTITIONS):
        assert holder(client, keys, partition) == ("A" if partition in a.owned else "B")


def test_a_dead_holders_leases_are_taken_after_expiry_and_it_learns_it_lost_them(
    client: redis.Redis, keys: Keys
) -> None:
    a = Leases(client, keys, "A", ttl=1.0)
    b = Leases(client, keys, "B", ttl=1.0)
    a.maintain()
    assert b.maintain() == []
    time.sleep(1.15)  # A stops renewing (paused, or dead): its leases and heartbeat expire
    assert holders(client, keys) == [None] * PARTITIONS
    assert sorted(b.maintain(force=True)) == [0, 1, 2, 3]
    assert holders(client, keys) == ["B"] * PARTITIONS
    # A comes back: its renewal finds the leases someone else's, and it stops using them
    assert a.owned == [0, 1, 2, 3]  # what A believed until it checked
    assert a.maintain(force=True) == []
    assert a.owned == []
    assert holders(client, keys) == ["B"] * PARTITIONS  # and it did not touch B's


def test_renewal_extends_the_ttl_of_the_leases_held(client: redis.Redis, keys: Keys) -> None:
    a = Leases(client, keys, "A", ttl=5)
    a.maintain()
    for partition in range(PARTITIONS):
        client.pexpire(keys.lease(partition), 2000)  # running out
    a.check_soon()
    assert a.maintain() == []
    for partition in range(PARTITIONS):
        ttl: Any = client.pttl(keys.lease(partition))
        assert ttl > 4000  # back to the full 5 s
    assert a.owned == [0, 1, 2, 3]


def test_renewal_does_not_extend_a_lease_held_by_another(client: redis.Redis, keys: Keys) -> None:
    a = Leases(client, keys, "A", ttl=5)
    a.maintain()
    client.set(keys.lease(2), "B", px=1000)  # taken over meanwhile
    a.check_soon()
    a.maintain()
    assert 2 not in a.owned
    assert holder(client, keys, 2) == "B"
    ttl: Any = client.pttl(keys.lease(2))
    assert ttl <= 1000


def test_maintain_runs_at_most_every_third_of_the_ttl(client: redis.Redis, keys: Keys) -> None:
    a = Leases(client, keys, "A", ttl=30)
    a.maintain()
    client.delete(keys.lease(1))  # lost, but A does not look again so soon
    assert a.maintain() == []
    assert 1 in a.owned
    assert holder(client, keys, 1) is None
    a.check_soon()  # ...unless asked to
    assert a.maintain() == [1]  # renewal drops it, and acquiring takes it back as new
    assert a.owned == [0, 1, 2, 3]
    assert holder(client, keys, 1) == "A"


def test_release_deletes_only_a_lease_still_held(client: redis.Redis, keys: Keys) -> None:
    a = Leases(client, keys, "A", ttl=5)
    a.maintain()
    a.release(0)
    assert holder(client, keys, 0) is None
    assert 0 not in a.owned
    client.set(keys.lease(1), "B", px=5000)  # A's lease on 1 expired, B took it
    a.release(1)
    assert holder(client, keys, 1) == "B"
    assert a.owned == [2, 3]


def test_release_all_lets_go_and_leaves_the_applier_set(client: redis.Redis, keys: Keys) -> None:
    a = Leases(client, keys, "A", ttl=5)
    b = Leases(client, keys, "B", ttl=5)
    a.maintain()
    a.release_all()
    assert a.owned == []
    assert holders(client, keys) == [None] * PARTITIONS
    assert client.zscore(keys.appliers, "A") is None
    assert sorted(b.maintain()) == [0, 1, 2, 3]  # at once, without waiting for expiry


def test_forget_stops_using_a_partition_without_touching_redis(
    client: redis.Redis, keys: Keys
) -> None:
    a = Leases(client, keys, "A", ttl=5)
    a.maintain()
    a.forget(3)
    a.forget(3)  # twice, or one never owned: no error
    a.forget(99)
    assert a.owned == [0, 1, 2]
    assert holder(client, keys, 3) == "A"


def test_an_existing_consumer_group_is_kept(client: redis.Redis, keys: Keys) -> None:
    client.xadd(keys.inbox(0), {"e": "{}"})
    client.xgroup_create(keys.inbox(0), INBOX_GROUP, id="0")
    client.xreadgroup(INBOX_GROUP, "owner", {keys.inbox(0): ">"})
    a = Leases(client, keys, "A", ttl=5)
    a.maintain()  # BUSYGROUP is not an error
    assert 0 in a.owned
    pending: Any = client.xpending(keys.inbox(0), INBOX_GROUP)
    assert pending["pending"] == 1  # the group was not recreated


def test_a_stale_heartbeat_does_not_count_as_a_live_applier(
    client: redis.Redis, keys: Keys
) -> None:
    client.zadd(keys.appliers, {"ghost": time.time() - 60})
    a = Leases(client, keys, "A", ttl=5)
    assert sorted(a.maintain()) == [0, 1, 2, 3]  # the ghost would have halved its share
    assert client.zscore(keys.appliers, "ghost") is None


def test_concurrent_appliers_never_share_a_partition(
    client: redis.Redis, keys: Keys, redis_server: str
) -> None:
    many = Keys(keys.namespace, 16)
    owners = [f"app-{n}" for n in range(6)]
    leases = {o: Leases(redis.Redis.from_url(redis_server), many, o, ttl=5) for o in owners}
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(owners))

    def run(owner: str) -> None:
        try:
            barrier.wait()
            for _ in range(5):
                leases[owner].maintain(force=True)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(o,)) for o in owners]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []

    def check() -> list[int]:
        claimed = [p for one in leases.values() for p in one.owned]
        assert len(claimed) == len(set(claimed))  # no partition in two owners' lists
        for owner, one in leases.items():
            for partition in one.owned:
                assert holder(client, many, partition) == owner
        return claimed

    check()
    for _ in range(2):  # settle: each takes its fair share of what is left
        for one in leases.values():
            one.maintain(force=True)
    assert sorted(check()) == list(range(16))
    assert max(len(one.owned) for one in leases.values()) <= 3  # ceil(16 / 6)
    for one in leases.values():
        one.redis.close()
