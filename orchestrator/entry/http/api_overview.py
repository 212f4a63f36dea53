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
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter
from rq import Queue
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry

from orchestrator.core.instance import STATUSES
from orchestrator.entry.http.auth import Read
from orchestrator.entry.http.door import TheDoor
from orchestrator.runtime.dispatch import NOTIFICATION_QUEUE, TASK_QUEUE
from orchestrator.store import backlog
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
    backlog.queue(pipe, keys)
    for name in QUEUES:
        queue = Queue(name, connection=client)
        pipe.llen(queue.key)
        for registry in (StartedJobRegistry, FailedJobRegistry, ScheduledJobRegistry):
            pipe.zcard(registry(queue=queue).key)
    replies = iter(pipe.execute(raise_on_error=False))
    counts = {status: _int(next(replies)) for status in STATUSES}
    total, dead, appliers = _int(next(replies)), _int(next(replies)), _int(next(replies))
    inboxes = [asdict(b) for b in backlog.read(keys, replies)]
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
