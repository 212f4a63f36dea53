"""Delivering one notification: what the `notifications` job does.

    claim the ledger record (nothing twice) -> find the recipient's address
    -> preferences (opted out: skipped; quiet hours: later) -> render
    -> check the address -> rate limit -> send -> record -> tell the workflow

An email address or phone number that is not one (notifiers.addresses) fails the
notification at once, permanently, with code "bad-address".

The workflow hears `notification.sent` (with the provider's id) or
`notification.failed` (with the code and reason) once the outcome is final:
transient failures are retried with exponential backoff and jitter (or the
provider's Retry-After) up to MAX_ATTEMPTS, permanent ones fail at once. An
ambiguous failure (the message went out, no answer came back) is retried too,
and noted in the ledger so that the retry's send counts as a resend. A send the
channel held back before anything went out (DeferredError: its host is busy) is
scheduled again without counting a try.

A Deliverer may serve several threads at once (orchestrator.runtime.notify.batch): it keeps no
state between calls, and the templates render through `render`, which the
batch hands back to the main thread, the one where a render's CPU limit works.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import redis
from redis.client import Pipeline

from notifiers import addresses
from notifiers.base import Delivery, Message
from notifiers.errors import (
    AmbiguousError,
    DeferredError,
    DeliveryError,
    NotifierError,
    PermanentError,
    TransientError,
)
from notifiers.registry import Notifiers
from notifiers.templates import Rendered, render
from orchestrator.core import events as ev
from orchestrator.runtime import metrics
from orchestrator.runtime.notify.ledger import Ask, Claim, Ledger, record_key
from orchestrator.runtime.notify.ratelimit import RateLimits
from orchestrator.runtime.notify.recipients import Recipient, Recipients
from orchestrator.runtime.payloads import NotificationPayload
from orchestrator.store.keys import Keys

log = logging.getLogger("orchestrator.runtime.notify.delivery")
MAX_ATTEMPTS = 5
BACKOFF = 2.0  # seconds before the second try; doubles, capped at MAX_BACKOFF
MAX_BACKOFF = 300.0
LONGEST_WAIT = 5.0  # a rate-limit wait longer than this is scheduled, not slept
BUSY_RECHECK = 5.0  # a job that finds another sending looks again this much later


class Render(Protocol):
    def __call__(
        self,
        module: str | None,
        name: str,
        channel: str,
        context: dict[str, Any],
        locale: str | None = None,
    ) -> Rendered: ...


@dataclass
class Outcome:
    """What the job does next: tell the workflow (`event`), and/or run again `later`."""

    status: str
    event: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    later: float | None = None  # epoch seconds
    tried: bool = True  # False: nothing went out, so the run `later` keeps this try's number


class Deliverer:
    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        env: Mapping[str, str],
        notifiers: Notifiers,
        render: Render = render,
    ) -> None:
        self.keys = keys
        self.ledger = Ledger(client, keys)
        self.recipients = Recipients(client, keys)
        self.rates = RateLimits(client, keys, env)
        self.notifiers = notifiers
        self.render = render

    def ask(self, payload: NotificationPayload, owner: str, alive: str = "") -> Ask:
        """The ledger claim delivering `payload` begins with (made by `deliver`, or made
        beforehand with others in one round trip: Ledger.claim_many). `alive`: the
        heartbeat key of the job sending it, if any; the claim holds while it beats."""
        channel, to = payload["channel"], payload.get("to")
        return Ask(
            f"{payload['key']}:{to}",
            owner,
            {
                "instance": payload.get("instance"),
                "channel": channel,
                "to": to,
                "template": payload["template"],
                "urgent": bool(payload.get("urgent")),
            },
            alive=alive,
            recipient=self.keys.recipient(to) if to else "",
        )

    def deliver(
        self,
        payload: NotificationPayload,
        owner: str,
        pipe: Pipeline | None = None,
        claim: Claim | None = None,
        alive: str = "",
    ) -> Outcome:
        """Deliver (or answer again); with `pipe`, the ledger's final writes are queued there,
        to commit with the caller's answer in one transaction, else they are made at once.
        `claim`: the ledger claim of `ask(payload, owner, alive)`, if already made."""
        channel, to = payload["channel"], payload.get("to")
        key = record_key(payload["key"], to)
        attempt = payload.get("attempt", 1)
        facts = {"channel": channel, "to": to, "template": payload["template"], "key": key}
        if claim is None:
            ask = self.ask(payload, owner, alive)
            claim = self.ledger.claim(ask.key, owner, ask.fields, ask.alive, ask.recipient)
        if claim.outcome == "busy":  # another job is sending it; look again in a while
            return Outcome("busy", later=time.time() + BUSY_RECHECK)
        if claim.outcome != "claimed":
            return self._answer_again(claim.outcome, claim.record, facts)
        try:
            recipient = Recipients.parse(claim.recipient) if to else None
            return self._send(payload, key, attempt, facts, claim.record, recipient, pipe)
        except PermanentError as exc:
            return self._fail(key, facts, exc, pipe)
        except DeferredError as exc:  # held back before anything went out: not a try
            delay = exc.retry_after if exc.retry_after is not None else BUSY_RECHECK
            next_try = time.time() + delay
            self.ledger.advance(key, "retrying", pipe, last_error=str(exc), next_try=next_try)
            return Outcome("deferred", later=next_try, tried=False)
        except TransientError as exc:
            # The provider may have this one: the record says so, and the next send is a resend
            ambiguous = str(exc) if isinstance(exc, AmbiguousError) else None
            if attempt >= MAX_ATTEMPTS:
                note = f"gave up after {attempt} tries"
                return self._fail(key, facts, exc, pipe, note=note, ambiguous=ambiguous)
            delay = exc.retry_after if exc.retry_after is not None else backoff(attempt)
            self.ledger.advance(
                key,
                "retrying",
                pipe,
                last_error=str(exc),
                next_try=time.time() + delay,
                ambiguous=ambiguous,
            )
            log.info("notification %s: try %d failed (%s); next in %.1fs", key, attempt, exc, delay)
            return Outcome("retrying", later=time.time() + delay)
        except NotifierError as exc:  # configuration: permanent for this notification
            return self._fail(key, facts, PermanentError(str(exc)), pipe)

    def _send(
        self,
        payload: NotificationPayload,
        key: str,
        attempt: int,
        facts: dict[str, Any],
        record: dict[str, str],
        recipient: Recipient | None,
        pipe: Pipeline | None,
    ) -> Outcome:
        channel, to = facts["channel"], facts["to"]
        if recipient is not None and channel in recipient.opted_out:
            reason = f"{recipient.id} opted out of {channel}"
            self.ledger.advance(key, "skipped", pipe, reason=reason)
            return Outcome(
                "skipped",
                ev.NOTIFICATION_FAILED,
                {**facts, "reason": f"recipient opted out of {channel}", "skipped": True},
            )
        if recipient is not None and not payload.get("urgent"):
            until = recipient.quiet_until(datetime.now(UTC))
            if until is not None:
                self.ledger.advance(key, "delayed", pipe, until=until.timestamp())
                return Outcome("delayed", later=until.timestamp())
        locale = recipient.locale if recipient else None
        rendered = self.render(
            payload.get("templates"),
            payload["template"],
            channel,
            dict(payload.get("context") or {}),
            locale,
        )
        targets = self._targets(channel, str(to or ""), recipient)
        notifier, warning = self.notifiers.get(channel)
        wait = self.rates.wait(channel, notifier.rate_per_second)
        if wait > LONGEST_WAIT:
            self.ledger.advance(key, "retrying", pipe, last_error="rate limited")
            return Outcome("rate-limited", later=time.time() + wait)
        if wait > 0:  # not sleep(0): that gives the CPU away for nothing
            time.sleep(wait)
        done = set(json.loads(record.get("done_targets", "[]")))  # as the claim found it
        deliveries: list[Delivery] = []
        gone: list[str] = []
        refused: dict[str, str] = {}
        for address, subscription in targets:
            if address in done:
                continue  # sent on an earlier try of this notification
            message = Message(
                channel=channel,
                to=address,
                body=rendered.body,
                subject=rendered.subject,
                html=rendered.html,
                key=key,
                data={"instance": payload.get("instance")},
                push_subscription=subscription,
            )
            counts = metrics.current()  # None with ORCHESTRATOR_METRICS=0
            began = time.perf_counter()
            try:
                with self.notifiers.sending(channel):
                    deliveries.append(notifier.send(message))
            except PermanentError as exc:
                if subscription is None:
                    raise
                if exc.gone and recipient is not None:
                    self.recipients.drop_subscription(recipient.id, address)
                    gone.append(address)
                else:
                    refused[address] = str(exc)
                continue
            finally:  # the provider's time, whatever it answered
                if counts is not None:
                    counts.provider_latency(channel, time.perf_counter() - began)
            done.add(address)
            if len(targets) > 1:  # a later target may fail: the next try skips this one
                self.ledger.note(key, done_targets=sorted(done))
        if not deliveries and not done:
            if gone and not refused:
                raise PermanentError(f"every push subscription of {to} is gone", gone=True)
            raise PermanentError(f"{to}: " + "; ".join(refused.values()))
        provider_id = ",".join(d.provider_id for d in deliveries)
        refused.update({k: v for d in deliveries for k, v in d.refused.items()})
        warnings = [w for d in deliveries for w in d.warnings] + ([warning] if warning else [])
        self.ledger.advance(
            key,
            "sent",
            pipe,
            provider_id=provider_id,
            refused=refused,
            warnings=warnings,
            gone=gone or None,
        )
        for d in deliveries:
            self.ledger.remember_provider_id(d.provider_id, key, pipe)
        return Outcome(
            "sent",
            ev.NOTIFICATION_SENT,
            {
                **facts,
                "provider_id": provider_id,
                "refused": refused,
                "warnings": warnings,
                "attempts": attempt,
            },
        )

    def _targets(
        self, channel: str, to: str, recipient: Recipient | None
    ) -> list[tuple[str, dict[str, Any] | None]]:
        if channel == "push":
            subscriptions = recipient.push if recipient else []
            if not subscriptions:
                raise PermanentError(f"{to or 'the recipient'} has no push subscription")
            return [(str(s["endpoint"]), s) for s in subscriptions]
        address = recipient.addresses.get(channel) if recipient else to
        if not address:
            raise PermanentError(f"no {channel} address for {to or 'the recipient'}")
        # checked again here: a bare address was never checked, a recipient's may predate it
        return [(addresses.check(channel, address), None)]

    def _fail(
        self,
        key: str,
        facts: dict[str, Any],
        exc: DeliveryError,
        pipe: Pipeline | None,
        note: str = "",
        ambiguous: str | None = None,
    ) -> Outcome:
        reason = f"{exc.reason}; {note}" if note else exc.reason
        self.ledger.advance(key, "failed", pipe, reason=reason, code=exc.code, ambiguous=ambiguous)
        log.info("notification %s failed: %s", key, reason)
        return Outcome(
            "failed",
            ev.NOTIFICATION_FAILED,
            {
                **facts,
                "reason": reason,
                "code": exc.code,
                "permanent": isinstance(exc, PermanentError),
            },
        )

    def _answer_again(self, status: str, record: dict[str, str], facts: dict[str, Any]) -> Outcome:
        """A job run again after its outcome was recorded: send nothing, repeat the answer."""
        if status in ("sent", "delivered", "undelivered"):
            return Outcome(
                status,
                ev.NOTIFICATION_SENT,
                {**facts, "provider_id": record.get("provider_id"), "repeated": True},
            )
        return Outcome(
            status,
            ev.NOTIFICATION_FAILED,
            {**facts, "reason": record.get("reason", status), "repeated": True},
        )


def backoff(attempt: int) -> float:
    """Exponential backoff with full jitter on the upper half."""
    base = min(MAX_BACKOFF, BACKOFF * 2 ** (attempt - 1))
    return float(base / 2 + random.uniform(0, base / 2))
