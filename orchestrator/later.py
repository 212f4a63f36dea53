"""Notification jobs to run later: retries after a transient failure, quiet
hours, long rate-limit waits.

A job that must run again adds its payload to a sorted set by due time; the
appliers move due entries onto the notifications queue. Removing an entry is
what entitles a mover to enqueue it, so two appliers never both do; a mover
that dies in between loses nothing that the ledger would not resend.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis
from rq import Queue
from rq.serializers import JSONSerializer

from orchestrator.dispatch import (
    FAILURE_TTL,
    NOTIFICATION_QUEUE,
    NOTIFICATION_TIMEOUT,
    SEND_NOTIFICATION,
)
from orchestrator.keys import Keys


class Later:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys

    def add(self, payload: dict[str, Any], due: float) -> None:
        self.redis.zadd(self.keys.notify_later, {json.dumps(payload, sort_keys=True): due})

    def next_due(self) -> float | None:
        first: list[tuple[bytes, float]] = self.redis.zrange(  # type: ignore[assignment]
            self.keys.notify_later, 0, 0, withscores=True
        )
        return first[0][1] if first else None

    def move_due(self, now: float | None = None, limit: int = 200) -> int:
        now = time.time() if now is None else now
        due: list[bytes] = self.redis.zrangebyscore(  # type: ignore[assignment]
            self.keys.notify_later, "-inf", now, start=0, num=limit
        )
        queue = Queue(NOTIFICATION_QUEUE, connection=self.redis, serializer=JSONSerializer)
        moved = 0
        for member in due:
            if not self.redis.zrem(self.keys.notify_later, member):
                continue  # another applier took it
            payload = json.loads(member)
            queue.enqueue(
                SEND_NOTIFICATION,
                kwargs={"payload": payload},
                job_id=f"{payload['key']}-a{payload.get('attempt', 1)}-{int(now * 1000)}",
                result_ttl=0,
                failure_ttl=FAILURE_TTL,
                job_timeout=NOTIFICATION_TIMEOUT,
            )
            moved += 1
        return moved
