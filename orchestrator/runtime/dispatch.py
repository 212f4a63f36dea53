"""Turning effects into writes inside the applier's MULTI: RQ jobs and timers.

Job ids derive from the instance, the sequence number of the event that
caused the effect and the effect's index, so an apply that is retried after
a crash writes the very same jobs, never new ones.

Under load one RQ job carries several tasks (or notifications): RQ's bookkeeping
of every job it runs (5 round trips with the engine's workers,
orchestrator.entry.rq_bookkeeping) costs more than the rest of a workflow step,
so a commit that makes many tasks ready at once packs them.
A task alone still gets a job of its own, and a commit spreads its tasks
over at least as many jobs as there are idle workers (workers registered
with RQ, less the jobs already waiting in the queue), so light load keeps
its latency and tasks still spread over the workers; with a backlog the
workers are busy anyway and a commit's tasks go in one job. Inside a job each
task keeps its own id, deadline, heartbeat and answer (orchestrator.runtime.tasks.run_tasks).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import redis
from redis.client import Pipeline
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.worker_registration import WORKERS_BY_QUEUE_KEY

from orchestrator.core import events as ev
from orchestrator.core.effects import (
    AnswerParent,
    CancelTimers,
    Effect,
    PublishEvent,
    RunTask,
    SendNotification,
    SignalChild,
    StartChild,
    StartTimer,
)
from orchestrator.core.errors import UnknownWorkflow
from orchestrator.core.events import Event
from orchestrator.core.instance import Instance
from orchestrator.runtime import publisher
from orchestrator.runtime.payloads import (
    NOTIFICATION_TIMEOUT,
    RUN_TASK,
    RUN_TASKS,
    SEND_NOTIFICATION,
    SEND_NOTIFICATIONS,
    JobPayload,
    NotificationPayload,
    PackedNotifications,
    PackedTasks,
    TaskPayload,
    carrier_id,
    notification_payload,
    seal,
    task_payload,
)
from orchestrator.runtime.publisher import Publishing
from orchestrator.runtime.registry import Registry
from orchestrator.runtime.watchdog import Watchdog
from orchestrator.store.inbox import Inbox
from orchestrator.store.keys import Keys

TASK_QUEUE = "tasks"
NOTIFICATION_QUEUE = "notifications"
FAILURE_TTL = 7 * 24 * 3600
TASKS_PER_JOB = 50  # at most, one after another in one work-horse
NOTIFICATIONS_PER_JOB = 50  # at most, sent concurrently by one notification job
LINGER_PER_JOB = 0.005  # seconds the applier waits per job waiting per worker...
MAX_LINGER = 0.05  # ...at most
WORKERS_FRESH_FOR = 2.0  # seconds a count of RQ workers is trusted
P = TypeVar("P", TaskPayload, NotificationPayload)
_BEFORE_KEYS_TRAVELLED_AS_NAMESPACE = ("inbox", "alive")  # of entries in Later from before


def job_id(instance_id: str, seq: int, index: int) -> str:
    return f"{instance_id}-{seq}-{index}"


def timer_event(instance_id: str, timer: StartTimer, trace: str | None = None) -> Event:
    """The event a timer becomes when due; its id makes a double firing harmless. `trace`:
    the context of the apply that set it (tracing on), so a retry stays in its trace."""
    return Event(
        id=f"timer-{timer.id}",
        type=timer.event_type,
        instance_id=instance_id,
        at=timer.due,
        data=timer.data,
        trace=trace,
    )


@dataclass
class Ready:
    """The tasks and notifications one commit makes ready, enqueued together at its end."""

    tasks: list[tuple[str, TaskPayload]] = field(default_factory=list)
    notifications: list[tuple[str, NotificationPayload]] = field(default_factory=list)
    published: dict[int, list[str]] = field(default_factory=dict)  # partition -> events


class Dispatcher:
    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        job_key: bytes | None = None,
        registry: Registry | None = None,
        publishing: Publishing | None = None,
    ) -> None:
        self.redis = client
        self.publishing = publishing or Publishing()
        self.keys = keys
        self.registry = registry  # the workflows children start as (none: no children)
        self.inbox = Inbox(client, keys)
        self.job_key = job_key  # seals every job (orchestrator.runtime.payloads.seal) when set
        self.tasks = Queue(TASK_QUEUE, connection=client, serializer=JSONSerializer)
        self.notifications = Queue(NOTIFICATION_QUEUE, connection=client, serializer=JSONSerializer)
        self.watchdog = Watchdog(client, keys)
        self._workers: dict[str, tuple[float, int]] = {}
        self.linger = 0.0  # seconds the applier waits before its next batch (a backlog)
        # queues whose backlog the commit reads, by the index of its LLEN among the
        # commit's commands: read by `committed` once it is written
        self._backlog: list[tuple[Queue, int]] = []
        # tracing on: the applier's batch's spans, by instance and sequence number, whose
        # context what their effects send on carries (orchestrator.runtime.tracing); off: None
        self.traces: dict[tuple[str, int], str | None] | None = None

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
        trace = self.traces.get((instance_id, seq)) if self.traces else None
        match effect:
            case RunTask():
                job = job_id(instance_id, seq, index)
                task = task_payload(
                    self.keys,
                    instance=instance_id,
                    workflow=instance.workflow,
                    version=instance.version,
                    task=effect.task,
                    kind=effect.kind,
                    state=effect.state,
                    attempt=effect.attempt,
                    entered_seq=effect.entered_seq,
                    context=effect.context,
                    job=job,
                    timeout=effect.timeout,
                    trace=trace,
                )
                ready.tasks.append((job, task))
            case SendNotification():
                key = job_id(instance_id, seq, index)
                note = notification_payload(
                    self.keys,
                    key=key,
                    instance=instance_id,
                    workflow=instance.workflow,
                    version=instance.version,
                    channel=effect.channel,
                    to=effect.to,
                    template=effect.template,
                    templates=effect.templates,
                    urgent=effect.urgent,
                    context=effect.context,
                    trace=trace,
                )
                ready.notifications.append((key, note))
            case StartTimer():
                event = timer_event(instance_id, effect, trace)
                pipe.hset(self.keys.timer_events(partition), effect.id, event.to_json())
                pipe.zadd(self.keys.timers(partition), {effect.id: effect.due})
            case CancelTimers():
                pipe.zrem(self.keys.timers(partition), *effect.ids)
                pipe.hdel(self.keys.timer_events(partition), *effect.ids)
            case StartChild():
                self._start_child(pipe, instance_id, effect, job_id(instance_id, seq, index), trace)
            case SignalChild() | AnswerParent():
                to = effect.child_id if isinstance(effect, SignalChild) else effect.parent_id
                event_id = job_id(instance_id, seq, index)  # the same if the commit is redone
                event = Event(event_id, effect.event_type, to, time.time(), effect.data, trace)
                self.inbox.queue_append(pipe, event)
            case PublishEvent():
                event_id = job_id(instance_id, seq, index)  # the same if the commit is redone
                doc = publisher.encode(self.keys, instance, event_id, effect)
                ready.published.setdefault(partition, []).append(doc)

    def _start_child(
        self, pipe: Pipeline, parent: str, effect: StartChild, key: str, trace: str | None
    ) -> None:
        """Create the child and append its start event, in the parent's commit; a workflow
        not loaded here (checked at start-up: orchestrator.runtime.registry) fails the
        parent's step instead."""
        try:
            if self.registry is None:
                raise UnknownWorkflow("this applier starts no child workflows")
            definition = self.registry.get(effect.workflow)
        except UnknownWorkflow as exc:
            binding = effect.parent
            data = {
                **{k: binding[k] for k in ("state", "entered_seq", "attempt")},
                "error_type": "UnknownWorkflow",
                "retryable": False,
                "message": f"child {effect.workflow} not started: {exc}",
            }
            self.inbox.queue_append(
                pipe, Event(key, ev.TASK_FAILED, parent, time.time(), data, trace)
            )
            return
        self.inbox.queue_create(
            pipe, definition, effect.child_id, effect.input, None, parent, effect.parent, trace
        )

    def enqueue_ready(self, pipe: Pipeline, ready: Ready) -> None:
        """Enqueue what a commit made ready: one job each when there are no more than
        idle workers to take them, else packed, as evenly as the idle workers allow."""
        if ready.published:
            publisher.write(pipe, self.keys, self.publishing, ready.published)
        self.linger = 0.0  # unless a queue with work for it has a backlog: _idle_workers
        self._backlog = []
        watched: dict[int, dict[str, str]] = {}  # partition -> job -> watchdog record
        workers = self._idle_workers(pipe, ready.tasks, self.tasks)
        for tasks in _packs(ready.tasks, workers, TASKS_PER_JOB):
            if len(tasks) == 1:
                job, task = tasks[0]
                self._enqueue(pipe, self.tasks, RUN_TASK, task, job, task["timeout"], task["task"])
                self._watch(watched, job, task, job)
            else:
                timeout = sum(task["timeout"] for _, task in tasks)
                packed = PackedTasks(items=[task for _, task in tasks])
                ids = [job for job, _ in tasks]
                self._enqueue_pack(pipe, self.tasks, RUN_TASKS, packed, ids, timeout, watched)
        workers = self._idle_workers(pipe, ready.notifications, self.notifications)
        for notes in _packs(ready.notifications, workers, NOTIFICATIONS_PER_JOB):
            if len(notes) == 1:
                self.enqueue_notification(pipe, notes[0][1], notes[0][0])
            else:
                timeout = NOTIFICATION_TIMEOUT * 2
                packs = PackedNotifications(items=[note for _, note in notes])
                ids = [key for key, _ in notes]
                self._enqueue_pack(
                    pipe, self.notifications, SEND_NOTIFICATIONS, packs, ids, timeout, watched
                )
        for partition, records in watched.items():  # one HSET and one ZADD a partition
            self.watchdog.watch_many(pipe, partition, records)

    def _enqueue_pack(
        self,
        pipe: Pipeline,
        queue: Queue,
        func: str,
        packed: PackedTasks | PackedNotifications,
        ids: list[str],
        timeout: int,
        watched: dict[int, dict[str, str]],
    ) -> None:
        """One RQ job carrying several items; the watchdog knows each by its own id."""
        carrier = carrier_id(ids)
        what = f"{len(ids)} items"
        self._enqueue(pipe, queue, func, packed, carrier, timeout, what)
        items: Sequence[TaskPayload | NotificationPayload] = packed["items"]
        for job, payload in zip(ids, items, strict=True):
            self._watch(watched, job, payload, carrier)

    def enqueue_notification(self, pipe: Pipeline, payload: NotificationPayload, job: str) -> None:
        """Enqueue a notification job and watch it, so a job lost with its worker runs again."""
        stale = [name for name in _BEFORE_KEYS_TRAVELLED_AS_NAMESPACE if name in payload]
        if stale:  # an entry of Later written before keys travelled one way
            payload = dict(payload)  # type: ignore[assignment]
            for name in stale:
                del payload[name]  # type: ignore[misc]
        self._enqueue(
            pipe,
            self.notifications,
            SEND_NOTIFICATION,
            payload,
            job,
            NOTIFICATION_TIMEOUT,
            str(payload.get("channel", "")),  # read back from Later: the worker's guard checks it
        )
        watched: dict[int, dict[str, str]] = {}
        self._watch(watched, job, payload, job)
        for partition, records in watched.items():
            self.watchdog.watch_many(pipe, partition, records)

    def _watch(
        self,
        watched: dict[int, dict[str, str]],
        job: str,
        payload: TaskPayload | NotificationPayload,
        carrier: str,
    ) -> None:
        """File a job for the watchdog; `enqueue_ready` registers a commit's at once."""
        record = self.watchdog.record(payload, carrier)
        watched.setdefault(payload["partition"], {})[job] = record

    def _idle_workers(self, pipe: Pipeline, ready: Sequence[object], queue: Queue) -> int:
        """How many workers can start on this work now: those not already owed a job
        waiting in the queue (at least one). With a backlog, everything goes in one job,
        and the applier lingers before its next batch (`linger`) so that it grows: 5 ms
        for each job waiting per worker, 50 ms at most; those jobs come first anyway.
        Tasks and notifications alike: a small pack costs a worker a whole turn (RQ's
        own cost for a task job; a notification job's 100 ms provider wait).

        A single item makes one job however many workers wait: its queue's backlog,
        which then only sets the linger, is read in the commit itself (`committed`),
        before its job is pushed, instead of in a round trip of its own before it (a
        lone event's step, at light load, one round trip shorter)."""
        if not ready:
            return 1
        if len(ready) == 1:
            self._backlog.append((queue, len(pipe.command_stack)))
            pipe.llen(queue.key)
            return 1
        workers = self._worker_count(queue.name)
        return max(1, workers - self._lingering(int(self.redis.llen(queue.key)), workers))

    def committed(self, replies: Sequence[object]) -> None:
        """The commit's replies: the backlogs it read (`_idle_workers`) set the linger."""
        for queue, index in self._backlog:
            waiting = replies[index]
            if isinstance(waiting, int):
                self._lingering(waiting, self._worker_count(queue.name))
        self._backlog = []

    def _lingering(self, waiting: int, workers: int) -> int:
        """`waiting` jobs owed to `workers`: with a backlog, the linger it asks for."""
        if waiting >= workers:
            wait = min(MAX_LINGER, LINGER_PER_JOB * waiting / workers)
            self.linger = max(self.linger, wait)
        return waiting

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
        payload: JobPayload,
        job: str,
        timeout: int,
        what: str,
    ) -> None:
        """`what`: what RQ shows of the job (logs, dashboards) besides its function. Left
        to RQ, it would be the repr of the whole payload, contexts and all, cut to 75
        characters: costly to make for a packed job, and telling little."""
        created = Job.create(
            func,
            kwargs={"payload": payload},
            id=job,
            description=f"{func}({what})",
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


def _packs(ready: list[tuple[str, P]], workers: int, most: int) -> list[list[tuple[str, P]]]:
    """Split ready work into jobs: one each up to one per worker, else evenly, `most` at most."""
    size = max(1, min(most, math.ceil(len(ready) / workers)))
    return [ready[start : start + size] for start in range(0, len(ready), size)]
