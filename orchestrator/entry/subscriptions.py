"""Webhook subscriptions, for people and scripts: add, list, remove, dead letters and
redelivery (the CLI's `orchestrator subscriptions` is a thin layer over this).

    subs = Subscriptions(app.redis, app.keys)
    sub = subs.add("https://example.com/hooks", ["order.*"], secret_env="ORDERS_HOOK_SECRET")
    subs.list()                      # with delivered, pending and dead counts
    subs.dead_letters(sub.id)        # what failed for good, and why
    subs.redeliver(sub.id, all=True) # deliver them again, in order
    subs.remove(sub.id)

A subscription stores the NAME of the environment variable that holds its signing
secret, never the secret: `add` checks that the variable holds one in this process's
environment (`environ`), and the worker that delivers reads it from its own
(orchestrator.runtime.relay). `new_secret()` makes one. `add` refuses, writing
nothing, a URL that is not http(s) (or that reaches a private address, unless
WEBHOOK_ALLOW_PRIVATE=1 in `environ`), a bad pattern, and an unset or malformed
secret. The subscription receives what is published from the moment it is added.
"""

from __future__ import annotations

import builtins
import os
import re
import secrets
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import redis

from notifiers.errors import PermanentError
from notifiers.webhook import check_url
from notifiers.webhook_guard import check_address
from orchestrator.core.errors import ConfigurationError, InputError
from orchestrator.runtime import relay
from orchestrator.store.keys import Keys
from orchestrator.store.subscriptions import (
    DeadLetter,
    Subscription,
    SubscriptionStore,
    check_id,
)

PATTERN = re.compile(r"[a-z0-9*?_.-]{1,200}")
MAX_PATTERNS = 50
MAX_URL = 2048


@dataclass(frozen=True)
class SubscriptionInfo:
    """A subscription with where its delivery stands (no secret: only its variable's name)."""

    subscription: Subscription
    pending: int  # stream entries not handled yet (each a commit's events, of any type)
    dead: int  # dead letters

    def summary(self) -> dict[str, Any]:
        sub, state = self.subscription, self.subscription.state
        return {
            "id": sub.id,
            "url": sub.url,
            "events": list(sub.patterns),
            "secret_env": sub.secret_env,
            "created": sub.created,
            "delivered": state.delivered,
            "pending": self.pending,
            "dead": self.dead,
            "last_delivered": state.last_delivered,
            "last_error": state.last_error,
        }


def new_secret() -> str:
    """A fresh Standard Webhooks secret ("whsec_..."), for the subscription's variable."""
    return relay.new_secret()


def check_patterns(patterns: Sequence[str]) -> tuple[str, ...]:
    """Event type patterns: dotted lowercase types, with * and ? (`order.*`)."""
    if isinstance(patterns, str):
        patterns = [patterns]
    found = tuple(dict.fromkeys(patterns))
    if not found:
        raise InputError("give at least one --events pattern, as 'order.*' ('*': every event)")
    if len(found) > MAX_PATTERNS:
        raise InputError(f"at most {MAX_PATTERNS} --events patterns, not {len(found)}")
    for pattern in found:
        if not isinstance(pattern, str) or not PATTERN.fullmatch(pattern):
            raise InputError(
                f"--events {pattern!r}: a pattern is an event type in lowercase letters, "
                "digits, '.', '_', '-', with '*' and '?' as wildcards (as 'order.*')"
            )
    return found


def check_target(url: str, environ: Mapping[str, str]) -> None:
    """An http(s) URL that reaches a public address (any, with WEBHOOK_ALLOW_PRIVATE=1).
    A name that does not resolve yet is let through: the relay checks every address it
    connects to."""
    if not isinstance(url, str) or len(url) > MAX_URL:
        raise InputError(f"the URL must be text of at most {MAX_URL} characters")
    try:
        host = check_url(url)
    except PermanentError as exc:
        raise InputError(exc.reason) from None
    try:
        allowed = relay.allow_private(environ)
    except ConfigurationError as exc:
        raise InputError(str(exc)) from None
    if allowed:
        return
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return
    try:
        for *_, sockaddr in found:
            check_address(host, str(sockaddr[0]))
    except PermanentError as exc:
        raise InputError(exc.reason) from None


class Subscriptions:
    """Webhook subscriptions of one deployment."""

    def __init__(
        self, client: redis.Redis, keys: Keys, environ: Mapping[str, str] | None = None
    ) -> None:
        self.store = SubscriptionStore(client, keys)
        self.environ: Mapping[str, str] = os.environ if environ is None else environ

    def add(
        self,
        url: str,
        events: Sequence[str],
        secret_env: str,
        *,
        id: str | None = None,
    ) -> Subscription:
        """A new subscription to the events whose type matches one of `events`, POSTed to
        `url` and signed with the secret in the variable `secret_env`; it receives what is
        published from now on."""
        patterns = check_patterns(events)
        check_target(url, self.environ)
        problem = relay.secret_problem(secret_env, self.environ)
        if problem is not None:
            raise InputError(f"--secret-env: {problem}")
        sid = check_id(id) if id is not None else f"sub_{secrets.token_hex(6)}"
        subscription = Subscription(sid, url, patterns, secret_env, round(time.time(), 3))
        if not self.store.create(subscription):
            raise InputError(f"subscription {sid} exists already")
        return subscription

    def get(self, subscription: str) -> SubscriptionInfo:
        found = self.store.get(subscription)
        if found is None:
            raise InputError(f"no subscription {subscription!r}")
        return self._info(found)

    def list(self) -> builtins.list[SubscriptionInfo]:
        return [self._info(sub) for sub in self.store.all()]

    def _info(self, sub: Subscription) -> SubscriptionInfo:
        return SubscriptionInfo(sub, self.store.pending(sub.id), self.store.dead_count(sub.id))

    def remove(self, subscription: str) -> None:
        """Remove it, with its group and its dead letters (a relay delivering it stops)."""
        if not self.store.remove(subscription):
            raise InputError(f"no subscription {subscription!r}")

    def dead_letters(
        self, subscription: str, limit: int | None = None
    ) -> builtins.list[DeadLetter]:
        """What it could not deliver, oldest first (queued: waiting to be delivered again)."""
        self.get(subscription)
        return self.store.dead_letters(subscription, limit)

    def redeliver(
        self, subscription: str, ids: Sequence[str] = (), *, all: bool = False
    ) -> builtins.list[DeadLetter]:
        """Queue dead letters for delivery again, in the order they died: those whose event
        id (or dead-letter entry) is in `ids`, or every one with `all`. The worker's relay
        delivers them before the subscription's next event. Returns those queued; an id
        that matches none is refused, and nothing is queued."""
        self.get(subscription)
        if bool(ids) == all:
            raise InputError("give the dead letters' ids, or --all (not both)")
        letters = [letter for letter in self.store.scan_dead(subscription) if not letter.queued]
        if not all:
            wanted = set(ids)
            chosen = [x for x in letters if x.event_id in wanted or x.entry in wanted]
            known = {x.event_id for x in chosen} | {x.entry for x in chosen}
            unknown = [i for i in ids if i not in known]
            if unknown:
                raise InputError(
                    f"no dead letter {', '.join(unknown[:5])} for subscription {subscription} "
                    "(see `orchestrator subscriptions dead-letters`); nothing queued"
                )
            letters = chosen
        self.store.queue(subscription, [x.entry for x in letters])
        return letters
