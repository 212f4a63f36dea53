"""Lost work: finding tasks whose job will never answer.

RQ calls no failure callback when a work-horse is killed (the out-of-memory
path), and a worker that dies whole leaves its job "started" for minutes. So
the engine keeps its own record: every task job is registered as outstanding
in the same commit that enqueues it, and its answer removes it. While it
runs, the task wrapper refreshes a short-lived heartbeat key. The applier
checks outstanding jobs every few seconds:

  heartbeat present, or job still queued, or finished (answer on its way)  -> fine
  job failed/stopped/canceled without answering                           -> lost
  job started long enough ago, and no heartbeat                           -> lost

A lost job becomes a `task.failed` (or `compensation.failed`) event with
error type `TaskLost`, bound to the same try, so the retry rules decide what
follows, and a real answer arriving later is stale. A lost notification job is
run again (its ledger claim decides whether it sends), up to MAX_LOST_RUNS
times in a row: one that kills every worker that runs it then goes to the dead
letters and its ledger record to `failed`, instead of killing workers forever.

The records are read back from Redis, where anything may have been written:
one the watchdog cannot read (a job id or record that is not UTF-8, not JSON,
not an object of the expected kind, a task of another partition's instance)
moves to the dead letters in one transaction with its unregistering, and the
check goes on with the others.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, cast

from redis.client import Pipeline
from redis.exceptions import WatchError
from rq import Queue
from rq.intermediate_queue import IntermediateQueue
from rq.job import Job
from rq.serializers import JSONSerializer

from orchestrator.core import events as ev
from orchestrator.core.events import Event, Unreadable
from orchestrator.runtime import metrics
from orchestrator.runtime.heartbeat import HEARTBEAT_TTL
from orchestrator.runtime.notify.later import Later
from orchestrator.runtime.notify.ledger import Ledger, record_key
from orchestrator.runtime.outstanding import CHECK_EVERY, Outstanding
from orchestrator.runtime.payloads import NotificationPayload
from orchestrator.store.deadletters import dead_letter

LOST_STATUSES = {"failed", "stopped", "canceled"}
MAX_LOST_RUNS = 5  # a notification job lost this many times is dead-lettered, not run again
# RQ moves a job it dequeues into this list until the job starts; a worker dying
# in between strands it there, "queued" but in no queue.
INTERMEDIATE = tuple(
    IntermediateQueue.get_intermediate_queue_key(Queue.redis_queue_namespace_prefix + name)
    for name in ("tasks", "notifications")
)


class Watchdog(Outstanding):
    """The register of outstanding jobs (Outstanding), checked for lost ones."""

    def check(self, partitions: list[int], now: float, limit: int = 200) -> int:
        """Check the outstanding jobs due for a check; report the lost ones. Returns how many."""
        due: list[tuple[int, str]] = []
        pipe = self.redis.pipeline(transaction=False)
        for partition in partitions:
            pipe.zrangebyscore(self.keys.outstanding(partition), "-inf", now, start=0, num=limit)
        for partition, jobs in zip(partitions, pipe.execute(), strict=True):
            for job in jobs:
                try:
                    due.append((partition, job.decode()))
                except UnicodeDecodeError as exc:
                    key = self.keys.outstanding(partition)
                    self._set_aside(partition, job, key, job, f"job id is not UTF-8 ({exc})")
        if not due:
            return 0
        pipe = self.redis.pipeline(transaction=False)
        for partition, job in due:
            pipe.hget(self.keys.outstanding_jobs(partition), job)
            pipe.exists(self.keys.alive(partition, job))
        replies = pipe.execute()
        records: list[dict[str, Any] | None] = []
        unreadable: set[int] = set()  # indexes of records set aside
        for index, ((partition, job), raw) in enumerate(zip(due, replies[0::2], strict=True)):
            try:
                records.append(None if raw is None else self.read_record(raw, partition))
            except Unreadable as exc:
                key = self.keys.outstanding_jobs(partition)
                self._set_aside(partition, job, key, raw, str(exc))
                records.append(None)
                unreadable.add(index)
        alive = [bool(flag) for flag in replies[1::2]]
        carriers = [
            job if record is None else str(record.pop("rq_job", job))
            for (_, job), record in zip(due, records, strict=True)
        ]
        jobs = self._carrier_states(
            [c for c, r, a in zip(carriers, records, alive, strict=True) if r and not a]
        )
        lost = 0
        stranded: set[str] = set()
        later = self.redis.pipeline(transaction=False)
        for index, (partition, job) in enumerate(due):
            record, carrier = records[index], carriers[index]
            if index in unreadable:
                continue
            if record is None:  # answered meanwhile
                later.zrem(self.keys.outstanding(partition), job)
                continue
            status, started_at, taken = jobs.get(carrier, (None, None, False))
            reason = _lost_reason(status, started_at, alive[index], now)
            if reason is None and status == b"queued" and not alive[index] and taken:
                reason = self._stranded(carrier, now)
                if reason is not None:  # every task it carries, before its traces go
                    if carrier not in stranded:
                        stranded.add(carrier)
                        lost += self._report_carried(carrier, reason, now)
                    continue
            if reason is None:
                later.zadd(self.keys.outstanding(partition), {job: now + CHECK_EVERY})
                continue
            lost += self._report_lost(partition, job, carrier, record, reason, now)
        later.execute()
        return lost

    def read_record(self, raw: bytes, partition: int) -> dict[str, Any]:
        """A record of `record`, checked; raises Unreadable saying what is wrong with it."""
        try:
            record = json.loads(raw.decode())
        except UnicodeDecodeError as exc:
            raise Unreadable(f"not UTF-8 ({exc})") from None
        except (ValueError, RecursionError) as exc:
            raise Unreadable(f"not JSON ({exc})") from None
        if not isinstance(record, dict):
            raise Unreadable(f"a record must be a JSON object, not {type(record).__name__}")
        if not isinstance(record.get("rq_job", ""), str):
            raise Unreadable("'rq_job' must be a string")
        kind = record.get("kind")
        if kind == "notification":
            if not isinstance(record.get("key"), str):
                raise Unreadable("a notification's 'key' must be a string")
            return record
        if kind not in ("task", "compensation"):
            raise Unreadable(f"'kind' must be task, compensation or notification, not {kind!r:.50}")
        instance = record.get("instance")
        if not isinstance(instance, str):
            raise Unreadable("'instance' must be a string")
        if self.keys.partition_of(instance) != partition:
            raise Unreadable(f"instance {instance!r:.100} is not one of partition {partition}")
        return record

    def _set_aside(
        self, partition: int, job: bytes | str, key: str, raw: bytes | str, reason: str
    ) -> None:
        """Unregister an outstanding job the watchdog cannot read and keep what it was in
        the dead letters, in one transaction."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.zrem(self.keys.outstanding(partition), job)
        pipe.hdel(self.keys.outstanding_jobs(partition), job)
        entry = job if isinstance(job, str) else job.decode(errors="backslashreplace")
        letter = dead_letter("watchdog", key, entry, raw, f"unreadable record of {key}: {reason}")
        pipe.xadd(self.keys.deadletters, letter)  # type: ignore[arg-type]
        pipe.execute()
        if (counts := metrics.current()) is not None:
            counts.dead_letters("watchdog")

    def _carrier_states(self, carriers: list[str]) -> dict[str, tuple[Any, Any, bool]]:
        """Status, start time and "in RQ's intermediate list" of each RQ job, read once
        per job however many of its tasks are due (the list only for queued ones)."""
        unique = list(dict.fromkeys(carriers))
        if not unique:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for carrier in unique:
            pipe.hmget(Job.key_for(carrier), "status", "started_at")
        states = dict(zip(unique, pipe.execute(), strict=True))
        queued = [c for c in unique if states[c][0] == b"queued"]
        taken: set[str] = set()
        if queued:
            pipe = self.redis.pipeline(transaction=False)
            for carrier in queued:
                for queue in INTERMEDIATE:
                    pipe.lpos(queue, carrier)
            found = pipe.execute()
            width = len(INTERMEDIATE)
            for index, carrier in enumerate(queued):
                if any(p is not None for p in found[width * index : width * (index + 1)]):
                    taken.add(carrier)
        return {c: (states[c][0], states[c][1], c in taken) for c in unique}

    def _report_lost(
        self,
        partition: int,
        job: str,
        carrier: str,
        answer: dict[str, Any],
        reason: str,
        now: float,
    ) -> int:
        if answer.get("kind") == "notification":
            return self._run_again(partition, job, carrier, answer, now)
        kind = ev.COMPENSATION_FAILED if answer.pop("kind") == "compensation" else ev.TASK_FAILED
        event = Event(
            id=f"{job}-lost",
            type=kind,
            instance_id=answer["instance"],
            at=now,
            data={**answer, "job": job, "error_type": "TaskLost", "message": reason},
        )
        alive = self.keys.alive(partition, job)
        with self.redis.pipeline(transaction=True) as pipe:
            try:
                # only while it still has no heartbeat: a work-horse that got through a
                # pause (Redis's, or its own) and starts beating now runs it and answers; the
                # task wrapper, beating first, runs it only while it is still outstanding
                # (orchestrator.runtime.tasks), so exactly one of the two goes on
                pipe.watch(alive)  # type: ignore[no-untyped-call]
                if pipe.exists(alive):
                    return 0  # checked again in CHECK_EVERY seconds
                pipe.multi()
                self._forget(pipe, partition, job, carrier)
                pipe.xadd(self.keys.inbox(partition), {"e": event.to_json()})
                pipe.execute()
            except WatchError:
                return 0
        if (counts := metrics.current()) is not None:
            counts.tasks_lost("compensation" if kind == ev.COMPENSATION_FAILED else "task")
        return 1

    def _report_carried(self, carrier: str, reason: str, now: float) -> int:
        """Report lost every task or notification a stranded RQ job carries and is still
        outstanding: forgetting the job takes it off RQ's intermediate list, after which
        a sibling due later would look merely queued, forever."""
        try:  # JSON only: whatever a job holds, nothing is unpickled or run here
            job_kwargs = Job.fetch(carrier, connection=self.redis, serializer=JSONSerializer).kwargs
            payload = job_kwargs.get("payload")
        except Exception:  # gone, or not ours: the due one is reported below all the same
            payload = None
        items = payload["items"] if isinstance(payload, dict) and "items" in payload else None
        ids: list[tuple[int, str]] = []
        for item in items if isinstance(items, list) else []:
            try:  # a job's payload as RQ holds it: read, never trusted
                job = str(item.get("job") or item.get("key"))
                if "partition" in item:
                    partition = int(item["partition"]) % self.keys.partitions
                else:
                    partition = self.keys.partition_of(item["instance"])
            except (AttributeError, KeyError, TypeError, ValueError):
                continue  # an item it cannot name: the due one is reported below all the same
            ids.append((partition, job))
        if not ids:  # a job of one: its id is the outstanding one's
            ids = [(p, carrier) for p in range(self.keys.partitions)]
        pipe = self.redis.pipeline(transaction=False)
        for partition, job in ids:
            pipe.hget(self.keys.outstanding_jobs(partition), job)
        lost = 0
        for (partition, job), raw in zip(ids, pipe.execute(), strict=True):
            if raw is not None:
                try:
                    record = self.read_record(raw, partition)
                except Unreadable as exc:
                    key = self.keys.outstanding_jobs(partition)
                    self._set_aside(partition, job, key, raw, str(exc))
                    continue
                record.pop("rq_job", None)
                lost += self._report_lost(partition, job, carrier, record, reason, now)
        return lost

    def _stranded(self, carrier: str, now: float) -> str | None:
        """A job a worker took off the queue (into RQ's intermediate list) and died
        before starting: lost once it has stayed so for a whole check period."""
        key = self.keys.stranded(carrier)
        if self.redis.set(key, now, nx=True, ex=3600):
            return None  # first seen stranded now: a live worker may be starting it
        first = float(self.redis.get(key) or now)
        if now - first < CHECK_EVERY:
            return None
        return "a worker took it off the queue and died before starting it"

    def _forget(self, pipe: Pipeline, partition: int, job: str, carrier: str) -> None:
        """Unregister a lost job, and keep RQ from running it later after all."""
        pipe.zrem(self.keys.outstanding(partition), job)
        pipe.hdel(self.keys.outstanding_jobs(partition), job)
        for queue in INTERMEDIATE:
            pipe.lrem(queue, 0, carrier)
        pipe.delete(self.keys.stranded(carrier))

    def _run_again(
        self, partition: int, job: str, carrier: str, payload: dict[str, Any], now: float
    ) -> int:
        """A lost notification job goes back to be run again; its ledger claim decides
        whether it sends (the owner's heartbeat is gone, so the claim is stale). Only this
        partition's lease holder checks it, so one transaction needs no further guard."""
        losses = payload.get("lost", 0)
        losses = (losses if isinstance(losses, int) else 0) + 1
        pipe = self.redis.pipeline(transaction=True)
        self._forget(pipe, partition, job, carrier)
        if losses < MAX_LOST_RUNS:
            again = cast(NotificationPayload, {**payload, "lost": losses})  # read back, as it was
            Later(self.redis, self.keys).add(again, now, pipe)
        else:
            reason = f"notification job lost {losses} times in a row; not run again"
            key = self.keys.outstanding_jobs(partition)
            pipe.xadd(
                self.keys.deadletters,
                dead_letter("notification", key, job, json.dumps(payload), reason),  # type: ignore[arg-type]
            )
            record = record_key(str(payload["key"]), payload.get("to"))
            Ledger(self.redis, self.keys).advance(record, "failed", pipe, reason=reason)
        pipe.execute()
        if (counts := metrics.current()) is not None:
            counts.tasks_lost("notification")
            if losses >= MAX_LOST_RUNS:
                counts.dead_letters("notification")
        return 1


def _lost_reason(
    status: bytes | None, started_at: bytes | None, alive: bool, now: float
) -> str | None:
    if alive:
        return None
    if status is None:
        return None  # finished and deleted (result_ttl 0): its answer is in the inbox
    text = status.decode(errors="replace")
    if text in LOST_STATUSES:
        return f"its job ended {text} without an answer (the work-horse died?)"
    if text == "started" and started_at:
        try:
            started = datetime.fromisoformat(
                started_at.decode(errors="replace").replace("Z", "+00:00")
            )
        except ValueError:  # RQ writes it; anything else is not RQ's, and there is no heartbeat
            return "its job's start time is unreadable and it sends no heartbeat"
        if started.tzinfo is None:
            started = started.replace(tzinfo=UTC)
        if now - started.timestamp() > HEARTBEAT_TTL:
            return "its worker stopped answering (no heartbeat); the process died?"
    return None
