"""The jobs the applier gives the workers: their entry points, their payloads' types,
the one place those payloads are built, their check on arrival, and their seal.

Why: anyone who can write to Redis can write an RQ job, so a worker trusts no job.
Before it imports or calls anything, it reads the payload through these types (a
missing, unknown or mistyped field refuses the job; see orchestrator.runtime.guard for what
is checked next), and, when the deployment has a job key, checks the job's seal: an
HMAC over the job's id and its serialized data, written by the dispatcher into the
job's meta (as Celery signs its messages). Write access to the queues alone then
cannot order a task.

A payload may carry `trace`, the W3C traceparent of the span that made the job (only
with tracing on: orchestrator.runtime.tracing); a malformed one is ignored there.

The entry points (ENTRY_POINTS, the one table the dispatcher and the guard read) and
their shapes:
  run_task            TaskPayload
  run_tasks           PackedTasks          {"items": [TaskPayload, ...]}  1..MAX_ITEMS
  send_notification   NotificationPayload
  send_notifications  PackedNotifications  {"items": [NotificationPayload, ...]}

Keys travel one way for every job: as the deployment's `namespace` and partition count
(`partitions`) and the job's `partition`. A worker rebuilds the Keys (`keys_of`) and
from them its inbox and heartbeat key (`inbox_of`, `alive_of`); the guard has checked
that they are the deployment's. What the watchdog keeps of a job it watches is a
WatchRecord (`watch_record`).
"""

from __future__ import annotations

import hashlib
import hmac
import math
from typing import (
    Any,
    Literal,
    NotRequired,  # pydantic reads these on Python < 3.12
    TypeVar,
)

from pydantic import ConfigDict, TypeAdapter, ValidationError, with_config
from typing_extensions import TypedDict

from orchestrator.store.keys import Keys

T = TypeVar("T")
MAX_ITEMS = 50  # a packed job carries at most this many (orchestrator.runtime.dispatch)
NOTIFICATION_TIMEOUT = 60  # seconds RQ gives a notification job of one

# The entry points RQ runs, by the dotted name a job carries: nothing else runs
RUN_TASK = "orchestrator.runtime.tasks.run_task"
RUN_TASKS = "orchestrator.runtime.tasks.run_tasks"
SEND_NOTIFICATION = "orchestrator.runtime.notify.jobs.send_notification"
SEND_NOTIFICATIONS = "orchestrator.runtime.notify.jobs.send_notifications"
ENTRY_POINTS = frozenset({RUN_TASK, RUN_TASKS, SEND_NOTIFICATION, SEND_NOTIFICATIONS})


@with_config(ConfigDict(extra="forbid", strict=True))
class TaskPayload(TypedDict):
    """One try of a task or a compensation, as orchestrator.runtime.tasks.run_task reads it."""

    instance: str
    workflow: str
    version: int
    task: str
    kind: Literal["task", "compensation"]
    state: str
    attempt: int
    entered_seq: int
    context: dict[str, Any]
    job: str
    timeout: int
    namespace: str
    partitions: int
    partition: int
    trace: NotRequired[str]  # the traceparent of the apply span that made it (tracing on)


@with_config(ConfigDict(extra="forbid", strict=True))
class NotificationPayload(TypedDict):
    """One notification, as orchestrator.runtime.notify.jobs.send_notification reads it.
    `instance`, `workflow` and `version` are None for a send without an instance
    (`notify send`), whose partition is its key's."""

    instance: str | None
    workflow: NotRequired[str | None]
    version: NotRequired[int | None]
    channel: str
    to: str | None
    template: str
    templates: str | None
    urgent: bool
    context: dict[str, Any]
    key: str
    kind: Literal["notification"]
    namespace: str
    partitions: int
    partition: int
    attempt: NotRequired[int]
    lost: NotRequired[int]  # runs lost in a row so far (orchestrator.runtime.watchdog)
    trace: NotRequired[str]  # the traceparent of the apply span that made it (tracing on)


class PackedTasks(TypedDict):
    items: list[TaskPayload]


class PackedNotifications(TypedDict):
    items: list[NotificationPayload]


JobPayload = TaskPayload | NotificationPayload | PackedTasks | PackedNotifications


class TaskRecord(TypedDict):
    """What the watchdog keeps of a task's try: what its loss answers, and its RQ job."""

    instance: str
    task: str
    kind: Literal["task", "compensation"]
    state: str
    attempt: int
    entered_seq: int
    rq_job: str


class NotificationRecord(NotificationPayload):
    """What the watchdog keeps of a notification: the payload to run again, and its RQ job."""

    rq_job: str


WatchRecord = TaskRecord | NotificationRecord


# -- building ------------------------------------------------------------------------


def task_payload(
    keys: Keys,
    *,
    instance: str,
    workflow: str,
    version: int,
    task: str,
    kind: Literal["task", "compensation"],
    state: str,
    attempt: int,
    entered_seq: int,
    context: dict[str, Any],
    job: str,
    timeout: float,
    trace: str | None = None,
) -> TaskPayload:
    """A task's payload; `trace`, when tracing is on, the context it runs in."""
    payload = TaskPayload(
        instance=instance,
        workflow=workflow,
        version=version,
        task=task,
        kind=kind,
        state=state,
        attempt=attempt,
        entered_seq=entered_seq,
        context=context,
        job=job,
        timeout=max(1, math.ceil(timeout)),
        namespace=keys.namespace,
        partitions=keys.partitions,
        partition=keys.partition_of(instance),
    )
    if trace is not None:
        payload["trace"] = trace
    return payload


def notification_payload(
    keys: Keys,
    *,
    key: str,
    instance: str | None,
    workflow: str | None,
    version: int | None,
    channel: str,
    to: str | None,
    template: str,
    templates: str | None,
    urgent: bool,
    context: dict[str, Any],
    trace: str | None = None,
) -> NotificationPayload:
    """A notification of an instance, or, with `instance` None, a send without one
    (its key `cli-...`), whose partition is its key's; `trace`, when tracing is on,
    the context it is sent in."""
    payload = NotificationPayload(
        instance=instance,
        workflow=workflow,
        version=version,
        channel=channel,
        to=to,
        template=template,
        templates=templates,
        urgent=urgent,
        context=context,
        key=key,
        kind="notification",
        namespace=keys.namespace,
        partitions=keys.partitions,
        partition=keys.partition_of(key if instance is None else instance),
    )
    if trace is not None:
        payload["trace"] = trace
    return payload


def watch_record(payload: TaskPayload | NotificationPayload, carrier: str) -> WatchRecord:
    """What the watchdog keeps of a job it watches; `carrier`: the RQ job carrying it (its
    own id, or a packed job's)."""
    if payload["kind"] == "notification":
        return NotificationRecord(**payload, rq_job=carrier)
    return TaskRecord(
        instance=payload["instance"],
        task=payload["task"],
        kind=payload["kind"],
        state=payload["state"],
        attempt=payload["attempt"],
        entered_seq=payload["entered_seq"],
        rq_job=carrier,
    )


def carrier_id(item_ids: list[str]) -> str:
    """A packing job's id: its first item's id (unique) and how many it carries."""
    return f"{item_ids[0]}-n{len(item_ids)}"


# -- the keys a job travels with -------------------------------------------------------


def keys_of(payload: TaskPayload | NotificationPayload) -> Keys:
    return Keys(payload["namespace"], payload["partitions"])


def inbox_of(payload: TaskPayload | NotificationPayload) -> str:
    """The inbox its answer goes to: its instance's partition's."""
    return keys_of(payload).inbox(payload["partition"])


def alive_of(payload: TaskPayload | NotificationPayload, runs_as: str) -> str:
    """Its heartbeat key while it runs as `runs_as` (a task's job id; a notification's
    job id, or its key inside a packed job)."""
    return keys_of(payload).alive(payload["partition"], runs_as)


# -- reading, on arrival ---------------------------------------------------------------


class BadPayload(ValueError):
    """A job's payload does not have its entry point's shape; the message says where."""


_TASK = TypeAdapter(TaskPayload)
_NOTIFICATION = TypeAdapter(NotificationPayload)
_TASK_ITEMS = TypeAdapter(list[TaskPayload])
_NOTIFICATION_ITEMS = TypeAdapter(list[NotificationPayload])


def read_task(data: object) -> TaskPayload:
    return _validate(_TASK, data)


def read_notification(data: object) -> NotificationPayload:
    return _validate(_NOTIFICATION, data)


def read_tasks(data: object) -> PackedTasks:
    return PackedTasks(items=_validate(_TASK_ITEMS, _items(data), "items."))


def read_notifications(data: object) -> PackedNotifications:
    return PackedNotifications(items=_validate(_NOTIFICATION_ITEMS, _items(data), "items."))


def _items(data: object) -> list[Any]:
    if not isinstance(data, dict) or set(data) != {"items"}:
        raise BadPayload("a packed job's payload is {'items': [...]} and nothing else")
    items = data["items"]
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_ITEMS:
        raise BadPayload(f"a packed job carries 1 to {MAX_ITEMS} items in a list")
    return items


def _validate(adapter: TypeAdapter[T], data: object, prefix: str = "") -> T:
    try:
        return adapter.validate_python(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = prefix + ".".join(str(part) for part in first["loc"]) or "payload"
        raise BadPayload(f"{where}: {first['msg']} ({exc.error_count()} problem(s))") from None


# -- the seal --------------------------------------------------------------------------


def seal(key: bytes, job_id: str, data: bytes) -> str:
    """The HMAC-SHA256 of a job's id and serialized data (RQ's `job.data`)."""
    mac = hmac.new(key, job_id.encode("utf-8", "surrogatepass"), hashlib.sha256)
    mac.update(b"\0")
    mac.update(data)
    return mac.hexdigest()


def sealed_by(key: bytes, job_id: str, data: bytes, claimed: object) -> bool:
    return isinstance(claimed, str) and hmac.compare_digest(seal(key, job_id, data), claimed)
