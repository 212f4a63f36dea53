"""The door: appending events to the inbox partitions.

Everything that moves an instance enters here as an event, from the CLI, the
Python client, the task wrapper and the timers. The door never changes an
instance: it only creates the pending shell of a new one, in the same atomic
script that appends its start event, so an instance id is never handed out
without the event that will start it.

An event the door makes carries the trace context of the code that sent it, when there
is one: `TRACE`, a context variable the entry points set while tracing is on
(orchestrator.runtime.tracing.entering). Unset, as always with tracing off, the event
has no trace field and its bytes are what they were.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import redis

from orchestrator.core import events as ev
from orchestrator.core.errors import InputError, InstanceExists
from orchestrator.core.events import Event
from orchestrator.core.instance import Instance
from orchestrator.core.limits import check_data
from orchestrator.store.keys import Keys

if TYPE_CHECKING:
    from orchestrator.core.definition import Definition

# KEYS: instance, inbox, correlation ("" for none), idx:all, idx:workflow, idx:status:pending,
#       waiting list of the correlation ("" for none), waiting zset (store.waiting)
# ARGV: instance id, created_at, event JSON, then instance hash fields as name, value pairs
# Returns {"created", id} or {"exists", id} or {"correlated", existing id}. Events held
# for the key follow the start event into the inbox, the placeholder id replaced.
_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return {'exists', ARGV[1]} end
if KEYS[3] ~= '' then
  local other = redis.call('GET', KEYS[3])
  if other then return {'correlated', other} end
  redis.call('SET', KEYS[3], ARGV[1])
end
local fields = {}
for i = 4, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('ZADD', KEYS[4], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[5], ARGV[2], ARGV[1])
redis.call('SADD', KEYS[6], ARGV[1])
redis.call('XADD', KEYS[2], '*', 'e', ARGV[3])
if KEYS[7] ~= '' then
  local placeholder = '"instance":"__waiting__"'
  local mine = '"instance":"' .. ARGV[1] .. '"'
  for _, held in ipairs(redis.call('LRANGE', KEYS[7], 0, -1)) do
    local ok, entry = pcall(cjson.decode, held)
    if ok and type(entry) == 'table' and type(entry['event']) == 'string' then
      local first = string.find(entry['event'], placeholder, 1, true)
      if first then
        local event = string.sub(entry['event'], 1, first - 1) .. mine ..
          string.sub(entry['event'], first + #placeholder)
        redis.call('XADD', KEYS[2], '*', 'e', event)
      end
    end
  end
  redis.call('DEL', KEYS[7])
  redis.call('ZREM', KEYS[8], KEYS[7])
end
return {'created', ARGV[1]}
"""

TRACE: ContextVar[str | None] = ContextVar("orchestrator_trace", default=None)
"""The W3C traceparent the door stamps on the events it makes in this context."""

ID_ALPHABET = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
MAX_ID = 100


def new_id() -> str:
    return uuid.uuid4().hex[:20]


def check_id(value: str, what: str) -> str:
    if not value or len(value) > MAX_ID or not set(value) <= ID_ALPHABET:
        raise InputError(f"{what} {value!r} must be 1 to {MAX_ID} letters, digits, '_' or '-'")
    return value


class Inbox:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys
        self._create = client.register_script(_CREATE)

    def create(
        self,
        definition: Definition,
        instance_id: str,
        data: dict[str, Any],
        correlation: tuple[str, str] | None,
        *,
        trigger: str | None = None,
        event_id: str | None = None,
    ) -> tuple[str, str]:
        """Create a pending instance and append its start event, atomically.

        Returns ("created", id), or ("correlated", existing id) when a live
        instance already answers to the business key. Raises InstanceExists.
        """
        keys, args = self._create_call(
            definition, instance_id, data, correlation, trigger, event_id, trace=TRACE.get()
        )
        outcome, other = self._create(keys=keys, args=args)
        outcome, other = outcome.decode(), other.decode()
        if outcome == "exists":
            raise InstanceExists(f"an instance with id {instance_id!r} exists already")
        return outcome, other

    def queue_create(
        self,
        pipe: redis.client.Pipeline,
        definition: Definition,
        instance_id: str,
        data: dict[str, Any],
        correlation: tuple[str, str] | None,
        trigger: str,
        parent: dict[str, Any] | None = None,
        trace: str | None = None,
    ) -> None:
        """`create` queued in a transaction; its reply, [outcome, id] as bytes, comes with
        the others' (an existing id is "exists", not an error: for idempotent starts).
        `parent`: the step of the parent instance a child answers; `trace`: the
        traceparent its start event carries."""
        keys, args = self._create_call(
            definition, instance_id, data, correlation, trigger, None, parent, trace
        )
        self._create(keys=keys, args=args, client=pipe)

    def _create_call(
        self,
        definition: Definition,
        instance_id: str,
        data: dict[str, Any],
        correlation: tuple[str, str] | None,
        trigger: str | None,
        event_id: str | None,
        parent: dict[str, Any] | None = None,
        trace: str | None = None,
    ) -> tuple[list[str], list[Any]]:
        now = time.time()
        correlation_text = f"{correlation[0]}={correlation[1]}" if correlation else None
        shell = Instance(
            id=instance_id,
            workflow=definition.name,
            version=definition.version,
            created_at=now,
            updated_at=now,
            correlation=correlation_text,
        )
        start = Event(
            id=event_id or f"start-{instance_id}",
            type=ev.STARTED,
            instance_id=instance_id,
            at=now,
            data={
                "input": data,
                **({"trigger": trigger} if trigger else {}),
                **({"parent": parent} if parent else {}),
            },
            trace=trace,
        )
        workflow = definition.name
        correlation_key = self.keys.correlation(workflow, *correlation) if correlation else ""
        fields = [item for pair in shell.to_fields().items() for item in pair]
        keys = [
            self.keys.instance(instance_id),
            self.keys.inbox(self.keys.partition_of(instance_id)),
            correlation_key,
            self.keys.all_instances,
            self.keys.by_workflow(workflow),
            self.keys.by_status("pending"),
            self.keys.waiting(workflow, *correlation) if correlation else "",
            self.keys.waiting_due,
        ]
        return keys, [instance_id, now, start.to_json(), *fields]

    def queue_append(self, pipe: redis.client.Pipeline, event: Event) -> None:
        """`append` queued in a transaction (an event a commit sends another instance)."""
        stream = self.keys.inbox(self.keys.partition_of(event.instance_id))
        pipe.xadd(stream, {"e": event.to_json()})

    def append(self, event: Event) -> str:
        """Append an event to its instance's partition; returns the stream entry id."""
        stream = self.keys.inbox(self.keys.partition_of(event.instance_id))
        entry: Any = self.redis.xadd(stream, {"e": event.to_json()})
        return str(entry.decode())

    @staticmethod
    def event(
        event_type: str, instance_id: str, data: dict[str, Any], event_id: str | None = None
    ) -> Event:
        return Event(
            id=event_id or uuid.uuid4().hex,
            type=event_type,
            instance_id=instance_id,
            at=time.time(),
            data=data,
            trace=TRACE.get(),
        )


def _refuse_constant(name: str) -> Any:
    raise InputError(f"{name} is not a JSON number; send a number or a string")


def parse_json_object(text: str, what: str) -> dict[str, Any]:
    """Parse user JSON that must be an object; errors name the position."""
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{what} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise InputError(f"{what} is nested too deeply") from None
    except InputError as exc:
        raise InputError(f"{what} is not valid JSON: {exc}") from None
    except ValueError:  # not JSONDecodeError: a number past int's 4,300 digits
        raise InputError(
            f"{what} holds a number of more than {sys.get_int_max_str_digits():,} digits"
        ) from None
    if not isinstance(value, dict):
        raise InputError(f"{what} must be a JSON object, not {type(value).__name__}")
    check_data(value, what)
    return value
