"""What the applier adds to a step that publishes: declared payloads checked and shaped
by their schemas, the engine's lifecycle events when the deployment asks for them, and
each published event written as CloudEvents JSON into its partition's stream, in the
step's own commit (orchestrator.core.publishing says why).

The event's id is its instance, step and place among the step's effects, so an
event applied again after a crash (its commit never made) publishes the same id,
and a consumer that deduplicates by id sees it once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from redis.client import Pipeline

from orchestrator.core.definition import Definition
from orchestrator.core.effects import PublishEvent
from orchestrator.core.events import Event
from orchestrator.core.instance import Instance
from orchestrator.core.machine import Result
from orchestrator.core.publishing import lifecycle
from orchestrator.runtime.registry import Registry
from orchestrator.store.keys import Keys

SPEC_VERSION = "1.0"


@dataclass(frozen=True)
class Publishing:
    """How a deployment publishes: the engine's lifecycle events or not, and how many
    events each partition's stream keeps at most (about: trimmed in whole nodes)."""

    lifecycle: bool = False
    max_len: int = 100_000


def complete(
    registry: Registry,
    definition: Definition,
    before: Instance,
    event: Event,
    result: Result,
    publishing: Publishing,
) -> Result:
    """The step's result with its published payloads shaped by their schemas (or
    SchemaViolation naming the field) and its lifecycle events added."""
    effects = result.effects
    if definition.published and any(isinstance(e, PublishEvent) for e in effects):
        schemas = registry.schemas(definition)
        effects = tuple(
            replace(e, data=schemas.shape_published(e.type, e.data))
            if isinstance(e, PublishEvent)
            else e
            for e in effects
        )
    if publishing.lifecycle:
        effects = (*effects, *lifecycle(before, result.instance, event))
    return result if effects is result.effects else replace(result, effects=effects)


def cloud_event(
    keys: Keys, instance: Instance, event_id: str, effect: PublishEvent
) -> dict[str, object]:
    """The published event as CloudEvents 1.0 (JSON format): `subject` is the instance,
    `source` the workflow; `workflow` and `workflowversion` are extension attributes."""
    when = datetime.fromtimestamp(effect.at, UTC).isoformat(timespec="milliseconds")
    doc: dict[str, object] = {
        "specversion": SPEC_VERSION,
        "id": event_id,
        "source": f"/{keys.namespace}/workflows/{instance.workflow}",
        "type": effect.type,
        "subject": instance.id,
        "time": when.replace("+00:00", "Z"),
        "datacontenttype": "application/json",
        "workflow": instance.workflow,
        "workflowversion": instance.version,
    }
    if effect.version:
        doc["dataschema"] = f"urn:{keys.namespace}:schemas:{effect.type}:v{effect.version}"
    doc["data"] = effect.data
    return doc


def write(
    pipe: Pipeline,
    keys: Keys,
    publishing: Publishing,
    instance: Instance,
    event_id: str,
    effect: PublishEvent,
) -> None:
    """XADD the event to its instance's partition stream, in the step's commit."""
    doc = json.dumps(cloud_event(keys, instance, event_id, effect), separators=(",", ":"))
    stream = keys.published(keys.partition_of(instance.id))
    pipe.xadd(stream, {"e": doc}, maxlen=publishing.max_len, approximate=True)
