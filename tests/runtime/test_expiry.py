"""Everything the engine writes for an instance expires with it, ledger records included,
and an unreadable ledger record stops neither a send nor a listing.

Real parts: the suite's Redis, orders and registrations run by the engine's own
applier and RQ workers (`run_burst`), email to a real SMTP server (aiosmtpd,
STARTTLS, AUTH; support/smtp_server.py), SMS on the console. Retention is cut to
a couple of seconds, and the janitor (`Retention.clean`, which the appliers
run about once a minute) is called when a test wants it to have run.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import orchestrator.runtime.context as worker_context
import orchestrator.runtime.notify.batch as batch
from notifiers.registry import Notifiers
from orchestrator.core.errors import UnknownInstance
from orchestrator.entry.bootstrap import App, bootstrap
from orchestrator.entry.notifications import send_one
from orchestrator.entry.settings import Settings
from orchestrator.entry.worker import run_burst
from orchestrator.runtime.notify.delivery import Deliverer
from orchestrator.runtime.notify.ledger import RETENTION as LEDGER_DEFAULT_RETENTION
from orchestrator.runtime.notify.ledger import Ledger
from orchestrator.runtime.watchdog import HEARTBEAT_TTL
from orchestrator.store.keys import Keys
from support.smtp_server import SmtpServer, smtp_server
from tests.conftest import cli_env, run_cli

__all__ = ["smtp_server"]  # the fixture, imported for pytest

RETENTION = 4.0  # long enough for a burst and a send on a loaded machine
EMAIL = "buyer@example.com"
PHONE = "+14155550100"

# (workflow, input, final state): the order's happy path, each of its failure paths
# (one undoing nothing, two compensating), one with no phone (its SMS fails for good),
# and a registration that notifies while it runs as well as when it ends.
RUNS: list[tuple[str, dict[str, Any], str]] = [
    ("order", {"email": EMAIL, "phone": PHONE}, "shipped"),
    ("order", {"email": EMAIL, "phone": PHONE, "items": 20}, "failed"),
    ("order", {"email": EMAIL, "phone": PHONE, "card": "declined"}, "failed"),
    ("order", {"email": EMAIL, "phone": PHONE, "address": "nowhere"}, "failed"),
    ("order", {"email": EMAIL}, "shipped"),
]


def deployment_wide(keys: Keys) -> set[str]:
    """The keys a deployment keeps whatever it runs: none of them grows with instances."""
    return {
        keys.meta,  # partitions, retention
        *(keys.inbox(p) for p in range(keys.partitions)),  # streams, trimmed as applied
        *keys.all_published(),  # streams of published events, trimmed by length and age
        keys.rate("email"),  # a channel's next send slot
        keys.rate("sms"),
    }


def namespace_keys(app: App) -> dict[str, int]:
    """Every key of the namespace with its time to live in ms (-1: none), leaving out the
    heartbeats of tasks just run: they are per job, and end HEARTBEAT_TTL after it."""
    found: dict[str, int] = {}
    for raw in app.redis.scan_iter(match=f"{app.keys.namespace}:*", count=1000):
        key = raw.decode()
        ttl = int(app.redis.pttl(key))
        if ":alive:" in key and 0 < ttl <= HEARTBEAT_TTL * 1000:
            continue
        if ttl != -2:
            found[key] = ttl
    return found


def per_notification(found: dict[str, int], keys: Keys) -> dict[str, int]:
    prefixes = tuple(
        f"{keys.namespace}:{kind}:"
        for kind in ("notification", "notifications", "provider-message")
    )
    return {k: ttl for k, ttl in found.items() if k.startswith(prefixes)}


@pytest.fixture
def channels(monkeypatch: pytest.MonkeyPatch, smtp_server: SmtpServer) -> Iterator[SmtpServer]:
    """Email to the test's SMTP server, SMS on the console; fresh process notifiers."""
    monkeypatch.setattr(worker_context, "_installed", None)
    monkeypatch.setattr(batch, "_pool", None)
    for name, value in smtp_server.env.items():
        monkeypatch.setenv(name, value)
    yield smtp_server
    if worker_context._installed is not None:
        worker_context._installed.close()
    if batch._pool is not None:
        batch._pool[1].shutdown(wait=True)


@pytest.fixture
def short(settings: Settings) -> App:
    return bootstrap(replace(settings, retention=RETENTION))


def wait_until_gone(app: App, ids: list[str]) -> None:
    deadline = time.monotonic() + RETENTION + 5
    while any(app.redis.exists(app.keys.instance(i)) for i in ids):
        assert time.monotonic() < deadline, "instances outlived their retention"
        time.sleep(0.1)


def test_everything_written_for_an_instance_expires_with_it(
    short: App, channels: SmtpServer
) -> None:
    app = short
    # Given a registration that has sent its verification email and waits
    registration = app.client.start(
        "registration", {"user_id": "u1", "email": EMAIL, "name": "Ann Lee"}
    )
    run_burst(app)
    [verify] = Ledger(app.redis, app.keys).of_instance(registration)
    assert verify["status"] == "sent"
    # Then its record does not expire while the instance runs
    assert app.redis.pttl(app.keys.notification(verify["key"])) == -1
    assert app.redis.pttl(app.keys.notifications_of(registration)) == -1
    # Given orders down every path, and the registration verified
    orders = [
        app.client.start("order", {"order_id": f"E{n}", "work_seconds": 0, **data})
        for n, (_, data, _) in enumerate(RUNS)
    ]
    app.client.emit("email.verified", key=("user_id", "u1"))
    run_burst(app)
    # And one notification sent with no instance, as `orchestrator notify send` sends it
    outcome, payload = send_one(
        app.redis, app.keys, dict(channels.env), channel="email", to=EMAIL,
        template="order_shipped", module="workflows.order",
        context={"order_id": "X1", "tracking": "T"},
    )  # fmt: skip
    assert outcome.status == "sent"
    ids = [*orders, registration]
    assert [app.client.status(i).state for i in ids] == [s for *_, s in RUNS] + ["active"]
    assert len(channels.messages) == len(RUNS) + 2 + 1  # one email per order, two, one
    # Then every key of every notification carries a time to live, none longer than the
    # retention: records (sent and failed), indexes, provider-message keys
    found = namespace_keys(app)
    notes = per_notification(found, app.keys)
    assert {k for k in notes if ":notifications:" in k} == {
        app.keys.notifications_of(i) for i in ids
    }
    assert sum(":provider-message:" in k for k in notes) == 2 * len(RUNS) - 1 + 2 + 1
    assert app.keys.notification(f"{payload['key']}:{EMAIL}") in notes
    assert all(0 < ttl <= RETENTION * 1000 for ttl in notes.values()), notes
    # When the retention has passed and the janitor has run
    wait_until_gone(app, ids)
    time.sleep(0.2)
    assert app.applier().retention.clean() == len(ids)
    # Then nothing of them is left but their ids among the expired, and status says so
    # (the notification sent with no instance, a moment after them, within its own retention)
    deadline = time.monotonic() + RETENTION + 5
    while True:
        left = beating(app, set(namespace_keys(app))) - deployment_wide(app.keys)
        if left == {app.keys.expired} or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert left == {app.keys.expired}
    with pytest.raises(UnknownInstance, match="has expired"):
        app.client.status(orders[0])
    # And once the expired are forgotten too (a retention later), nothing at all
    time.sleep(RETENTION + 0.1)
    assert app.applier().retention.clean() == 0
    assert beating(app, set(namespace_keys(app))) <= deployment_wide(app.keys)


def beating(app: App, keys: set[str]) -> set[str]:
    """`keys` but the heartbeat keys of tries (`alive:`): a beat that raced its try's
    answer writes its key again after the answer deleted it, and it expires on its own
    within HEARTBEAT_TTL (checked here: -2 when it expired since `keys` was read)."""
    found = {key for key in keys if ":alive:" in key}
    ttls = {key: app.redis.pttl(key) for key in found}
    assert all(ttl == -2 or 0 <= ttl <= HEARTBEAT_TTL * 1000 for ttl in ttls.values()), ttls
    return keys - found


def test_a_notification_whose_instance_is_gone_lives_for_the_retention(app: App) -> None:
    notifiers = Notifiers({})
    deliverer = Deliverer(app.redis, app.keys, {}, notifiers)

    def send(key: str, instance: str | None) -> int:
        payload = {
            "instance": instance, "channel": "console", "to": "someone",
            "template": "order_shipped", "templates": "workflows.order",
            "context": {"order_id": "A1", "tracking": "T"}, "key": key,
        }  # fmt: skip
        assert deliverer.deliver(payload, key).status == "sent"
        return int(app.redis.pttl(app.keys.notification(f"{key}:someone")))

    try:
        # Before any applier has said what the retention is: the default one
        assert 0 < send("cli-1", None) <= LEDGER_DEFAULT_RETENTION * 1000
        assert send("cli-1", None) > (LEDGER_DEFAULT_RETENTION - 60) * 1000
        # Once the appliers' janitor has published it: theirs, for no instance, or for
        # an instance that has already expired (its index too)
        bootstrap(replace(app.settings, retention=30.0)).applier().retention.clean()
        assert 29_000 < send("cli-2", None) <= 30_000
        assert 29_000 < send("gone-1", "gone") <= 30_000
        assert 29_000 < int(app.redis.pttl(app.keys.notifications_of("gone"))) <= 30_000
    finally:
        notifiers.close()


# -- unreadable ledger records --------------------------------------------------------

CORRUPTIONS: dict[str, Any] = {
    "not a hash": "garbage",
    "fields of the wrong kind": {
        "status": "bogus",
        "attempts": "many",
        "resends": "x",
        "claim_until": "soon",
        "created_at": "yesterday",
        "done_targets": "{",
        "warnings": "5",
        "urgent": "maybe",
    },
    "bytes that are not UTF-8": {"status": b"\xff\xfe", b"\xc3": "x", "to": b"\xff"},
    "an unreadable claim": {"status": "sending", "claim_until": "never", "alive": ""},
}


def corrupt(app: App, key: str, how: Any) -> None:
    redis_key = app.keys.notification(key)
    app.redis.delete(redis_key)
    if isinstance(how, str):
        app.redis.set(redis_key, how)
    else:
        app.redis.hset(redis_key, mapping=how)


@pytest.mark.parametrize("how", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
def test_an_unreadable_ledger_record_does_not_stop_the_send(
    app: App, channels: SmtpServer, how: Any
) -> None:
    # Given an order whose shipped email's ledger record is unreadable before it is sent
    iid = app.client.start(
        "order", {"order_id": "C1", "email": EMAIL, "phone": PHONE, "work_seconds": 0}
    )
    key = f"{iid}-4-0:{EMAIL}"  # the 4th event (the last task done) notifies, email first
    corrupt(app, key, how)
    # When the workers run everything
    run_burst(app, timer_horizon=1.0)
    # Then it is sent once, the record replaced by a readable one, and the order heard it
    assert app.client.status(iid).state == "shipped"
    assert [m.rcpt_tos for m in channels.messages] == [(EMAIL,)]
    record = Ledger(app.redis, app.keys).get(key)
    assert record is not None
    assert (record["status"], record["attempts"]) == ("sent", "1")
    assert record["provider_id"]
    history = app.client.history(iid)
    heard = [
        h["event"]["data"].get("to") for h in history if h["event"]["type"] == "notification.sent"
    ]
    assert EMAIL in heard


def test_an_unreadable_ledger_record_is_treated_as_absent_with_a_logged_reason(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    notifiers = Notifiers({})
    payload = {
        "instance": None, "channel": "console", "to": "someone", "template": "order_shipped",
        "templates": "workflows.order", "context": {"order_id": "A1", "tracking": "T"},
        "key": "cli-bad",
    }  # fmt: skip
    corrupt(app, "cli-bad:someone", "garbage")
    try:
        with caplog.at_level(logging.WARNING, logger="orchestrator.runtime.notify.ledger"):
            outcome = Deliverer(app.redis, app.keys, {}, notifiers).deliver(payload, "me")
    finally:
        notifiers.close()
    assert outcome.status == "sent"
    assert "ledger record cli-bad:someone was unreadable (a string, not a hash)" in caplog.text


def test_notifications_of_an_instance_list_what_can_be_read(
    app: App, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Given an order that shipped, its email and SMS recorded (on the console)
    iid = app.client.start(
        "order", {"order_id": "C2", "email": EMAIL, "phone": PHONE, "work_seconds": 0}
    )
    run_burst(app)
    ledger = Ledger(app.redis, app.keys)
    email, sms = (r["key"] for r in ledger.of_instance(iid))
    # When the email's record becomes a string, the SMS's fields garbage, and the index
    # names a record that is gone
    corrupt(app, email, "garbage")
    app.redis.hset(
        app.keys.notification(sms),
        mapping={"status": b"\xff", "attempts": "many", "warnings": "5", "updated_at": "now"},
    )
    app.redis.zadd(app.keys.notifications_of(iid), {"missing:x": time.time()})
    with caplog.at_level(logging.WARNING, logger="orchestrator.runtime.notify.ledger"):
        records = ledger.of_instance(iid)
    # Then the listing holds what can be read, and the log says what could not
    assert [(r["key"], r["status"]) for r in records] == [(sms, "unknown")]
    assert not {"attempts", "warnings", "updated_at"} & set(records[0])
    assert f"ledger record {email} is unreadable" in caplog.text
    assert f"ledger record {sms}: unreadable attempts, status, updated_at, warnings" in caplog.text
    # And so does the command, without a trace
    env = cli_env(app.settings.redis_url, tmp_path)
    shown = run_cli("notifications", iid, "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    assert "Traceback" not in shown.stderr
    rows = json.loads(shown.stdout)
    assert [(r["channel"], r["status"], r["attempts"], r["warnings"]) for r in rows] == [
        ("sms", "unknown", 0, [])
    ]
    text = run_cli("notifications", iid, env=env)
    assert text.returncode == 0 and "Traceback" not in text.stderr, text.stderr
    header, first = (line.split() for line in text.stdout.splitlines()[:2])
    assert header[:4] == ["CHANNEL", "TO", "TEMPLATE", "STATUS"]
    assert (first[0], first[2], first[3]) == ("sms", "order_shipped", "unknown")
