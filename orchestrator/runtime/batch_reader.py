"""What the applier reads for one batch: inbox entries, their events, the instances
they address and the event ids those applied.

Reading is where the applier meets data it must not trust (anyone who can
write to Redis can write anything), and where it must not lose its place in
an inbox: a partition gained, or gained back, may hold entries this applier
read once and never acknowledged, so its pending entries are read first.
Kept apart from the applying (orchestrator.runtime.applier) and the commit
(orchestrator.runtime.batch_writer) so the rules of reading sit together.
"""

from __future__ import annotations

import logging
from typing import Any

import redis

from orchestrator.core.events import Event, Unreadable
from orchestrator.core.instance import Instance
from orchestrator.store.commit import Commit
from orchestrator.store.instances import decode_hash, decode_text
from orchestrator.store.keys import INBOX_CONSUMER, INBOX_GROUP, Keys
from orchestrator.store.leases import Leases

log = logging.getLogger("orchestrator.runtime.applier")

Entry = tuple[int, str, dict[bytes, bytes]]  # partition, stream entry id, fields
Parsed = tuple[Entry, Event | None, str]  # the entry; its event and JSON text, or None and why
# instance, applied ids, its hash; or why its hash cannot be read
Loaded = tuple[Instance | None, set[str], dict[str, str]] | str


class BatchReader:
    """Reads batches from the inbox partitions an applier holds leases on."""

    def __init__(
        self, client: redis.Redis, keys: Keys, leases: Leases, applier_id: str, batch_size: int
    ) -> None:
        self.redis = client
        self.keys = keys
        self.leases = leases
        self.id = applier_id
        self.batch_size = batch_size
        self.caught_up: set[int] = set()  # owned partitions with no pending entries left

    def read(self, block_ms: int) -> list[Entry]:
        owned = self.leases.owned
        self.caught_up &= set(owned)
        recovering = set(owned) - self.caught_up
        streams: Any = {self.keys.inbox(p): "0" if p in recovering else ">" for p in owned}
        reply: Any = self.redis.xreadgroup(
            INBOX_GROUP,
            INBOX_CONSUMER,
            streams,
            count=self.batch_size,
            block=None if recovering or not block_ms else block_ms,
        )
        entries: list[Entry] = []
        by_stream = {self.keys.inbox(p): p for p in owned}
        still_pending: set[int] = set()
        for stream, items in reply or []:
            partition = by_stream[stream.decode()]
            if partition in recovering and items:
                still_pending.add(partition)
            for entry_id, fields in items:
                if not fields:  # an entry trimmed away while pending (None or {})
                    continue
                entries.append((partition, entry_id.decode(), fields))
        self.caught_up |= recovering - still_pending
        if not entries and recovering:
            return self.read(block_ms)
        return entries

    def parse(self, entry: Entry) -> tuple[Event | None, str]:
        """An inbox entry's event and its JSON text; or None and why it cannot be applied."""
        partition, _, fields = entry
        raw = fields.get(b"e")
        if raw is None:
            names = sorted(decode_text(k) for k in fields)
            return None, f"malformed event: the entry has no 'e' field (it has {names})"
        try:
            text = raw.decode()
            event = Event.from_json(text)
        except UnicodeDecodeError as exc:
            return None, f"malformed event: not UTF-8 ({exc})"
        except Unreadable as exc:
            return None, f"malformed event: {exc}"
        home = self.keys.partition_of(event.instance_id)
        if home != partition:  # applied here, it would race its own partition's applier
            return None, (
                f"event for instance {event.instance_id!r} found in partition {partition}'s "
                f"inbox; it belongs to partition {home}"
            )
        return event, text

    def load(
        self, events: list[Parsed], partitions: list[int], commit: Commit
    ) -> tuple[dict[str, Loaded], list[int], set[int]]:
        """One round trip, on the batch's transaction: WATCH on the partitions' leases,
        then the lease holders, the oldest pending entries, the instances, which event
        ids they applied.

        An entry older than this batch may be pending: one that an applier whose lease
        had expired read after this one's recovery read, then failed to commit. Applied
        after this batch it would break the order; trimmed with it, it would be lost.
        Such partitions come back in `behind`, to be read again from their pending entries.
        """
        wanted: dict[str, list[str]] = {}
        first: dict[int, str] = {}
        for (partition, entry_id, _), event, _ in events:
            first.setdefault(partition, entry_id)
            if event is not None:
                wanted.setdefault(event.instance_id, []).append(event.id)
        leases = [self.keys.lease(partition) for partition in partitions]
        commands: list[tuple[Any, ...]] = []
        for partition, lease in zip(partitions, leases, strict=True):
            commands.append(("GET", lease))
            commands.append(("XPENDING", self.keys.inbox(partition), INBOX_GROUP))
        for instance_id, event_ids in wanted.items():
            commands.append(("HGETALL", self.keys.instance(instance_id)))
            commands.append(("SMISMEMBER", self.keys.applied(instance_id), *event_ids))
        replies = commit.watch_and_read(leases, commands)
        for reply in replies:
            if isinstance(reply, Exception):  # as a pipeline raises its first error
                raise reply
        head, rest = replies[: 2 * len(partitions)], replies[2 * len(partitions) :]
        holders, pending = head[0::2], head[1::2]
        lost = [
            p for p, h in zip(partitions, holders, strict=True) if (h or b"").decode() != self.id
        ]
        behind = {
            p
            for p, (count, oldest, *_) in zip(partitions, pending, strict=True)
            if count and _older(oldest, first[p])
        }
        loaded: dict[str, Loaded] = {}
        for index, (instance_id, event_ids) in enumerate(wanted.items()):
            raw, flags = _hash(rest[2 * index]), rest[2 * index + 1]
            try:
                stored = decode_hash(raw) if raw else {}
                instance = Instance.from_fields(stored) if stored else None
                if instance is not None and instance.id != instance_id:
                    raise Unreadable(f"field 'id' is {instance.id[:50]!r}")
            except Unreadable as exc:
                key = self.keys.instance(instance_id)
                log.error("instance hash %s is unreadable: %s", key, exc)
                loaded[instance_id] = f"instance hash {key} is unreadable: {exc}"
                continue
            applied = {e for e, flag in zip(event_ids, flags, strict=True) if flag}
            loaded[instance_id] = (instance, applied, stored)
        return loaded, lost, behind


def _hash(raw: Any) -> dict[bytes, bytes]:
    """An HGETALL reply as the server sent it (a flat list of fields and values; a map
    under RESP3) as redis-py's response callback makes it."""
    if isinstance(raw, dict):
        return raw
    return dict(zip(raw[0::2], raw[1::2], strict=True))


def _older(entry_id: bytes | str, than: str) -> bool:
    """Stream ids compare as (milliseconds, sequence) pairs, not as strings."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    ms2, _, seq2 = than.partition("-")
    return (int(ms), int(seq or 0)) < (int(ms2), int(seq2 or 0))
