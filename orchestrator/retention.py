"""Retention: finished instances and their history expire after a while.

When an instance finishes, the commit that finishes it sets a time to live
on its keys and files it under `idx:expiring`. The janitor, run by the
appliers about once a minute, removes expired instances from the listing
indexes and remembers their ids in `expired`, so that `status` can say an
instance expired rather than that it never existed.
"""

from __future__ import annotations

import json
import time

import redis
from redis.client import Pipeline

from orchestrator.instance import Instance
from orchestrator.keys import Keys

REMEMBER_EXPIRED = 90 * 86400  # how long `status` can still say "expired"


class Retention:
    def __init__(self, client: redis.Redis, keys: Keys, seconds: float) -> None:
        self.redis = client
        self.keys = keys
        self.seconds = seconds

    def finished(self, pipe: Pipeline, instance: Instance, now: float) -> None:
        """In the finishing commit: expire the instance's keys and file it for the janitor."""
        ttl = max(1, int(self.seconds))
        for key in (
            self.keys.instance(instance.id),
            self.keys.archive(instance.id),  # the history, folded by the same commit
            self.keys.applied(instance.id),
        ):
            pipe.expire(key, ttl)
        member = json.dumps(
            {
                "id": instance.id,
                "workflow": instance.workflow,
                "state": instance.state,
                "status": instance.status,
            },
            sort_keys=True,
        )
        pipe.zadd(self.keys.expiring, {member: now + self.seconds})

    def clean(self, now: float | None = None, limit: int = 1000) -> int:
        """Drop expired instances from the indexes; returns how many."""
        now = time.time() if now is None else now
        members: list[bytes] = self.redis.zrangebyscore(  # type: ignore[assignment]
            self.keys.expiring, "-inf", now, start=0, num=limit
        )
        if not members:
            return 0
        pipe = self.redis.pipeline(transaction=True)
        for member in members:
            entry = json.loads(member)
            iid, workflow = entry["id"], entry["workflow"]
            pipe.zrem(self.keys.all_instances, iid)
            pipe.zrem(self.keys.by_workflow(workflow), iid)
            pipe.srem(self.keys.by_status(entry["status"]), iid)
            if entry["state"]:
                pipe.srem(self.keys.by_state(workflow, entry["state"]), iid)
            pipe.zadd(self.keys.expired, {iid: now})
            pipe.zrem(self.keys.expiring, member)
        pipe.zremrangebyscore(self.keys.expired, "-inf", now - REMEMBER_EXPIRED)
        pipe.execute()
        return len(members)
