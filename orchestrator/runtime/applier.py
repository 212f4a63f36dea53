"""The applier: the one place that loads instances, decides, and commits.

One batch, from the inbox partitions this applier holds leases on:

  XREADGROUP (new entries, or the pending ones of a partition just taken over)
  WATCH the lease keys, and load the instances and their applied-event ids, in one
  round trip on the transaction's connection (orchestrator.store.commit)
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
on. The side duties of a tick (timers, notify-later, schedules, held events,
watchdog, retention) set aside what they cannot read themselves, and a failure in
one of them that is not Redis's is logged and retried a little later, never allowed
to stop the applying. All of it costs no extra round trip: the parsing that was
there is checked, nothing more is read.

The applier is the loop and the applying; what a batch reads is in
orchestrator.runtime.batch_reader, what it commits in
orchestrator.runtime.batch_writer.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable

import redis

from orchestrator.core.definition import Definition
from orchestrator.core.errors import SchemaViolation, UnknownWorkflow
from orchestrator.core.events import Event
from orchestrator.core.instance import Instance
from orchestrator.core.machine import GuardFailed, Result, already_applied, transition
from orchestrator.runtime import metrics, publisher, roster, tracing
from orchestrator.runtime.batch_reader import BatchReader, Entry, Loaded, Parsed
from orchestrator.runtime.batch_writer import BatchWriter, Work
from orchestrator.runtime.dispatch import Dispatcher
from orchestrator.runtime.faults import crash_point
from orchestrator.runtime.notify.later import Later
from orchestrator.runtime.publisher import Publishing
from orchestrator.runtime.registry import Registry
from orchestrator.runtime.scheduler import Scheduler
from orchestrator.store.commit import commit
from orchestrator.store.deadletters import INBOX, dead_letter
from orchestrator.store.instances import decode_text
from orchestrator.store.keys import Keys
from orchestrator.store.leases import Leases
from orchestrator.store.published import PublishedStreams
from orchestrator.store.retention import Retention
from orchestrator.store.timers import Timers
from orchestrator.store.waiting import Waiting

log = logging.getLogger("orchestrator.runtime.applier")
DUTY_PAUSE = 5.0  # seconds a side duty that failed waits before it is tried again
SCHEDULE_EVERY = 1.0  # seconds between the scheduler's looks at what is due
# seconds between looks for due timers and held notifications while events keep the
# applier busy (it looks on every idle tick, and on every tick without blocking): two
# round trips a batch fewer at light load, the applier's CPU a workflow 5-15% less at
# 50/s (paired probes, three rounds); a timer fires at most this much later
DUE_EVERY = 0.01


class Applier:
    """Applies the events of the inbox partitions it holds leases on, batch by batch."""

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
        publishing: Publishing | None = None,
        events_retention: float = 7 * 86400.0,
    ) -> None:
        self.redis = client
        self.keys = keys
        self.registry = registry
        self.crash_at = crash_at
        self.id = applier_id or uuid.uuid4().hex[:12]
        self.leases = Leases(client, keys, self.id, ttl=lease_ttl)
        self.timers = Timers(client, keys)
        self.publishing = publishing or Publishing()
        self.published = PublishedStreams(client, keys)
        self.events_retention = events_retention
        self.dispatcher = Dispatcher(client, keys, job_key, registry, self.publishing)
        self.retention = Retention(client, keys, retention)
        self.later = Later(client, keys)
        self.reader = BatchReader(client, keys, self.leases, self.id, batch_size)
        self.writer = BatchWriter(client, keys, self.dispatcher, self.retention)
        self.scheduler = Scheduler(client, keys, registry)
        self.waiting = Waiting(client, keys)
        self._next_clean = 0.0
        self._next_due = 0.0
        self._next_watch = 0.0
        self._next_schedule = 0.0
        self._next_announce = 0.0
        self._served = roster.served(registry)
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
                self.reader.caught_up.clear()  # and a batch may be pending: read it again
                time.sleep(pause)
                pause = min(pause * 2, 5.0)
        with contextlib.suppress(redis.ConnectionError, redis.TimeoutError):
            self.release()

    def release(self) -> None:
        """Leave: give the partitions back and withdraw this applier's announcement."""
        self.leases.release_all()
        roster.withdraw(self.redis, self.keys, self.id)

    def tick(self, block_ms: int = 0) -> int:
        """Keep the leases, fire due timers, apply one batch. Returns events applied."""
        # A partition gained (again: a lease lost during a Redis pause, then taken back)
        # may hold a batch this applier read and never acknowledged: read its pending first.
        self.reader.caught_up -= set(self.leases.maintain())
        self._announce(time.time())
        owned = self.leases.owned
        if not owned:
            if block_ms:
                time.sleep(block_ms / 1000)
            return 0
        now = time.time()
        if now >= self._next_due or not block_ms:
            self._next_due = now + DUE_EVERY
            self._duty("timers", now, lambda: self.timers.fire_due(owned, now))
            if 0 in owned:  # one mover: the holder of partition 0
                self._duty("notify-later", now, lambda: self.later.move_due(self.dispatcher, now))
        # one scheduler, the holder of partition 0; ticks have whole seconds: once a second
        if 0 in owned and now >= self._next_schedule:
            self._next_schedule = now + SCHEDULE_EVERY
            self._duty("schedules", now, lambda: self.scheduler.run_due(now))
            self._duty("waiting", now, lambda: self.waiting.expire_due(now))
        if now >= self._next_watch:
            self._next_watch = now + 1.0
            self._duty("watchdog", now, lambda: self.dispatcher.watchdog.check(owned, now))
        if now >= self._next_clean:
            self._next_clean = now + 60.0
            self._duty("retention", now, lambda: self.retention.clean(now))
            keep = self.events_retention
            self._duty("published", now, lambda: self.published.trim(owned, keep, now))
        return self.apply_batch(block_ms=block_ms)

    def _announce(self, now: float) -> None:
        """Say which workflows this applier serves (runtime.roster), now and then."""
        if now >= self._next_announce:
            self._next_announce = now + roster.ANNOUNCE_EVERY
            served = self._served
            self._duty(
                "announce", now, lambda: roster.announce(self.redis, self.keys, self.id, served)
            )

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
        entries = self.reader.read(block_ms)
        if not entries:
            return 0
        partitions = sorted({p for p, _, _ in entries})
        events = [(entry, *self.reader.parse(entry)) for entry in entries]
        with commit(self.redis) as pipe:
            loaded, lost, behind = self.reader.load(events, partitions, pipe)
            if lost:
                pipe.reset()
                for partition in lost:
                    self.leases.forget(partition)
                return 0
            if behind:  # older entries pending: read them first, in order, with these
                pipe.reset()
                self.reader.caught_up -= behind
                return 0
            work, dead = self._apply_all(events, loaded)
            finished, unreadable = self.writer.finished_histories(work)
            if unreadable:  # rare: apply again, their events to the dead letters
                loaded.update(unreadable)
                work, dead = self._apply_all(events, loaded)
                finished, _ = self.writer.finished_histories(work)
            crash_point("before_commit", self.crash_at)
            pipe.multi()
            self.writer.write(pipe, work, dead, entries, finished)
            try:
                self.dispatcher.committed(pipe.execute())
            except redis.WatchError:
                log.warning("lost a lease while applying; partitions %s let go", partitions)
                for partition in partitions:
                    self.leases.forget(partition)
                return 0
        crash_point("after_commit", self.crash_at)
        counts = metrics.current()  # one look a batch; None with ORCHESTRATOR_METRICS=0
        if counts is not None:
            counts.batch_committed(work.values(), len(dead))
        return len(entries)

    def _apply_all(
        self,
        events: list[Parsed],
        loaded: dict[str, Loaded],
    ) -> tuple[dict[str, Work], list[dict[str, str]]]:
        work: dict[str, Work] = {}
        dead: list[dict[str, str]] = []
        # tracing: one look a batch; off, no span and no context is made (runtime.tracing)
        traces = self.dispatcher.traces = {} if tracing.enabled else None
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
                item = work[event.instance_id] = Work(instance, instance, applied, stored)
            if event.id in item.applied:  # delivered again: recorded, not applied
                item.record(event, raw, already_applied(item.after, event))
                continue
            try:
                definition = self.registry.get(item.after.workflow, item.after.version)
                self.registry.check_payload(definition, event.type, event.data)
                if traces is None:
                    result = self._decide(definition, item.after, event)
                else:
                    result = self._traced(definition, item.after, event, traces)
            except (UnknownWorkflow, GuardFailed, SchemaViolation) as exc:
                dead.append(self._dead(entry, str(exc)))
                continue
            except Exception as exc:  # a bug must not wedge the partition
                log.exception(
                    "applying %s to %s (entry %s)",
                    event.type,
                    event.instance_id,
                    entry_id,
                    extra={
                        "instance_id": event.instance_id,
                        "workflow": item.after.workflow,
                        "state": item.after.state,
                    },
                )
                dead.append(self._dead(entry, f"internal error: {type(exc).__name__}: {exc}"))
                continue
            item.record(event, raw, result)
        return work, dead

    def _decide(self, definition: Definition, instance: Instance, event: Event) -> Result:
        """The transition an event makes, with the events it publishes."""
        result = transition(definition, instance, event)
        if definition.published or self.publishing.lifecycle:
            result = publisher.complete(
                self.registry, definition, instance, event, result, self.publishing
            )
        return result

    def _traced(
        self,
        definition: Definition,
        instance: Instance,
        event: Event,
        traces: dict[tuple[str, int], str | None],
    ) -> Result:
        """`_decide` in a span `apply <event type>`, child of the event's trace; what its
        effects send on (jobs, child starts, signals) carries the span's context
        (Dispatcher.traces, by instance and sequence number)."""
        attributes = {
            tracing.INSTANCE: instance.id,
            tracing.WORKFLOW: instance.workflow,
            tracing.STATE: instance.state,
            tracing.EVENT: event.type,
        }
        with tracing.span(f"apply {event.type}", event.trace, attributes, "CONSUMER") as span:
            result = self._decide(definition, instance, event)
            span.set_attribute(tracing.OUTCOME, result.outcome)
        traces[(instance.id, result.instance.seq)] = tracing.traceparent_of(span)
        return result

    def _dead(self, entry: Entry, reason: str) -> dict[str, str]:
        """The dead letter of an inbox entry: its `e` field's bytes as they are (the whole
        entry, as text, when it has none), where it was, and why."""
        partition, entry_id, fields = entry
        raw: bytes | str | None = fields.get(b"e")
        if raw is None:
            raw = json.dumps({decode_text(k): decode_text(v) for k, v in fields.items()})
        return dead_letter(INBOX, self.keys.inbox(partition), entry_id, raw, reason)
