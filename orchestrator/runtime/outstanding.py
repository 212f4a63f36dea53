"""The register of outstanding jobs: every job the workers run is registered in the
commit that enqueues it, and unregistered in the commit that applies its answer.

What is registered is a WatchRecord (orchestrator.runtime.payloads); the watchdog
(orchestrator.runtime.watchdog) checks the register and reports the lost ones.
"""

from __future__ import annotations

import json
import time

import redis
from redis.client import Pipeline

from orchestrator.runtime.payloads import NotificationPayload, TaskPayload, watch_record
from orchestrator.store.keys import Keys

CHECK_EVERY = 3.0  # seconds between checks of one outstanding job


class Outstanding:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys

    @staticmethod
    def record(payload: TaskPayload | NotificationPayload, carrier: str) -> str:
        """What the watchdog keeps of a job it watches (a WatchRecord, as JSON)."""
        return json.dumps(watch_record(payload, carrier), separators=(",", ":"))

    def watch_many(self, pipe: Pipeline, partition: int, records: dict[str, str]) -> None:
        """Register jobs of one partition (job id -> `record`) in the enqueuing commit, one
        HSET and one ZADD: tasks (reported lost as a failed try) and notifications
        (`"kind": "notification"`: run again when lost)."""
        if not records:
            return
        pipe.hset(self.keys.outstanding_jobs(partition), mapping=records)  # type: ignore[arg-type]
        due = time.time() + CHECK_EVERY
        pipe.zadd(self.keys.outstanding(partition), dict.fromkeys(records, due))

    def answered(self, pipe: Pipeline, partition: int, job: str) -> None:
        """Unregister a job whose answer is being applied, in the applying commit."""
        self.answered_many(pipe, partition, [job])

    def answered_many(self, pipe: Pipeline, partition: int, jobs: list[str]) -> None:
        """Unregister jobs of one partition whose answers are being applied: one ZREM, one HDEL."""
        if not jobs:
            return
        pipe.zrem(self.keys.outstanding(partition), *jobs)
        pipe.hdel(self.keys.outstanding_jobs(partition), *jobs)
