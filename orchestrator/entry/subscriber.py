"""Reading what workflows publish: the latest events, following them, and consuming
them as a consumer group (store.published has the streams).

    for event in app.subscribe("billing", types=["order.*"]):
        handle(event)        # acknowledged once this returned (in batches)

A subscriber acknowledges an event once its handler returned (the loop came back for
the next one), the handled ones together before it reads more (one XACK per partition
and read: acknowledging each alone cost a round trip per event, most of a subscriber's
time in the flows bench): an event whose handler raised, or whose process died, stays pending
and is delivered again, to the same consumer when it comes back (it reads its own
pending first) or to another of the group once it has been pending `claim_after`
seconds. At least once, then; deduplicate by `event.id`, stable across re-applies.
One consumer in a group sees each instance's events in order; several share the
group's events between them.
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import redis

from orchestrator.core.errors import InputError
from orchestrator.store.keys import Keys
from orchestrator.store.published import (
    END,
    Published,
    PublishedStreams,
    matches,
    parse,
    position,
)

BATCH = 100  # events read at once
GROUP = r"[A-Za-z0-9_.:-]{1,100}"


def latest(
    client: redis.Redis, keys: Keys, count: int, types: Sequence[str] = ()
) -> list[Published]:
    """The last `count` events of these types, oldest first."""
    streams = PublishedStreams(client, keys)
    found: list[Published] = []
    for partition, stream in enumerate(streams.streams):
        top = "+"
        kept: list[Published] = []
        while len(kept) < count:
            page: Any = client.xrevrange(stream, max=top, count=200)
            if not page:
                break
            for entry_id, fields in page:
                for item in reversed(parse(partition, entry_id, fields)):
                    if item.event and matches(types, item.type):
                        kept.append(item)
            top = f"({page[-1][0].decode()}"
        found += kept[:count]
    found.sort(key=lambda i: (*map(int, i.entry_id.split("-")), i.partition, i.index))
    return found[-count:] if count else []


def read(
    client: redis.Redis,
    keys: Keys,
    start: str | float | None,
    types: Sequence[str] = (),
    *,
    follow: bool = False,
    limit: int | None = None,
    stop: Callable[[], bool] = lambda: False,
    block: float = 1.0,
) -> Iterator[Published]:
    """The events from a position on ("start", "end", an entry id, a moment, a time
    ago), merged across partitions; with `follow`, waiting for new ones until `stop`."""
    streams = PublishedStreams(client, keys)
    after = streams.since(position(start))
    shown = 0
    while not stop():
        page = streams.read(after, BATCH)
        for item in page:
            after[item.partition] = item.entry_id
            if item.event and matches(types, item.type):
                yield item
                shown += 1
                if limit is not None and shown >= limit:
                    return
        if not page:
            if not follow:
                return
            streams.wait(after, int(block * 1000))


def subscribe(
    client: redis.Redis,
    keys: Keys,
    group: str,
    *,
    types: Sequence[str] = (),
    start: str | float | None = END,
    consumer: str | None = None,
    block: float = 1.0,
    claim_after: float = 60.0,
    idle_timeout: float | None = None,
    stop: Callable[[], bool] = lambda: False,
) -> Iterator[Published]:
    """Consume the published events as member `consumer` of `group` (created at `start`
    when new; an existing group goes on from where it stands). An event is acknowledged
    once the loop has asked for the next (its handler returned), together with the others
    handled before the next read (one XACK per partition and batch, not one per event);
    events of other types are acknowledged unseen.
    Ends when `stop` says so, or after `idle_timeout` seconds without an event."""
    if not re.fullmatch(GROUP, group):
        raise InputError(f"group {group!r}: use 1 to 100 letters, digits, '_', '.', ':', '-'")
    streams = PublishedStreams(client, keys)
    streams.join(group, position(start))
    me = consumer or f"{socket.gethostname()}-{os.getpid()}"
    pending = True  # first, what this consumer read before and never acknowledged
    next_claim = 0.0
    quiet_since = time.monotonic()
    handled: list[Published] = []  # acknowledged together, before the next read
    try:
        while not stop():
            if handled:
                streams.ack(group, handled)
                handled = []
            now = time.monotonic()
            if pending:
                items = streams.take(group, me, BATCH, 0, pending=True)
                pending = bool(items)
            elif now >= next_claim:
                next_claim = now + claim_after / 2
                items = streams.claim(group, me, int(claim_after * 1000), BATCH)
            else:
                items = []
            if not items and not pending:
                items = streams.take(group, me, BATCH, int(block * 1000))
            if not items:
                if idle_timeout is not None and now - quiet_since >= idle_timeout:
                    return
                continue
            quiet_since = now
            for item in items:
                if item.event and matches(types, item.type):  # empty: trimmed while pending
                    yield item  # the loop's body runs here; an exception ends it unacknowledged
                handled.append(item)
    finally:
        if handled:  # the loop ended after these returned (a break, or stop): theirs is done
            streams.ack(group, handled)
