"""Published events: the business events a workflow declares (`Publish`) and the
engine's own lifecycle events, as `PublishEvent` effects.

A published event is an effect like a task's job: the applier writes it in the
same commit as the step that caused it (a transactional outbox), so there is no
transition without its event and no event without its transition. Its id is
derived from the instance, the step and its place among the step's effects, so
an event applied again after a crash publishes the same id
(orchestrator.runtime.dispatch).

Lifecycle events are named `orchestrator.*` (a prefix a workflow cannot declare);
the applier adds them to a step's effects when the deployment asks for them
(`publish_lifecycle`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from orchestrator.core.effects import PublishEvent
from orchestrator.core.errors import DefinitionError
from orchestrator.core.events import Event
from orchestrator.core.instance import Instance
from orchestrator.core.language import Publish
from orchestrator.core.spec import PublishSpec

LIFECYCLE_PREFIX = "orchestrator."
STARTED = "orchestrator.workflow.started"
TRANSITIONED = "orchestrator.workflow.transitioned"
COMPENSATED = "orchestrator.workflow.compensated"
FINISHED = {
    "completed": "orchestrator.workflow.completed",
    "failed": "orchestrator.workflow.failed",
    "cancelled": "orchestrator.workflow.cancelled",
}
NOTIFICATION = "orchestrator.notification."  # + sent | failed | delivered | undelivered
NOTIFICATION_OUTCOMES = ("sent", "failed", "delivered", "undelivered")
TYPE = re.compile(r"[a-z0-9][a-z0-9_-]*(\.[a-z0-9_-]+)+")  # "order.shipped", dotted, lowercase


def compile_publishes(
    declared: object,
    uses: Iterable[tuple[str, Sequence[str]]],
    fail: Callable[[str], DefinitionError],
) -> dict[str, PublishSpec]:
    """The class's `publishes`, checked: each a `Publish` with a dotted lowercase type not
    under the engine's prefix, declared once, with a schema and a version of 1 or more; and
    every `publish=` of a state or row (`uses`: where, the types it names) declared."""
    if isinstance(declared, str | Publish) or not isinstance(declared, Sequence):
        raise fail("publishes must be a list of Publish(...)")
    found: dict[str, PublishSpec] = {}
    for item in declared:
        if not isinstance(item, Publish):
            raise fail(f"publishes entries must be Publish(...), not {item!r}")
        kind = item.type
        if not isinstance(kind, str) or not TYPE.fullmatch(kind):
            raise fail(
                f"published event type {kind!r} must be dotted lowercase words, as 'order.shipped'"
            )
        if kind.startswith(LIFECYCLE_PREFIX):
            raise fail(f"published event type {kind!r}: {LIFECYCLE_PREFIX}* is the engine's")
        if kind in found:
            raise fail(f"published event type {kind!r} is declared twice")
        if item.schema is None:
            raise fail(f"published event {kind!r} needs a schema (a pydantic model or TypedDict)")
        if isinstance(item.version, bool) or not isinstance(item.version, int) or item.version < 1:
            raise fail(f"published event {kind!r}: version must be 1 or more, not {item.version!r}")
        found[kind] = PublishSpec(
            kind, item.schema, _data(item, fail), item.version, item.description
        )
    for where, types in uses:
        if isinstance(types, str):
            raise fail(f"{where}: publish must be a list of published event types, not a string")
        for kind in types:
            if kind not in found:
                raise fail(f"{where}: publishes {kind!r}, which publishes does not declare")
    return found


def _data(
    item: Publish, fail: Callable[[str], DefinitionError]
) -> tuple[str, ...] | Callable[[dict[str, Any]], dict[str, Any]] | None:
    given = item.data
    if given is None or callable(given):
        return given
    if isinstance(given, str) or not all(isinstance(k, str) and k for k in given):
        raise fail(
            f"published event {item.type!r}: data must list context keys or be a function "
            f"of the context, not {given!r}"
        )
    return tuple(given)


def lifecycle(before: Instance, after: Instance, event: Event) -> list[PublishEvent]:
    """The engine's own events for one applied step: started, transitioned (each change of
    state), compensated (a compensation that ended), completed/failed/cancelled, and the
    notification outcomes the workflow was told of."""
    out: list[PublishEvent] = []
    at = event.at
    base = {"workflow": after.workflow, "version": after.version}
    if before.state is None and after.state is not None:
        out.append(PublishEvent(STARTED, {**base, "state": after.state}, at))
    elif after.state != before.state:
        moved = {"from": before.state, "to": after.state, "event": event.type}
        out.append(PublishEvent(TRANSITIONED, {**base, **moved}, at))
    if before.status == "compensating" and after.status != "compensating":
        out.append(PublishEvent(COMPENSATED, {**base, "state": after.state}, at))
    if after.finished and not before.finished:
        data = {**base, "state": after.state}
        if after.reason:
            data["reason"] = after.reason
        out.append(PublishEvent(FINISHED[after.status], data, at))
    outcome = event.type.removeprefix("notification.")
    if outcome != event.type and outcome in NOTIFICATION_OUTCOMES:
        kept = ("key", "channel", "status", "error_code", "reason")
        note = {k: event.data[k] for k in kept if k in event.data}
        out.append(PublishEvent(NOTIFICATION + outcome, {**base, **note}, at))
    return out
