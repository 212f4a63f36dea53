"""The scheduler: start the instances that schedules are due to start.

It runs as a side duty of the applier that holds partition 0 (one scheduler at a time,
as the notify-later mover), each tick of its loop: for each schedule whose round is
due, `core.schedule.plan` says which ticks to start, and one transaction creates their
instances (through the door's own create script) and records where the schedule
stands, under a WATCH of the schedule's hash.

Exactly one start per tick, whatever the number of appliers: the instance id is
derived from the schedule and the tick (`core.schedule.tick_id`), and the door refuses
to create an id twice; the WATCH makes a round that raced another (a lease handed
over mid-round) start nothing and leave the ticks to the winner. A crash before EXEC
starts nothing and moves nothing: the next holder plays the round again.
"""

from __future__ import annotations

import logging
import time

import redis

from orchestrator.core.errors import InputError, UnknownWorkflow
from orchestrator.core.schedule import ScheduleSpec, plan, tick_id, tick_text
from orchestrator.runtime import metrics
from orchestrator.runtime.registry import Registry
from orchestrator.store.deadletters import dead_letter
from orchestrator.store.inbox import Inbox
from orchestrator.store.instances import decode_text
from orchestrator.store.keys import Keys
from orchestrator.store.schedules import Schedules

log = logging.getLogger("orchestrator.runtime.scheduler")
SYNC_EVERY = 5.0  # seconds between writes of the declared schedules
UNKNOWN_RETRY = 60.0  # seconds before a schedule of a workflow not loaded here is tried again
FINISHED = {"completed", "failed", "cancelled"}  # instance statuses that are not running


class Scheduler:
    def __init__(self, client: redis.Redis, keys: Keys, registry: Registry) -> None:
        self.redis = client
        self.keys = keys
        self.registry = registry
        self.schedules = Schedules(client, keys)
        self.inbox = Inbox(client, keys)
        self._next_sync = 0.0

    def run_due(self, now: float | None = None) -> int:
        """Play the due rounds; returns the instances started."""
        now = time.time() if now is None else now
        if now >= self._next_sync:
            self._next_sync = now + SYNC_EVERY
            self.sync(now)
        return sum(self._round(name, now) for name in self.schedules.due(now))

    def sync(self, now: float) -> None:
        """Write the schedules the loaded workflows declare (their latest versions)."""
        latest = self.registry.latest()
        declared = [spec for definition in latest for spec in definition.schedules]
        clashes = self.schedules.sync_declared(declared, [d.name for d in latest], now)
        for name in clashes:
            log.warning(
                "schedule %s is declared on a workflow and was also added at run time; the "
                "run-time one stays (remove it to let the declared one run)",
                name,
            )

    def _round(self, name: str, now: float) -> int:
        state_key = self.keys.schedule(name)
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.watch(state_key)  # type: ignore[no-untyped-call]
            raw = pipe.hget(self.keys.schedules, name)
            if raw is None:  # removed meanwhile
                self.redis.zrem(self.keys.schedules_due, name)
                return 0
            try:
                spec = ScheduleSpec.from_json(raw)
            except InputError as exc:
                self._set_aside(name, raw, str(exc))
                return 0
            state = {decode_text(k): decode_text(v) for k, v in pipe.hgetall(state_key).items()}
            if state.get("paused") == "1":
                self.redis.zrem(self.keys.schedules_due, name)
                return 0
            try:
                definition = self.registry.get(spec.workflow)
            except UnknownWorkflow:
                log.warning(
                    "schedule %s starts workflow %s, which this worker does not load; "
                    "trying again in %.0f s",
                    name,
                    spec.workflow,
                    UNKNOWN_RETRY,
                )
                self.redis.zadd(self.keys.schedules_due, {name: now + UNKNOWN_RETRY})
                return 0
            last = float(state.get("last") or now)
            round_ = plan(spec, last, now)
            start = round_.start
            if round_.missed:
                log.info(
                    "schedule %s missed ticks since %s; catch-up %s starts %d",
                    name,
                    tick_text(last),
                    spec.catch_up,
                    len([t for t in start if t < now - 60]),
                )
            skipped = 0
            if spec.overlap == "skip" and start:
                skipped = len(start) - 1
                start = start[-1:]  # one at a time: never two of its instances side by side
                previous = state.get("instance")
                status = pipe.hget(self.keys.instance(previous), "status") if previous else None
                if status is not None and decode_text(status) not in FINISHED:
                    skipped, start = skipped + 1, []
            correlation_of = definition.correlate_by
            pipe.multi()
            for tick in start:
                data = {**spec.input, "scheduled_at": tick_text(tick)}
                correlation = (
                    (correlation_of, str(data[correlation_of])) if correlation_of else None
                )
                self.inbox.queue_create(
                    pipe, definition, tick_id(name, tick), data, correlation, f"schedule {name}"
                )
            pipe.hset(state_key, "last", round_.last)
            if start:
                pipe.hset(state_key, "instance", tick_id(name, start[-1]))
            pipe.zadd(self.keys.schedules_due, {name: round_.next})
            try:
                replies = pipe.execute()
            except redis.WatchError:
                return 0  # another round changed it first: its ticks are its own
        created = sum(1 for reply in replies[: len(start)] if reply[0] == b"created")
        skipped += len(start) - created  # its key in use by a live instance, or started before
        if created or skipped:
            counts = self.redis.pipeline(transaction=False)
            counts.hincrby(state_key, "started", created)
            counts.hincrby(state_key, "skipped", skipped)
            counts.execute()
            if (found := metrics.current()) is not None:
                found.schedule_ticks(spec.workflow, created, skipped)
        return created

    def _set_aside(self, name: str, raw: bytes | str, reason: str) -> None:
        """An unreadable stored spec goes to the dead letters, out of the schedules."""
        letter = dead_letter("schedules", self.keys.schedules, name, raw, reason)
        pipe = self.redis.pipeline(transaction=True)
        pipe.xadd(self.keys.deadletters, letter)  # type: ignore[arg-type]
        pipe.hdel(self.keys.schedules, name)
        pipe.zrem(self.keys.schedules_due, name)
        pipe.execute()
        if (counts := metrics.current()) is not None:
            counts.dead_letters("schedules")
        log.warning("schedule %s could not be read (%s); moved to the dead letters", name, reason)
