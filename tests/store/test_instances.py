"""Instances and their histories read back from a real Redis (orchestrator.store.instances).

What is read back is never trusted: a corrupt hash, archive or history raises
`Unreadable` naming the key, an unknown id the engine's `UnknownInstance`.
Every test writes under its own namespace.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
import zlib
from typing import Any

import pytest
import redis

from orchestrator.core.errors import UnknownInstance
from orchestrator.core.events import Event, Unreadable
from orchestrator.core.instance import Instance
from orchestrator.store import archive
from orchestrator.store.instances import Store, decode_hash, decode_text, history_entries
from orchestrator.store.keys import Keys


@pytest.fixture
def keys() -> Keys:
    return Keys(namespace=f"t-inst-{uuid.uuid4().hex[:12]}", partitions=4)


@pytest.fixture
def store(client: redis.Redis, keys: Keys) -> Store:
    return Store(client, keys, retention=3 * 86400.0)


def full_instance(instance_id: str = "full-1") -> Instance:
    """An instance with every field set away from its default."""
    parked = Event(id="p1", type="pay", instance_id=instance_id, at=12.5, data={"amount": 3})
    return Instance(
        id=instance_id,
        workflow="saga",
        version=3,
        created_at=1700000000.123456,
        state="two",
        status="compensating",
        seq=7,
        entered_seq=5,
        attempt=2,
        lost=1,
        context={"a": 1, "nested": {"b": [1, 2, "x"]}, "ü": "ñ"},
        compensations=("one", "two"),
        compensating_to="undone",
        inflight=((5, 2, "two"), (3, 1, "one")),
        halted=True,
        parked=(parked,),
        timers=("t-1", "t-2"),
        correlation="order_id=A1",
        reason="card declined",
        updated_at=1700000100.5,
    )


def save(client: redis.Redis, keys: Keys, instance: Instance) -> None:
    """As the applier writes an instance: its fields, one hash."""
    mapping: Any = instance.to_fields()
    client.hset(keys.instance(instance.id), mapping=mapping)


def index(client: redis.Redis, keys: Keys, instance: Instance) -> None:
    """As the door and the applier index an instance."""
    client.zadd(keys.all_instances, {instance.id: instance.created_at})
    client.zadd(keys.by_workflow(instance.workflow), {instance.id: instance.created_at})
    client.sadd(keys.by_status(instance.status), instance.id)
    if instance.state:
        client.sadd(keys.by_state(instance.workflow, instance.state), instance.id)


def entry(seq: int, event_id: str, *, to: str = "s", passed: str | None = None) -> dict[str, str]:
    """One history entry as the applier records it."""
    event = Event(id=event_id, type="tick", instance_id="h", at=float(seq), data={"n": seq})
    fields = {
        "seq": str(seq),
        "event": event.to_json(),
        "outcome": "transition",
        "from": "s",
        "to": to,
        "status": "running",
        "note": f"note {seq}",
        "effects": json.dumps([{"effect": "none", "n": seq}]),
    }
    if passed is not None:
        fields["passed"] = passed
    return fields


# ---- round trip -------------------------------------------------------------------------


def test_every_field_round_trips(client: redis.Redis, keys: Keys, store: Store) -> None:
    instance = full_instance()
    save(client, keys, instance)
    assert store.get("full-1") == instance
    assert store.find("full-1") == instance
    loaded = store.get("full-1")
    assert loaded.parked[0].data == {"amount": 3}
    assert loaded.inflight == ((5, 2, "two"), (3, 1, "one"))
    assert loaded.halted is True and loaded.finished is False


def test_defaults_round_trip(client: redis.Redis, keys: Keys, store: Store) -> None:
    shell = Instance(id="shell", workflow="counter", version=1, created_at=5.0)
    save(client, keys, shell)
    loaded = store.get("shell")
    assert loaded == shell
    assert (loaded.state, loaded.correlation, loaded.reason, loaded.halted) == (
        None,
        None,
        None,
        False,
    )


def test_an_evolved_instance_overwrites_the_stored_one(
    client: redis.Redis, keys: Keys, store: Store
) -> None:
    first = full_instance("ev-1")
    save(client, keys, first)
    # the applier writes only the changed fields; every field written here is one
    second = first.evolve(
        state=None, halted=False, timers=(), correlation=None, reason=None, seq=8, parked=()
    )
    save(client, keys, second)
    assert store.get("ev-1") == second


def test_the_instance_lives_in_its_partition_key(
    client: redis.Redis, keys: Keys, store: Store
) -> None:
    save(client, keys, full_instance("where"))
    partition = keys.partition_of("where")
    assert keys.instance("where") == f"{keys.namespace}:{{p{partition}}}:instance:where"
    assert client.exists(keys.instance("where")) == 1
    assert store.get("where").id == "where"


# ---- unknown and expired ---------------------------------------------------------------


def test_unknown_id(store: Store) -> None:
    assert store.find("nobody") is None
    with pytest.raises(UnknownInstance, match="no instance with id 'nobody'"):
        store.get("nobody")
    with pytest.raises(UnknownInstance, match="no instance with id 'nobody'"):
        store.history("nobody")


def test_an_expired_id_is_said_to_have_expired(
    client: redis.Redis, keys: Keys, store: Store
) -> None:
    client.zadd(keys.expired, {"gone": 100.0})
    with pytest.raises(UnknownInstance, match=r"'gone' has expired: .* kept for 3d"):
        store.get("gone")
    with pytest.raises(UnknownInstance, match="has expired"):
        store.history("gone")
    assert store.expired_count() == 1
    # still in idx:all (removed meanwhile by retention, the index not yet trimmed)
    client.zadd(keys.all_instances, {"going": 100.0})
    with pytest.raises(UnknownInstance, match="'going' has expired"):
        store.get("going")
    assert store.expired_count() == 1


def test_retention_shown_in_the_unit_that_fits(client: redis.Redis, keys: Keys) -> None:
    client.zadd(keys.expired, {"gone": 1.0})
    for retention, shown in ((90.0, "90s"), (7200.0, "2h"), (120.0, "2m")):
        with pytest.raises(UnknownInstance, match=f"kept for {shown} "):
            Store(client, keys, retention=retention).get("gone")


# ---- corrupt hashes --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("status", "sleeping", "field 'status' is 'sleeping', not one of"),
        ("seq", "seven", "field 'seq' is 'seven', not an integer"),
        ("version", "", "field 'version' is missing"),
        ("context", "{not json", "field 'context' is not JSON"),
        ("context", "[1]", "field 'context' must be a JSON object, not list"),
        ("timers", '["a", 1]', "field 'timers' must be an array of strings"),
        ("inflight", '[[1, "2", "s"]]', "field 'inflight' must hold"),
        ("parked", '[{"id": 1}]', "field 'parked' holds an unreadable event"),
        ("created_at", "yesterday", "field 'created_at' is 'yesterday', not a number"),
        ("workflow", "", "field 'workflow' is missing"),
    ],
)
def test_a_corrupt_hash_is_unreadable_naming_key_and_field(
    client: redis.Redis, keys: Keys, store: Store, field: str, value: str, message: str
) -> None:
    save(client, keys, full_instance("bad"))
    client.hset(keys.instance("bad"), field, value)
    with pytest.raises(Unreadable) as caught:
        store.get("bad")
    text = str(caught.value)
    assert text.startswith(f"instance hash {keys.instance('bad')} is unreadable: ")
    assert message in text


def test_a_hash_that_is_not_utf8_is_unreadable(
    client: redis.Redis, keys: Keys, store: Store
) -> None:
    save(client, keys, full_instance("bytes"))
    client.hset(keys.instance("bytes"), "reason", b"\xff\xfe")
    with pytest.raises(Unreadable, match="field 'reason' is not UTF-8"):
        store.find("bytes")
    client.hdel(keys.instance("bytes"), "reason")
    client.hset(keys.instance("bytes"), b"\xc3(", "x")  # a field name that is not UTF-8
    with pytest.raises(Unreadable, match=re.escape("field '\\\\xc3(' is not UTF-8")):
        store.find("bytes")


def test_a_hash_missing_its_id_is_unreadable(client: redis.Redis, keys: Keys, store: Store) -> None:
    client.hset(
        keys.instance("no-id"), mapping={"workflow": "w", "version": "1", "created_at": "1.5"}
    )
    with pytest.raises(Unreadable, match="field 'id' is missing"):
        store.get("no-id")


def test_decode_helpers() -> None:
    assert decode_hash({b"a": b"1", b"b": "é".encode()}) == {"a": "1", "b": "é"}
    assert decode_text(b"ok\xff") == "ok\\xff"
    assert decode_text("text") == "text"
    with pytest.raises(Unreadable, match="field 'b' is not UTF-8"):
        decode_hash({b"a": b"1", b"b": b"\x80"})


# ---- list ------------------------------------------------------------------------------


def make(instance_id: str, workflow: str, created: float, state: str, status: Any) -> Instance:
    return Instance(
        id=instance_id,
        workflow=workflow,
        version=1,
        created_at=created,
        state=state,
        status=status,
    )


@pytest.fixture
def listed(client: redis.Redis, keys: Keys) -> list[Instance]:
    instances = [
        make("a1", "alpha", 1.0, "one", "running"),
        make("a2", "alpha", 2.0, "two", "running"),
        make("b1", "beta", 3.0, "one", "completed"),
        make("a3", "alpha", 4.0, "one", "failed"),
        make("b2", "beta", 5.0, "two", "running"),
    ]
    for instance in instances:
        save(client, keys, instance)
        index(client, keys, instance)
    return instances


def ids(found: list[Instance]) -> list[str]:
    return [i.id for i in found]


def test_list_newest_first_with_limit(store: Store, listed: list[Instance]) -> None:
    assert ids(store.list()) == ["b2", "a3", "b1", "a2", "a1"]
    assert ids(store.list(limit=2)) == ["b2", "a3"]
    assert store.list()[0] == listed[4]


def test_list_filters(store: Store, listed: list[Instance]) -> None:
    assert ids(store.list(workflow="alpha")) == ["a3", "a2", "a1"]
    assert ids(store.list(status="running")) == ["b2", "a2", "a1"]
    assert ids(store.list(workflow="alpha", status="running")) == ["a2", "a1"]
    assert ids(store.list(workflow="alpha", state="one")) == ["a3", "a1"]
    assert ids(store.list(state="one")) == ["a3", "b1", "a1"]  # no workflow: read and filtered
    assert ids(store.list(state="one", limit=1)) == ["a3"]
    assert ids(store.list(workflow="alpha", state="one", status="failed")) == ["a3"]
    assert ids(store.list(workflow="gamma")) == []
    assert ids(store.list(status="cancelled")) == []


def test_list_skips_a_corrupt_instance_and_logs_it(
    client: redis.Redis,
    keys: Keys,
    store: Store,
    listed: list[Instance],
    caplog: pytest.LogCaptureFixture,
) -> None:
    client.hset(keys.instance("a2"), "seq", "many")
    with caplog.at_level(logging.ERROR, logger="orchestrator.store.instances"):
        assert ids(store.list()) == ["b2", "a3", "b1", "a1"]
    assert any("skips instance 'a2'" in r.getMessage() for r in caplog.records)


def test_list_skips_an_indexed_id_whose_hash_is_gone(
    client: redis.Redis, keys: Keys, store: Store, listed: list[Instance]
) -> None:
    client.delete(keys.instance("b1"))
    assert ids(store.list()) == ["b2", "a3", "a2", "a1"]


def test_correlated(client: redis.Redis, keys: Keys, store: Store) -> None:
    assert store.correlated("order", "order_id", "A1") is None
    client.set(keys.correlation("order", "order_id", "A1"), "inst-9")
    assert store.correlated("order", "order_id", "A1") == "inst-9"
    assert store.correlated("other", "order_id", "A1") is None


# ---- history: archive, then stream -----------------------------------------------------


def test_history_of_a_live_instance_is_its_stream(
    client: redis.Redis, keys: Keys, store: Store
) -> None:
    save(client, keys, full_instance("h"))
    for seq in (1, 2, 3):
        fields: Any = entry(seq, f"e{seq}", to=f"s{seq}")
        client.xadd(keys.history("h"), fields)
    history = store.history("h")
    assert [h["seq"] for h in history] == [1, 2, 3]
    assert [h["event"]["id"] for h in history] == ["e1", "e2", "e3"]
    first = history[0]
    assert first == {
        "seq": 1,
        "event": {"id": "e1", "type": "tick", "instance": "h", "at": 1.0, "data": {"n": 1}},
        "outcome": "transition",
        "from": "s",
        "to": "s1",
        "status": "running",
        "note": "note 1",
        "effects": [{"effect": "none", "n": 1}],
    }


def test_history_reads_the_archive_then_the_stream(
    client: redis.Redis, keys: Keys, store: Store
) -> None:
    save(client, keys, full_instance("h"))
    client.set(keys.archive("h"), archive.pack([entry(1, "e1"), entry(2, "e2")]))
    late: Any = entry(3, "late-copy")
    client.xadd(keys.history("h"), late)
    history = store.history("h")
    assert [(h["seq"], h["event"]["id"]) for h in history] == [
        (1, "e1"),
        (2, "e2"),
        (3, "late-copy"),
    ]


def test_history_of_an_archive_only(client: redis.Redis, keys: Keys, store: Store) -> None:
    save(client, keys, full_instance("h"))
    client.set(keys.archive("h"), archive.pack([entry(1, "e1")]))
    assert [h["event"]["id"] for h in store.history("h")] == ["e1"]


def test_history_of_an_instance_with_none_is_empty(
    client: redis.Redis, keys: Keys, store: Store
) -> None:
    save(client, keys, full_instance("quiet"))
    assert store.history("quiet") == []


def test_history_without_the_instance_is_unknown(
    client: redis.Redis, keys: Keys, store: Store
) -> None:
    # an orphan stream (the hash removed) does not make an instance
    orphan: Any = entry(1, "e1")
    client.xadd(keys.history("orphan"), orphan)
    with pytest.raises(UnknownInstance, match="no instance with id 'orphan'"):
        store.history("orphan")


def test_history_shows_the_states_passed_through(
    client: redis.Redis, keys: Keys, store: Store
) -> None:
    save(client, keys, full_instance("h"))
    passed = json.dumps([{"state": "mid", "left_on": "go", "left_by": "ev-9"}])
    fields: Any = entry(4, "e4", to="end", passed=passed)
    client.xadd(keys.history("h"), fields)
    shown = store.history("h")
    assert [(h["outcome"], h["from"], h["to"], h["status"]) for h in shown] == [
        ("passed", "s", "mid", "running"),
        ("transition", "mid", "end", "running"),
    ]
    assert shown[0]["note"] == "passed through: left at once on parked go (ev-9)"
    assert (shown[0]["left_on"], shown[0]["left_by"], shown[0]["effects"]) == ("go", "ev-9", [])


@pytest.mark.parametrize(
    ("blob", "kind"),
    [
        (b"not zlib at all", "error"),
        (zlib.compress(b"not json"), "JSONDecodeError"),
        (zlib.compress(b"[1, 2]"), "AttributeError"),
    ],
)
def test_a_corrupt_archive_is_unreadable(
    client: redis.Redis, keys: Keys, store: Store, blob: bytes, kind: str
) -> None:
    save(client, keys, full_instance("h"))
    client.set(keys.archive("h"), blob)
    with pytest.raises(Unreadable) as caught:
        store.history("h")
    assert str(caught.value).startswith(f"archive {keys.archive('h')} is unreadable: ")
    assert kind in str(caught.value)


def test_a_history_stream_that_is_not_utf8_is_unreadable(
    client: redis.Redis, keys: Keys, store: Store
) -> None:
    save(client, keys, full_instance("h"))
    fields: Any = {**entry(1, "e1"), "note": b"\xff"}
    client.xadd(keys.history("h"), fields)
    with pytest.raises(Unreadable, match=f"history {keys.history('h')} is unreadable: not UTF-8"):
        store.history("h")


@pytest.mark.parametrize("broken", [{"seq": None}, {"event": "{not json"}, {"seq": "one"}])
def test_a_history_entry_of_the_wrong_shape_is_unreadable(
    client: redis.Redis, keys: Keys, store: Store, broken: dict[str, str | None]
) -> None:
    save(client, keys, full_instance("h"))
    fields: dict[str, str] = entry(1, "e1")
    for name, value in broken.items():
        if value is None:
            del fields[name]
        else:
            fields[name] = value
    stored: Any = fields
    client.xadd(keys.history("h"), stored)
    with pytest.raises(Unreadable, match=f"history {keys.history('h')} is unreadable"):
        store.history("h")


def test_history_entries_of_one_stored_entry() -> None:
    raw = entry(2, "e2")
    del raw["from"]  # optional fields default
    raw["to"] = ""
    del raw["note"]
    del raw["effects"]
    (shown,) = history_entries(raw)
    assert (shown["from"], shown["to"], shown["note"], shown["effects"]) == (None, None, "", [])
    assert shown["seq"] == 2
