"""GET /api/overview: how the deployment is doing, in one round trip to Redis.

    instances       counts by status (the status sets' sizes) and the total indexed
    failure_rate    failed / (completed + failed + cancelled) of those kept; null if none
    inboxes         per partition: length, pending (read by the applier, not yet
                    committed), lag (not read yet), entries_added (ever)
    events_added    the inboxes' entries_added summed: two readings a known time apart
                    give the events written per second (null on a Redis before 7.0,
                    which does not count them, the embedded one included)
    events_applied  the appliers' events applied, from their counts for /metrics
                    (orchestrator.store.metrics; null with ORCHESTRATOR_METRICS=0): the
                    same rate on any Redis
    queues          RQ's queues: jobs queued, started (running), failed, scheduled
    dead_letters    how many are listed
    appliers        live appliers (by heartbeat)

Every figure is a counter Redis keeps (SCARD, ZCARD, XLEN, XINFO, LLEN): the
cost is the same with 10 instances or 1M. `at` is the server's clock when read.
"""

from __future__ import annotations

import time
from typing import Any

import redis
from fastapi import APIRouter
from rq import Queue
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry

from orchestrator.core.instance import STATUSES
from orchestrator.entry.http.auth import Read
from orchestrator.entry.http.door import TheDoor
from orchestrator.runtime.dispatch import NOTIFICATION_QUEUE, TASK_QUEUE
from orchestrator.store.keys import INBOX_GROUP
from orchestrator.store.metrics import MetricsStore

router = APIRouter(tags=["overview"])
QUEUES = (TASK_QUEUE, NOTIFICATION_QUEUE)
APPLIED = "orchestrator_events_applied_total"


@router.get("/overview")
def overview(door: TheDoor, _: Read) -> dict[str, Any]:
    """Counts by status, failure rate, inbox lag per partition, queue depths, dead letters."""
    app = door.app
    keys, client = app.keys, app.redis
    pipe = client.pipeline(transaction=False)
    for status in STATUSES:
        pipe.scard(keys.by_status(status))
    pipe.zcard(keys.all_instances)
    pipe.xlen(keys.deadletters)
    pipe.zcard(keys.appliers)
    for partition in range(keys.partitions):
        pipe.xinfo_stream(keys.inbox(partition))
        pipe.xinfo_groups(keys.inbox(partition))
    for name in QUEUES:
        queue = Queue(name, connection=client)
        pipe.llen(queue.key)
        for registry in (StartedJobRegistry, FailedJobRegistry, ScheduledJobRegistry):
            pipe.zcard(registry(queue=queue).key)
    replies = iter(pipe.execute(raise_on_error=False))
    counts = {status: _int(next(replies)) for status in STATUSES}
    total, dead, appliers = _int(next(replies)), _int(next(replies)), _int(next(replies))
    inboxes = [_inbox(p, next(replies), next(replies)) for p in range(keys.partitions)]
    queues = {
        name: {
            "queued": _int(next(replies)),
            "started": _int(next(replies)),
            "failed": _int(next(replies)),
            "scheduled": _int(next(replies)),
        }
        for name in QUEUES
    }
    finished = counts["completed"] + counts["failed"] + counts["cancelled"]
    added = [i["entries_added"] for i in inboxes]
    return {
        "at": time.time(),
        "instances": {"total": total, **counts},
        "failure_rate": counts["failed"] / finished if finished else None,
        "inboxes": inboxes,
        "events_added": None if None in added else sum(a for a in added if a is not None),
        "events_applied": _applied(MetricsStore(client, keys)),
        "queues": queues,
        "dead_letters": dead,
        "appliers": appliers,
    }


def _applied(store: MetricsStore) -> int | None:
    """Events applied by every applier that counts (their last writes, every few seconds)."""
    total, found = 0.0, False
    for samples in store.read().values():
        for (name, _), value in samples.items():
            if name == APPLIED:
                total, found = total + value, True
    return int(total) if found else None


def _int(reply: Any) -> int:
    return int(reply) if isinstance(reply, int) else 0


def _inbox(partition: int, stream: Any, groups: Any) -> dict[str, Any]:
    """One inbox's figures; a partition with no stream yet has none of anything."""
    if isinstance(stream, redis.ResponseError) or not isinstance(stream, dict):
        return {"partition": partition, "length": 0, "pending": 0, "lag": 0, "entries_added": 0}
    length = int(stream.get("length", 0))
    added = stream.get("entries-added")
    found = (
        [g for g in groups if _text(g.get("name")) == INBOX_GROUP]
        if isinstance(groups, list)
        else []
    )
    group = found[0] if found else None
    pending, lag = 0, length
    if group is not None:
        pending, lag = int(group.get("pending", 0)), group.get("lag")
        if lag is None:  # Redis before 7.0 does not count it: from the stream's length
            lag = _lag(stream, group, length, pending)
    return {
        "partition": partition,
        "length": length,
        "pending": pending,
        "lag": int(lag),
        "entries_added": int(added) if added is not None else None,
    }


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
