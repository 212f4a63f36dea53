"""Turning effects into writes inside the applier's MULTI: RQ jobs and timers.

Job ids derive from the instance, the sequence number of the event that
caused the effect and the effect's index, so an apply that is retried after
a crash writes the very same jobs, never new ones.

Under load one RQ job carries several tasks (or notifications): RQ spends
some twenty round trips on every job it runs, more than the whole rest of a
workflow step, so a commit that makes many tasks ready at once packs them.
A task alone still gets a job of its own, and a commit spreads its tasks
over at least as many jobs as there are idle workers (workers registered
with RQ, less the jobs already waiting in the queue), so light load keeps
its latency and tasks still spread over the workers; with a backlog the
workers are busy anyway and a commit's tasks go in one job. Inside a job each
task keeps its own id, deadline, heartbeat and answer (orchestrator.runtime.jobs.run_tasks).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import redis
from redis.client import Pipeline
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.worker_registration import WORKERS_BY_QUEUE_KEY

from orchestrator.core.effects import CancelTimers, Effect, Notify, RunTask, StartTimer
from orchestrator.core.events import Event
from orchestrator.core.instance import Instance
from orchestrator.runtime.payloads import seal
from orchestrator.runtime.watchdog import Watchdog
from orchestrator.store.keys import Keys

TASK_QUEUE = "tasks"
NOTIFICATION_QUEUE = "notifications"
RUN_TASK = "orchestrator.runtime.jobs.run_task"
RUN_TASKS = "orchestrator.runtime.jobs.run_tasks"
SEND_NOTIFICATION = "orchestrator.runtime.jobs.send_notification"
SEND_NOTIFICATIONS = "orchestrator.runtime.notify.batch.send_notifications"
ENTRY_POINTS = frozenset({RUN_TASK, RUN_TASKS, SEND_NOTIFICATION, SEND_NOTIFICATIONS})
FAILURE_TTL = 7 * 24 * 3600
NOTIFICATION_TIMEOUT = 60
TASKS_PER_JOB = 50  # at most, one after another in one work-horse
NOTIFICATIONS_PER_JOB = 50  # at most, sent concurrently by one notification job
LINGER_PER_JOB = 0.005  # seconds the applier waits per job waiting per worker...
MAX_LINGER = 0.05  # ...at most
WORKERS_FRESH_FOR = 2.0  # seconds a count of RQ workers is trusted


def job_id(instance_id: str, seq: int, index: int) -> str:
    return f"{instance_id}-{seq}-{index}"


def timer_event(instance_id: str, timer: StartTimer) -> Event:
    """The event a timer becomes when due; its id makes a double firing harmless."""
    return Event(
        id=f"timer-{timer.id}",
        type=timer.event_type,
        instance_id=instance_id,
        at=timer.due,
        data=timer.data,
    )


@dataclass
class Ready:
    """The tasks and notifications one commit makes ready, enqueued together at its end."""

    tasks: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    notifications: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


class Dispatcher:
    def __init__(self, client: redis.Redis, keys: Keys, job_key: bytes | None = None) -> None:
        self.redis = client
        self.keys = keys
        self.job_key = job_key  # seals every job (orchestrator.runtime.payloads.seal) when set
        self.tasks = Queue(TASK_QUEUE, connection=client, serializer=JSONSerializer)
        self.notifications = Queue(NOTIFICATION_QUEUE, connection=client, serializer=JSONSerializer)
        self.watchdog = Watchdog(client, keys)
        self._workers: dict[str, tuple[float, int]] = {}
        self.linger = 0.0  # seconds the applier waits before its next batch (a backlog)

    def add(
        self,
        pipe: Pipeline,
        instance: Instance,
        seq: int,
        index: int,
        effect: Effect,
        ready: Ready,
    ) -> None:
        """Write an effect into the commit; tasks and notifications wait in `ready`
        for `enqueue_ready`, which decides how to pack them. A job names the workflow
        and version that declares its work, so a worker can check it was declared."""
        instance_id = instance.id
        partition = self.keys.partition_of(instance_id)
        match effect:
            case RunTask():
                job = job_id(instance_id, seq, index)
                payload: dict[str, Any] = {
                    "instance": instance_id,
                    "workflow": instance.workflow,
                    "version": instance.version,
                    "inbox": self.keys.inbox(partition),
                    "task": effect.task,
                    "kind": effect.kind,
                    "state": effect.state,
                    "attempt": effect.attempt,
                    "entered_seq": effect.entered_seq,
                    "context": effect.context,
                    "job": job,
                    "alive": self.keys.alive(partition, job),
                    "timeout": max(1, math.ceil(effect.timeout)),
                }
                ready.tasks.append((job, payload))
            case Notify():
                payload = {
                    "instance": instance_id,
                    "workflow": instance.workflow,
                    "version": instance.version,
                    "inbox": self.keys.inbox(partition),
                    "channel": effect.channel,
                    "to": effect.to,
                    "template": effect.template,
                    "templates": effect.templates,
                    "urgent": effect.urgent,
                    "context": effect.context,
                    "key": job_id(instance_id, seq, index),
                    "kind": "notification",
                    "partition": partition,
                    "namespace": self.keys.namespace,
                    "partitions": self.keys.partitions,
                }
                key = job_id(instance_id, seq, index)
                payload["alive"] = self.keys.alive(partition, key)
                ready.notifications.append((key, payload))
            case StartTimer():
                event = timer_event(instance_id, effect)
                pipe.hset(self.keys.timer_events(partition), effect.id, event.to_json())
                pipe.zadd(self.keys.timers(partition), {effect.id: effect.due})
            case CancelTimers():
                pipe.zrem(self.keys.timers(partition), *effect.ids)
                pipe.hdel(self.keys.timer_events(partition), *effect.ids)

    def enqueue_ready(self, pipe: Pipeline, ready: Ready) -> None:
        """Enqueue what a commit made ready: one job each when there are no more than
        idle workers to take them, else packed, as evenly as the idle workers allow."""
        self.linger = 0.0  # unless a queue with work for it has a backlog: _idle_workers
        watched: dict[int, dict[str, str]] = {}  # partition -> job -> watchdog record
        workers = self._idle_workers(ready.tasks, self.tasks)
        for group in _packs(ready.tasks, workers, TASKS_PER_JOB):
            if len(group) == 1:
                job, payload = group[0]
                self._enqueue(pipe, self.tasks, RUN_TASK, payload, job, payload["timeout"])
                self._watch(watched, job, payload, job)
            else:
                timeout = sum(int(payload["timeout"]) for _, payload in group)
                self._enqueue_pack(pipe, self.tasks, RUN_TASKS, group, timeout, watched)
        workers = self._idle_workers(ready.notifications, self.notifications)
        for group in _packs(ready.notifications, workers, NOTIFICATIONS_PER_JOB):
            if len(group) == 1:
                self.enqueue_notification(pipe, group[0][1], group[0][0])
            else:
                timeout = NOTIFICATION_TIMEOUT * 2
                self._enqueue_pack(
                    pipe, self.notifications, SEND_NOTIFICATIONS, group, timeout, watched
                )
        for partition, records in watched.items():  # one HSET and one ZADD a partition
            self.watchdog.watch_many(pipe, partition, records)

    def _enqueue_pack(
        self,
        pipe: Pipeline,
        queue: Queue,
        func: str,
        group: list[tuple[str, dict[str, Any]]],
        timeout: int,
        watched: dict[int, dict[str, str]],
    ) -> None:
        """One RQ job carrying several items; the watchdog knows each by its own id."""
        carrier = carrier_id([job for job, _ in group])
        items = [payload for _, payload in group]
        self._enqueue(pipe, queue, func, {"items": items}, carrier, timeout)
        for job, payload in group:
            self._watch(watched, job, payload, carrier)

    def enqueue_notification(self, pipe: Pipeline, payload: dict[str, Any], job: str) -> None:
        """Enqueue a notification job and watch it, so a job lost with its worker runs again."""
        payload = {**payload, "alive": self.keys.alive(int(payload.get("partition", 0)), job)}
        self._enqueue(
            pipe, self.notifications, SEND_NOTIFICATION, payload, job, NOTIFICATION_TIMEOUT
        )
        watched: dict[int, dict[str, str]] = {}
        self._watch(watched, job, payload, job)
        for partition, records in watched.items():
            self.watchdog.watch_many(pipe, partition, records)

    def _watch(
        self, watched: dict[int, dict[str, str]], job: str, payload: dict[str, Any], carrier: str
    ) -> None:
        """File a job for the watchdog; `enqueue_ready` registers a commit's at once."""
        if "partition" in payload:  # notifications say; tasks belong to their instance's
            partition = int(payload["partition"])
        else:
            partition = self.keys.partition_of(payload["instance"])
        watched.setdefault(partition, {})[job] = self.watchdog.record(payload, carrier)

    def _idle_workers(self, ready: list[Any], queue: Queue) -> int:
        """How many workers can start on this work now: those not already owed a job
        waiting in the queue (at least one). With a backlog, everything goes in one job,
        and the applier lingers before its next batch (`linger`) so that it grows: 5 ms
        for each job waiting per worker, 50 ms at most; those jobs come first anyway.
        Tasks and notifications alike: a small pack costs a worker a whole turn (RQ's
        own cost for a task job; a notification job's 100 ms provider wait)."""
        if not ready:
            return 1
        workers = self._worker_count(queue.name)
        waiting = int(self.redis.llen(queue.key))
        if waiting >= workers:
            wait = min(MAX_LINGER, LINGER_PER_JOB * waiting / workers)
            self.linger = max(self.linger, wait)
        return max(1, workers - waiting)

    def _worker_count(self, queue: str) -> int:
        """RQ workers listening on `queue` (RQ registers them), re-read every few seconds."""
        now = time.monotonic()
        seen = self._workers.get(queue)
        if seen is None or now - seen[0] > WORKERS_FRESH_FOR:
            count = int(self.redis.scard(WORKERS_BY_QUEUE_KEY % queue))
            seen = self._workers[queue] = (now, count)
        return max(1, seen[1])

    def _enqueue(
        self,
        pipe: Pipeline,
        queue: Queue,
        func: str,
        payload: dict[str, Any],
        job: str,
        timeout: int,
    ) -> None:
        created = Job.create(
            func,
            kwargs={"payload": payload},
            id=job,
            description=_description(func, payload),
            timeout=max(1, timeout),
            result_ttl=0,
            failure_ttl=FAILURE_TTL,
            connection=self.redis,
            serializer=JSONSerializer,
            origin=queue.name,
        )
        if self.job_key is not None:  # the workers refuse a job whose seal does not match
            created.meta["mac"] = seal(self.job_key, job, created.data)
        queue.enqueue_job(created, pipeline=pipe)


def _packs(
    ready: list[tuple[str, dict[str, Any]]], workers: int, most: int
) -> list[list[tuple[str, dict[str, Any]]]]:
    """Split ready work into jobs: one each up to one per worker, else evenly, `most` at most."""
    size = max(1, min(most, math.ceil(len(ready) / workers)))
    return [ready[start : start + size] for start in range(0, len(ready), size)]


def _description(func: str, payload: dict[str, Any]) -> str:
    """What RQ shows of a job (logs, dashboards). Left to RQ, it would be the repr of the
    whole payload, contexts and all, cut to 75 characters: costly to make for a packed job
    (every item's repr), and telling little."""
    if "items" in payload:
        return f"{func}({len(payload['items'])} items)"
    what = payload.get("task") or payload.get("channel") or ""
    return f"{func}({what})"


def carrier_id(item_ids: list[str]) -> str:
    """A packing job's id: its first item's id (unique) and how many it carries."""
    return f"{item_ids[0]}-n{len(item_ids)}"
