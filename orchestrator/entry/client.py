"""The Python client: start instances, emit events, and read what happened.

    app = Orchestrator.connect()          # REDIS_URL, or the embedded Redis
    order = app.start("order", {"order_id": "A1", "items": 2})
    app.emit("payment.received", {"amount": 10}, key=("order_id", "A1"))
    app.status(order).state

Writes go through the inbox only; the applier moves instances. The CLI is a
thin layer over this class.
"""

from __future__ import annotations

import builtins
import json
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import redis

from orchestrator.core import events as ev
from orchestrator.core.durations import show_duration
from orchestrator.core.errors import (
    InputError,
    InstanceExists,
    InvalidOperation,
    OrchestratorError,
    UnknownEventType,
    UnknownInstance,
)
from orchestrator.core.instance import STATUSES, Instance
from orchestrator.core.limits import check_data
from orchestrator.entry import connection
from orchestrator.entry.settings import Settings
from orchestrator.runtime import tracing
from orchestrator.store.deadletters import DeadLetters
from orchestrator.store.inbox import Inbox, check_id, new_id
from orchestrator.store.instances import Page, Store
from orchestrator.store.keys import Keys
from orchestrator.store.waiting import WAITING, Waiting

if TYPE_CHECKING:
    from orchestrator.core.definition import Definition
    from orchestrator.core.replay import ReplayReport
    from orchestrator.entry.schedules import ScheduleClient
    from orchestrator.entry.subscriptions import Subscriptions
    from orchestrator.runtime.registry import Registry
    from orchestrator.store.published import Published


@dataclass(frozen=True)
class Emitted:
    event_id: str
    instance_id: str
    started: bool  # the event started a new instance
    note: str = ""


_STREAM_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")
REPLAY_READS = 5  # reads of an instance and its history, at most, to see them agree


class Orchestrator:
    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        registry: Registry | Callable[[], Registry],
        retention: float = 7 * 86400.0,
    ) -> None:
        """`registry`: the workflows, or what loads them when first needed (the CLI's:
        `status` or `list` reads instances without importing a workflow module)."""
        self.redis = client
        self.keys = keys
        self._registry = registry
        self.inbox = Inbox(client, keys)
        self.store = Store(client, keys, retention)
        self.dead_letters = DeadLetters(client, keys)
        self.waiting = Waiting(client, keys)

    @property
    def registry(self) -> Registry:
        if callable(self._registry):  # loaded once, when a method first needs a definition
            self._registry = self._registry()
        return self._registry

    # What few commands use is built on first use: `orchestrator status` imports neither.

    @cached_property
    def schedules(self) -> ScheduleClient:
        from orchestrator.entry.schedules import ScheduleClient
        from orchestrator.store.schedules import Schedules

        return ScheduleClient(Schedules(self.redis, self.keys), self.registry)

    @cached_property
    def subscriptions(self) -> Subscriptions:
        from orchestrator.entry.subscriptions import Subscriptions

        return Subscriptions(self.redis, self.keys)

    @classmethod
    def connect(cls, settings: Settings | None = None) -> Orchestrator:
        """A client on its own, for a script: the settings (read from the environment
        when not given), a connection, the key schema and the workflows."""
        settings = settings or Settings.from_env()
        client = connection.connect(settings)
        keys = connection.keys_for(client, settings)
        from orchestrator.runtime.registry import Registry

        return cls(client, keys, Registry.from_modules(settings.workflows), settings.retention)

    # -- writes -----------------------------------------------------------------

    def start(
        self, workflow: str, data: dict[str, Any] | None = None, *, instance_id: str | None = None
    ) -> str:
        if tracing.enabled:  # a span around it, whose context its start event carries
            with tracing.entering("start") as span:
                started = self._start(workflow, data, instance_id)
                span.update_name(f"start {workflow}")  # a known name: bounded
                span.set_attributes({tracing.WORKFLOW: workflow, tracing.INSTANCE: started})
                return started
        return self._start(workflow, data, instance_id)

    def _start(self, workflow: str, data: dict[str, Any] | None, instance_id: str | None) -> str:
        definition = self.registry.get(workflow)
        data = dict(data or {})
        check_data(data, "the input")
        instance_id = check_id(instance_id, "instance id") if instance_id else new_id()
        # an instance without its key could never be addressed by it: refused, nothing written
        correlation = _correlation(definition, data, required=True)
        outcome, other = self.inbox.create(definition, instance_id, data, correlation)
        if outcome == "correlated":
            assert correlation is not None
            raise InstanceExists(
                f"instance {other} of {definition.name} already answers to "
                f"{correlation[0]}={correlation[1]}"
            )
        return instance_id

    def emit(
        self,
        event_type: str,
        data: dict[str, Any] | None = None,
        *,
        instance_id: str | None = None,
        key: tuple[str, str] | None = None,
        task: str | None = None,
        event_id: str | None = None,
    ) -> Emitted:
        """Append an event for an instance (by id or business key), or start one."""
        if tracing.enabled:  # a span around it, whose context the events it makes carry
            with tracing.entering("emit") as span:
                emitted = self._emit(event_type, data, instance_id, key, task, event_id)
                span.update_name(f"emit {event_type}")  # a known type: bounded
                span.set_attributes(
                    {tracing.EVENT: event_type, tracing.INSTANCE: emitted.instance_id}
                )
                return emitted
        return self._emit(event_type, data, instance_id, key, task, event_id)

    def _emit(
        self,
        event_type: str,
        data: dict[str, Any] | None,
        instance_id: str | None,
        key: tuple[str, str] | None,
        task: str | None,
        event_id: str | None,
    ) -> Emitted:
        self.registry.check_event_type(event_type)
        data = dict(data or {})
        check_data(data, f"the data of {event_type}")
        if event_id is not None:
            check_id(event_id, "event id")
        if instance_id and key:
            raise InputError("give either an instance id or a key, not both")
        if not instance_id and not key:
            return self._start_by_event(event_type, data, event_id)
        if key:
            instance_id = self._resolve_key(event_type, key)
            if instance_id is None:
                return self._no_instance(event_type, data, event_id, key)
        assert instance_id is not None
        instance = self.store.get(instance_id)
        if instance.version not in self.registry.versions(instance.workflow):
            # This process lacks that version; a worker that has it will decide.
            event = self.inbox.event(event_type, instance_id, data, event_id)
            self.inbox.append(event)
            return Emitted(event.id, instance_id, started=False)
        definition = self.registry.get(instance.workflow, instance.version)
        if event_type not in definition.event_types | ev.WORKER_REPORTS | _timeouts(definition):
            reacts = ", ".join(sorted(definition.event_types)) or "nothing"
            raise UnknownEventType(
                f"workflow {definition.name} has no transition on {event_type!r} "
                f"(it reacts to: {reacts})"
            )
        data = self.registry.check_payload(definition, event_type, data)
        if event_type in (ev.TASK_COMPLETED, ev.TASK_FAILED):
            # here, not at the top: a `status` loads no workflow specs (tests/cli)
            from orchestrator.core.answers import answer_for_task

            data = answer_for_task(definition, instance, event_type, task, data)
        event = self.inbox.event(event_type, instance_id, data, event_id)
        self.inbox.append(event)
        return Emitted(event.id, instance_id, started=False)

    def cancel(self, instance_id: str, reason: str | None = None) -> str:
        instance = self.store.get(instance_id)
        if instance.finished:
            raise InvalidOperation(
                f"instance {instance_id} is already {instance.status} (state {instance.state}); "
                "there is nothing to cancel"
            )
        event = self.inbox.event(ev.CANCEL, instance_id, {"reason": reason} if reason else {})
        self.inbox.append(event)
        return event.id

    def retry(self, instance_id: str) -> str:
        """Resume a failed instance: re-run its failed compensation or failed task."""
        instance = self.store.get(instance_id)
        definition = self.registry.get(instance.workflow, instance.version)
        state = definition.states.get(instance.state or "")
        stuck_task = instance.halted or (
            instance.status == "running"
            and state is not None
            and state.task is not None
            and instance.attempt == 0
        )
        failed_compensation = instance.status == "failed" and instance.compensating_to is not None
        if not (stuck_task or failed_compensation):
            raise InvalidOperation(
                f"instance {instance_id} has nothing to retry: it is {instance.status} in state "
                f"{instance.state} (retry resumes a failed compensation or a failed task)"
            )
        event = self.inbox.event(ev.RESUME, instance_id, {})
        self.inbox.append(event)
        return event.id

    def replay(self, instance_id: str) -> ReplayReport:
        """Rebuild the instance from its history and compare it with the stored one."""
        for _ in range(REPLAY_READS):
            stored = self.store.get(instance_id)
            history = self.store.history(instance_id)
            # an event applied between the two reads: the history is ahead; read both again
            if not history or int(history[-1]["seq"]) <= stored.seq:
                break
        definition = self.registry.get(stored.workflow, stored.version)
        from orchestrator.core.replay import replay

        return replay(definition, stored, history)

    # -- reads ----------------------------------------------------------------

    def status(self, instance_id: str) -> Instance:
        return self.store.get(instance_id)

    def history(self, instance_id: str) -> list[dict[str, Any]]:
        return self.store.history(instance_id)

    def list(
        self,
        *,
        workflow: str | None = None,
        state: str | None = None,
        status: str | None = None,
        limit: int = 50,
    ) -> list[Instance]:
        if workflow:
            self.registry.get(workflow)
        if status is not None and status not in STATUSES:
            raise InputError(f"unknown status {status!r} (statuses: {', '.join(STATUSES)})")
        return self.store.list(workflow=workflow, state=state, status=status, limit=limit)

    def page(
        self,
        *,
        workflow: str | None = None,
        state: str | None = None,
        status: str | None = None,
        key: tuple[str, str] | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page:
        """A page of instances, newest first, read from the indexes (orchestrator.store.
        instances.Store.page); `key` (NAME=VALUE): the live instances answering to it."""
        if workflow:
            self.registry.get(workflow)
        if status is not None and status not in STATUSES:
            raise InputError(f"unknown status {status!r} (statuses: {', '.join(STATUSES)})")
        if key is not None:
            return self._page_by_key(workflow, state, status, key, limit)
        state_workflows = None
        if state and not workflow:  # the workflows that have such a state: their state sets
            state_workflows = sorted(
                {d.name for d in self.registry.definitions() if state in d.states}
            )
        return self.store.page(
            workflow=workflow,
            state=state,
            status=status,
            state_workflows=state_workflows,
            limit=limit,
            cursor=cursor,
        )

    def _page_by_key(
        self,
        workflow: str | None,
        state: str | None,
        status: str | None,
        key: tuple[str, str],
        limit: int,
    ) -> Page:
        name, value = key
        names = [workflow] if workflow else self.registry.names()
        found = [
            instance
            for each in names
            if (instance_id := self.store.correlated(each, name, value))
            and (instance := self.store.find(instance_id)) is not None
            and (status is None or instance.status == status)
            and (state is None or instance.state == state)
        ]
        found.sort(key=lambda i: i.created_at, reverse=True)
        return Page(found[:limit], None, len(names))

    def notifications(self, instance_id: str) -> builtins.list[dict[str, Any]]:
        """An instance's notifications, oldest first, each with its delivery status
        (a webhook URL's password masked, as the CLI shows it); an unknown instance is an
        error, not an empty list."""
        from orchestrator.entry.notifications import notification_view
        from orchestrator.runtime.notify.ledger import Ledger

        self.store.get(instance_id)
        return [
            notification_view(r) for r in Ledger(self.redis, self.keys).of_instance(instance_id)
        ]

    def timers(self, instance: Instance) -> builtins.list[dict[str, Any]]:
        """The instance's armed timers: id, when due, the event each becomes."""
        if not instance.timers:
            return []
        partition = self.keys.partition_of(instance.id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.zmscore(self.keys.timers(partition), list(instance.timers))
        pipe.hmget(self.keys.timer_events(partition), list(instance.timers))
        due, events = pipe.execute()
        shown = []
        for timer_id, at, raw in zip(instance.timers, due, events, strict=True):
            event_type = None
            if raw is not None:
                try:
                    event_type = json.loads(raw).get("type")
                except (ValueError, AttributeError):
                    event_type = None
            shown.append({"id": timer_id, "due": at, "event": event_type})
        return shown

    def dead_letter_page(
        self, limit: int = 100, after: str | None = None
    ) -> tuple[builtins.list[dict[str, Any]], str | None]:
        """Dead letters oldest first, after the letter id `after`; and the id to go on
        after (None: no more)."""
        if after is not None and not _STREAM_ID.fullmatch(after):
            raise InputError(
                f"cursor must be a dead letter id such as 1700000000000-0, not {after[:40]!r}"
            )
        if after is None:
            letters = self.dead_letters.read(limit + 1)
        else:  # the letters after it: read from it on, it included, then dropped
            letters = [
                letter
                for letter in self.dead_letters.read(limit + 2, start=after)
                if letter["id"] != after
            ][: limit + 1]
        more = len(letters) > limit
        return letters[:limit], letters[limit - 1]["id"] if more else None

    # -- published events ---------------------------------------------------------

    def subscribe(
        self,
        group: str,
        *,
        types: Sequence[str] = (),
        start: str | float | None = "end",
        consumer: str | None = None,
        block: float = 1.0,
        claim_after: float = 60.0,
        idle_timeout: float | None = None,
        stop: Callable[[], bool] = lambda: False,
    ) -> Iterator[Published]:
        """Consume published events as a member of `group`, each acknowledged once the
        loop asks for the next (orchestrator.entry.subscriber)."""
        from orchestrator.entry import subscriber

        return subscriber.subscribe(
            self.redis,
            self.keys,
            group,
            types=types,
            start=start,
            consumer=consumer,
            block=block,
            claim_after=claim_after,
            idle_timeout=idle_timeout,
            stop=stop,
        )

    def published(
        self,
        start: str | float | None = "start",
        types: Sequence[str] = (),
        *,
        limit: int | None = None,
    ) -> builtins.list[Published]:
        """The published events from a position on ("start", an entry id, a moment,
        a time ago such as "15m"), oldest first, up to `limit`."""
        from orchestrator.entry import subscriber

        return list(subscriber.read(self.redis, self.keys, start, types, limit=limit))

    def expired_count(self) -> int:
        """How many finished instances retention has removed (in the last 90 days)."""
        return self.store.expired_count()

    def wait(self, instance_id: str, timeout: float = 30.0, poll: float = 0.05) -> Instance:
        """Block until the instance is finished or stuck in `failed`; for scripts and tests."""
        deadline = time.monotonic() + timeout
        while True:
            instance = self.store.get(instance_id)
            if instance.finished or instance.status == "failed":
                return instance
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"instance {instance_id} still {instance.status} in state {instance.state} "
                    f"after {timeout:.0f}s"
                )
            time.sleep(poll)

    # -- helpers ----------------------------------------------------------------

    def _start_by_event(
        self,
        event_type: str,
        data: dict[str, Any],
        event_id: str | None,
        key: tuple[str, str] | None = None,
    ) -> Emitted:
        definition = self.registry.starter(event_type)
        if definition is None:
            if key:
                raise UnknownInstance(f"no running instance answers to {key[0]}={key[1]}")
            raise InputError(
                f"event type {event_type!r} starts no workflow; address it with "
                "--instance ID or --key NAME=VALUE"
            )
        if (
            key
            and definition.correlate_by == key[0]
            and (str(data.setdefault(key[0], key[1])) != key[1])
        ):
            raise InputError(
                f"--key {key[0]}={key[1]} disagrees with the data's {key[0]} {data[key[0]]!r}"
            )
        data = self.registry.check_payload(definition, event_type, data)
        correlation = _correlation(definition, data, required=True)
        existing = self.store.correlated(definition.name, *correlation) if correlation else None
        if existing is None and definition.start_if and not _starts(definition, data):
            note = f"{event_type} meets no start condition of {definition.name}; nothing started"
            return Emitted("", "", started=False, note=note)
        if existing is not None:
            return self._deliver(event_type, existing, data, event_id)
        instance_id = new_id()
        outcome, other = self.inbox.create(
            definition, instance_id, data, correlation, trigger=event_type, event_id=event_id
        )
        if outcome == "created":
            return Emitted(event_id or f"start-{instance_id}", instance_id, started=True)
        return self._deliver(event_type, other, data, event_id)

    def _deliver(
        self, event_type: str, instance_id: str, data: dict[str, Any], event_id: str | None
    ) -> Emitted:
        event = self.inbox.event(event_type, instance_id, data, event_id)
        self.inbox.append(event)
        return Emitted(event.id, instance_id, started=False)

    def _resolve_key(self, event_type: str, key: tuple[str, str]) -> str | None:
        name, value = key
        known = sorted({d.correlate_by for d in self.registry.definitions() if d.correlate_by})
        if name not in known:
            raise InputError(
                f"no loaded workflow correlates by {name!r}; the keys are: "
                + (", ".join(known) if known else "none (no workflow has correlate_by)")
            )
        found = {
            definition.name: instance_id
            for definition in self.registry.latest()
            if definition.correlate_by == name
            and (instance_id := self.store.correlated(definition.name, name, value))
        }
        if len(found) > 1:
            raise InputError(
                f"{name}={value} names instances of several workflows: "
                + ", ".join(f"{wf} ({iid})" for wf, iid in sorted(found.items()))
            )
        return next(iter(found.values())) if found else None

    def _no_instance(
        self, event_type: str, data: dict[str, Any], event_id: str | None, key: tuple[str, str]
    ) -> Emitted:
        """An event addressed by a key no live instance has: it starts one if its type
        starts a workflow; else the workflow's `missing_instance` policy decides (start
        one, then apply it, as Temporal's signal-with-start; or hold it a while for one
        to start); with none ("refuse", the default) it is an error."""
        name, value = key
        starter = self.registry.starter(event_type)
        if starter is not None and starter.correlate_by == name:
            return self._start_by_event(event_type, data, event_id, key=key)
        takers = [
            d
            for d in self.registry.latest()
            if d.correlate_by == name
            and event_type in d.event_types
            and d.missing_instance != "refuse"
        ]
        if len(takers) != 1:
            several = f" (workflows {', '.join(d.name for d in takers)} would each take it)"
            raise UnknownInstance(
                f"no running instance answers to {name}={value}" + (several if takers else "")
            )
        (definition,) = takers
        data = self.registry.check_payload(definition, event_type, data)
        if event_id is not None:
            check_id(event_id, "event id")
        if definition.missing_instance == "start":
            instance_id = new_id()
            outcome, other = self.inbox.create(
                definition, instance_id, {name: value}, key, trigger=f"{event_type} for {name}"
            )
            target = instance_id if outcome == "created" else other
            emitted = self._deliver(event_type, target, data, event_id)
            return Emitted(emitted.event_id, target, started=outcome == "created")
        held = self.inbox.event(event_type, WAITING, data, event_id)
        until = held.at + definition.missing_instance_wait
        live = self.waiting.hold(definition.name, key, held, until)
        if live is not None:  # started meanwhile
            return self._deliver(event_type, live, data, event_id)
        return Emitted(
            held.id,
            "",
            started=False,
            note=f"held: {event_type} waits up to "
            f"{show_duration(definition.missing_instance_wait)} for an instance of "
            f"{definition.name} with {name}={value} to start",
        )


def _correlation(
    definition: Definition, data: dict[str, Any], *, required: bool
) -> tuple[str, str] | None:
    key = definition.correlate_by
    if key is None:
        return None
    if key not in data:
        if required:
            raise InputError(
                f"workflow {definition.name} correlates by {key!r}, which the data lacks "
                f"(give it, e.g. {{{json.dumps(key)}: ...}}); nothing started"
            )
        return None
    return key, str(data[key])


def _starts(definition: Definition, data: dict[str, Any]) -> bool:
    assert definition.start_if is not None
    try:
        return bool(definition.start_if(data))
    except OrchestratorError:
        raise
    except Exception as exc:
        raise InputError(
            f"start_if of workflow {definition.name} refused the data: {type(exc).__name__}: {exc}"
        ) from None


def _timeouts(definition: Definition) -> set[str]:
    return {
        s.timeout_event
        for s in definition.states.values()
        if s.timeout is not None or s.timeout_at is not None
    }
