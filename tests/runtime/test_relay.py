"""Webhook subscriptions delivered by the relay (orchestrator.runtime.relay) against a real
Redis and a real HTTP receiver on 127.0.0.1, which checks every request as a receiver
would: `standardwebhooks.Webhook(secret).verify(body, headers)`.

The retry policy is shortened (3 tries, 50 ms doubling to 200 ms) so that the whole file
runs in seconds; the decision parts are tested on their own, without HTTP."""

from __future__ import annotations

import json
import multiprocessing
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from orchestrator.core.errors import InputError
from orchestrator.entry.bootstrap import App, bootstrap
from orchestrator.entry.settings import Settings
from orchestrator.entry.subscriptions import Subscriptions
from orchestrator.runtime.applier import Applier
from orchestrator.runtime.relay import (
    CRASH_BEFORE_ACK,
    Outcome,
    Policy,
    Relay,
    RelayConfig,
    backoff,
    decide,
    new_secret,
    secret_problem,
)
from orchestrator.store.published import PublishedStreams
from orchestrator.store.subscriptions import SubscriptionStore, group_of

SECRET = new_secret()
ENV = {"HOOK_SECRET": SECRET, "WEBHOOK_ALLOW_PRIVATE": "1"}
FAST = Policy(tries=3, first=0.05, most=0.2)


# -- a receiver ---------------------------------------------------------------


@dataclass
class Request:
    path: str
    headers: dict[str, str]  # names in lowercase
    body: bytes
    verified: bool
    status: int

    @property
    def event(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.body)
        return doc

    @property
    def type(self) -> str:
        return str(self.event["type"])


@dataclass
class Receiver:
    """Answers each request with `answer(event, try number of its webhook-id)`, 200 unless
    told otherwise, and records it with whether its signature verified."""

    url: str = ""
    answer: Callable[[dict[str, Any], int], int] = lambda event, n: 200
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def tries_of(self, webhook_id: str) -> int:
        return sum(1 for r in self.requests if r.headers.get("webhook-id") == webhook_id)

    def delivered(self, path: str | None = None) -> list[Request]:
        return [
            r for r in self.requests if 200 <= r.status < 300 and (path is None or r.path == path)
        ]

    def types(self, path: str | None = None) -> list[str]:
        return [r.type for r in self.delivered(path)]


def serve(receiver: Receiver) -> ThreadingHTTPServer:
    signer = Webhook(SECRET)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            headers = {k.lower(): v for k, v in self.headers.items()}
            try:
                signer.verify(body, headers)
                verified = True
            except WebhookVerificationError:
                verified = False
            with receiver.lock:
                n = receiver.tries_of(headers.get("webhook-id", "")) + 1
                status = receiver.answer(json.loads(body), n)
                receiver.requests.append(Request(self.path, headers, body, verified, status))
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    server = serve(found)
    try:
        yield found
    finally:
        server.shutdown()
        server.server_close()


# -- the deployment -----------------------------------------------------------


@pytest.fixture
def shop(redis_url: str, tmp_path: Path) -> App:
    return bootstrap(
        Settings(
            redis_url=redis_url,
            workflows=("tests.webhook_workflows",),
            partitions=4,
            data_dir=tmp_path,
        )
    )


@pytest.fixture
def applier(shop: App) -> Iterator[Applier]:
    found = shop.applier()
    try:
        yield found
    finally:
        found.release()


def subscriptions(app: App, environ: dict[str, str] | None = None) -> Subscriptions:
    return Subscriptions(app.redis, app.keys, environ=ENV if environ is None else environ)


def relay_for(
    app: App,
    *,
    environ: dict[str, str] | None = None,
    allow_private: bool = True,
    lease_ttl: float = 6.0,
    relay_id: str | None = None,
    crash_at: frozenset[str] = frozenset(),
    policy: Policy = FAST,
) -> Relay:
    config = RelayConfig(
        policy=policy,
        timeout=2.0,
        connect_timeout=1.0,
        allow_private=allow_private,
        lease_ttl=lease_ttl,
        sync_every=0.05,
        block=0.05,
    )
    return Relay(
        app.redis,
        app.keys,
        environ=ENV if environ is None else environ,
        config=config,
        relay_id=relay_id,
        crash_at=crash_at,
    )


def order(app: App, applier: Applier, order_id: str, *, ship: bool = False) -> str:
    """Start an order (order.placed, invoice.created), ship it (order.shipped), apply."""
    iid = app.client.start("webhook_order", {"order_id": order_id, "amount": 9.5})
    applier.drain()
    if ship:
        app.client.emit("ship", {}, instance_id=iid)
        applier.drain()
    # Events of two partitions published in the same millisecond are concurrent: a lane
    # takes them in partition order (store.published). Orders placed one after another
    # are meant to go out in that order, so the next is placed in a later millisecond.
    time.sleep(0.002)
    return iid


def stored_events(app: App) -> dict[str, bytes]:
    """Each published event's JSON, exactly as stored, by event id."""
    found: dict[str, bytes] = {}
    for stream in app.keys.all_published():
        entries: Any = app.redis.xrange(stream)
        for _, fields in entries:
            for raw in fields.values():  # one event a field, those of one commit
                found[json.loads(raw)["id"]] = raw
    return found


# -- the pure parts -----------------------------------------------------------


def test_the_backoff_doubles_from_first_to_most_within_its_jitter() -> None:
    policy = Policy(tries=10, first=1.0, most=600.0)
    middle = [backoff(policy, n, 0.5) for n in range(1, 12)]
    assert middle == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 600]
    assert backoff(policy, 3, 0.0) == pytest.approx(3.2)  # 4 s, 20% less
    assert backoff(policy, 3, 0.999999) == pytest.approx(4.8, abs=1e-3)  # 20% more
    assert backoff(policy, 10, 0.999999) == 600  # never past `most`
    assert backoff(policy, 10_000, 0.5) == 600  # no overflow
    # the default schedule: 10 tries, 9 waits, about 8.5 minutes in all
    assert sum(middle[:9]) == 511


@pytest.mark.parametrize(
    ("outcome", "action"),
    [
        (Outcome(status=200), "delivered"),
        (Outcome(status=204), "delivered"),
        (Outcome(status=400), "dead"),
        (Outcome(status=401), "dead"),
        (Outcome(status=404), "dead"),
        (Outcome(status=410), "dead"),
        (Outcome(status=301), "dead"),  # redirects are not followed
        (Outcome(status=408), "retry"),
        (Outcome(status=429), "retry"),
        (Outcome(status=500), "retry"),
        (Outcome(status=503), "retry"),
        (Outcome(code="timeout"), "retry"),
        (Outcome(code="connection"), "retry"),
        (Outcome(code="private-address", permanent=True), "dead"),
    ],
)
def test_what_an_answer_means(outcome: Outcome, action: str) -> None:
    decision = decide(FAST, outcome, 1, 0.5)
    assert decision.action == action
    if action == "retry":
        assert decision.delay == pytest.approx(0.05)
    # the last try's failure is final, whatever it is
    if action != "delivered":
        assert decide(FAST, outcome, FAST.tries, 0.5).action == "dead"


def test_retry_after_lengthens_the_wait_up_to_the_longest() -> None:
    policy = Policy(tries=5, first=1.0, most=60.0)
    assert decide(policy, Outcome(status=429, retry_after=30.0), 1, 0.5).delay == 30.0
    assert decide(policy, Outcome(status=503, retry_after=3600.0), 1, 0.5).delay == 60.0
    assert decide(policy, Outcome(status=503, retry_after=0.0), 2, 0.5).delay == 2.0


def test_a_secret_is_checked_by_its_variable_and_never_shown() -> None:
    assert secret_problem("HOOK_SECRET", ENV) is None
    assert new_secret() != new_secret() and new_secret().startswith("whsec_")
    unset = secret_problem("HOOK_SECRET", {})
    assert unset == "the secret variable HOOK_SECRET is not set"
    for bad in ("hunter2-plain-text", "whsec_c2hvcnQ=", "whsec_!!!!" + "A" * 40):
        problem = secret_problem("HOOK_SECRET", {"HOOK_SECRET": bad})
        assert problem is not None and "Standard Webhooks secret" in problem
        assert bad not in problem and "hunter2" not in problem
    assert secret_problem("NOT A NAME", ENV) is not None


# -- delivery -----------------------------------------------------------------


def test_matching_events_are_delivered_signed_as_stored_from_the_subscriptions_start(
    shop: App, applier: Applier, receiver: Receiver
) -> None:
    # Given an order published before any subscription existed
    order(shop, applier, "BEFORE", ship=True)
    subs = subscriptions(shop)
    orders = subs.add(f"{receiver.url}/orders", ["order.*"], "HOOK_SECRET")
    invoices = subs.add(f"{receiver.url}/invoices", ["invoice.*"], "HOOK_SECRET", id="billing")
    assert invoices.id == "billing" and orders.id.startswith("sub_")
    # When orders are placed and one shipped, and the relay delivers what is due
    order(shop, applier, "A", ship=True)
    order(shop, applier, "B")
    delivered = relay_for(shop).drain()
    # Then each subscription got the types it asked for, in order, and nothing from before
    assert receiver.types("/orders") == ["order.placed", "order.shipped", "order.placed"]
    assert receiver.types("/invoices") == ["invoice.created", "invoice.created"]
    assert delivered == 5
    assert [r.event["data"]["order_id"] for r in receiver.delivered("/orders")] == ["A", "A", "B"]
    # each request verifies, carries the event's id, and its body is the event as stored
    stored = stored_events(shop)
    for request in receiver.requests:
        assert request.verified
        assert request.headers["webhook-id"] == request.event["id"]
        assert request.body == stored[request.event["id"]]
        assert request.headers["content-type"] == "application/json"
        assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 60
        assert request.headers["webhook-signature"].startswith("v1,")
    # and the counts say so
    listed = {info.subscription.id: info for info in subs.list()}
    assert (listed[orders.id].subscription.state.delivered, listed[orders.id].pending) == (3, 0)
    assert listed["billing"].summary()["delivered"] == 2
    assert listed["billing"].dead == 0 and listed["billing"].summary()["last_error"] is None
    # a relay that finds nothing new delivers nothing again
    assert relay_for(shop).drain() == 0
    assert len(receiver.requests) == 5


def test_a_failing_event_holds_the_next_one_until_it_is_delivered(
    shop: App, applier: Applier, receiver: Receiver
) -> None:
    subs = subscriptions(shop)
    subs.add(receiver.url, ["order.*"], "HOOK_SECRET")
    # Given a receiver that answers 500 to the first three tries of order A's order.placed
    receiver.answer = lambda event, n: (
        500
        if (event["type"], event["data"]["order_id"]) == ("order.placed", "A") and n <= 3
        else 200
    )
    placed_a = order(shop, applier, "A", ship=True)
    order(shop, applier, "B")
    # When the relay delivers, with four tries an event
    relay_for(shop, policy=Policy(tries=4, first=0.05, most=0.2)).drain()
    # Then order.placed of A came four times with one id, and everything after it waited:
    # after the recovery, each event is received once more (the one that failed), in order
    sent = [(r.event["data"]["order_id"], r.type, r.status) for r in receiver.requests]
    assert sent == [
        ("A", "order.placed", 500),
        ("A", "order.placed", 500),
        ("A", "order.placed", 500),
        ("A", "order.placed", 200),
        ("A", "order.shipped", 200),
        ("B", "order.placed", 200),
    ]
    assert len({r.headers["webhook-id"] for r in receiver.requests[:4]}) == 1
    assert receiver.requests[0].event["subject"] == placed_a
    assert all(r.verified for r in receiver.requests)
    # each try signed anew; the retries waited the backoff (50, 100, then 200 ms, +-20%)
    (info,) = subs.list()
    assert info.dead == 0 and info.subscription.state.delivered == 3
    assert info.subscription.state.last_error is not None
    assert info.subscription.state.last_error["status"] == 500


def test_a_permanent_refusal_is_dead_lettered_at_once_and_the_next_goes_out(
    shop: App, applier: Applier, receiver: Receiver
) -> None:
    subs = subscriptions(shop)
    sub = subs.add(receiver.url, ["order.*"], "HOOK_SECRET")
    receiver.answer = lambda event, n: 422 if event["type"] == "order.placed" else 200
    order(shop, applier, "A", ship=True)
    relay_for(shop).drain()
    assert [(r.type, r.status) for r in receiver.requests] == [
        ("order.placed", 422),
        ("order.shipped", 200),
    ]
    (letter,) = subs.dead_letters(sub.id)
    assert (letter.type, letter.attempts, letter.status, letter.queued) == (
        "order.placed",
        1,
        422,
        False,
    )
    assert letter.event_id == receiver.requests[0].headers["webhook-id"]
    assert "answered 422" in letter.error and receiver.url not in letter.error
    assert letter.event == receiver.requests[0].event
    (info,) = subs.list()
    assert (info.dead, info.pending, info.subscription.state.dead) == (1, 0, 1)


def test_retries_run_out_into_a_dead_letter_and_redelivery_sends_them_again_in_order(
    shop: App, applier: Applier, receiver: Receiver
) -> None:
    subs = subscriptions(shop)
    sub = subs.add(receiver.url, ["order.placed"], "HOOK_SECRET")
    # Given a receiver that is down (503, then 429, ...) for orders A and B
    broken = {"A", "B"}
    receiver.answer = lambda event, n: (
        (503 if n % 2 else 429) if event["data"]["order_id"] in broken else 200
    )
    for name in ("A", "C", "B", "D"):
        order(shop, applier, name)
    began = time.monotonic()
    relay_for(shop).drain()
    # Then A and B were each tried 3 times, then dead-lettered; C and D went out between
    sent = [(r.event["data"]["order_id"], r.status) for r in receiver.requests]
    assert sent == [
        *[("A", s) for s in (503, 429, 503)],
        ("C", 200),
        *[("B", s) for s in (503, 429, 503)],
        ("D", 200),
    ]
    assert time.monotonic() - began < 3
    letters = subs.dead_letters(sub.id)
    assert [(x.event["data"]["order_id"], x.attempts, x.status) for x in letters] == [
        ("A", 3, 503),
        ("B", 3, 503),
    ]
    # When the receiver is fixed and they are redelivered, one named, then all
    broken.clear()
    with pytest.raises(InputError, match="no dead letter nope"):
        subs.redeliver(sub.id, ["nope", letters[0].event_id])
    assert not any(x.queued for x in subs.dead_letters(sub.id))  # nothing queued
    queued = subs.redeliver(sub.id, [letters[1].event_id])
    assert [x.event_id for x in queued] == [letters[1].event_id]
    assert subs.redeliver(sub.id, all=True)[0].event_id == letters[0].event_id
    # (queued in the order asked: B, then A)
    assert [(x.event_id, x.queued) for x in subs.dead_letters(sub.id)] == [
        (letters[1].event_id, True),
        (letters[0].event_id, True),
    ]
    receiver.requests.clear()
    relay_for(shop).drain()
    # Then they went out again with their ids, signed, and the dead letters are gone
    assert [r.headers["webhook-id"] for r in receiver.requests] == [
        letters[1].event_id,
        letters[0].event_id,
    ]
    assert all(r.verified and r.status == 200 for r in receiver.requests)
    assert subs.dead_letters(sub.id) == []
    state = subs.get(sub.id).subscription.state
    assert state.redelivered == state.redeliver == 2
    assert (state.delivered, state.dead) == (4, 2)


def test_a_dead_letter_that_fails_again_stays_dead(
    shop: App, applier: Applier, receiver: Receiver
) -> None:
    subs = subscriptions(shop)
    sub = subs.add(receiver.url, ["order.*"], "HOOK_SECRET")
    receiver.answer = lambda event, n: 400
    order(shop, applier, "A")
    relay_for(shop).drain()
    subs.redeliver(sub.id, all=True)
    relay_for(shop).drain()
    (letter,) = subs.dead_letters(sub.id)
    assert (letter.queued, letter.attempts, letter.status) == (False, 1, 400)
    assert len(receiver.requests) == 2


def test_a_relay_that_dies_before_acknowledging_is_followed_by_one_that_delivers_again(
    shop: App, applier: Applier, receiver: Receiver
) -> None:
    subs = subscriptions(shop)
    sub = subs.add(receiver.url, ["order.*"], "HOOK_SECRET")
    order(shop, applier, "A")
    # Given a relay that delivers the event and is killed before it acknowledges it
    settings = shop.settings

    def crashing() -> None:
        app = bootstrap(settings)
        relay_for(app, lease_ttl=1.0, crash_at=frozenset({CRASH_BEFORE_ACK})).drain()

    child = multiprocessing.get_context("fork").Process(target=crashing)
    child.start()
    child.join(20)
    assert child.exitcode == -signal.SIGKILL
    assert receiver.types() == ["order.placed"]
    # read, never acknowledged: order.placed, and invoice.created read with it
    assert subs.get(sub.id).pending == 1  # one entry: the events of one commit
    # When its lease has lapsed and another relay runs
    store = SubscriptionStore(shop.redis, shop.keys)
    lapsed = time.monotonic() + 5
    while (found := store.get(sub.id)) is not None and found.state.leased(time.time()):
        assert time.monotonic() < lapsed, "the dead relay's lease never lapsed"
        time.sleep(0.05)
    assert relay_for(shop).drain() == 1
    # Then the event went out again, with the same id, and is acknowledged now
    first, again = receiver.requests
    assert first.headers["webhook-id"] == again.headers["webhook-id"]
    assert again.verified and first.body == again.body
    assert subs.get(sub.id).pending == 0


def test_two_relays_never_hold_one_subscription_at_once(shop: App, receiver: Receiver) -> None:
    subs = subscriptions(shop)
    sub = subs.add(receiver.url, ["order.*"], "HOOK_SECRET")
    one, two = relay_for(shop, relay_id="one"), relay_for(shop, relay_id="two")
    try:
        assert one.sync() and two.sync()
        assert list(one.lanes) == [sub.id] and two.lanes == {}
        assert subs.get(sub.id).subscription.state.owner == "one"
        one.close()  # gives its lease back
        assert subs.get(sub.id).subscription.state.owner is None
        assert two.sync() and list(two.lanes) == [sub.id]
        assert subs.get(sub.id).subscription.state.owner == "two"
    finally:
        one.close()
        two.close()


def test_a_running_relay_delivers_until_stopped_and_stops_a_removed_subscription(
    shop: App, applier: Applier, receiver: Receiver
) -> None:
    subs = subscriptions(shop)
    sub = subs.add(receiver.url, ["order.*"], "HOOK_SECRET")
    relay = relay_for(shop)
    stop = threading.Event()
    thread = threading.Thread(target=relay.run, args=(stop.is_set,), daemon=True)
    thread.start()
    try:
        order(shop, applier, "A", ship=True)
        deadline = time.monotonic() + 10
        while len(receiver.delivered()) < 2:
            assert time.monotonic() < deadline, "the running relay delivered nothing"
            time.sleep(0.02)
        # When the subscription is removed, its lane stops and nothing more goes out
        subs.remove(sub.id)
        deadline = time.monotonic() + 5
        while relay.lanes:
            assert time.monotonic() < deadline, "the removed subscription's lane went on"
            time.sleep(0.02)
        order(shop, applier, "B")
        time.sleep(0.2)
        assert receiver.types() == ["order.placed", "order.shipped"]
    finally:
        stop.set()
        thread.join(5)
    assert not thread.is_alive()
    # its group and dead letters are gone, and the removed subscription is not written back
    assert group_of(sub.id) not in PublishedStreams(shop.redis, shop.keys).groups()
    assert shop.redis.hget(shop.keys.subscriptions, sub.id) is None
    assert not shop.redis.exists(shop.keys.subscription_dead(sub.id))


# -- refusals -----------------------------------------------------------------


def test_private_addresses_are_refused_without_the_allowance(
    shop: App, applier: Applier, receiver: Receiver
) -> None:
    # Without WEBHOOK_ALLOW_PRIVATE, `add` refuses a loopback address (by number or name)
    strict = subscriptions(shop, {"HOOK_SECRET": SECRET})
    for url in (receiver.url, receiver.url.replace("127.0.0.1", "localhost"), "http://10.1.2.3/"):
        with pytest.raises(InputError, match="address; refused"):
            strict.add(url, ["order.*"], "HOOK_SECRET")
    assert shop.redis.exists(shop.keys.subscriptions) == 0
    assert PublishedStreams(shop.redis, shop.keys).groups() == []
    # and a relay without it refuses to connect: the event is dead-lettered, never sent
    sub = subscriptions(shop).add(receiver.url, ["order.*"], "HOOK_SECRET")
    order(shop, applier, "A")
    relay_for(shop, allow_private=False).drain()
    assert receiver.requests == []
    (letter,) = subscriptions(shop).dead_letters(sub.id)
    assert letter.attempts == 1 and "loopback address; refused" in letter.error


def test_an_unusable_secret_holds_the_subscription_until_it_is_set(
    shop: App, applier: Applier, receiver: Receiver
) -> None:
    subs = subscriptions(shop)
    sub = subs.add(receiver.url, ["order.*"], "HOOK_SECRET")
    order(shop, applier, "A")
    # A relay whose environment lacks the variable sends nothing and consumes nothing
    assert relay_for(shop, environ={"HOOK_SECRET": "not-a-secret"}).drain() == 0
    assert relay_for(shop, environ={}).drain() == 0
    assert receiver.requests == []
    info = subs.get(sub.id)
    assert info.pending == 1 and info.dead == 0  # one entry: the events of one commit
    assert info.subscription.state.last_error is not None
    assert "HOOK_SECRET is not set" in info.subscription.state.last_error["error"]
    # Once it has it, the events go out
    assert relay_for(shop).drain() == 1
    assert receiver.types() == ["order.placed"]


def test_the_secret_is_never_written_to_redis(
    shop: App, applier: Applier, receiver: Receiver
) -> None:
    subs = subscriptions(shop)
    sub = subs.add(receiver.url, ["order.*", "invoice.*"], "HOOK_SECRET")
    receiver.answer = lambda event, n: 400 if event["type"] == "invoice.created" else 200
    order(shop, applier, "A", ship=True)
    relay_for(shop).drain()
    subs.redeliver(sub.id, all=True)
    relay_for(shop).drain()
    assert len(receiver.delivered()) == 2 and len(subs.dead_letters(sub.id)) == 1
    # every value of every key, whatever its type
    client = shop.redis
    dumped: list[bytes] = []
    for key in client.scan_iter("*"):
        kind = client.type(key)
        value: Any
        if kind == b"string":
            value = client.get(key)
        elif kind == b"hash":
            value = client.hgetall(key)
        elif kind == b"stream":
            value = client.xrange(key)
            value = [value, client.xinfo_groups(key)]
        elif kind == b"list":
            value = client.lrange(key, 0, -1)
        elif kind == b"set":
            value = client.smembers(key)
        elif kind == b"zset":
            value = client.zrange(key, 0, -1, withscores=True)
        else:
            value = b""
        dumped.append(key + b"=" + repr(value).encode())
    everything = b"\n".join(dumped)
    assert b"HOOK_SECRET" in everything  # the variable's name is there...
    assert SECRET.encode() not in everything  # ...its value is not
    assert SECRET.removeprefix("whsec_").encode() not in everything


def test_bad_patterns_and_urls_are_refused_and_nothing_is_written(shop: App) -> None:
    subs = subscriptions(shop)
    for url, events, message in [
        ("ftp://example.com/x", ["order.*"], "http or https"),
        ("https://user:pw@example.com/x", ["order.*"], "credentials"),
        ("https://example.com/x", ["Order.*"], "a pattern is an event type"),
        ("https://example.com/x", ["order.[ab]"], "a pattern is an event type"),
        ("https://example.com/x", [], "at least one"),
    ]:
        with pytest.raises(InputError, match=message):
            subs.add(url, events, "HOOK_SECRET")
    with pytest.raises(InputError, match="subscription id"):
        subs.add("https://example.com/x", ["order.*"], "HOOK_SECRET", id="no spaces")
    assert shop.redis.exists(shop.keys.subscriptions) == 0
    assert PublishedStreams(shop.redis, shop.keys).groups() == []
    subs.add("https://example.com/x", ["order.*"], "HOOK_SECRET", id="taken")
    with pytest.raises(InputError, match="exists already"):
        subs.add("https://example.com/y", ["order.*"], "HOOK_SECRET", id="taken")
    assert subs.get("taken").subscription.url == "https://example.com/x"
    with pytest.raises(InputError, match="no subscription"):
        subs.remove("unknown")


def test_the_worker_configuration_is_read_from_the_channel_settings() -> None:
    config = RelayConfig.from_env(
        {
            "WEBHOOK_SUBSCRIPTION_TRIES": "4",
            "WEBHOOK_SUBSCRIPTION_BACKOFF": "0.5",
            "WEBHOOK_SUBSCRIPTION_MAX_BACKOFF": "30",
            "WEBHOOK_SUBSCRIPTION_TIMEOUT": "5",
            "WEBHOOK_ALLOW_PRIVATE": "1",
        }
    )
    assert config.policy == Policy(tries=4, first=0.5, most=30.0)
    assert (config.timeout, config.allow_private) == (5.0, True)
    defaults = RelayConfig.from_env({})
    assert defaults.policy == Policy(tries=10, first=1.0, most=600.0)
    assert (defaults.timeout, defaults.allow_private) == (10.0, False)
    from orchestrator.core.errors import ConfigurationError

    for name, value in [
        ("WEBHOOK_SUBSCRIPTION_TRIES", "0"),
        ("WEBHOOK_SUBSCRIPTION_TRIES", "2.5"),
        ("WEBHOOK_SUBSCRIPTION_TIMEOUT", "soon"),
        ("WEBHOOK_ALLOW_PRIVATE", "maybe"),
    ]:
        with pytest.raises(ConfigurationError, match=name):
            RelayConfig.from_env({name: value})


def test_a_lane_whose_group_was_deleted_makes_it_again(
    shop: App, caplog: pytest.LogCaptureFixture
) -> None:
    """(Removed meanwhile, the subscription's lane would just end: the next sync drops it.)"""
    subs = subscriptions(shop)
    sub = subs.add("https://example.com/x", ["order.*"], "HOOK_SECRET")
    streams = PublishedStreams(shop.redis, shop.keys)
    streams.leave(group_of(sub.id))
    relay = relay_for(shop)
    try:
        relay.sync()
        lane = relay.lanes[sub.id]
        lane.thread.join(5)
        assert lane.done
    finally:
        relay.close()
    assert group_of(sub.id) in streams.groups()
    assert [r.levelname for r in caplog.records if "group was missing" in r.getMessage()] == [
        "WARNING"
    ]
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
