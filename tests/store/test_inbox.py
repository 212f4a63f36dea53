"""The inbox (orchestrator.store.inbox) against a real Redis: partitioning, order,
the atomic creation of a pending instance with its start event, and input checks.

Every test writes under its own namespace, so none sees another's keys.
"""

from __future__ import annotations

import json
import uuid
import zlib
from typing import Any

import pytest
import redis

from orchestrator.core import events as ev
from orchestrator.core.definition import Definition
from orchestrator.core.errors import InputError, InstanceExists
from orchestrator.core.events import Event
from orchestrator.core.instance import Instance
from orchestrator.core.limits import MAX_DATA_BYTES, MAX_DEPTH
from orchestrator.runtime.registry import Registry
from orchestrator.store.inbox import (
    ID_ALPHABET,
    MAX_ID,
    Inbox,
    check_id,
    new_id,
    parse_json_object,
)
from orchestrator.store.keys import Keys
from tests.conftest import TEST_WORKFLOWS

PARTITIONS = 4


@pytest.fixture
def keys() -> Keys:
    return Keys(namespace=f"t-inbox-{uuid.uuid4().hex[:12]}", partitions=PARTITIONS)


@pytest.fixture
def inbox(client: redis.Redis, keys: Keys) -> Inbox:
    return Inbox(client, keys)


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.from_modules(TEST_WORKFLOWS)


@pytest.fixture
def counter(registry: Registry) -> Definition:
    return registry.get("counter")


@pytest.fixture
def approval(registry: Registry) -> Definition:
    return registry.get("approval")


def written(client: redis.Redis, keys: Keys) -> list[str]:
    """Every key under the test's namespace, sorted."""
    found: Any = client.keys(f"{keys.namespace}:*")
    return sorted(k.decode() for k in found)


def inbox_events(client: redis.Redis, keys: Keys, partition: int) -> list[Event]:
    entries: Any = client.xrange(keys.inbox(partition))
    return [Event.from_json(fields[b"e"]) for _, fields in entries]


def all_inbox_events(client: redis.Redis, keys: Keys) -> dict[int, list[Event]]:
    return {p: inbox_events(client, keys, p) for p in range(keys.partitions)}


# ---- partitioning and order --------------------------------------------------------


def test_partition_is_crc32_of_the_id_modulo_the_partitions() -> None:
    keys = Keys("x", 7)
    for instance_id in ("a", "order-1", "Z" * 100, "c0", "c1", "c2"):
        assert keys.partition_of(instance_id) == zlib.crc32(instance_id.encode()) % 7
    # Known values, so a change of hash function fails here rather than silently
    # stranding every event already in an inbox under the old partitioning
    assert zlib.crc32(b"order-1") % 7 == Keys("x", 7).partition_of("order-1")
    assert [Keys("y", 8).partition_of(i) for i in ("c0", "c1", "c2", "c3")] == [
        zlib.crc32(f"c{n}".encode()) % 8 for n in range(4)
    ]


def test_append_goes_to_the_instance_partition_only(
    client: redis.Redis, keys: Keys, inbox: Inbox
) -> None:
    ids = [f"inst-{n}" for n in range(24)]
    for instance_id in ids:
        inbox.append(inbox.event("tick", instance_id, {"n": 1}))
    by_partition = all_inbox_events(client, keys)
    assert sum(len(v) for v in by_partition.values()) == len(ids)
    for partition, events in by_partition.items():
        for event in events:
            assert keys.partition_of(event.instance_id) == partition
    # 24 ids spread over more than one of 4 partitions
    assert len([p for p, v in by_partition.items() if v]) > 1


def test_append_keeps_the_order_of_one_instance(
    client: redis.Redis, keys: Keys, inbox: Inbox
) -> None:
    entry_ids = []
    for n in range(30):
        # interleave another instance's events: order is kept per instance
        entry_ids.append(inbox.append(inbox.event("tick", "ordered", {"n": n}, f"e{n}")))
        inbox.append(inbox.event("tick", f"other-{n}", {"n": n}))
    partition = keys.partition_of("ordered")
    mine = [e for e in inbox_events(client, keys, partition) if e.instance_id == "ordered"]
    assert [e.id for e in mine] == [f"e{n}" for n in range(30)]
    assert [e.data["n"] for e in mine] == list(range(30))
    # the returned entry ids are the stream's, strictly increasing
    as_pairs = [tuple(int(x) for x in e.split("-")) for e in entry_ids]
    assert as_pairs == sorted(as_pairs)
    assert len(set(entry_ids)) == 30
    stream: Any = client.xrange(keys.inbox(partition))
    ordered = [i.decode() for i, f in stream if Event.from_json(f[b"e"]).instance_id == "ordered"]
    assert ordered == entry_ids


def test_append_stores_the_event_json_unchanged(
    client: redis.Redis, keys: Keys, inbox: Inbox
) -> None:
    event = Event(id="ev-1", type="pay", instance_id="i1", at=1234.5, data={"amount": 10.25})
    entry_id = inbox.append(event)
    stream: Any = client.xrange(keys.inbox(keys.partition_of("i1")))
    assert len(stream) == 1
    got_id, fields = stream[0]
    assert got_id.decode() == entry_id
    assert set(fields) == {b"e"}
    assert fields[b"e"].decode() == event.to_json()
    assert Event.from_json(fields[b"e"]) == event


def test_event_builds_a_fresh_id_unless_given() -> None:
    a = Inbox.event("tick", "i", {"n": 1})
    b = Inbox.event("tick", "i", {"n": 1})
    assert a.id != b.id and len(a.id) == 32
    assert (a.type, a.instance_id, a.data) == ("tick", "i", {"n": 1})
    assert Inbox.event("tick", "i", {}, event_id="mine").id == "mine"


def test_partitions_differ_with_the_partition_count() -> None:
    """The same id may land elsewhere with another P: why P is fixed per deployment."""
    moved = [
        i
        for i in (f"id{n}" for n in range(50))
        if Keys("n", 4).partition_of(i) != (Keys("n", 8).partition_of(i))
    ]
    assert moved  # at least one id changes partition between P=4 and P=8
    for instance_id in moved:
        assert Keys("n", 8).partition_of(instance_id) % 4 == Keys("n", 4).partition_of(instance_id)


# ---- create: the pending shell and its start event, atomically ---------------------------


def test_create_writes_shell_indexes_and_start_event(
    client: redis.Redis, keys: Keys, inbox: Inbox, counter: Definition
) -> None:
    outcome = inbox.create(counter, "c-1", {"x": 1}, None, trigger="manual")
    assert outcome == ("created", "c-1")
    raw: Any = client.hgetall(keys.instance("c-1"))
    shell = Instance.from_fields({k.decode(): v.decode() for k, v in raw.items()})
    assert (shell.id, shell.workflow, shell.version) == ("c-1", "counter", counter.version)
    assert (shell.state, shell.status, shell.seq, shell.correlation) == (None, "pending", 0, None)
    assert shell.created_at == shell.updated_at > 0
    assert client.zscore(keys.all_instances, "c-1") == pytest.approx(shell.created_at)
    assert client.zscore(keys.by_workflow("counter"), "c-1") == pytest.approx(shell.created_at)
    assert client.sismember(keys.by_status("pending"), "c-1")
    events = inbox_events(client, keys, keys.partition_of("c-1"))
    assert len(events) == 1
    start = events[0]
    assert (start.id, start.type, start.instance_id) == ("start-c-1", ev.STARTED, "c-1")
    assert start.data == {"input": {"x": 1}, "trigger": "manual"}
    # nothing in any other partition's inbox
    others = [p for p in range(keys.partitions) if p != keys.partition_of("c-1")]
    assert all(not inbox_events(client, keys, p) for p in others)


def test_create_without_trigger_and_with_a_given_event_id(
    client: redis.Redis, keys: Keys, inbox: Inbox, counter: Definition
) -> None:
    inbox.create(counter, "c-2", {}, None, event_id="my-start")
    (start,) = inbox_events(client, keys, keys.partition_of("c-2"))
    assert start.id == "my-start"
    assert start.data == {"input": {}}


def test_create_an_existing_id_raises_and_writes_nothing(
    client: redis.Redis, keys: Keys, inbox: Inbox, counter: Definition, approval: Definition
) -> None:
    inbox.create(counter, "dup", {"first": True}, None)
    before = {k: client.dump(k) for k in written(client, keys)}
    with pytest.raises(InstanceExists, match="'dup' exists already"):
        inbox.create(approval, "dup", {"request_id": "R"}, ("request_id", "R"))
    assert {k: client.dump(k) for k in written(client, keys)} == before
    # the second attempt set no correlation, and the inbox holds one start event only
    assert client.get(keys.correlation("approval", "request_id", "R")) is None
    assert len(inbox_events(client, keys, keys.partition_of("dup"))) == 1


def test_create_with_a_taken_business_key_is_correlated_and_writes_nothing(
    client: redis.Redis, keys: Keys, inbox: Inbox, approval: Definition
) -> None:
    first = inbox.create(approval, "a-1", {"request_id": "R1"}, ("request_id", "R1"))
    assert first == ("created", "a-1")
    raw: Any = client.get(keys.correlation("approval", "request_id", "R1"))
    assert raw == b"a-1"
    shell: Any = client.hget(keys.instance("a-1"), "correlation")
    assert shell == b"request_id=R1"
    before = {k: client.dump(k) for k in written(client, keys)}
    second = inbox.create(approval, "a-2", {"request_id": "R1"}, ("request_id", "R1"))
    assert second == ("correlated", "a-1")
    assert client.exists(keys.instance("a-2")) == 0
    assert {k: client.dump(k) for k in written(client, keys)} == before
    # another business value is another instance
    assert inbox.create(approval, "a-3", {"request_id": "R2"}, ("request_id", "R2")) == (
        "created",
        "a-3",
    )


def test_create_with_data_that_is_not_json_writes_nothing(
    client: redis.Redis, keys: Keys, inbox: Inbox, counter: Definition
) -> None:
    with pytest.raises(TypeError):
        inbox.create(counter, "bad-data", {"when": object()}, None)
    assert written(client, keys) == []


# ---- ids and user JSON: refused before anything is written --------------------------------


def test_new_ids_are_valid_and_distinct() -> None:
    ids = {new_id() for _ in range(200)}
    assert len(ids) == 200
    for value in ids:
        assert check_id(value, "id") == value
        assert len(value) == 20


@pytest.mark.parametrize("value", ["a", "A-b_9", "x" * MAX_ID, "0", "-_-"])
def test_check_id_accepts(value: str) -> None:
    assert check_id(value, "instance id") == value


@pytest.mark.parametrize(
    "value",
    ["", "x" * (MAX_ID + 1), "a b", "a:b", "a{b}", "é", "a/b", "a\nb", "a.b", "*"],
)
def test_check_id_refuses(value: str) -> None:
    with pytest.raises(InputError, match=r"instance id .* must be 1 to 100 letters"):
        check_id(value, "instance id")


def test_check_id_alphabet_has_no_key_separator() -> None:
    # ':' and braces would let an id forge another key or hash tag
    assert not {":", "{", "}", " ", "*"} & ID_ALPHABET


def test_parse_json_object_returns_the_object() -> None:
    assert parse_json_object('{"a": [1, 2.5, "x"], "b": {"c": null}}', "the data") == {
        "a": [1, 2.5, "x"],
        "b": {"c": None},
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1, 2]", "the data must be a JSON object, not list"),
        ('"text"', "the data must be a JSON object, not str"),
        ("3", "the data must be a JSON object, not int"),
        ("null", "the data must be a JSON object, not NoneType"),
        ('{"a": 1,}', "the data is not valid JSON: .* at line 1 column 9"),
        ('{\n"a": }', "the data is not valid JSON: Expecting value at line 2 column 6"),
        ("", "the data is not valid JSON: Expecting value at line 1 column 1"),
        ('{"a": NaN}', "the data is not valid JSON: NaN is not a JSON number"),
        ('{"a": -Infinity}', "-Infinity is not a JSON number"),
        ('{"a": ' + "9" * 5000 + "}", "holds a number of more than"),
    ],
)
def test_parse_json_object_refuses(text: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_json_object(text, "the data")


def test_parse_json_object_refuses_deep_and_large_data() -> None:
    deep = "[" * (MAX_DEPTH + 5) + "]" * (MAX_DEPTH + 5)
    with pytest.raises(InputError, match=f"nested more than {MAX_DEPTH} levels"):
        parse_json_object('{"a": ' + deep + "}", "the data")
    with pytest.raises(InputError, match="nested too deeply"):
        parse_json_object('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}", "the data")
    big = json.dumps({"a": "x" * MAX_DATA_BYTES})
    with pytest.raises(InputError, match="the limit is"):
        parse_json_object(big, "the data")
