"""Reading instances and their histories back out of Redis.

What comes back is parsed, never trusted: a hash or history that cannot be
read raises `Unreadable` naming the key, so a caller shows what is wrong
(and `list` skips the one instance) instead of failing on a stack trace.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import redis

from orchestrator.core.durations import show_duration
from orchestrator.core.errors import UnknownInstance
from orchestrator.core.events import Unreadable
from orchestrator.core.instance import Instance
from orchestrator.core.machine import PASSED
from orchestrator.store import archive
from orchestrator.store.keys import Keys

log = logging.getLogger("orchestrator.store.instances")

# Reads only, so Redis runs it even when out of memory (6.2 checks memory per write call).
_READ_HISTORY = """
local exists = redis.call('EXISTS', KEYS[1])
return {exists, redis.call('GET', KEYS[2]), redis.call('XRANGE', KEYS[3], '-', '+')}
"""


def decode_hash(raw: dict[bytes, bytes]) -> dict[str, str]:
    """A hash as text; raises Unreadable naming the first field that is not UTF-8."""
    try:
        return {k.decode(): v.decode() for k, v in raw.items()}
    except UnicodeDecodeError:
        for k, v in raw.items():
            for part in (k, v):
                try:
                    part.decode()
                except UnicodeDecodeError as exc:
                    raise Unreadable(f"field {decode_text(k)!r} is not UTF-8 ({exc})") from None
        raise


def decode_text(raw: bytes | str) -> str:
    """Bytes as text for showing: whatever is not UTF-8 as \\xNN escapes, never an error."""
    return raw if isinstance(raw, str) else raw.decode(errors="backslashreplace")


def read_instance(key: str, raw: dict[bytes, bytes]) -> Instance:
    """An instance hash as read from `key`; raises Unreadable naming the key and field."""
    try:
        return Instance.from_fields(decode_hash(raw))
    except Unreadable as exc:
        raise Unreadable(f"instance hash {key} is unreadable: {exc}") from None


class Store:
    def __init__(self, client: redis.Redis, keys: Keys, retention: float = 7 * 86400.0) -> None:
        self.redis = client
        self.keys = keys
        self.retention = retention
        self._read_history = client.register_script(_READ_HISTORY)

    def find(self, instance_id: str) -> Instance | None:
        key = self.keys.instance(instance_id)
        raw: dict[bytes, bytes] = self.redis.hgetall(key)  # type: ignore[assignment]
        return read_instance(key, raw) if raw else None

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
        instance's history; late copies of events recorded after it finished). Read at once
        by a read-only script: a commit folding the stream into the archive in between would
        hide both, and a script that only reads still runs while Redis is full (a MULTI
        does not)."""
        keys = [
            self.keys.instance(instance_id),
            self.keys.archive(instance_id),
            self.keys.history(instance_id),
        ]
        exists, archived, flat = self._read_history(keys=keys)
        live = [(entry_id, dict(zip(f[::2], f[1::2], strict=True))) for entry_id, f in flat]
        if not exists:
            raise self._missing(instance_id)
        entries = read_history(self.keys, instance_id, archived, live)
        try:
            return [entry for fields in entries for entry in history_entries(fields)]
        except (KeyError, ValueError, TypeError, AttributeError) as exc:  # text of a wrong shape
            what = f"{type(exc).__name__}: {exc}"
            raise Unreadable(f"history {keys[2]} is unreadable: {what}") from None

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
        chosen = ids if filter_state_here else ids[:limit]
        for instance_id in chosen:
            pipe.hgetall(self.keys.instance(instance_id))
        found: list[Instance] = []
        for instance_id, raw in zip(chosen, pipe.execute(), strict=True):
            if not raw:
                continue
            try:
                found.append(read_instance(self.keys.instance(instance_id), raw))
            except Unreadable as exc:  # one corrupt hash must not hide every other instance
                log.error("listing skips instance %r: %s", instance_id, exc)
        if filter_state_here:
            found = [i for i in found if i.state == state]
        return found[:limit]


def read_history(keys: Keys, instance_id: str, archived: Any, live: Any) -> list[dict[str, str]]:
    """An instance's archive (bytes or None) then its stream (an XRANGE reply), as field
    maps; raises Unreadable naming the key whose content cannot be read."""
    try:
        entries = archive.unpack(archived)
    except Exception as exc:  # zlib, JSON, shape: whatever it is, it is not an archive
        key = keys.archive(instance_id)
        raise Unreadable(f"archive {key} is unreadable: {type(exc).__name__}: {exc}") from None
    try:
        return entries + archive.stream_entries(live)
    except UnicodeDecodeError as exc:
        key = keys.history(instance_id)
        raise Unreadable(f"history {key} is unreadable: not UTF-8 ({exc})") from None


def history_entries(raw: dict[str, str]) -> list[dict[str, Any]]:
    """One stored history entry as shown: first an entry (outcome `passed`) for each state
    the event's step entered and left at once, naming the parked event that moved it on,
    then the event's own entry, from the last state passed through."""
    entry = {
        "seq": int(raw["seq"]),
        "event": json.loads(raw["event"]),
        "outcome": raw["outcome"],
        "from": raw.get("from") or None,
        "to": raw.get("to") or None,
        "status": raw["status"],
        "note": raw.get("note", ""),
        "effects": json.loads(raw.get("effects", "[]")),
    }
    passed = json.loads(raw.get("passed") or "[]")
    shown: list[dict[str, Any]] = []
    for step in passed:
        shown.append(
            {
                **entry,
                "outcome": PASSED,
                "to": step["state"],
                "status": "running",
                "note": f"passed through: left at once on parked {step['left_on']} "
                f"({step['left_by']})",
                "effects": [],
                "left_on": step["left_on"],
                "left_by": step["left_by"],
            }
        )
        entry["from"] = step["state"]
    return [*shown, entry]
