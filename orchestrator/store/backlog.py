"""How far behind each partition's applier is: its inbox's length, the entries read and
not yet committed (pending), those not read yet (lag), and the entries ever added.

Read by the overview (GET /api/overview) and by `/metrics`, in the caller's pipeline so
that each stays one round trip: `queue` adds the two XINFO commands a partition, `read`
turns their replies into figures. Redis counts lag and entries added from 7.0 on; before
(the embedded Redis is 6.2), lag is worked out from the stream (`_lag`) and
entries added is None.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis
from redis.client import Pipeline

from orchestrator.store.keys import INBOX_GROUP, Keys


@dataclass(frozen=True)
class Backlog:
    partition: int
    length: int
    pending: int
    lag: int
    entries_added: int | None


def queue(pipe: Pipeline, keys: Keys) -> None:
    """The commands `read` needs, two a partition, added to `pipe` (run it with
    raise_on_error=False: a partition with no inbox yet answers an error)."""
    for partition in range(keys.partitions):
        pipe.xinfo_stream(keys.inbox(partition))
        pipe.xinfo_groups(keys.inbox(partition))


def read(keys: Keys, replies: Any) -> list[Backlog]:
    """Every partition's figures, from an iterator over the pipeline's replies at the
    place where `queue` added its commands (consumed as far as they go)."""
    return [_one(partition, next(replies), next(replies)) for partition in range(keys.partitions)]


def _one(partition: int, stream: Any, groups: Any) -> Backlog:
    """One inbox's figures; a partition with no stream yet has none of anything."""
    if isinstance(stream, redis.ResponseError) or not isinstance(stream, dict):
        return Backlog(partition, 0, 0, 0, 0)
    length = int(stream.get("length", 0))
    added = stream.get("entries-added")
    found = (
        [g for g in groups if _text(g.get("name")) == INBOX_GROUP]
        if isinstance(groups, list)
        else []
    )
    group = found[0] if found else None
    pending, lag = 0, length  # no applier has read it yet: every entry waits
    if group is not None:
        pending, lag = int(group.get("pending", 0)), group.get("lag")
        if lag is None:  # Redis before 7.0 does not count it: from the stream's length
            lag = _lag(stream, group, length, pending)
    return Backlog(partition, length, pending, int(lag), int(added) if added is not None else None)


def _lag(stream: dict[str, Any], group: dict[str, Any], length: int, pending: int) -> int:
    """Entries not read yet, when Redis does not say: the inbox holds them, those read
    and not committed (pending), and the last one committed (the applier trims the inbox
    up to it, orchestrator.runtime.batch_writer)."""
    delivered = _id(group.get("last-delivered-id"))
    if _id(stream.get("last-generated-id")) <= delivered:
        return 0
    first = stream.get("first-entry")
    kept = 1 if first and _id(first[0]) <= delivered and length > pending else 0
    return max(length - pending - kept, 0)


def _id(value: Any) -> tuple[int, int]:
    """A stream entry id as numbers, to compare ("0-0" when there is none)."""
    ms, _, seq = _text(value or "0-0").partition("-")
    try:
        return int(ms), int(seq or 0)
    except ValueError:
        return 0, 0


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
