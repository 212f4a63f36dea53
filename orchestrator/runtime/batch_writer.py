"""What the applier commits for one batch, in its one MULTI/EXEC: instance hashes,
history entries (or archives), applied ids, indexes, RQ jobs, timers, dead
letters, acknowledgements.

Each applied event adds to the `Work` of its instance (`Work.record`); the
writer turns the batch's work into commands, once per key where instances
share one (indexes, the watchdog's records). A batch that finishes an
instance folds its history into the archive, which takes one read first
(`finished_histories`). Kept apart from reading and applying so that
everything a commit writes is in one place.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import redis
from redis.client import Pipeline

from orchestrator.core import events as ev
from orchestrator.core.effects import Effect, describe
from orchestrator.core.events import Event, Unreadable
from orchestrator.core.instance import Instance
from orchestrator.core.machine import Result
from orchestrator.runtime.batch_reader import Entry
from orchestrator.runtime.dispatch import Dispatcher, Ready
from orchestrator.store import archive
from orchestrator.store.instances import read_history
from orchestrator.store.keys import INBOX_GROUP, Keys
from orchestrator.store.retention import Retention

log = logging.getLogger("orchestrator.runtime.applier")


@dataclass
class Work:
    """What one batch will commit for one instance."""

    before: Instance
    after: Instance
    applied: set[str]
    stored: dict[str, str]  # the instance hash as loaded: only fields that differ are written
    new_ids: list[str] = field(default_factory=list)
    answered_jobs: list[str] = field(default_factory=list)
    history: list[dict[str, str]] = field(default_factory=list)
    effects: list[tuple[int, int, Effect]] = field(default_factory=list)  # seq, index, effect

    def record(self, event: Event, raw: str, result: Result) -> None:
        """Add what one applied event commits; `raw` is its inbox JSON, kept as it came."""
        before = self.after
        after = result.instance
        seq = after.seq
        self.applied.add(event.id)
        self.new_ids.append(event.id)
        if "job" in event.data and event.type in ev.ANSWERS:
            self.answered_jobs.append(str(event.data["job"]))
        self.after = after
        self.history.append(
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
            self.effects.append((seq, index, effect))


@dataclass
class Archived:
    """A finished instance's history before this batch, and its keys' time to live."""

    entries: list[dict[str, str]]
    ttl_ms: int


class BatchWriter:
    """Writes what a batch of the applier commits."""

    def __init__(
        self, client: redis.Redis, keys: Keys, dispatcher: Dispatcher, retention: Retention
    ) -> None:
        self.redis = client
        self.keys = keys
        self.dispatcher = dispatcher
        self.retention = retention

    def finished_histories(
        self, work: dict[str, Work]
    ) -> tuple[dict[str, Archived], dict[str, str]]:
        """One round trip, for batches that finish an instance (or record a late copy for a
        finished one): the history it has so far, to be archived with this batch's entries.
        Also returns the instances whose history cannot be read, with the reason."""
        finished = [iid for iid, item in work.items() if item.history and item.after.finished]
        if not finished:
            return {}, {}
        pipe = self.redis.pipeline(transaction=False)
        archived_before = {
            iid
            for iid in finished
            # a late copy: archived already, and expiring; or a child that finished once
            # and was undone by its parent since (its first archive is kept)
            if work[iid].before.finished or work[iid].after.parent is not None
        }
        for instance_id in finished:
            pipe.xrange(self.keys.history(instance_id))
            if instance_id in archived_before:
                pipe.get(self.keys.archive(instance_id))
                pipe.pttl(self.keys.instance(instance_id))
        replies = iter(pipe.execute())
        found: dict[str, Archived] = {}
        unreadable: dict[str, str] = {}
        for instance_id in finished:
            live = next(replies)
            archived, ttl_ms = None, 0  # finishing now: only the finishing commit archives
            if instance_id in archived_before:
                archived, ttl_ms = next(replies), int(next(replies))
            try:
                entries = read_history(self.keys, instance_id, archived, live)
            except Unreadable as exc:
                log.error("%s", exc)
                unreadable[instance_id] = str(exc)
                continue
            found[instance_id] = Archived(entries, ttl_ms)
        return found, unreadable

    def write(
        self,
        pipe: Pipeline,
        work: dict[str, Work],
        dead: list[dict[str, str]],
        entries: list[Entry],
        finished: dict[str, Archived],
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
            if before.finished:  # its hash may be expiring: written whole
                fields = after.to_fields()
            else:
                fields = after.changed_fields(before, item.stored)
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
        self, pipe: Pipeline, instance_id: str, so_far: Archived, item: Work, was_finished: bool
    ) -> None:
        """Fold the whole history into the archive and drop the stream. Finishing now,
        retention sets the archive's time to live below; a late copy keeps the instance's."""
        key = self.keys.archive(instance_id)
        pipe.set(key, archive.pack(so_far.entries + item.history))
        pipe.delete(self.keys.history(instance_id))
        if was_finished and so_far.ttl_ms > 0:
            pipe.pexpire(key, so_far.ttl_ms)


def _fields(mapping: dict[str, str]) -> Any:
    """Field maps as redis-py's annotations want them (its key types are invariant)."""
    return mapping


def _passed(result: Result) -> dict[str, str]:
    """The history field of the states a step passed through, when it passed any."""
    if not result.passed:
        return {}
    steps = [{"state": p.state, "left_on": p.left_on, "left_by": p.left_by} for p in result.passed]
    return {"passed": json.dumps(steps, separators=(",", ":"))}
