"""Only declared work runs in the orchestrator's workers.

Anyone who can write to Redis can push an RQ job. A worker that ran any
function a job names would run `os.system` for them; one that ran any task a
payload names would run `subprocess:run` with their arguments; one that
unpickled job data would run code while loading it. So the workers read job
data with the JSON serializer only (a pickle payload cannot even be decoded),
and this job class checks every job before anything is imported or called:

1. it names one of the orchestrator's entry points, with one keyword argument,
   `payload`, and nothing else;
2. when the deployment has a job key (ORCHESTRATOR_JOB_KEY), its seal matches
   (orchestrator.runtime.payloads.seal): write access to the queues alone orders nothing;
3. its payload has the entry point's typed shape (orchestrator.runtime.payloads);
4. what it orders is declared: a task or compensation is the one that the named
   workflow version declares for the named state; a notification's channel and
   template are ones the workflow's states declare, its templates those of a
   loaded workflow (a send without an instance: any loaded workflow's); its keys
   (namespace, partition count, partition: its inbox and heartbeat are built from
   them) are the deployment's and its instance's.

A refused job fails with its reason in RQ's failed registry and the log; the
worker goes on with the next job.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from rq.exceptions import DeserializationError
from rq.job import Job

from notifiers.registry import CHANNELS
from orchestrator.core.definition import Definition
from orchestrator.core.errors import UnknownWorkflow
from orchestrator.core.spec import split_step
from orchestrator.runtime import payloads
from orchestrator.runtime.payloads import (
    ENTRY_POINTS,
    RUN_TASK,
    RUN_TASKS,
    SEND_NOTIFICATION,
    SEND_NOTIFICATIONS,
    carrier_id,
)
from orchestrator.runtime.registry import Registry
from orchestrator.store.keys import Keys

log = logging.getLogger("orchestrator.runtime.guard")
TEMPLATE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


class RefusedJob(Exception):
    """A job the orchestrator does not run; the message says why."""


@dataclass(frozen=True)
class JobCheck:
    """What a worker knows to check a job against: the workflows it loaded, the
    deployment's keys, and the job key, if any."""

    registry: Registry
    keys: Keys
    job_key: bytes | None = None

    def check(self, job: Job) -> None:
        """Return if the job may run; raise RefusedJob with the reason otherwise."""
        try:
            name = job.func_name
            args, kwargs = job.args, job.kwargs
        except DeserializationError:
            raise RefusedJob("undecodable data (not JSON)") from None
        if name is None or name not in ENTRY_POINTS:
            raise RefusedJob(f"{_show(name)} is not an orchestrator entry point")
        if self.job_key is not None and not payloads.sealed_by(
            self.job_key, job.id, job.data, (job.meta or {}).get("mac")
        ):
            raise RefusedJob("its seal is missing or wrong (ORCHESTRATOR_JOB_KEY)")
        if args or not isinstance(kwargs, dict) or set(kwargs) != {"payload"}:
            raise RefusedJob(f"{name} takes one keyword argument, payload, and nothing else")
        try:
            self._declared(name, job.id, kwargs["payload"])
        except payloads.BadPayload as exc:
            raise RefusedJob(f"malformed payload for {name}: {exc}") from None

    def _declared(self, name: str, job_id: str, data: object) -> None:
        if name == RUN_TASK:
            task = payloads.read_task(data)
            self._task(task)
            if task["job"] != job_id:
                raise RefusedJob(f"job id {_show(job_id)} is not its task's {task['job']!r}")
        elif name == RUN_TASKS:
            tasks = payloads.read_tasks(data)["items"]
            for task in tasks:
                self._task(task)
            self._carrier(job_id, [task["job"] for task in tasks])
        elif name == SEND_NOTIFICATION:
            note = payloads.read_notification(data)
            if job_id != note["key"] and not job_id.startswith(f"{note['key']}-a"):
                raise RefusedJob(f"job id {_show(job_id)} is not one of its notification's")
            self._notification(note)
        else:
            assert name == SEND_NOTIFICATIONS
            notes = payloads.read_notifications(data)["items"]
            for note in notes:
                self._notification(note)
            self._carrier(job_id, [note["key"] for note in notes])

    def _task(self, task: payloads.TaskPayload) -> None:
        definition = self._definition(task["workflow"], task["version"])
        name, branch = split_step(task["state"])
        state = definition.states.get(name)
        if state is None:
            raise RefusedJob(f"workflow {definition.name!r} has no state {_show(task['state'])}")
        spec = state.step_task(branch, task["kind"])
        if spec is None or spec.path != task["task"]:
            raise RefusedJob(
                f"{_show(task['task'])} is not the {task['kind']} that workflow "
                f"{definition.name!r} version {definition.version} declares for "
                f"{'state' if branch is None else 'branch'} {_show(task['state'])}"
            )
        instance = task["instance"]
        if not task["job"].startswith(f"{instance}-"):
            raise RefusedJob(f"job {_show(task['job'])} is not one of instance {_show(instance)}")
        self._keys(task, instance)

    def _notification(self, note: payloads.NotificationPayload) -> None:
        if note["channel"] not in CHANNELS:
            raise RefusedJob(f"{_show(note['channel'])} is not a notification channel")
        if not TEMPLATE_NAME.match(note["template"]):
            raise RefusedJob(f"{_show(note['template'])} is not a template name")
        instance = note["instance"]
        if instance is None:
            if not note["key"].startswith("cli-"):
                raise RefusedJob("a notification without an instance has a cli- key")
            loaded = {d.templates for d in self.registry.definitions() if d.templates}
            if note["templates"] not in loaded:
                raise RefusedJob(f"templates {_show(note['templates'])} are no loaded workflow's")
            owner = note["key"]
        else:
            definition = self._definition(note.get("workflow"), note.get("version"))
            if note["templates"] != definition.templates:
                raise RefusedJob(
                    f"templates {_show(note['templates'])} are not workflow {definition.name!r}'s"
                )
            declared = {
                (spec.channel, spec.template)
                for state in definition.states.values()
                for spec in state.notify
            }
            if (note["channel"], note["template"]) not in declared:
                raise RefusedJob(
                    f"workflow {definition.name!r} declares no {note['channel']} notification "
                    f"with template {_show(note['template'])}"
                )
            if not note["key"].startswith(f"{instance}-"):
                raise RefusedJob(f"key {_show(note['key'])} is not one of instance {instance!r}")
            owner = instance
        self._keys(note, owner)

    def _definition(self, workflow: str | None, version: int | None) -> Definition:
        if workflow is None or version is None:
            raise RefusedJob("it names no workflow and version")
        try:
            return self.registry.get(workflow, version)
        except UnknownWorkflow as exc:
            raise RefusedJob(str(exc)) from None

    def _keys(
        self, payload: payloads.TaskPayload | payloads.NotificationPayload, owner: str
    ) -> None:
        """The keys it travels with (its inbox and heartbeat are built from them) are this
        deployment's, and the partition that of `owner` (its instance, or a send's key)."""
        if (payload["namespace"], payload["partitions"]) != (
            self.keys.namespace,
            self.keys.partitions,
        ):
            raise RefusedJob("its namespace or partition count is not this deployment's")
        if payload["partition"] != self.keys.partition_of(owner):
            raise RefusedJob(f"partition {payload['partition']} is not its instance's")

    @staticmethod
    def _carrier(job_id: str, item_ids: list[str]) -> None:
        if job_id != carrier_id(item_ids):
            raise RefusedJob(f"packed job id {_show(job_id)} does not match its items")


def _show(value: object) -> str:
    return repr(value)[:200]


class GuardedJob(Job):
    """An RQ job that runs only after `check` (bound per worker by `guarded`) let it."""

    check: JobCheck | None = None
    _verdict: tuple[bytes, RefusedJob | None] | None = None  # the data checked, the refusal

    def admit(self) -> None:
        """Raise RefusedJob unless the job may run. Checked once for the data it holds:
        the worker may ask as the job starts (orchestrator.entry.rq_bookkeeping), and it
        is asked again as it runs; data read anew in between is checked anew."""
        data = self.data
        if self._verdict is None or self._verdict[0] != data:
            self._verdict = (data, self._refusal())
        if self._verdict[1] is not None:
            raise self._verdict[1]

    def _refusal(self) -> RefusedJob | None:
        if self.check is None:
            return RefusedJob("this worker has no job check (build its job class with guarded())")
        try:
            self.check.check(self)
        except RefusedJob as exc:
            return exc
        return None

    def _execute(self) -> Any:
        try:
            self.admit()
        except RefusedJob as exc:
            log.error("refused job %s: %s", _show(self.id), exc)
            raise
        return super()._execute()


def guarded(check: JobCheck) -> type[GuardedJob]:
    """The job class of one worker: GuardedJob bound to that worker's check."""
    return type("GuardedJob", (GuardedJob,), {"check": check})
