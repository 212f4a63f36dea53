"""The notification ledger (orchestrator.runtime.notify.ledger) against a real Redis: one
record per notification, claimed once (a second claim sees the claim, or the outcome),
taken over when its owner's heartbeat or claim is gone (counting a resend), moved only
forward through its states, mapping a provider's message id back to it, expiring with
its instance, and read defensively when what is stored is not what it wrote.

Every test writes under its own namespace.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import pytest
import redis

from orchestrator.runtime.notify.ledger import (
    PROVIDER_ID_TTL,
    RETENTION,
    Ask,
    Ledger,
    readable,
    record_key,
)
from orchestrator.store.keys import Keys


@pytest.fixture
def token() -> str:
    return uuid.uuid4().hex[:12]


@pytest.fixture
def keys(token: str) -> Keys:
    return Keys(namespace=f"t-ledger-{token}", partitions=4)


@pytest.fixture
def ledger(client: redis.Redis, keys: Keys) -> Ledger:
    return Ledger(client, keys)


def fields(instance: str | None = None, **more: Any) -> dict[str, Any]:
    return {"channel": "email", "to": "a@example.com", "instance": instance, **more}


def running(client: redis.Redis, keys: Keys, instance: str, ttl_ms: int | None = None) -> None:
    """An instance hash: running (no time to live), or finished (expiring in `ttl_ms`)."""
    client.hset(keys.instance(instance), mapping={"id": instance, "status": "running"})
    if ttl_ms is not None:
        client.pexpire(keys.instance(instance), ttl_ms)


def read(ledger: Ledger, key: str) -> dict[str, str]:
    record = ledger.get(key)
    assert record is not None, f"no readable record {key}"
    return record


def test_the_record_key_names_the_job_and_the_recipient() -> None:
    assert record_key("inst-3-0", "a@example.com") == "inst-3-0:a@example.com"
    assert record_key("inst-3-0", None) == "inst-3-0:None"
    assert record_key("inst-3-0", "a") != record_key("inst-3-0", "b")


def test_a_first_claim_creates_the_record_and_wins(ledger: Ledger, token: str) -> None:
    before = time.time()
    claim = ledger.claim(f"n-{token}", "worker-1", fields(urgent=True, warnings=["w"]))
    assert claim.outcome == "claimed"
    assert claim.recipient is None
    record = claim.record
    assert record["status"] == "sending"
    assert record["owner"] == "worker-1"
    assert record["attempts"] == "1"
    assert record["key"] == f"n-{token}"
    assert (record["channel"], record["to"]) == ("email", "a@example.com")
    assert record["urgent"] == "true" and record["warnings"] == '["w"]'
    assert "instance" not in record  # None is not written
    assert before <= float(record["created_at"]) <= time.time()
    assert float(record["claim_until"]) >= before + 59
    assert ledger.get(f"n-{token}") == record


def test_a_second_claim_while_the_first_holds_sees_it(ledger: Ledger, token: str) -> None:
    key = f"n-{token}"
    assert ledger.claim(key, "worker-1", fields()).outcome == "claimed"
    second = ledger.claim(key, "worker-2", fields(channel="sms"))
    assert second.outcome == "busy"
    assert second.record["owner"] == "worker-1"
    assert second.record["channel"] == "email"  # the first's fields stay
    assert second.record["attempts"] == "1"
    record = ledger.get(key)
    assert record is not None and record["owner"] == "worker-1"


def test_a_claim_holds_while_its_owners_heartbeat_lives(
    client: redis.Redis, keys: Keys, token: str
) -> None:
    ledger = Ledger(client, keys, claim_seconds=-1)  # claim_until alone would not hold it
    key, alive = f"n-{token}", keys.alive(0, f"job-{token}")
    client.set(alive, 1, ex=60)
    assert ledger.claim(key, "worker-1", fields(), alive=alive).outcome == "claimed"
    assert ledger.claim(key, "worker-2", fields()).outcome == "busy"
    # When the owner dies, its heartbeat expires: the next claim takes over, a resend
    client.delete(alive)
    taken = ledger.claim(key, "worker-2", fields())
    assert taken.outcome == "claimed"
    assert taken.record["owner"] == "worker-2"
    assert taken.record["attempts"] == "2"
    assert taken.record["resends"] == "1"


def test_a_claim_without_heartbeat_lapses_at_claim_until(
    client: redis.Redis, keys: Keys, token: str
) -> None:
    lapsing = Ledger(client, keys, claim_seconds=-1)
    key = f"n-{token}"
    assert lapsing.claim(key, "worker-1", fields()).outcome == "claimed"
    taken = Ledger(client, keys).claim(key, "worker-2", fields())
    assert taken.outcome == "claimed"
    assert (taken.record["owner"], taken.record["resends"]) == ("worker-2", "1")


def test_a_sent_notification_is_never_claimed_again(ledger: Ledger, token: str) -> None:
    key = f"n-{token}"
    ledger.claim(key, "worker-1", fields())
    assert ledger.advance(key, "sent", provider_id="SM123", targets=["a", "b"]) is True
    again = ledger.claim(key, "worker-2", fields())
    assert again.outcome == "sent"
    assert again.record["owner"] == "worker-1"
    assert again.record["attempts"] == "1"
    assert again.record["provider_id"] == "SM123"
    assert again.record["targets"] == '["a", "b"]'


@pytest.mark.parametrize("final", ["failed", "skipped", "delivered", "undelivered"])
def test_every_final_state_is_seen_by_a_later_claim(ledger: Ledger, token: str, final: str) -> None:
    key = f"n-{token}"
    ledger.claim(key, "worker-1", fields())
    assert ledger.advance(key, final, reason="why") is True
    claim = ledger.claim(key, "worker-2", fields())
    assert claim.outcome == final
    assert claim.record["reason"] == "why"


def test_states_only_move_forward(ledger: Ledger, token: str) -> None:
    key = f"n-{token}"
    assert ledger.advance(key, "sent") is False  # no record yet
    ledger.claim(key, "worker-1", fields())
    assert ledger.advance(key, "sent") is True
    assert ledger.advance(key, "retrying") is False
    assert ledger.advance(key, "sending") is False
    assert ledger.advance(key, "failed") is False
    assert ledger.advance(key, "sent") is False  # not even to where it is
    assert ledger.advance(key, "delivered", receipt="r1") is True
    assert ledger.advance(key, "undelivered") is False
    record = ledger.get(key)
    assert record is not None
    assert record["status"] == "delivered" and record["receipt"] == "r1"


def test_a_retry_is_claimed_again_and_an_ambiguous_try_counts_a_resend(
    ledger: Ledger, token: str
) -> None:
    key = f"n-{token}"
    ledger.claim(key, "worker-1", fields())
    assert ledger.advance(key, "retrying", next_try=time.time() + 5, error="timeout")
    retry = ledger.claim(key, "worker-1", fields())
    assert retry.outcome == "claimed"
    assert (retry.record["attempts"], retry.record.get("resends")) == ("2", None)
    # a try whose whole message may have gone out: the next claim is a resend
    assert ledger.advance(key, "retrying", ambiguous=True)
    assert read(ledger, key)["ambiguous"] == "true"
    resend = ledger.claim(key, "worker-1", fields())
    assert resend.outcome == "claimed"
    assert resend.record["attempts"] == "3"
    assert resend.record["resends"] == "1"
    assert "ambiguous" not in resend.record
    assert ledger.advance(key, "sent")
    assert read(ledger, key)["status"] == "sent"


def test_an_advance_in_a_transaction_waits_for_its_commit(
    client: redis.Redis, ledger: Ledger, token: str
) -> None:
    key = f"n-{token}"
    ledger.claim(key, "worker-1", fields())
    pipe = client.pipeline(transaction=True)
    assert ledger.advance(key, "failed", pipe, reason="gave up") is True
    assert read(ledger, key)["status"] == "sending"
    pipe.execute()
    record = ledger.get(key)
    assert record is not None
    assert (record["status"], record["reason"]) == ("failed", "gave up")


def test_a_provider_message_id_maps_back_to_its_notification(
    client: redis.Redis, keys: Keys, ledger: Ledger, token: str
) -> None:
    key = f"n-{token}"
    running(client, keys, f"i-{token}")  # still running: the record has no time to live
    ledger.claim(key, "worker-1", fields(instance=f"i-{token}"))
    assert client.pttl(keys.notification(key)) == -1
    ledger.remember_provider_id(f"SM-{token}", key)
    assert ledger.by_provider_id(f"SM-{token}") == key
    assert ledger.by_provider_id(f"SM-unknown-{token}") is None
    ttl = client.ttl(keys.provider_message(f"SM-{token}"))
    assert PROVIDER_ID_TTL - 5 <= ttl <= PROVIDER_ID_TTL


def test_a_provider_message_id_lives_as_long_as_its_record(
    client: redis.Redis, keys: Keys, ledger: Ledger, token: str
) -> None:
    key = f"n-{token}"
    ledger.claim(key, "worker-1", fields())  # no instance: the retention
    client.pexpire(keys.notification(key), 50_000)
    pipe = client.pipeline(transaction=True)
    ledger.remember_provider_id(f"SM-{token}", key, pipe)
    assert ledger.by_provider_id(f"SM-{token}") is None
    pipe.execute()
    assert ledger.by_provider_id(f"SM-{token}") == key
    assert 45_000 <= client.pttl(keys.provider_message(f"SM-{token}")) <= 50_000


def test_an_unreadable_provider_message_key_reads_as_unknown(
    client: redis.Redis, keys: Keys, ledger: Ledger, caplog: pytest.LogCaptureFixture
) -> None:
    client.hset(keys.provider_message("SM-hash"), "x", "y")
    with caplog.at_level(logging.WARNING, "orchestrator.runtime.notify.ledger"):
        assert ledger.by_provider_id("SM-hash") is None
    assert "unreadable" in caplog.text


def test_a_record_takes_its_finished_instances_time_to_live_and_expires_with_it(
    client: redis.Redis, keys: Keys, ledger: Ledger, token: str
) -> None:
    instance = f"i-{token}"
    running(client, keys, instance, ttl_ms=400)
    key = f"{instance}-3-0:a@example.com"
    assert ledger.claim(key, "worker-1", fields(instance=instance)).outcome == "claimed"
    assert 0 < client.pttl(keys.notification(key)) <= 400
    assert 0 < client.pttl(keys.notifications_of(instance)) <= 400
    assert [r["key"] for r in ledger.of_instance(instance)] == [key]
    time.sleep(0.5)
    assert client.exists(keys.instance(instance)) == 0
    assert ledger.get(key) is None
    assert ledger.of_instance(instance) == []
    assert client.exists(keys.notifications_of(instance)) == 0


def test_a_record_of_a_running_instance_has_no_expiry_yet(
    client: redis.Redis, keys: Keys, ledger: Ledger, token: str
) -> None:
    instance = f"i-{token}"
    running(client, keys, instance)
    key = f"{instance}-3-0:x"
    ledger.claim(key, "worker-1", fields(instance=instance))
    assert client.pttl(keys.notification(key)) == -1
    assert client.pttl(keys.notifications_of(instance)) == -1


def test_a_record_without_a_live_instance_lives_for_the_retention(
    client: redis.Redis, keys: Keys, ledger: Ledger, token: str
) -> None:
    # no instance at all: the default retention until an applier publishes one
    ledger.claim(f"cli-{token}:a", "worker-1", fields())
    assert RETENTION - 5 <= client.ttl(keys.notification(f"cli-{token}:a")) <= RETENTION
    client.hset(keys.meta, "retention", "120")
    # an instance already expired: the published retention
    ledger.claim(f"gone-{token}-1-0:a", "worker-1", fields(instance=f"gone-{token}"))
    assert 115 <= client.ttl(keys.notification(f"gone-{token}-1-0:a")) <= 120
    assert 115 <= client.ttl(keys.notifications_of(f"gone-{token}")) <= 120


def test_of_instance_lists_its_records_oldest_first_and_skips_unreadable_ones(
    client: redis.Redis, keys: Keys, ledger: Ledger, token: str
) -> None:
    instance = f"i-{token}"
    running(client, keys, instance)
    names = [f"{instance}-{n}-0:a" for n in range(3)]
    for name in names:
        ledger.claim(name, "worker-1", fields(instance=instance))
    client.delete(keys.notification(names[1]))
    client.set(keys.notification(names[1]), "not a hash")
    assert [r["key"] for r in ledger.of_instance(instance)] == [names[0], names[2]]
    assert ledger.of_instance(f"unknown-{token}") == []
    client.set(keys.notifications_of(f"bad-{token}"), "not a zset")
    assert ledger.of_instance(f"bad-{token}") == []


def test_a_record_that_is_not_a_hash_reads_as_absent_and_a_claim_replaces_it(
    client: redis.Redis, keys: Keys, ledger: Ledger, token: str
) -> None:
    key = f"n-{token}"
    client.rpush(keys.notification(key), "junk")
    assert ledger.get(key) is None
    assert ledger.advance(key, "sent") is False
    ledger.note(key, done_targets=["a"])  # logged, not raised
    assert client.type(keys.notification(key)) == b"list"
    claim = ledger.claim(key, "worker-1", fields())
    assert claim.outcome == "claimed"
    assert claim.record["attempts"] == "1"
    assert client.type(keys.notification(key)) == b"hash"


def test_unreadable_fields_are_dropped_and_an_unknown_status_reads_unknown(
    client: redis.Redis, keys: Keys, ledger: Ledger, token: str
) -> None:
    key = f"n-{token}"
    client.hset(
        keys.notification(key),
        mapping={
            "status": "exploded",
            "attempts": "many",
            "resends": "-1",
            "updated_at": "nan",
            "warnings": '["ok", 3]',
            "refused": "[]",
            "urgent": "yes",
            "channel": "email",
            b"\xff": "x",
        },
    )
    assert ledger.get(key) == {"status": "unknown", "channel": "email"}
    assert ledger.get(f"missing-{token}") is None
    assert readable("k", {}) == {}
    assert readable("k", {b"channel": b"sms"}) == {"channel": "sms", "status": "unknown"}


def test_a_claim_counts_on_from_corrupt_counters(
    client: redis.Redis, keys: Keys, ledger: Ledger, token: str
) -> None:
    key = f"n-{token}"
    ledger.claim(key, "worker-1", fields())
    ledger.advance(key, "retrying", ambiguous=True)
    client.hset(keys.notification(key), mapping={"attempts": "x", "resends": "y"})
    claim = ledger.claim(key, "worker-2", fields())
    assert claim.outcome == "claimed"
    assert (claim.record["attempts"], claim.record["resends"]) == ("1", "1")


def test_note_records_facts_without_moving_the_status(ledger: Ledger, token: str) -> None:
    key = f"n-{token}"
    ledger.claim(key, "worker-1", fields())
    ledger.note(key, done_targets=["t1", "t2"], skipped=None)
    record = ledger.get(key)
    assert record is not None
    assert record["status"] == "sending"
    assert record["done_targets"] == '["t1", "t2"]'
    assert "skipped" not in record


def test_a_claim_brings_the_recipients_data(
    client: redis.Redis, keys: Keys, ledger: Ledger, token: str
) -> None:
    recipient = f"{keys.namespace}:recipient:r1"
    client.hset(recipient, mapping={"data": '{"email": "a@example.com"}'})
    claim = ledger.claim(f"n-{token}", "worker-1", fields(), recipient=recipient)
    assert claim.recipient == b'{"email": "a@example.com"}'
    busy = ledger.claim(f"n-{token}", "worker-2", fields(), recipient=recipient)
    assert (busy.outcome, busy.recipient) == ("busy", None)
    missing = ledger.claim(f"m-{token}", "w", fields(), recipient=f"{recipient}-none")
    assert (missing.outcome, missing.recipient) == ("claimed", None)


def test_claim_many_claims_each_once_in_one_round_trip(ledger: Ledger, token: str) -> None:
    asks = [Ask(f"n-{token}-{n}", "worker-1", fields()) for n in range(3)]
    ledger.advance(f"n-{token}-1", "sent")  # no record: nothing moves
    ledger.claim(f"n-{token}-2", "worker-0", fields())
    ledger.advance(f"n-{token}-2", "sent")
    claims = ledger.claim_many(asks)
    assert [c.outcome if c else None for c in claims] == ["claimed", "claimed", "sent"]
    again = ledger.claim_many(asks[:2])
    assert [c.outcome if c else None for c in again] == ["busy", "busy"]
    assert ledger.claim_many([]) == []
