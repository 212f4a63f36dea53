"""Tracing: the OpenTelemetry context that follows one step of a workflow across processes.

Why a module of its own: the engine's hot paths (the applier's batch, a worker's job) look
at one flag, `enabled`, once a batch or a job; while it is False nothing else here runs,
no span or context object is made, and opentelemetry itself is not even imported.
`enable()` turns it on, at a process's start-up (orchestrator.entry.telemetry builds the
tracer provider and its exporter; tests hand in their own).

The context travels as a W3C `traceparent` string, read and written with OpenTelemetry's
TraceContextTextMapPropagator:

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
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import cache
from typing import TYPE_CHECKING, Any

from orchestrator.store import inbox

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer, TracerProvider

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
_tracer: Tracer | None = None
_parent_decides = False  # the sampler follows a remote parent's decision (ParentBased)


def enable(provider: TracerProvider | None = None) -> None:
    """Trace from now on, with `provider` (None: OpenTelemetry's global one)."""
    global enabled, _tracer, _parent_decides
    from opentelemetry import trace
    from opentelemetry.sdk.trace.sampling import ParentBased

    _tracer = trace.get_tracer("orchestrator", tracer_provider=provider)
    sampler = getattr(provider or trace.get_tracer_provider(), "sampler", None)
    _parent_decides = isinstance(sampler, ParentBased)
    enabled = True


def disable() -> None:
    global enabled, _tracer, _parent_decides
    enabled = False
    _tracer = None
    _parent_decides = False


def _the_tracer() -> Tracer:
    assert _tracer is not None, "tracing.enable() first"
    return _tracer


def parse(traceparent: object) -> Any:
    """The OpenTelemetry context of a carried traceparent; an empty context (a new
    root) for None, a value that is not text, or one that is malformed.

    A version-00 traceparent (what every process here writes) is read by one regular
    expression into the span context the propagator would make; anything else goes to
    OpenTelemetry's TraceContextTextMapPropagator. Measured: 3.9 -> 1.6 us a parse (the
    applier parses one an event, a worker one a job)."""
    found = _VERSION_00.fullmatch(traceparent) if isinstance(traceparent, str) else None
    if found is not None:
        trace_id, span_id, flags = found.groups()
        if trace_id != _ZERO_TRACE and span_id != _ZERO_SPAN:
            return _in_context(_remote(trace_id, span_id, flags))
    from opentelemetry.context import Context

    if not isinstance(traceparent, str) or len(traceparent) > MAX_TRACEPARENT or found:
        return Context()
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    try:
        return TraceContextTextMapPropagator().extract({TRACEPARENT: traceparent})
    except Exception:  # the propagator ignores what it cannot read; be sure of it
        return Context()


def _remote(trace_id: str, span_id: str, flags: str) -> Any:
    api = _api()
    context = api.SpanContext(
        int(trace_id, 16),
        int(span_id, 16),
        is_remote=True,
        trace_flags=api.TraceFlags(int(flags, 16)),
    )
    return api.NonRecordingSpan(context)


def _in_context(span: Any) -> Any:
    return _api().set_span_in_context(span)


@cache
def _api() -> Any:
    """opentelemetry.trace, imported on first use (never with tracing off) and then kept:
    an import statement in a function costs a lookup each call."""
    from opentelemetry import trace

    return trace


_VERSION_00 = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


def traceparent_of(span: Span) -> str | None:
    """The traceparent that makes a span the parent of what it causes (the W3C format, as
    the propagator writes it; formatted here: 2.7 -> 0.6 us, measured)."""
    context = span.get_span_context()
    if not context.is_valid:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def current() -> str | None:
    """The current context's traceparent (None with tracing off or no span current)."""
    if not enabled:
        return None
    from opentelemetry import trace

    span = trace.get_current_span()
    return traceparent_of(span) if span.get_span_context().is_valid else None


@contextmanager
def span(
    name: str,
    parent: object,
    attributes: Mapping[str, Any] | None = None,
    kind: str = "INTERNAL",
) -> Iterator[Span]:
    """A current span `name`, child of the carried traceparent `parent` (a new trace when
    it is None or malformed). An error raised inside is recorded on it and raised on.

    A parent that was not sampled, under a sampler that follows the parent (OpenTelemetry's
    default, and `parentbased_traceidratio`), makes a span that records nothing: it is
    skipped, and the parent's context passed on as it came (what is caused carries the
    same decision). Measured: 10 -> 2 us a span of a trace not sampled."""
    if _parent_decides and isinstance(parent, str):
        found = _VERSION_00.fullmatch(parent)
        if found is not None and not int(found.group(3), 16) & 1:  # not sampled
            trace_id, span_id, flags = found.groups()
            if trace_id != _ZERO_TRACE and span_id != _ZERO_SPAN:
                yield _remote(trace_id, span_id, flags)
                return
    from opentelemetry.trace import SpanKind

    with _the_tracer().start_as_current_span(
        name,
        context=parse(parent),
        kind=SpanKind[kind],
        attributes=_clean(attributes),
    ) as made:
        yield made


@contextmanager
def entering(name: str, attributes: Mapping[str, Any] | None = None) -> Iterator[Span]:
    """A span around a start or an emit, child of the caller's current context; the
    events the door makes meanwhile carry its context (orchestrator.store.inbox.TRACE)."""
    from opentelemetry.trace import SpanKind

    with _the_tracer().start_as_current_span(
        name, kind=SpanKind.PRODUCER, attributes=_clean(attributes)
    ) as made:
        token = inbox.TRACE.set(traceparent_of(made))
        try:
            yield made
        finally:
            inbox.TRACE.reset(token)


def failed(made: Span, error_type: str, message: str) -> None:
    """Mark a span failed, with the error's type (a task's failure, which is an answer
    rather than an exception by the time the span ends)."""
    from opentelemetry.trace import Status, StatusCode

    made.set_attribute("error.type", error_type)
    made.set_status(Status(StatusCode.ERROR, message[:200]))


def _clean(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    """Attributes OpenTelemetry accepts: None values left out."""
    if not attributes:
        return {}
    return {key: value for key, value in attributes.items() if value is not None}
