"""Which workflows each live applier serves (orchestrator.runtime.roster), against a
real Redis: workers that disagree cannot share a namespace silently (issue #14)."""

from __future__ import annotations

import uuid

import pytest
import redis

from orchestrator.core.errors import ConfigurationError
from orchestrator.runtime import roster
from orchestrator.runtime.applier import Applier
from orchestrator.runtime.registry import Registry
from orchestrator.store.keys import Keys

TTL = 10.0
NOW = 1_000_000.0


@pytest.fixture
def keys() -> Keys:
    return Keys(namespace=f"t-roster-{uuid.uuid4().hex[:12]}", partitions=2)


def seen(client: redis.Redis, keys: Keys, applier: str, at: float) -> None:
    """As store.leases records an applier's heartbeat."""
    client.zadd(keys.appliers, {applier: at})


def test_an_applier_announces_what_it_serves_on_its_first_tick(
    client: redis.Redis, keys: Keys
) -> None:
    registry = Registry.from_modules(["workflows"])
    applier = Applier(client, keys, registry, applier_id="a1")
    applier.tick()
    found = roster.live(client, keys, TTL)
    assert found == {"a1": roster.served(registry)}
    assert found["a1"]["order"] == registry.versions("order")
    applier.leases.release_all()


def test_the_same_workflows_start_side_by_side(client: redis.Redis, keys: Keys) -> None:
    registry = Registry.from_modules(["workflows"])
    seen(client, keys, "a1", NOW)
    roster.announce(client, keys, "a1", roster.served(registry))
    roster.check(client, keys, registry, TTL, now=NOW)  # no error


def test_a_different_set_refuses_the_start_naming_the_difference(
    client: redis.Redis, keys: Keys
) -> None:
    mine = Registry.from_modules(["workflows", "tests.sample_workflows"])
    seen(client, keys, "a1", NOW)
    roster.announce(client, keys, "a1", roster.served(Registry.from_modules(["workflows"])))
    with pytest.raises(ConfigurationError) as caught:
        roster.check(client, keys, mine, TTL, now=NOW)
    message = str(caught.value)
    assert f"namespace {keys.namespace!r}" in message
    assert "applier a1: this worker has " in message
    extra = sorted(set(mine.names()) - set(Registry.from_modules(["workflows"]).names()))
    assert extra and all(name in message for name in extra)
    assert "ORCHESTRATOR_NAMESPACE" in message and "ORCHESTRATOR_WORKFLOWS" in message
    assert "\n" not in message


def test_another_version_is_a_difference() -> None:
    lines = roster.differences({"order": [1, 2]}, {"a1": {"order": [1]}})
    assert lines == ["applier a1: this worker has order v1/v2; it has order v1"]


def test_appliers_no_longer_seen_do_not_count_and_are_forgotten(
    client: redis.Redis, keys: Keys
) -> None:
    seen(client, keys, "gone", NOW - TTL - 1)
    roster.announce(client, keys, "gone", {"other": [1]})
    seen(client, keys, "here", NOW)
    roster.announce(client, keys, "here", {"order": [1]})
    assert roster.live(client, keys, TTL, now=NOW) == {"here": {"order": [1]}}
    assert client.hkeys(keys.applier_workflows) == [b"here"]


def test_an_unreadable_announcement_counts_as_serving_nothing(
    client: redis.Redis, keys: Keys
) -> None:
    seen(client, keys, "odd", NOW)
    client.hset(keys.applier_workflows, "odd", b"\xff{not json")
    assert roster.live(client, keys, TTL, now=NOW) == {"odd": {}}
    lines = roster.differences({"order": [1]}, roster.live(client, keys, TTL, now=NOW))
    assert lines == ["applier odd: this worker has order v1"]


def test_a_stopped_applier_withdraws(client: redis.Redis, keys: Keys) -> None:
    registry = Registry.from_modules(["workflows"])
    applier = Applier(client, keys, registry, applier_id="a2")
    applier.run(should_stop=iter([False, True]).__next__, block_ms=0)
    assert client.hget(keys.applier_workflows, "a2") is None
    assert roster.live(client, keys, TTL) == {}
