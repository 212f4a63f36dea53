"""Turning effects into writes inside the applier's MULTI: RQ jobs and timers.

Job ids derive from the instance, the sequence number of the event that
caused the effect and the effect's index, so an apply that is retried after
a crash writes the very same jobs, never new ones.
"""

from __future__ import annotations

import math
from typing import Any

import redis
from redis.client import Pipeline
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from orchestrator.effects import CancelTimers, Effect, Notify, RunTask, StartTimer
from orchestrator.events import Event
from orchestrator.keys import Keys
from orchestrator.watchdog import Watchdog

TASK_QUEUE = "tasks"
NOTIFICATION_QUEUE = "notifications"
RUN_TASK = "orchestrator.jobs.run_task"
SEND_NOTIFICATION = "orchestrator.jobs.send_notification"
ENTRY_POINTS = frozenset({RUN_TASK, SEND_NOTIFICATION})
FAILURE_TTL = 7 * 24 * 3600
NOTIFICATION_TIMEOUT = 60


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


class Dispatcher:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys
        self.tasks = Queue(TASK_QUEUE, connection=client, serializer=JSONSerializer)
        self.notifications = Queue(NOTIFICATION_QUEUE, connection=client, serializer=JSONSerializer)
        self.watchdog = Watchdog(client, keys)

    def add(self, pipe: Pipeline, instance_id: str, seq: int, index: int, effect: Effect) -> None:
        partition = self.keys.partition_of(instance_id)
        match effect:
            case RunTask():
                job = job_id(instance_id, seq, index)
                payload: dict[str, Any] = {
                    "instance": instance_id,
                    "inbox": self.keys.inbox(partition),
                    "task": effect.task,
                    "kind": effect.kind,
                    "state": effect.state,
                    "attempt": effect.attempt,
                    "entered_seq": effect.entered_seq,
                    "context": effect.context,
                    "job": job,
                    "alive": self.keys.alive(partition, job),
                }
                self._enqueue(pipe, self.tasks, RUN_TASK, payload, job, math.ceil(effect.timeout))
                self.watchdog.watch(pipe, partition, job, payload)
            case Notify():
                payload = {
                    "instance": instance_id,
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
                self.enqueue_notification(pipe, payload, job_id(instance_id, seq, index))
            case StartTimer():
                event = timer_event(instance_id, effect)
                pipe.hset(self.keys.timer_events(partition), effect.id, event.to_json())
                pipe.zadd(self.keys.timers(partition), {effect.id: effect.due})
            case CancelTimers():
                pipe.zrem(self.keys.timers(partition), *effect.ids)
                pipe.hdel(self.keys.timer_events(partition), *effect.ids)

    def enqueue_notification(self, pipe: Pipeline, payload: dict[str, Any], job: str) -> None:
        """Enqueue a notification job and watch it, so a job lost with its worker runs again."""
        payload = {**payload, "alive": self.keys.alive(int(payload.get("partition", 0)), job)}
        self._enqueue(
            pipe, self.notifications, SEND_NOTIFICATION, payload, job, NOTIFICATION_TIMEOUT
        )
        self.watchdog.watch(pipe, int(payload.get("partition", 0)), job, payload)

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
            timeout=max(1, timeout),
            result_ttl=0,
            failure_ttl=FAILURE_TTL,
            connection=self.redis,
            serializer=JSONSerializer,
            origin=queue.name,
        )
        queue.enqueue_job(created, pipeline=pipe)
