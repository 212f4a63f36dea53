"""Tracing: the OpenTelemetry context that follows one step of a workflow across processes.

Why a module of its own: the engine's hot paths (the applier's batch, a worker's job) look
at one flag, `enabled`, once a batch or a job; while it is False nothing else here runs,
no span or context object is made, and opentelemetry itself is not even imported.
`enable()` turns it on, at a process's start-up (orchestrator.entry.telemetry builds the
sink that exports and the tracer provider whose sampler decides; tests hand in their own).
The spans made here are orchestrator.runtime.spans.Recorded, not the SDK's (measured 4-6x
cheaper there); each is made current as a span context while its body runs, so the spans a
task makes itself with the OpenTelemetry API are its children, and logs carry its ids.

The context travels as a W3C `traceparent` string (version 00 read and written here, as
OpenTelemetry's TraceContextTextMapPropagator does; other versions by the propagator):

  start/emit     a span around the call (`entering`), child of the caller's current
                 context (a CLI command's span, an HTTP request's `traceparent`); the door
                 stamps its traceparent on the events it makes (orchestrator.store.inbox.TRACE)
  the applier    a span per applied event (`apply order.placed`), child of the event's trace;
                 the jobs, child starts and signals its effects make carry the span's context
  a task         a span around its run (`task charge_card`), child of the job's; its answer
                 (task.completed/failed) carries the task span's context
  a notification a span around its send (`notify email`), child of the job's; its answer
                 carries it too

so one trace shows start -> apply -> task -> answer -> apply -> ... A traceparent that is
malformed (or not text) is ignored: the span starts a new trace, nothing fails.

Attributes are bounded names under `orchestrator.*` (ATTRIBUTES); span names hold only
bounded values (event types, task and channel names of the loaded workflows).
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from functools import cache
from random import getrandbits
from time import time_ns
from typing import TYPE_CHECKING, Any

from orchestrator.runtime import spans
from orchestrator.store import inbox

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.sampling import Sampler
    from opentelemetry.trace import Span, TracerProvider

    Made = spans.Recorded | Span  # what a span of the engine's is: recorded, or not sampled

INSTANCE = "orchestrator.instance.id"
WORKFLOW = "orchestrator.workflow"
STATE = "orchestrator.state"
EVENT = "orchestrator.event.type"
TASK = "orchestrator.task"
KIND = "orchestrator.task.kind"
ATTEMPT = "orchestrator.attempt"
CHANNEL = "orchestrator.channel"
OUTCOME = "orchestrator.outcome"
ATTRIBUTES = (INSTANCE, WORKFLOW, STATE, EVENT, TASK, KIND, ATTEMPT, CHANNEL, OUTCOME)
TRACEPARENT = "traceparent"
MAX_TRACEPARENT = 512  # characters; a longer one is ignored unread (the standard's is 55)

enabled = False
"""Tracing on in this process: the one thing the hot paths look at."""
_sink: spans.Sink | None = None
_sampler: Sampler | None = None
_parent_decides = False  # the sampler follows a parent's decision (ParentBased)


def enable(sink: spans.Sink, provider: TracerProvider | None = None) -> None:
    """Trace from now on: the engine's spans to `sink`, sampled by `provider`'s sampler
    (None: OpenTelemetry's global provider; the SDK's default sampler when it has none)."""
    global enabled, _sink, _sampler, _parent_decides
    from opentelemetry import trace
    from opentelemetry.sdk.trace.sampling import DEFAULT_ON, ParentBased, Sampler

    found = getattr(provider or trace.get_tracer_provider(), "sampler", None)
    _sampler = found if isinstance(found, Sampler) else DEFAULT_ON
    _parent_decides = isinstance(_sampler, ParentBased)
    _sink = sink
    enabled = True


def flush() -> None:
    """Export the engine's spans waiting in this process now."""
    if _sink is not None:
        _sink.flush()


def disable() -> spans.Sink | None:
    """Trace no more; the sink that was in use (to be flushed and shut down)."""
    global enabled, _sink, _sampler, _parent_decides
    enabled = False
    sink, _sink = _sink, None
    _sampler = None
    _parent_decides = False
    return sink


def parse(traceparent: object) -> Any:
    """The OpenTelemetry context of a carried traceparent (read by `_parent_ids`); an empty
    context (a new root) for None, a value that is not text, or one that is malformed."""
    ids = _parent_ids(traceparent)
    if ids is None:
        from opentelemetry.context import Context

        return Context()
    api = _api()
    remote = api.SpanContext(ids[0], ids[1], is_remote=True, trace_flags=api.TraceFlags(ids[2]))
    return api.set_span_in_context(api.NonRecordingSpan(remote))


@cache
def _api() -> Any:
    """opentelemetry.trace, imported on first use (never with tracing off) and then kept:
    an import statement in a function costs a lookup each call."""
    from opentelemetry import trace

    return trace


def _attach(context: Any) -> object:
    """Make `context` current; the token that undoes it."""
    return _context_api().attach(context)


def _detach(token: object) -> None:
    _context_api().detach(token)


@cache
def _context_api() -> Any:
    from opentelemetry import context

    return context


_VERSION_00 = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


def traceparent_of(span: Made) -> str | None:
    """The traceparent that makes a span the parent of what it causes (the W3C format, as
    the propagator writes it; formatted here: 2.7 -> 0.6 us, measured)."""
    if isinstance(span, spans.Recorded):
        return f"00-{span.trace_id:032x}-{span.span_id:016x}-01"
    context = span.get_span_context()
    if not context.is_valid:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def current() -> str | None:
    """The current context's traceparent (None with tracing off or no span current)."""
    if not enabled:
        return None
    span = _api().get_current_span()
    return traceparent_of(span) if span.get_span_context().is_valid else None


def span(
    name: str,
    parent: object,
    attributes: Mapping[str, Any] | None = None,
    kind: str = "INTERNAL",
) -> AbstractContextManager[Made]:
    """A current span `name`, child of the carried traceparent `parent` (a new trace when
    it is None or malformed). An error raised inside is recorded on it and raised on.

    A parent that was not sampled, under a sampler that follows the parent (OpenTelemetry's
    default, and `parentbased_traceidratio`), makes a span that records nothing: the
    parent's context is passed on as it came (what is caused carries the same decision)."""
    return _Started(name, _parent_ids(parent), True, attributes, kind)


@contextmanager
def entering(name: str, attributes: Mapping[str, Any] | None = None) -> Iterator[Made]:
    """A span around a start or an emit, child of the caller's current context; the
    events the door makes meanwhile carry its context (orchestrator.store.inbox.TRACE)."""
    context = _api().get_current_span().get_span_context()
    parent = (
        (context.trace_id, context.span_id, int(context.trace_flags)) if context.is_valid else None
    )
    with _Started(name, parent, context.is_remote, attributes, "PRODUCER") as made:
        token = inbox.TRACE.set(traceparent_of(made))
        try:
            yield made
        finally:
            inbox.TRACE.reset(token)


def failed(made: Made, error_type: str, message: str) -> None:
    """Mark a span failed, with the error's type (a task's failure, which is an answer
    rather than an exception by the time the span ends)."""
    if isinstance(made, spans.Recorded):
        made.set_attribute("error.type", error_type)
        made.fail(message[:200])


Ids = tuple[int, int, int]  # trace id, span id, trace flags


def _parent_ids(traceparent: object) -> Ids | None:
    """The ids a carried traceparent names; None for None, a value that is not text, or
    one that is malformed. Version 00 (what every process here writes) by one regular
    expression (3.9 -> 1.6 us a read, measured); any other version by OpenTelemetry's
    TraceContextTextMapPropagator."""
    if not isinstance(traceparent, str):
        return None
    found = _VERSION_00.fullmatch(traceparent)
    if found is not None:
        trace_id, span_id, flags = found.groups()
        if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
            return None
        return int(trace_id, 16), int(span_id, 16), int(flags, 16)
    if len(traceparent) > MAX_TRACEPARENT:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    try:
        context = TraceContextTextMapPropagator().extract({TRACEPARENT: traceparent})
    except Exception:  # the propagator ignores what it cannot read; be sure of it
        return None
    carried = _api().get_current_span(context).get_span_context()
    if not carried.is_valid:
        return None
    return carried.trace_id, carried.span_id, int(carried.trace_flags)


class _Started:
    """A span of the engine, current while the body runs, recorded to the sink as it
    ends; when the sampler says no, a span context that records nothing. (A class rather
    than a generator: 3 us less a span, measured.)"""

    __slots__ = ("made", "recorded", "token")

    def __init__(
        self,
        name: str,
        parent: Ids | None,
        remote: bool,
        attributes: Mapping[str, Any] | None,
        kind: str,
    ) -> None:
        if parent is None:
            trace_id, parent_id, flags = _new_id(128), 0, 0
            sampled = _sampled(name, kind, attributes, trace_id, None, remote)
        else:
            trace_id, parent_id, flags = parent
            if _parent_decides:
                sampled = bool(flags & 1)
            else:
                sampled = _sampled(name, kind, attributes, trace_id, parent, remote)
        self.recorded: spans.Recorded | None = None
        self.token: object = None
        api = _api()
        if sampled:
            self.recorded = spans.Recorded(
                name, trace_id, _new_id(64), parent_id, remote, kind, time_ns(), _clean(attributes)
            )
            self.made: Made = self.recorded
        elif parent is None:
            self.made = api.NonRecordingSpan(
                api.SpanContext(trace_id, _new_id(64), False, api.TraceFlags(0))
            )
        else:  # the parent's context goes on as it came
            self.made = api.NonRecordingSpan(
                api.SpanContext(trace_id, parent_id, remote, api.TraceFlags(flags))
            )

    def __enter__(self) -> Made:
        api = _api()
        made = self.made
        current = made if self.recorded is None else api.NonRecordingSpan(made.get_span_context())
        self.token = _attach(api.set_span_in_context(current))
        return made

    def __exit__(self, kind: object, error: BaseException | None, _: object) -> None:
        recorded = self.recorded
        if recorded is not None:
            if error is not None:  # recorded as the SDK's spans record it, and raised on
                recorded.events.append(("exception", time_ns(), _exception(error)))
                recorded.fail(f"{type(error).__name__}: {error}")
            recorded.end = time_ns()
        _detach(self.token)
        sink = _sink
        if recorded is not None and sink is not None:
            sink.record(recorded)


def _sampled(
    name: str,
    kind: str,
    attributes: Mapping[str, Any] | None,
    trace_id: int,
    parent: Ids | None,
    remote: bool,
) -> bool:
    """The sampler's decision on a new span (a root, or under a sampler that decides for
    itself)."""
    sampler = _sampler
    if sampler is None:
        return False
    api = _api()
    context = None
    if parent is not None:
        context = api.set_span_in_context(
            api.NonRecordingSpan(
                api.SpanContext(parent[0], parent[1], remote, api.TraceFlags(parent[2]))
            )
        )
    kind_of = api.SpanKind[kind]
    decided = sampler.should_sample(context, trace_id, name, kind_of, _clean(attributes))
    return decided.decision is _decision().RECORD_AND_SAMPLE  # RECORD_ONLY is not exported


@cache
def _decision() -> Any:
    from opentelemetry.sdk.trace.sampling import Decision

    return Decision


def _new_id(bits: int) -> int:
    """A random trace (128 bits) or span (64) id, never 0 (as the SDK's RandomIdGenerator)."""
    while True:
        found = getrandbits(bits)
        if found:
            return found


def _exception(error: BaseException) -> dict[str, Any]:
    """The attributes of an `exception` event (OpenTelemetry's semantic conventions)."""
    return {
        "exception.type": type(error).__name__,
        "exception.message": str(error),
        "exception.stacktrace": "".join(traceback.format_exception(error)),
        "exception.escaped": "False",
    }


def _clean(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    """Attributes OpenTelemetry accepts: None values left out."""
    if not attributes:
        return {}
    return {key: value for key, value in attributes.items() if value is not None}
