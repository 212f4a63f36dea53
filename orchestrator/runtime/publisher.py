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
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from redis.client import Pipeline

from orchestrator.core.definition import Definition
from orchestrator.core.effects import Effect, PublishEvent
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
    shaped: list[Effect] = []
    schemas = registry.schemas(definition) if definition.published else None
    for effect in effects:  # a plain loop: this runs for every event a publishing step applies
        if schemas is not None and type(effect) is PublishEvent:
            text = schemas.shape_published(effect.type, effect.data)
            effect = PublishEvent(effect.type, effect.data, effect.at, effect.version, text)
        shaped.append(effect)
    if publishing.lifecycle:
        shaped += lifecycle(before, result.instance, event)
    return Result(result.instance, tuple(shaped), result.outcome, result.note, result.passed)


def write(pipe: Pipeline, keys: Keys, publishing: Publishing, ready: dict[int, list[str]]) -> None:
    """The events one commit publishes, one stream entry per partition: its fields "0",
    "1"... each an event, in the order they were published (store.published reads them
    back one by one). One XADD per partition and commit rather than one per event: a
    command's packing and its reply's parsing cost the applier more than the event's
    encoding does."""
    command: Any = pipe.execute_command  # xadd() rebuilds the same arguments, with checks
    for partition, docs in ready.items():
        fields = [part for n, doc in enumerate(docs) for part in (str(n), doc)]
        command("XADD", keys.published(partition), "MAXLEN", "~", publishing.max_len, "*", *fields)


@lru_cache(maxsize=1024)
def _head(namespace: str, workflow: str, version: int, kind: str, schema: int) -> str:
    """The members every event of one type from one workflow version shares, as JSON."""
    shared: dict[str, object] = {
        "specversion": SPEC_VERSION,
        "source": f"/{namespace}/workflows/{workflow}",
        "type": kind,
        "datacontenttype": "application/json",
        "workflow": workflow,
        "workflowversion": version,
    }
    if schema:
        shared["dataschema"] = f"urn:{namespace}:schemas:{kind}:v{schema}"
    return json.dumps(shared, separators=(",", ":"))[:-1]


def encode(keys: Keys, instance: Instance, event_id: str, effect: PublishEvent) -> str:
    """The published event as CloudEvents 1.0 JSON: `subject` is the instance, `source`
    the workflow, `time` the causing event's; `workflow` and `workflowversion` are
    extension attributes, `dataschema` names the payload's schema version. Written by
    hand, what one type of one workflow version shares encoded once, the payload as its
    schema dumped it: the applier runs this for every event it publishes (measured:
    about 2.5 us an event, against 6.4 encoding each member)."""
    head = _head(keys.namespace, instance.workflow, instance.version, effect.type, effect.version)
    data = effect.encoded or _COMPACT.encode(effect.data)
    return (
        f'{head},"id":{_string(event_id)},"subject":{_string(instance.id)},'
        f'"time":"{_second(int(effect.at))}.{int(effect.at % 1 * 1000):03d}Z","data":{data}}}'
    )


_COMPACT = json.JSONEncoder(separators=(",", ":"))  # json.dumps builds one a call for these
_string = json.encoder.encode_basestring_ascii  # a str as a JSON string, in C


@lru_cache(maxsize=64)
def _second(whole: int) -> str:
    """RFC 3339 in UTC to the second; the events of one busy second share it."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
