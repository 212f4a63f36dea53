"""An instance: where one run of a workflow stands.

Immutable: the transition function returns a new one. Stored as one Redis
hash; `to_fields`/`from_fields` are the only place that knows its layout.

`from_fields` reads what anyone with write access to Redis may have changed,
so it checks each field and raises `Unreadable` naming the one it cannot read,
rather than handing the applier an instance that fails somewhere later.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from orchestrator.core.events import Event, Unreadable

Status = Literal["pending", "running", "compensating", "completed", "failed", "cancelled"]
STATUSES: tuple[str, ...] = (
    "pending",
    "running",
    "compensating",
    "completed",
    "failed",
    "cancelled",
)
FINAL_STATUSES: frozenset[str] = frozenset({"completed", "cancelled"})
PASSED = "passed"  # the history outcome of a state passed through (orchestrator.store.instances)
"""Statuses after which nothing runs. `failed` is final only in a final state;
an instance whose compensation failed is `failed` but resumable."""


@dataclass(frozen=True)
class Fan:
    """The branches of the state entry that runs several tasks at once (a parallel state's
    branches, a map's items), each with its own tries. An item not yet started is in none
    of these; a map starts its items in order, `started` of `total` so far."""

    tries: dict[str, tuple[int, int]] = field(default_factory=dict)  # running: (attempt, lost)
    results: dict[str, Any] = field(default_factory=dict)  # completed: result
    failures: dict[str, dict[str, Any]] = field(default_factory=dict)  # failed for good
    started: int = 0
    total: int = 0

    @property
    def settled(self) -> bool:
        return not self.tries and self.started >= self.total

    def to_doc(self) -> dict[str, Any]:
        return {
            "tries": {b: list(t) for b, t in self.tries.items()},
            "results": self.results,
            "failures": self.failures,
            "started": self.started,
            "total": self.total,
        }

    @classmethod
    def from_doc(cls, doc: Any) -> Fan:
        if not isinstance(doc, dict):
            raise Unreadable("field 'fan' must be a JSON object")
        tries, results, failures = doc.get("tries"), doc.get("results"), doc.get("failures")
        started, total = doc.get("started"), doc.get("total")
        if not (
            isinstance(tries, dict)
            and all(
                isinstance(t, list) and len(t) == 2 and all(type(v) is int for v in t)
                for t in tries.values()
            )
            and isinstance(results, dict)
            and isinstance(failures, dict)
            and all(isinstance(f, dict) for f in failures.values())
            and type(started) is int
            and type(total) is int
        ):
            raise Unreadable(
                "field 'fan' must hold tries {branch: [attempt, lost]}, results {}, "
                "failures {}, started and total"
            )
        return cls({b: (t[0], t[1]) for b, t in tries.items()}, results, failures, started, total)


@dataclass(frozen=True)
class Instance:
    id: str
    workflow: str
    version: int
    created_at: float
    state: str | None = None  # None until the start event is applied
    status: Status = "pending"
    seq: int = 0  # events applied so far; the history's last entry number
    entered_seq: int = 0  # seq that entered the current state or compensation step
    attempt: int = 0  # try number of the outstanding task, 0 when none runs
    lost: int = 0  # tries of the current step lost with their worker (not counted as tries)
    context: dict[str, Any] = field(default_factory=dict)
    compensations: tuple[str, ...] = ()  # states whose compensation is due, newest last
    compensating_to: str | None = None
    # tries in flight of states that name a compensation: (entered_seq, attempt, state);
    # a compensation run waits for them, and one that completes pushes its compensation
    inflight: tuple[tuple[int, int, str], ...] = ()
    halted: bool = False  # failed by a task failure nothing handled; `retry` resumes it
    parked: tuple[Event, ...] = ()
    fan: Fan | None = None  # the branches of a parallel or map state entry
    # the step of the parent this child answers: instance, state (step), entered_seq,
    # attempt, kind ("task": its end; "compensation": its undoing)
    parent: dict[str, Any] | None = None
    children: dict[str, str] = field(default_factory=dict)  # step -> child id, not undone
    timers: tuple[str, ...] = ()  # ids of armed timers, cancelled when the entry is left
    correlation: str | None = None  # "key=value" this instance answers to
    reason: str | None = None
    updated_at: float = 0.0

    @property
    def finished(self) -> bool:
        return self.status in FINAL_STATUSES or (
            self.status == "failed" and self.compensating_to is None and not self.halted
        )

    def evolve(self, **changes: Any) -> Instance:
        """A copy with `changes`. Not `dataclasses.replace`, which runs `__init__` again over
        every field: measured 3x slower, two calls on every event the applier applies. A
        name that is no field is refused as `replace` would."""
        unknown = changes.keys() - _FIELDS
        if unknown:
            raise TypeError(f"Instance has no field {sorted(unknown)[0]!r}")
        copy = object.__new__(Instance)
        copy.__dict__.update(self.__dict__)
        copy.__dict__.update(changes)
        return copy

    def to_fields(self) -> dict[str, str]:
        return {name: encode(self.__dict__[name]) for name, encode in _ENCODING}

    def changed_fields(self, before: Instance, stored: dict[str, str]) -> dict[str, str]:
        """The fields of this instance's hash that differ from `stored`, the hash `before`
        was read from: what the applier writes. A field whose value is the very object
        `before` holds is left out without being encoded; an instance is never changed in
        place (`evolve` copies), so its value is the one read from `stored`. For a step
        that moves an instance on, this encodes the few fields that moved (state, seq,
        updated_at, ...) rather than all 23, with their five JSON documents: measured,
        to_fields and the comparison were a tenth of the applier's time (cProfile,
        bench.flows at W=3,000)."""
        mine, theirs = self.__dict__, before.__dict__
        changed: dict[str, str] = {}
        for name, encode in _ENCODING:
            value = mine[name]
            if value is theirs[name]:
                continue
            text = encode(value)
            if stored.get(name) != text:
                changed[name] = text
        return changed

    @classmethod
    def from_fields(cls, raw: dict[str, str]) -> Instance:
        """An instance from its hash; raises Unreadable naming a missing or corrupt field."""
        status = raw.get("status", "pending")
        if status not in STATUSES:
            raise Unreadable(f"field 'status' is {status[:50]!r}, not one of {STATUSES}")
        parked: list[Event] = []
        for doc in _array(raw, "parked"):
            try:
                parked.append(Event.from_doc(doc))
            except Unreadable as exc:
                raise Unreadable(f"field 'parked' holds an unreadable event: {exc}") from None
        created_at = _float(raw, "created_at", None)
        return cls(
            id=_required(raw, "id"),
            workflow=_required(raw, "workflow"),
            version=_int(raw, "version", None),
            state=raw.get("state") or None,
            status=status,  # type: ignore[arg-type]
            seq=_int(raw, "seq"),
            entered_seq=_int(raw, "entered_seq"),
            attempt=_int(raw, "attempt"),
            lost=_int(raw, "lost"),
            context=_object(raw, "context"),
            compensations=_strings(raw, "compensations"),
            compensating_to=raw.get("compensating_to") or None,
            inflight=_tries(raw, "inflight"),
            halted=bool(raw.get("halted")),
            parked=tuple(parked),
            fan=Fan.from_doc(_loads(raw, "fan", "{}")) if raw.get("fan") else None,
            parent=_object(raw, "parent") if raw.get("parent") else None,
            children=_children(raw) if raw.get("children") else {},
            timers=_strings(raw, "timers"),
            correlation=raw.get("correlation") or None,
            reason=raw.get("reason") or None,
            created_at=created_at,
            updated_at=_float(raw, "updated_at", created_at),
        )

    def summary(self) -> dict[str, Any]:
        """The public view: what `status --json` prints."""
        return {
            "id": self.id,
            "workflow": self.workflow,
            "version": self.version,
            "state": self.state,
            "status": self.status,
            "context": self.context,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "seq": self.seq,
            "compensations_pending": list(self.compensations),
            "in_flight": [state for _, _, state in self.inflight],
            "parked_events": [e.type for e in self.parked],
            "branches": None
            if self.fan is None
            else {
                "running": sorted(self.fan.tries),
                "completed": len(self.fan.results),
                "failed": sorted(self.fan.failures),
                "total": self.fan.total,
            },
            "correlation": self.correlation,
            "reason": self.reason,
            "parent": None
            if self.parent is None
            else {
                "instance": self.parent.get("instance"),
                "step": self.parent.get("state"),
            },
            "children": dict(self.children),
        }


_FIELDS = frozenset(f.name for f in fields(Instance))


def _dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def _or_empty(value: str | None) -> str:
    return value or ""


# How each field is written into the hash, by name (the hash's fields are the instance's);
# `from_fields` reads them back.
_ENCODING: tuple[tuple[str, Callable[[Any], str]], ...] = (
    ("id", str),
    ("workflow", str),
    ("version", str),
    ("state", _or_empty),
    ("status", str),
    ("seq", str),
    ("entered_seq", str),
    ("attempt", str),
    ("lost", str),
    ("context", _dump),
    ("compensations", lambda states: _dump(list(states))),
    ("compensating_to", _or_empty),
    ("inflight", lambda tries: _dump([list(t) for t in tries])),
    ("halted", lambda halted: "1" if halted else ""),
    ("parked", lambda parked: _dump([json.loads(e.to_json()) for e in parked])),
    ("fan", lambda fan: _dump(fan.to_doc()) if fan is not None else ""),
    ("parent", lambda parent: _dump(parent) if parent is not None else ""),
    ("children", lambda children: _dump(children) if children else ""),
    ("timers", lambda timers: _dump(list(timers))),
    ("correlation", _or_empty),
    ("reason", _or_empty),
    ("created_at", repr),
    ("updated_at", repr),
)


def _required(raw: dict[str, str], name: str) -> str:
    value = raw.get(name)
    if not value:
        raise Unreadable(f"field {name!r} is missing")
    return value


def _int(raw: dict[str, str], name: str, default: int | None = 0) -> int:
    text = raw.get(name)
    if not text:
        if default is None:
            raise Unreadable(f"field {name!r} is missing")
        return default
    try:
        return int(text)
    except ValueError:
        raise Unreadable(f"field {name!r} is {text[:50]!r}, not an integer") from None


def _float(raw: dict[str, str], name: str, default: float | None) -> float:
    text = raw.get(name)
    if not text:
        if default is None:
            raise Unreadable(f"field {name!r} is missing")
        return default
    try:
        return float(text)
    except ValueError:
        raise Unreadable(f"field {name!r} is {text[:50]!r}, not a number") from None


def _loads(raw: dict[str, str], name: str, empty: str) -> Any:
    text = raw.get(name) or empty
    # most of an instance's documents are empty: made here, not parsed (json.loads'
    # setting up costs more than an empty document's parse: from_fields 11.6 -> 8.0 us, timeit)
    if text == "[]":
        return []
    if text == "{}":
        return {}
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise Unreadable(f"field {name!r} is not JSON ({exc})") from None


def _object(raw: dict[str, str], name: str) -> dict[str, Any]:
    value = _loads(raw, name, "{}")
    if not isinstance(value, dict):
        raise Unreadable(f"field {name!r} must be a JSON object, not {type(value).__name__}")
    return value


def _array(raw: dict[str, str], name: str) -> list[Any]:
    value = _loads(raw, name, "[]")
    if not isinstance(value, list):
        raise Unreadable(f"field {name!r} must be a JSON array, not {type(value).__name__}")
    return value


def _tries(raw: dict[str, str], name: str) -> tuple[tuple[int, int, str], ...]:
    tries = []
    for item in _array(raw, name):
        if not (
            isinstance(item, list)
            and len(item) == 3
            and all(type(v) is int for v in item[:2])
            and isinstance(item[2], str)
        ):
            raise Unreadable(f"field {name!r} must hold [entered_seq, attempt, state] triples")
        tries.append((item[0], item[1], item[2]))
    return tuple(tries)


def _children(raw: dict[str, str]) -> dict[str, str]:
    children = _object(raw, "children")
    if not all(isinstance(v, str) for v in children.values()):
        raise Unreadable("field 'children' must map steps to child ids")
    return children


def _strings(raw: dict[str, str], name: str) -> tuple[str, ...]:
    values = _array(raw, name)
    if not all(isinstance(v, str) for v in values):
        raise Unreadable(f"field {name!r} must be an array of strings")
    return tuple(values)
