"""The webhook relay: published events POSTed to each subscription's URL, signed per the
Standard Webhooks specification (https://www.standardwebhooks.com).

Each request carries

    webhook-id           the event's id (stable: a retry, a redelivery, an event applied
                         again after a crash all carry the same; receivers deduplicate by it)
    webhook-timestamp    Unix seconds of this try
    webhook-signature    "v1," + base64(HMAC-SHA256(key, id + "." + timestamp + "." + body))

and the body is the CloudEvent JSON as published (Content-Type: application/json). The
key is the subscription's secret, "whsec_" + base64 of 24 to 64 random bytes, read from
the environment variable the subscription names (`secret_env`), in the delivering
process only: the secret is never stored, logged or shown. A receiver checks a request
with `standardwebhooks.Webhook(secret).verify(body, headers)`.

Delivery is at least once, in order per subscription: each subscription is a *lane*,
a thread that reads its consumer group (store.subscriptions; `webhook:<id>` on the
published streams) and delivers one event at a time; the next waits until the current
one is delivered or dead-lettered. An event is acknowledged only then, so one read and
not acknowledged (the process died) is delivered again when its lane starts anew. A
relay holds a lease on each subscription it delivers (kept in its state, renewed by
`sync` every second), so that relays in several workers never deliver one subscription
at once; a lease left by a dead relay lapses after `lease_ttl`. A lane starts an
attempt only while its lease has `guard` seconds left, more than a request takes.

What an answer means (`decide`, notifiers.http's reading of a status):

    2xx                         delivered
    408, 429, 5xx               tried again (after Retry-After, when it is longer)
    timeout, connection error,
    TLS error, name not found   tried again
    other 4xx, 3xx              dead-lettered at once (redirects are not followed)
    a private address           dead-lettered at once (unless WEBHOOK_ALLOW_PRIVATE=1)

Retries back off exponentially with jitter: `first` seconds (1) doubling up to `most`
(10 minutes), each delay drawn within +-20%; after `tries` tries (10, about 8.5 minutes
in all) the event is dead-lettered and the lane goes on. Each request has `timeout`
seconds for the whole of it (10), `connect_timeout` to connect (3), and at most
READ_LIMIT bytes of an answer are read. Requests go through the webhook channel's
transport (notifiers.webhook_transport): no redirects, and only to public addresses
(notifiers.webhook_guard, DNS rebinding included) unless WEBHOOK_ALLOW_PRIVATE=1.

    WEBHOOK_SUBSCRIPTION_TRIES         tries before an event is dead-lettered (default 10)
    WEBHOOK_SUBSCRIPTION_BACKOFF       seconds before the first retry (default 1)
    WEBHOOK_SUBSCRIPTION_MAX_BACKOFF   the longest wait between tries (default 600)
    WEBHOOK_SUBSCRIPTION_TIMEOUT       seconds for a whole request (default 10)
    WEBHOOK_ALLOW_PRIVATE              1: allow loopback and private addresses

A subscription whose secret variable is unset or malformed in the delivering process
is held (nothing read, its events wait) and its last error says so; it is looked at
again every `secret_retry` seconds. Redelivery (`redeliver`): the dead letters queued
for it are delivered, in order, before the subscription's next new event; one that
fails again goes back to the dead letters.

The decision parts (`backoff`, `decide`, `secret_problem`, `signed_headers`) are pure;
`Sender` does the HTTP; `Relay.run` is the loop of a long-running process and
`Relay.drain` delivers what is due now, for a burst.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import logging
import os
import random
import re
import secrets
import socket
import ssl
import threading
import time
import urllib.error
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

import redis
from standardwebhooks import Webhook

from notifiers.errors import DeliveryError, PermanentError
from notifiers.http import Verdict, retry_after, verdict
from notifiers.webhook import check_url
from notifiers.webhook_guard import ALLOW_VARIABLE
from notifiers.webhook_transport import Deadline, DeadlineRequest, build_opener
from orchestrator.core.errors import ConfigurationError
from orchestrator.runtime.faults import crash_point
from orchestrator.store.keys import Keys
from orchestrator.store.published import Published, PublishedStreams, matches
from orchestrator.store.subscriptions import (
    CONSUMER,
    DeadLetter,
    State,
    Subscription,
    SubscriptionStore,
)

log = logging.getLogger("orchestrator.runtime.relay")

USER_AGENT = "orchestrator-webhooks/1"
READ_LIMIT = 64 * 1024  # bytes of an answer read at most
SECRET_PREFIX = "whsec_"
SECRET_BYTES = (24, 64)  # a key's length, as the Standard Webhooks spec recommends
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
HEADER_SAFE = re.compile(r"[\x21-\x7e]{1,256}")
MAX_ERROR = 300  # characters of an error kept
RESTART_PAUSE = 5.0  # seconds before a lane that stopped on an error starts again
CRASH_BEFORE_ACK = "relay_before_ack"  # crash point (tests): delivered, not acknowledged

# -- the pure parts -----------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    """How often, and how far apart, an event is tried."""

    tries: int = 10
    first: float = 1.0  # seconds before the first retry
    most: float = 600.0  # the longest wait
    jitter: float = 0.2  # each wait drawn within +-20%

    def __post_init__(self) -> None:
        if self.tries < 1 or self.first <= 0 or self.most < self.first:
            raise ConfigurationError(
                f"a retry policy needs tries >= 1 and 0 < first <= most, not {self}"
            )
        if not 0 <= self.jitter < 1:
            raise ConfigurationError(f"jitter must be from 0 to below 1, not {self.jitter}")


def backoff(policy: Policy, tries: int, rand: float) -> float:
    """Seconds to wait after `tries` failed tries (1: after the first): `first` doubling
    with each, at most `most`, spread by the jitter (`rand` drawn from [0, 1))."""
    base = min(policy.most, policy.first * 2.0 ** min(max(tries - 1, 0), 60))
    spread = 1.0 - policy.jitter + 2.0 * policy.jitter * rand
    return min(policy.most, base * spread)


@dataclass(frozen=True)
class Outcome:
    """What one try came to: the receiver's status, or why there is none."""

    status: int | None = None
    error: str = ""  # for people: names the host, never the path, the query or a secret
    code: str = ""  # timeout, connection, tls, private-address, bad-url, secret...
    retry_after: float | None = None  # seconds the receiver asked for
    permanent: bool = False  # no status, and no retry can help

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass(frozen=True)
class Decision:
    action: Literal["delivered", "retry", "dead"]
    delay: float = 0.0  # seconds before the next try (retry)


def decide(policy: Policy, outcome: Outcome, tries: int, rand: float) -> Decision:
    """What to do after `tries` tries of which `outcome` is the last."""
    if outcome.status is not None:
        found = verdict(outcome.status)
        if found is Verdict.ACCEPTED:
            return Decision("delivered")
        if not found.retryable:  # 3xx, 4xx but 408 and 429
            return Decision("dead")
    elif outcome.permanent:
        return Decision("dead")
    if tries >= policy.tries:
        return Decision("dead")
    delay = backoff(policy, tries, rand)
    if outcome.retry_after is not None:
        delay = max(delay, min(outcome.retry_after, policy.most))
    return Decision("retry", delay)


def new_secret() -> str:
    """A fresh signing secret: "whsec_" and the base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def _key(value: str) -> bytes | None:
    """The key a secret stands for, or None when it is not a Standard Webhooks secret."""
    if not value.startswith(SECRET_PREFIX):
        return None
    text = value[len(SECRET_PREFIX) :]
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except ValueError:
        return None
    return key if SECRET_BYTES[0] <= len(key) <= SECRET_BYTES[1] else None


def secret_problem(name: str, environ: Mapping[str, str]) -> str | None:
    """What is wrong with the secret variable `name` in `environ`, or None. The message
    names the variable, never its value."""
    if not isinstance(name, str) or not ENV_NAME.fullmatch(name):
        return f"{name!r} is not an environment variable name (letters, digits, '_')"
    value = environ.get(name)
    if not value:
        return f"the secret variable {name} is not set"
    if _key(str(value)) is None:
        return (
            f"the secret variable {name} does not hold a Standard Webhooks secret ('whsec_' "
            f"and the base64 of {SECRET_BYTES[0]} to {SECRET_BYTES[1]} random bytes; "
            "`orchestrator subscriptions new-secret` makes one)"
        )
    return None


def signed_headers(signer: Webhook, event_id: str, body: bytes, now: float) -> dict[str, str]:
    """The request's headers, signed for `now`."""
    moment = datetime.fromtimestamp(now, UTC)
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "webhook-id": event_id,
        "webhook-timestamp": str(int(now)),
        "webhook-signature": signer.sign(event_id, moment, body),
    }


def event_id_of(item: Published) -> str:
    """The event's id, as webhook-id; its stream position if it has none fit for a header."""
    found = item.id
    return found if HEADER_SAFE.fullmatch(found) else f"{item.partition}-{item.entry_id}"


def body_of(item: Published) -> bytes:
    """The CloudEvent JSON as published, the bytes stored (orchestrator.runtime.publisher)."""
    return item.raw or json.dumps(item.event, separators=(",", ":")).encode()


# -- HTTP ---------------------------------------------------------------------


class Sender:
    """POSTs through the webhook channel's transport: a deadline for the whole request,
    no redirects, public addresses only unless `allow_private`."""

    def __init__(
        self,
        timeout: float = 10.0,
        connect_timeout: float = 3.0,
        *,
        allow_private: bool = False,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.timeout = timeout
        self.connect_timeout = min(connect_timeout, timeout)
        self._opener = build_opener(ssl_context, allow_private=allow_private)

    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Outcome:
        try:
            host = check_url(url)
        except PermanentError as exc:
            return Outcome(error=exc.reason, code="bad-url", permanent=True)
        deadline = Deadline(self.timeout, self.connect_timeout)
        request = DeadlineRequest(url, deadline, data=body, headers=dict(headers), method="POST")
        try:
            try:
                response = self._opener.open(request, timeout=self.timeout)
            except urllib.error.HTTPError as exc:
                with exc:
                    _drain(exc)
                    return Outcome(
                        status=exc.code,
                        error=f"webhook {host} answered {exc.code}",
                        retry_after=retry_after(exc.headers.get("Retry-After")),
                    )
            with response:
                _drain(response)
                return Outcome(status=response.status)
        except urllib.error.URLError as exc:  # not all of it went out
            return _unreachable(host, exc.reason, deadline.expired)
        except DeliveryError as exc:  # the guard: a private address, or a name not found
            return Outcome(
                error=exc.reason, code=exc.code or "", permanent=isinstance(exc, PermanentError)
            )
        except (OSError, http.client.HTTPException) as exc:  # sent; no answer, or a garbled one
            if isinstance(exc, TimeoutError) or deadline.expired:
                return Outcome(error=f"webhook {host} did not answer in time", code="timeout")
            what = getattr(exc, "strerror", None) or type(exc).__name__
            return Outcome(error=f"webhook {host} gave no answer ({what})", code="connection")
        except ValueError as exc:  # a header urllib refuses
            return Outcome(error=f"webhook {host}: {exc}"[:MAX_ERROR], code="bad-request")
        finally:
            deadline.disarm()


def _drain(response: Any) -> None:
    """Read a little of the answer, never more than READ_LIMIT: the status is the answer."""
    with contextlib.suppress(OSError, http.client.HTTPException, ValueError):
        response.read(READ_LIMIT)


def _unreachable(host: str, reason: object, expired: bool) -> Outcome:
    if isinstance(reason, TimeoutError) or expired:
        return Outcome(error=f"webhook {host} was not reached in time", code="timeout")
    if isinstance(reason, ssl.SSLCertVerificationError):
        return Outcome(
            error=f"webhook {host}: TLS certificate not trusted ({reason.verify_message})",
            code="tls",
        )
    if isinstance(reason, DeliveryError):
        return Outcome(
            error=reason.reason,
            code=reason.code or "",
            permanent=isinstance(reason, PermanentError),
        )
    what = reason if isinstance(reason, str) else getattr(reason, "strerror", None)
    return Outcome(
        error=f"webhook {host} unreachable ({what or type(reason).__name__})", code="connection"
    )


# -- configuration ------------------------------------------------------------


@dataclass(frozen=True)
class RelayConfig:
    policy: Policy = field(default_factory=Policy)
    timeout: float = 10.0  # seconds for a whole request
    connect_timeout: float = 3.0
    allow_private: bool = False
    lease_ttl: float = 30.0  # seconds a subscription's lease lives unrenewed
    sync_every: float = 1.0  # seconds between looks at the subscriptions
    block: float = 1.0  # seconds a lane waits for new events in one read
    batch: int = 50  # events a lane reads at once (per partition)
    secret_retry: float = 30.0  # seconds before an unusable secret is looked at again

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RelayConfig:
        """From the channel settings (WEBHOOK_SUBSCRIPTION_*, WEBHOOK_ALLOW_PRIVATE)."""
        tries = _number(env, "WEBHOOK_SUBSCRIPTION_TRIES", 10, 1, 100, whole=True)
        first = _number(env, "WEBHOOK_SUBSCRIPTION_BACKOFF", 1.0, 0.001, 86400.0)
        most = _number(env, "WEBHOOK_SUBSCRIPTION_MAX_BACKOFF", 600.0, 0.001, 86400.0)
        if most < first:
            raise ConfigurationError(
                "WEBHOOK_SUBSCRIPTION_MAX_BACKOFF must not be below WEBHOOK_SUBSCRIPTION_BACKOFF"
            )
        timeout = _number(env, "WEBHOOK_SUBSCRIPTION_TIMEOUT", 10.0, 0.1, 300.0)
        return cls(
            policy=Policy(tries=int(tries), first=first, most=most),
            timeout=timeout,
            connect_timeout=min(3.0, timeout),
            allow_private=allow_private(env),
            lease_ttl=max(30.0, 3 * timeout),
        )


def allow_private(env: Mapping[str, str]) -> bool:
    """WEBHOOK_ALLOW_PRIVATE, the webhook channel's allowance, read as the channel does."""
    text = str(env.get(ALLOW_VARIABLE, "")).strip().lower()
    if text in ("", "0", "false", "no", "off"):
        return False
    if text in ("1", "true", "yes", "on"):
        return True
    raise ConfigurationError(f"{ALLOW_VARIABLE} must be 1 or 0, not {text!r}")


def _number(
    env: Mapping[str, str],
    name: str,
    default: float,
    least: float,
    most: float,
    whole: bool = False,
) -> float:
    text = str(env.get(name, "")).strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not least <= value <= most or (whole and not value.is_integer()):
        what = "a whole number" if whole else "a number of seconds"
        raise ConfigurationError(f"{name} must be {what} from {least:g} to {most:g}, not {text!r}")
    return value


# -- lanes --------------------------------------------------------------------


@dataclass(frozen=True)
class Final:
    """How an event's tries ended: delivered, or to be dead-lettered."""

    delivered: bool
    tries: int
    outcome: Outcome


@dataclass(frozen=True)
class Report:
    """What a lane did since it last reported, for its subscription's state."""

    delivered: int = 0
    dead: int = 0
    last_delivered: float | None = None
    last_error: dict[str, Any] | None = None
    redelivered: int = 0

    def applied_to(self, state: State) -> State:
        return replace(
            state,
            delivered=state.delivered + self.delivered,
            dead=state.dead + self.dead,
            last_delivered=max(
                (t for t in (state.last_delivered, self.last_delivered) if t is not None),
                default=None,
            ),
            last_error=self.last_error or state.last_error,
            redelivered=max(state.redelivered, self.redelivered),
        )


class Lane:
    """One subscription's deliveries, one event at a time, on a thread of its own."""

    def __init__(self, relay: Relay, subscription: Subscription) -> None:
        self.relay = relay
        self.sub = subscription
        self.until = subscription.state.until  # the lease, as the last sync left it
        self.redeliver = subscription.state.redeliver  # requests made...
        self.redelivered = subscription.state.redelivered  # ...and handled
        self.burst = relay.burst
        self.done = False
        self.ended = 0.0
        self._lock = threading.Lock()
        self._pending = Report(redelivered=self.redelivered)
        self._stop = threading.Event()
        self._warned = False
        self.thread = threading.Thread(target=self._main, name=f"relay-{subscription.id}")
        self.thread.daemon = True  # a request in flight never holds the process's exit

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def report(self) -> Report:
        with self._lock:
            return self._pending

    def reported(self, report: Report) -> None:
        """`report` is written: only what came after it is left to report."""
        with self._lock:
            now = self._pending
            self._pending = Report(
                delivered=now.delivered - report.delivered,
                dead=now.dead - report.dead,
                last_delivered=None
                if now.last_delivered == report.last_delivered
                else now.last_delivered,
                last_error=None if now.last_error is report.last_error else now.last_error,
                redelivered=now.redelivered,
            )

    def _note(
        self,
        *,
        delivered: bool = False,
        dead: bool = False,
        error: dict[str, Any] | None = None,
        redelivered: int | None = None,
    ) -> None:
        with self._lock:
            now = self._pending
            self._pending = Report(
                delivered=now.delivered + int(delivered),
                dead=now.dead + int(dead),
                last_delivered=time.time() if delivered else now.last_delivered,
                last_error=error or now.last_error,
                redelivered=now.redelivered if redelivered is None else redelivered,
            )
        if delivered:
            self.relay.count_delivered()

    # -- the thread -----------------------------------------------------------

    def _main(self) -> None:
        try:
            self._run()
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                log.error("subscription %s: delivery stopped: %s", self.sub.id, exc)
            else:  # removed meanwhile (sync drops the lane), or its group was deleted
                self._regroup()
        except Exception as exc:
            log.error(
                "subscription %s: delivery stopped by %s: %s; starting again in %gs",
                self.sub.id,
                type(exc).__name__,
                str(exc)[:MAX_ERROR],
                RESTART_PAUSE,
            )
        finally:
            self.ended = time.monotonic()
            self.done = True

    def _regroup(self) -> None:
        """Its group is missing (deleted by hand?) while it still exists: made again,
        reading from now on (what it missed is gone with the group)."""
        with contextlib.suppress(redis.RedisError):
            if self.relay.store.get(self.sub.id) is not None:
                log.warning(
                    "subscription %s: its group was missing; made again, from now on", self.sub.id
                )
                self.relay.streams.join(self.sub.group, "$")

    def _run(self) -> None:
        signer = self._signer()
        if signer is None:
            return
        relay, group = self.relay, self.sub.group
        config = relay.config
        pending = True  # first, what was read before and never acknowledged
        buffer: deque[Published] = deque()
        while not self.stopping:
            if self.redeliver > self.redelivered:
                if not self._redeliver(signer):
                    return
                continue
            if not buffer:
                if pending:
                    found = relay.streams.take(group, CONSUMER, config.batch, 0, pending=True)
                    pending = bool(found)
                else:
                    block = 1 if self.burst is not None else max(1, int(config.block * 1000))
                    found = relay.streams.take(group, CONSUMER, config.batch, block)
                    if not found and self.burst is not None:
                        return
                buffer.extend(found)
                continue
            if not self._matches(buffer[0]):  # other types (or trimmed): acknowledged unseen
                skipped = []
                while buffer and not self._matches(buffer[0]):
                    skipped.append(buffer.popleft())
                relay.streams.ack(group, skipped)
                continue
            item = buffer[0]
            event_id, body = event_id_of(item), body_of(item)
            final = self._deliver(signer, event_id, item.type, body)
            if final is None:
                return  # stopped: left unacknowledged, delivered again later
            if not final.delivered:
                self._bury(event_id, item.type, item.subject, body, final)
            crash_point(CRASH_BEFORE_ACK, relay.crash_at)
            relay.streams.ack(group, [item])
            buffer.popleft()

    def _matches(self, item: Published) -> bool:
        return bool(item.event) and matches(self.sub.patterns, item.type)

    def _signer(self) -> Webhook | None:
        """The signer from the secret variable; while it is unusable, the lane waits."""
        name = self.sub.secret_env
        while True:
            problem = secret_problem(name, self.relay.environ)
            if problem is None:
                return Webhook(str(self.relay.environ[name]))
            if not self._warned:
                log.warning("subscription %s: %s; its events wait", self.sub.id, problem)
                self._warned = True
            self._note(error={"at": time.time(), "code": "secret", "error": problem})
            if self.burst is not None or self._stop.wait(self.relay.config.secret_retry):
                return None

    def _held(self) -> bool:
        return self.until - time.time() >= self.relay.guard

    def _deliver(self, signer: Webhook, event_id: str, kind: str, body: bytes) -> Final | None:
        """Try until delivered or dead; None when stopped first (or, in a burst, when the
        next try is further away than the burst waits)."""
        relay = self.relay
        tries = 0
        while True:
            if self.stopping or not self._held():
                return None
            tries += 1
            headers = signed_headers(signer, event_id, body, time.time())
            outcome = relay.sender.post(self.sub.url, body, headers)
            decision = decide(relay.config.policy, outcome, tries, relay.rand())
            if decision.action == "delivered":
                self._note(delivered=True)
                return Final(True, tries, outcome)
            self._note(
                error={
                    "at": time.time(),
                    "event": event_id,
                    "type": kind,
                    "status": outcome.status,
                    "code": outcome.code,
                    "error": outcome.error[:MAX_ERROR],
                    "tries": tries,
                }
            )
            if decision.action == "dead":
                log.warning(
                    "subscription %s: event %s dead-lettered after %d tries: %s",
                    self.sub.id,
                    event_id,
                    tries,
                    outcome.error[:MAX_ERROR],
                )
                return Final(False, tries, outcome)
            if self.burst is not None and decision.delay > self.burst:
                return None
            if self._stop.wait(decision.delay):
                return None

    def _bury(
        self, event_id: str, kind: str, subject: str, body: bytes, final: Final, replacing: str = ""
    ) -> None:
        outcome = final.outcome
        fields = {
            "e": body.decode("utf-8", "replace"),
            "id": event_id,
            "type": kind,
            "subject": subject,
            "attempts": str(final.tries),
            "status": "" if outcome.status is None else str(outcome.status),
            "error": outcome.error[:MAX_ERROR],
            "at": f"{time.time():.3f}",
        }
        if self.relay.store.bury(self.sub.id, fields, replacing) is not None:
            self._note(dead=True)

    def _redeliver(self, signer: Webhook) -> bool:
        """Deliver the dead letters queued for redelivery, in order; False if stopped."""
        wanted, store, sid = self.redeliver, self.relay.store, self.sub.id
        last = store.last_dead(sid)
        letters = store.scan_dead(sid, "-", last) if last is not None else iter(())
        for letter in letters:
            if self.stopping:
                return False
            if letter.queued and not self._redeliver_one(signer, letter):
                return False
        self.redelivered = wanted
        self._note(redelivered=wanted)
        return True

    def _redeliver_one(self, signer: Webhook, letter: DeadLetter) -> bool:
        body = letter.body.encode()
        final = self._deliver(signer, letter.event_id or letter.entry, letter.type, body)
        if final is None:
            return False
        if final.delivered:
            self.relay.store.forget(self.sub.id, letter.entry)
        else:
            self._bury(letter.event_id, letter.type, letter.subject, body, final, letter.entry)
        return True


# -- the relay ----------------------------------------------------------------


class Relay:
    """The lanes of the subscriptions this relay holds, kept in step with Redis by `sync`."""

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        *,
        environ: Mapping[str, str],
        config: RelayConfig | None = None,
        relay_id: str | None = None,
        crash_at: frozenset[str] = frozenset(),
        rand: Callable[[], float] = random.random,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.config = config or RelayConfig()
        self.store = SubscriptionStore(client, keys)
        self.streams: PublishedStreams = self.store.streams
        self.environ = environ  # where the secrets are read (by the variables' names)
        self.id = relay_id or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.crash_at = crash_at
        self.rand = rand
        self.sender = Sender(
            self.config.timeout,
            self.config.connect_timeout,
            allow_private=self.config.allow_private,
            ssl_context=ssl_context,
        )
        # an attempt starts only with this much of the lease left: more than a request takes
        self.guard = min(self.config.timeout + 1.0, self.config.lease_ttl / 3)
        self.lanes: dict[str, Lane] = {}
        self.burst: float | None = None  # in a burst: the longest retry wait it sits out
        self.finished: set[str] = set()  # in a burst: subscriptions done with
        self.closing = False
        self.delivered = 0  # events delivered by this relay
        self._count = threading.Lock()

    def count_delivered(self) -> None:
        with self._count:
            self.delivered += 1

    def _wanted(self, sid: str) -> bool:
        """Whether this relay wants to hold subscription `sid` now."""
        return not self.closing and sid not in self.finished

    def sync(self) -> bool:
        """Take, renew or give back leases, write what the lanes did, and start or stop
        lanes to match; False when another writer came first (tried again next time)."""
        if not self.lanes and not self.store.any():
            return True  # no subscription: nothing to hold (one HLEN a second)
        now = time.time()
        ttl = self.config.lease_ttl
        for sid, ended in list(self.lanes.items()):
            if not ended.done:
                continue
            if self.burst is not None:
                self.finished.add(sid)  # a burst's lane ends when nothing is due
            elif time.monotonic() - ended.ended >= RESTART_PAUSE:
                del self.lanes[sid]  # it stopped on an error: a new one starts
        reports = {sid: each.report() for sid, each in self.lanes.items()}

        def change(found: dict[str, Subscription]) -> dict[str, Subscription]:
            changed: dict[str, Subscription] = {}
            for sid, doc in found.items():
                state = doc.state
                new = reports[sid].applied_to(state) if sid in reports else state
                holder = state.leased(now)
                if holder in (None, self.id):
                    if self._wanted(sid):
                        if holder != self.id or state.until - now < ttl * 2 / 3:
                            new = replace(new, owner=self.id, until=now + ttl)
                    elif state.owner == self.id:
                        new = replace(new, owner=None, until=0.0)
                if new != state:
                    changed[sid] = replace(doc, state=new)
            return changed

        result = self.store.transact(change)
        if result is None:
            return False
        for sid, report in reports.items():
            self.lanes[sid].reported(report)
        for sid, running in list(self.lanes.items()):
            found = result.get(sid)
            if found is None or found.state.leased(now) != self.id:
                running.stop()  # removed, or held by another relay now
                del self.lanes[sid]
        for sid, doc in result.items():
            if doc.state.leased(now) != self.id:
                continue
            lane = self.lanes.get(sid)
            if lane is None:
                if not self._wanted(sid):
                    continue
                lane = self.lanes[sid] = Lane(self, doc)
                lane.start()
            lane.until = doc.state.until
            lane.redeliver = doc.state.redeliver
        return True

    def run(self, stop: Callable[[], bool]) -> None:
        """Deliver until `stop` says so; the lanes' requests in flight are abandoned then
        (their events, unacknowledged, are delivered again)."""
        try:
            while not stop():
                try:
                    self.sync()
                except (redis.RedisError, OSError) as exc:
                    log.warning("relay: cannot reach Redis (%s); trying again", exc)
                deadline = time.monotonic() + self.config.sync_every
                while not stop() and time.monotonic() < deadline:
                    time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
        finally:
            self.close()

    def drain(self, horizon: float = 5.0) -> int:
        """Deliver what is due now and return how many events were delivered: every
        subscription this relay can hold, until its lane finds nothing more to read and
        no retry due within `horizon` seconds (one due later is left for a worker)."""
        self.burst = horizon
        try:
            while True:
                synced = self.sync()
                if synced and all(lane.done for lane in self.lanes.values()):
                    break
                time.sleep(min(0.05, self.config.sync_every))
        finally:
            self.close()
        return self.delivered

    def close(self) -> None:
        """Stop the lanes and give the leases back (what they did is written)."""
        self.closing = True
        for lane in self.lanes.values():
            lane.stop()
        deadline = time.monotonic() + 0.3
        for lane in self.lanes.values():  # a lane between two reads ends now
            lane.thread.join(max(0.0, deadline - time.monotonic()))
        for _ in range(5):
            try:
                if self.sync():
                    break
            except (redis.RedisError, OSError) as exc:
                log.warning("relay: could not give its leases back (%s); they lapse", exc)
                break
