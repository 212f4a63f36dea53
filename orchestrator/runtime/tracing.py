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

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
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


def enable(provider: TracerProvider | None = None) -> None:
    """Trace from now on, with `provider` (None: OpenTelemetry's global one)."""
    global enabled, _tracer
    from opentelemetry import trace

    _tracer = trace.get_tracer("orchestrator", tracer_provider=provider)
    enabled = True


def disable() -> None:
    global enabled, _tracer
    enabled = False
    _tracer = None


def _the_tracer() -> Tracer:
    assert _tracer is not None, "tracing.enable() first"
    return _tracer


def parse(traceparent: object) -> Any:
    """The OpenTelemetry context of a carried traceparent; an empty context (a new
    root) for None, a value that is not text, or one that is malformed."""
    from opentelemetry.context import Context
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    if not isinstance(traceparent, str) or len(traceparent) > MAX_TRACEPARENT:
        return Context()
    try:
        return TraceContextTextMapPropagator().extract({TRACEPARENT: traceparent})
    except Exception:  # the propagator ignores what it cannot read; be sure of it
        return Context()


def traceparent_of(span: Span) -> str | None:
    """The traceparent that makes a span the parent of what it causes."""
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier, trace.set_span_in_context(span))
    return carrier.get(TRACEPARENT)


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
    it is None or malformed). An error raised inside is recorded on it and raised on."""
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
