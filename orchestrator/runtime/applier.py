"""The applier: the one place that loads instances, decides, and commits.

One batch, from the inbox partitions this applier holds leases on:

  XREADGROUP (new entries, or the pending ones of a partition just taken over)
  WATCH the lease keys; load the instances and their applied-event ids
  apply each event with the pure transition function, in stream order
  for instances now finished: read their history so far (orchestrator.store.archive)
  MULTI: instance hashes, history entries (or archives), applied ids, indexes,
         RQ jobs, timers, dead letters, XACK, XTRIM; EXEC

If the process dies anywhere before EXEC, nothing of the batch is written and
its entries stay pending, to be read again by whoever holds the lease next.
If the lease changed hands meanwhile, EXEC fails on the WATCH and this
applier lets the partition go: a fenced-out applier cannot commit.

Nothing read back is trusted (anyone who can write to Redis can write
anything): an inbox entry that is not UTF-8, not JSON, not an event, or an
event addressed to another partition's instance goes to the dead letters in
the batch's commit, with its bytes and the reason, and is acknowledged like
the rest. An instance whose hash (or archived history) cannot be read is left
as it is, the evidence an operator repairs, and its events go to the dead
letters, to be replayed once it is repaired; the batch's other instances go
on. The side duties of a tick (timers, notify-later, watchdog, retention)
set aside what they cannot read themselves, and a failure in one of them
that is not Redis's is logged and retried a little later, never allowed to
stop the applying. All of it costs no extra round trip: the parsing that was
there is checked, nothing more is read.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis
from redis.client import Pipeline

from orchestrator.core import events as ev
from orchestrator.core.effects import describe
from orchestrator.core.errors import UnknownWorkflow
from orchestrator.core.events import Event, Unreadable
from orchestrator.core.instance import Instance
from orchestrator.core.machine import GuardFailed, Result, already_applied, transition
from orchestrator.core.schemas import SchemaViolation
from orchestrator.runtime.dispatch import Dispatcher, Ready
from orchestrator.runtime.faults import crash_point
from orchestrator.runtime.notify.later import Later
from orchestrator.runtime.registry import Registry
from orchestrator.store import archive
from orchestrator.store.deadletters import INBOX, dead_letter
from orchestrator.store.instances import decode_hash, decode_text, read_history
from orchestrator.store.keys import INBOX_CONSUMER, INBOX_GROUP, Keys
from orchestrator.store.leases import Leases
from orchestrator.store.retention import Retention
from orchestrator.store.timers import Timers

log = logging.getLogger("orchestrator.runtime.applier")
ANSWERS = frozenset(
    {ev.TASK_COMPLETED, ev.TASK_FAILED, ev.COMPENSATION_COMPLETED, ev.COMPENSATION_FAILED}
)

Entry = tuple[int, str, dict[bytes, bytes]]  # partition, stream entry id, fields
Parsed = tuple[Entry, Event | None, str]  # the entry; its event and JSON text, or None and why
# instance, applied ids, its hash; or why its hash cannot be read
_Loaded = tuple[Instance | None, set[str], dict[str, str]] | str
DUTY_PAUSE = 5.0  # seconds a side duty that failed waits before it is tried again


@dataclass
class _Work:
    """What one batch will commit for one instance."""

    before: Instance
    after: Instance
    applied: set[str]
    stored: dict[str, str]  # the instance hash as loaded: only fields that differ are written
    new_ids: list[str] = field(default_factory=list)
    answered_jobs: list[str] = field(default_factory=list)
    history: list[dict[str, str]] = field(default_factory=list)
    effects: list[tuple[int, int, Any]] = field(default_factory=list)  # seq, index, effect


class Applier:
    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        registry: Registry,
        *,
        batch_size: int = 200,
        lease_ttl: float = 10.0,
        retention: float = 7 * 86400.0,
        crash_at: frozenset[str] = frozenset(),
        applier_id: str | None = None,
        job_key: bytes | None = None,
    ) -> None:
        self.redis = client
        self.keys = keys
        self.registry = registry
        self.batch_size = batch_size
        self.crash_at = crash_at
        self.id = applier_id or uuid.uuid4().hex[:12]
        self.leases = Leases(client, keys, self.id, ttl=lease_ttl)
        self.timers = Timers(client, keys)
        self.dispatcher = Dispatcher(client, keys, job_key)
        self.retention = Retention(client, keys, retention)
        self.later = Later(client, keys)
        self._next_clean = 0.0
        self._caught_up: set[int] = set()
        self._next_watch = 0.0  # owned partitions with no pending entries left
        self._duty_paused: dict[str, float] = {}  # side duty -> when it may run again

    # -- the loop -------------------------------------------------------------

    def run(self, should_stop: Callable[[], bool], block_ms: int = 100) -> None:
        """Apply until told to stop; ride out Redis outages by waiting and trying again."""
        pause = 0.1
        while not should_stop():
            try:
                self.tick(block_ms=block_ms)
                pause = 0.1
                if self.dispatcher.linger:  # workers are busy: let the next batch grow,
                    time.sleep(self.dispatcher.linger)  # so its tasks go out in fewer jobs
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                log.warning("Redis unreachable (%s); trying again in %.1fs", exc, pause)
                self.leases.check_soon()  # they may have expired meanwhile
                self._caught_up.clear()  # and a batch may be pending: read it again
                time.sleep(pause)
                pause = min(pause * 2, 5.0)
        with contextlib.suppress(redis.ConnectionError, redis.TimeoutError):
            self.leases.release_all()

    def tick(self, block_ms: int = 0) -> int:
        """Keep the leases, fire due timers, apply one batch. Returns events applied."""
        # A partition gained (again: a lease lost during a Redis pause, then taken back)
        # may hold a batch this applier read and never acknowledged: read its pending first.
        self._caught_up -= set(self.leases.maintain())
        owned = self.leases.owned
        if not owned:
            if block_ms:
                time.sleep(block_ms / 1000)
            return 0
        now = time.time()
        self._duty("timers", now, lambda: self.timers.fire_due(owned, now))
        if 0 in owned:  # one mover: the holder of partition 0
            self._duty("notify-later", now, lambda: self.later.move_due(self.dispatcher, now))
        if now >= self._next_watch:
            self._next_watch = now + 1.0
            self._duty("watchdog", now, lambda: self.dispatcher.watchdog.check(owned, now))
        if now >= self._next_clean:
            self._next_clean = now + 60.0
            self._duty("retention", now, lambda: self.retention.clean(now))
        return self.apply_batch(block_ms=block_ms)

    def _duty(self, name: str, now: float, run: Callable[[], object]) -> None:
        """Run a side duty of the tick. Redis's errors go up (the loop rides out an outage);
        any other is a bug or data its reader did not expect: logged, the duty paused a
        few seconds, and applying goes on."""
        if self._duty_paused.get(name, 0.0) > now:
            return
        try:
            run()
        except redis.RedisError:
            raise
        except Exception:
            log.exception("%s failed; trying again in %.0f s, applying meanwhile", name, DUTY_PAUSE)
            self._duty_paused[name] = now + DUTY_PAUSE

    def drain(self) -> int:
        """Apply until every owned inbox is empty; for burst mode and tests."""
        total = 0
        while applied := self.tick():
            total += applied
        return total

    # -- one batch --------------------------------------------------------------

    def apply_batch(self, block_ms: int = 0) -> int:
        entries = self._read(block_ms)
        if not entries:
            return 0
        partitions = sorted({p for p, _, _ in entries})
        events = [(entry, *self._parse(entry)) for entry in entries]
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.watch(*(self.keys.lease(p) for p in partitions))  # type: ignore[no-untyped-call]
            loaded, lost, behind = self._load(events, partitions)
            if lost:
                pipe.reset()
                for partition in lost:
                    self.leases.forget(partition)
                return 0
            if behind:  # older entries pending: read them first, in order, with these
                pipe.reset()
                self._caught_up -= behind
                return 0
            work, dead = self._apply_all(events, loaded)
            finished, unreadable = self._finished_histories(work)
            if unreadable:  # rare: apply again, their events to the dead letters
                loaded.update(unreadable)
                work, dead = self._apply_all(events, loaded)
                finished, _ = self._finished_histories(work)
            crash_point("before_commit", self.crash_at)
            pipe.multi()
            self._write(pipe, work, dead, entries, finished)
            try:
                pipe.execute()
            except redis.WatchError:
                log.warning("lost a lease while applying; partitions %s let go", partitions)
                for partition in partitions:
                    self.leases.forget(partition)
                return 0
        crash_point("after_commit", self.crash_at)
        return len(entries)

    def _read(self, block_ms: int) -> list[Entry]:
        owned = self.leases.owned
        self._caught_up &= set(owned)
        recovering = set(owned) - self._caught_up
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
        self._caught_up |= recovering - still_pending
        if not entries and recovering:
            return self._read(block_ms)
        return entries

    def _parse(self, entry: Entry) -> tuple[Event | None, str]:
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

    def _load(
        self, events: list[Parsed], partitions: list[int]
    ) -> tuple[dict[str, _Loaded], list[int], set[int]]:
        """One round trip: the lease holders, the oldest pending entries, the instances,
        which event ids they applied.

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
        pipe = self.redis.pipeline(transaction=False)
        for partition in partitions:
            pipe.get(self.keys.lease(partition))
            pipe.xpending(self.keys.inbox(partition), INBOX_GROUP)
        for instance_id, event_ids in wanted.items():
            pipe.hgetall(self.keys.instance(instance_id))
            pipe.smismember(self.keys.applied(instance_id), event_ids)
        replies = pipe.execute()
        head, rest = replies[: 2 * len(partitions)], replies[2 * len(partitions) :]
        holders, pending = head[0::2], head[1::2]
        lost = [
            p for p, h in zip(partitions, holders, strict=True) if (h or b"").decode() != self.id
        ]
        behind = {
            p
            for p, summary in zip(partitions, pending, strict=True)
            if summary["pending"] and _older(summary["min"], first[p])
        }
        loaded: dict[str, _Loaded] = {}
        for index, (instance_id, event_ids) in enumerate(wanted.items()):
            raw, flags = rest[2 * index], rest[2 * index + 1]
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

    def _finished_histories(
        self, work: dict[str, _Work]
    ) -> tuple[dict[str, _Archived], dict[str, str]]:
        """One round trip, for batches that finish an instance (or record a late copy for a
        finished one): the history it has so far, to be archived with this batch's entries.
        Also returns the instances whose history cannot be read, with the reason."""
        finished = [iid for iid, item in work.items() if item.history and item.after.finished]
        if not finished:
            return {}, {}
        pipe = self.redis.pipeline(transaction=False)
        for instance_id in finished:
            pipe.xrange(self.keys.history(instance_id))
            if work[instance_id].before.finished:  # a late copy: archived already, and expiring
                pipe.get(self.keys.archive(instance_id))
                pipe.pttl(self.keys.instance(instance_id))
        replies = iter(pipe.execute())
        found: dict[str, _Archived] = {}
        unreadable: dict[str, str] = {}
        for instance_id in finished:
            live = next(replies)
            archived, ttl_ms = None, 0  # finishing now: only the finishing commit archives
            if work[instance_id].before.finished:
                archived, ttl_ms = next(replies), int(next(replies))
            try:
                entries = read_history(self.keys, instance_id, archived, live)
            except Unreadable as exc:
                log.error("%s", exc)
                unreadable[instance_id] = str(exc)
                continue
            found[instance_id] = _Archived(entries, ttl_ms)
        return found, unreadable

    def _apply_all(
        self,
        events: list[Parsed],
        loaded: dict[str, _Loaded],
    ) -> tuple[dict[str, _Work], list[dict[str, str]]]:
        work: dict[str, _Work] = {}
        dead: list[dict[str, str]] = []
        for entry, event, raw in events:
            entry_id = entry[1]
            if event is None:  # `raw` says why
                dead.append(self._dead(entry, raw))
                continue
            item = work.get(event.instance_id)
            if item is None:
                found = loaded.get(event.instance_id, (None, set(), {}))
                if isinstance(found, str):  # its hash cannot be read: why
                    dead.append(self._dead(entry, found))
                    continue
                instance, applied, stored = found
                if instance is None:
                    dead.append(self._dead(entry, f"no instance {event.instance_id!r}"))
                    continue
                item = work[event.instance_id] = _Work(instance, instance, applied, stored)
            if event.id in item.applied:  # delivered again: recorded, not applied
                self._record(item, event, raw, already_applied(item.after, event))
                continue
            try:
                definition = self.registry.get(item.after.workflow, item.after.version)
                definition.schemas.check(event.type, event.data)
                result = transition(definition, item.after, event)
            except (UnknownWorkflow, GuardFailed, SchemaViolation) as exc:
                dead.append(self._dead(entry, str(exc)))
                continue
            except Exception as exc:  # a bug must not wedge the partition
                log.exception(
                    "applying %s to %s (entry %s)", event.type, event.instance_id, entry_id
                )
                dead.append(self._dead(entry, f"internal error: {type(exc).__name__}: {exc}"))
                continue
            self._record(item, event, raw, result)
        return work, dead

    def _dead(self, entry: Entry, reason: str) -> dict[str, str]:
        """The dead letter of an inbox entry: its `e` field's bytes as they are (the whole
        entry, as text, when it has none), where it was, and why."""
        partition, entry_id, fields = entry
        raw: bytes | str | None = fields.get(b"e")
        if raw is None:
            raw = json.dumps({decode_text(k): decode_text(v) for k, v in fields.items()})
        return dead_letter(INBOX, self.keys.inbox(partition), entry_id, raw, reason)

    def _record(self, item: _Work, event: Event, raw: str, result: Result) -> None:
        """Queue what one applied event commits; `raw` is its inbox JSON, kept as it came."""
        before = item.after
        after = result.instance
        seq = after.seq
        item.applied.add(event.id)
        item.new_ids.append(event.id)
        if "job" in event.data and event.type in ANSWERS:
            item.answered_jobs.append(str(event.data["job"]))
        item.after = after
        item.history.append(
            {
                "seq": str(seq),
                "event": raw,
                "outcome": result.outcome,
                "from": before.state or "",
                "to": after.state or "",
                "status": after.status,
                "note": result.note,
                "effects": json.dumps([describe(e) for e in result.effects]),
                **_passed(result),
            }
        )
        for index, effect in enumerate(result.effects):
            item.effects.append((seq, index, effect))

    def _write(
        self,
        pipe: Pipeline,
        work: dict[str, _Work],
        dead: list[dict[str, str]],
        entries: list[Entry],
        finished: dict[str, _Archived],
    ) -> None:
        """The batch's writes. What many instances share goes out once per key: the
        indexes' SREM/SADD and the watchdog's records, one command per key and batch
        (variadic) rather than one per instance; each instance's own keys, one each."""
        ready = Ready()
        leaving: dict[str, list[str]] = {}  # index key -> instance ids leaving it
        joining: dict[str, list[str]] = {}  # index key -> instance ids joining it
        answered: dict[int, list[str]] = {}  # partition -> jobs whose answer is applied
        for instance_id, item in work.items():
            if not item.history:
                continue
            after, before = item.after, item.before
            fields = after.to_fields()
            if not before.finished:  # a finished one's hash may be expiring: write it whole
                fields = {k: v for k, v in fields.items() if item.stored.get(k) != v}
            if fields:
                pipe.hset(self.keys.instance(instance_id), mapping=_fields(fields))
            if instance_id in finished:
                self._archive(pipe, instance_id, finished[instance_id], item, before.finished)
            else:
                for entry in item.history:
                    pipe.xadd(self.keys.history(instance_id), _fields(entry))
            pipe.sadd(self.keys.applied(instance_id), *item.new_ids)
            if before.status != after.status:
                leaving.setdefault(self.keys.by_status(before.status), []).append(instance_id)
                joining.setdefault(self.keys.by_status(after.status), []).append(instance_id)
            if before.state != after.state:
                if before.state:
                    key = self.keys.by_state(after.workflow, before.state)
                    leaving.setdefault(key, []).append(instance_id)
                if after.state:
                    key = self.keys.by_state(after.workflow, after.state)
                    joining.setdefault(key, []).append(instance_id)
            if after.finished and not before.finished:
                self.retention.finished(pipe, after, time.time())
                if after.correlation:
                    key, _, value = after.correlation.partition("=")
                    pipe.delete(self.keys.correlation(after.workflow, key, value))
            if item.answered_jobs:
                partition = self.keys.partition_of(instance_id)
                answered.setdefault(partition, []).extend(item.answered_jobs)
            for seq, index, effect in item.effects:
                self.dispatcher.add(pipe, after, seq, index, effect, ready)
        # An instance leaves one key and joins another (never the same), and no two
        # instances share an id: removing all, then adding all, is the same as pairwise.
        for key, ids in leaving.items():
            pipe.srem(key, *ids)
        for key, ids in joining.items():
            pipe.sadd(key, *ids)
        for partition, jobs in answered.items():
            self.dispatcher.watchdog.answered_many(pipe, partition, jobs)
        self.dispatcher.enqueue_ready(pipe, ready)
        for letter in dead:
            pipe.xadd(self.keys.deadletters, _fields(letter))
        by_partition: dict[int, list[str]] = {}
        for partition, entry_id, _ in entries:
            by_partition.setdefault(partition, []).append(entry_id)
        for partition, ids in by_partition.items():
            inbox = self.keys.inbox(partition)
            pipe.xack(inbox, INBOX_GROUP, *ids)
            pipe.xtrim(inbox, minid=ids[-1], approximate=False)

    def _archive(
        self, pipe: Pipeline, instance_id: str, so_far: _Archived, item: _Work, was_finished: bool
    ) -> None:
        """Fold the whole history into the archive and drop the stream. Finishing now,
        retention sets the archive's time to live below; a late copy keeps the instance's."""
        key = self.keys.archive(instance_id)
        pipe.set(key, archive.pack(so_far.entries + item.history))
        pipe.delete(self.keys.history(instance_id))
        if was_finished and so_far.ttl_ms > 0:
            pipe.pexpire(key, so_far.ttl_ms)


@dataclass
class _Archived:
    """A finished instance's history before this batch, and its keys' time to live."""

    entries: list[dict[str, str]]
    ttl_ms: int


def _older(entry_id: bytes | str, than: str) -> bool:
    """Stream ids compare as (milliseconds, sequence) pairs, not as strings."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    ms2, _, seq2 = than.partition("-")
    return (int(ms), int(seq or 0)) < (int(ms2), int(seq2 or 0))


def _fields(mapping: dict[str, str]) -> Any:
    """Field maps as redis-py's annotations want them (its key types are invariant)."""
    return mapping


def _passed(result: Result) -> dict[str, str]:
    """The history field of the states a step passed through, when it passed any."""
    if not result.passed:
        return {}
    steps = [{"state": p.state, "left_on": p.left_on, "left_by": p.left_by} for p in result.passed]
    return {"passed": json.dumps(steps, separators=(",", ":"))}
