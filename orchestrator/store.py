"""Reading instances and their histories back out of Redis."""

from __future__ import annotations

import json
from typing import Any

import redis

from orchestrator import archive
from orchestrator.errors import UnknownInstance
from orchestrator.instance import Instance
from orchestrator.keys import Keys
from orchestrator.settings import show_duration


def decode_hash(raw: dict[bytes, bytes]) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in raw.items()}


class Store:
    def __init__(self, client: redis.Redis, keys: Keys, retention: float = 7 * 86400.0) -> None:
        self.redis = client
        self.keys = keys
        self.retention = retention

    def find(self, instance_id: str) -> Instance | None:
        raw: dict[bytes, bytes] = self.redis.hgetall(self.keys.instance(instance_id))  # type: ignore[assignment]
        return Instance.from_fields(decode_hash(raw)) if raw else None

    def get(self, instance_id: str) -> Instance:
        instance = self.find(instance_id)
        if instance is None:
            raise self._missing(instance_id)
        return instance

    def _missing(self, instance_id: str) -> UnknownInstance:
        """Unknown, or known once and expired: say which."""
        removed = self.redis.zscore(self.keys.expired, instance_id)
        expiring = self.redis.zscore(self.keys.all_instances, instance_id)
        if removed is None and expiring is None:
            return UnknownInstance(f"no instance with id {instance_id!r}")
        kept = show_duration(self.retention)
        return UnknownInstance(
            f"instance {instance_id!r} has expired: finished instances and their history are "
            f"kept for {kept} (ORCHESTRATOR_RETENTION)"
        )

    def expired_count(self) -> int:
        return int(self.redis.zcard(self.keys.expired))

    def history(self, instance_id: str) -> list[dict[str, Any]]:
        """The archive of a finished instance, then what its stream holds (all of a live
        instance's history; late copies of events recorded after it finished). Read in one
        MULTI: a commit folding the stream into the archive in between would hide both."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.exists(self.keys.instance(instance_id))
        pipe.get(self.keys.archive(instance_id))
        pipe.xrange(self.keys.history(instance_id))
        exists, archived, live = pipe.execute()
        if not exists:
            raise self._missing(instance_id)
        entries = archive.unpack(archived) + archive.stream_entries(live)
        return [history_entry(fields) for fields in entries]

    def correlated(self, workflow: str, key: str, value: str) -> str | None:
        found: bytes | None = self.redis.get(self.keys.correlation(workflow, key, value))  # type: ignore[assignment]
        return found.decode() if found else None

    def list(
        self,
        *,
        workflow: str | None = None,
        state: str | None = None,
        status: str | None = None,
        limit: int = 50,
    ) -> list[Instance]:
        """Newest first, filtered through the indexes, then loaded in one round trip."""
        order_key = self.keys.by_workflow(workflow) if workflow else self.keys.all_instances
        filters: list[str] = []
        if status:
            filters.append(self.keys.by_status(status))
        if state and workflow:
            filters.append(self.keys.by_state(workflow, state))
        unfiltered = not filters and not state
        last = limit - 1 if unfiltered else -1  # no filter: read only the ids shown
        newest: list[bytes] = self.redis.zrevrange(order_key, 0, last)  # type: ignore[assignment]
        ids = [i.decode() for i in newest]
        if filters:
            pipe = self.redis.pipeline(transaction=False)
            for key in filters:
                pipe.smembers(key)
            allowed = set.intersection(*({m.decode() for m in s} for s in pipe.execute()))
            ids = [i for i in ids if i in allowed]
        filter_state_here = bool(state and not workflow)
        pipe = self.redis.pipeline(transaction=False)
        for instance_id in ids if filter_state_here else ids[:limit]:
            pipe.hgetall(self.keys.instance(instance_id))
        found = [Instance.from_fields(decode_hash(raw)) for raw in pipe.execute() if raw]
        if filter_state_here:
            found = [i for i in found if i.state == state]
        return found[:limit]


def history_entry(raw: dict[str, str]) -> dict[str, Any]:
    return {
        "seq": int(raw["seq"]),
        "event": json.loads(raw["event"]),
        "outcome": raw["outcome"],
        "from": raw.get("from") or None,
        "to": raw.get("to") or None,
        "status": raw["status"],
        "note": raw.get("note", ""),
        "effects": json.loads(raw.get("effects", "[]")),
    }
