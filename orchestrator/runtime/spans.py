"""The engine's own spans: recorded by hand, handed to a sink, exported in batches.

Why not the OpenTelemetry SDK's spans for these: measured (timeit, this 2-core machine,
opentelemetry-sdk 1.45), an SDK span costs 40-60 us to start and end and about 50 us more
to encode for OTLP; a `Recorded` span costs about 1 us, and orchestrator.entry.otlp
encodes it in about 7 us. A 3-step workflow makes seven (four applies in the applier,
three tasks), and with every trace sampled the SDK's spans took the flows row to 0.59 of
its untraced throughput. The SDK keeps its part: its sampler decides, its resource names
the process, a SpanExporter sends (as ReadableSpan when not OTLP), and the spans that a
task makes itself with the OpenTelemetry API go through the SDK's provider, nesting under
ours (orchestrator.runtime.tracing makes ours current as a span context).

A sink takes each span once it ends: `Immediate` exports it at once (tests, a short-lived
command); `Batched` queues it and a thread of its own exports every `delay` seconds or
each `size` spans, dropping (and counting) past `capacity`, as the SDK's
BatchSpanProcessor does with the same defaults. Woken by a full batch, the thread sends
full batches only, as the SDK's does: the spans that end while a POST is on its way wait
for the next full batch (or the delay), rather than going out one or two a request, each
request costing the sending thread hundreds of microseconds whatever its size.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import SpanContext

log = logging.getLogger(__name__)

KINDS = ("INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER")  # OTLP's 1..5, in order
SCOPE = "orchestrator"  # the instrumentation scope of every span made here
SIZE = 512  # spans an export, and when a batch is sent early (the SDK's defaults)
DELAY = 5.0  # seconds between exports at most
CAPACITY = 2048  # spans waiting at most; past it a span is dropped and counted


class Recorded:
    """A span of the engine, sampled and recording: what the SDK's Span would hold that the
    engine uses (ids, parent, kind, times, attributes, an error's status and event)."""

    __slots__ = (
        "attributes",
        "end",
        "error",
        "events",
        "kind",
        "name",
        "parent_id",
        "parent_remote",
        "span_id",
        "start",
        "trace_id",
    )

    def __init__(
        self,
        name: str,
        trace_id: int,
        span_id: int,
        parent_id: int,
        parent_remote: bool,
        kind: str,
        start: int,
        attributes: dict[str, Any],
    ) -> None:
        self.name = name
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_id = parent_id  # 0: a root
        self.parent_remote = parent_remote  # the parent came from another process
        self.kind = kind
        self.start = start  # ns since the epoch
        self.end = start
        self.attributes = attributes
        self.error: str | None = None  # the status's message when the span failed
        self.events: list[tuple[str, int, dict[str, Any]]] = []  # name, ns, attributes

    def is_recording(self) -> bool:
        return True

    def update_name(self, name: str) -> None:
        self.name = name

    def set_attribute(self, key: str, value: Any) -> None:
        if value is not None:
            self.attributes[key] = value

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        for key, value in attributes.items():
            self.set_attribute(key, value)

    def fail(self, message: str) -> None:
        """Status ERROR with `message`."""
        self.error = message

    def get_span_context(self) -> SpanContext:
        context, sampled = _api()
        return context(self.trace_id, self.span_id, False, sampled)  # type: ignore[no-any-return]


@cache
def _api() -> tuple[Any, Any]:
    """OpenTelemetry's SpanContext and the TraceFlags of a sampled span, imported on first
    use and kept (an import in a function costs a lookup each call)."""
    from opentelemetry.trace import SpanContext, TraceFlags

    return SpanContext, TraceFlags(TraceFlags.SAMPLED)


class Sink(Protocol):
    """Where ended spans go."""

    def record(self, span: Recorded) -> None: ...

    def flush(self) -> None: ...

    def shutdown(self) -> None: ...


Send = Callable[[Sequence[Recorded]], None]


class Immediate:
    """Each span exported as it ends, in the caller's thread (tests, a CLI command)."""

    def __init__(self, send: Send) -> None:
        self.send = send

    def record(self, span: Recorded) -> None:
        self.send((span,))

    def flush(self) -> None:
        pass

    def shutdown(self) -> None:
        pass


class Batched:
    """Spans queued as they end and exported by a thread of the sink's, in batches.

    A fork (RQ's work-horse) starts with an empty queue and no thread: what the parent had
    queued is the parent's to send; the child's thread starts with its first span, and the
    child flushes before it leaves (orchestrator.entry.worker.JobWorker)."""

    def __init__(
        self, send: Send, size: int = SIZE, delay: float = DELAY, capacity: int = CAPACITY
    ) -> None:
        self.send = send
        self.size = size
        self.delay = delay
        self.capacity = capacity
        self.dropped = 0
        self._queue: deque[Recorded] = deque()  # appends and poplefts are atomic
        self._sending = threading.Lock()
        self._wake = threading.Event()
        self._stopped = False
        self._thread: threading.Thread | None = None
        _forked.add(self)

    def record(self, span: Recorded) -> None:
        queue = self._queue
        if len(queue) >= self.capacity:
            self.dropped += 1
            return
        queue.append(span)
        if self._thread is None:
            self._start()
        elif len(queue) >= self.size:
            self._wake.set()

    def flush(self) -> None:
        """Export everything queued now, in the caller's thread."""
        with self._sending:
            self._send_queued()

    def shutdown(self) -> None:
        self._stopped = True
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=30)
        self.flush()

    def _start(self) -> None:
        with self._sending:
            if self._thread is None and not self._stopped:
                self._thread = threading.Thread(
                    target=self._run, name="orchestrator-spans", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while not self._stopped:
            full = self._wake.wait(self.delay)  # woken early: a batch is full
            self._wake.clear()
            with self._sending:
                self._send_queued(self.size if full else 1)

    def _send_queued(self, least: int = 1) -> None:
        """Send batches while at least `least` spans are queued."""
        queue = self._queue
        while len(queue) >= least:
            batch = [queue.popleft() for _ in range(min(len(queue), self.size))]
            try:
                self.send(batch)
            except Exception:  # an exporter's failure loses its batch, never the process
                log.exception("exporting %d spans failed", len(batch))
        if self.dropped:
            log.warning("%d spans dropped: more than %d waited", self.dropped, self.capacity)
            self.dropped = 0

    def _after_fork(self) -> None:
        self._queue = deque()
        self._thread = None
        self._sending = threading.Lock()
        self._wake = threading.Event()


_forked: weakref.WeakSet[Batched] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for sink in list(_forked):
        sink._after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


def exporting(exporter: SpanExporter, resource: Resource) -> Send:
    """A send through any SpanExporter: the spans as the SDK's ReadableSpan."""

    def send(batch: Sequence[Recorded]) -> None:
        exporter.export([readable(span, resource) for span in batch])

    return send


def readable(span: Recorded, resource: Resource) -> ReadableSpan:
    """The SDK's ReadableSpan of a recorded span (as an SDK span would have ended)."""
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

    sampled = TraceFlags(1)
    parent = (
        SpanContext(span.trace_id, span.parent_id, span.parent_remote, sampled)
        if span.parent_id
        else None
    )
    return ReadableSpan(
        name=span.name,
        context=span.get_span_context(),
        parent=parent,
        resource=resource,
        attributes=dict(span.attributes),
        events=[Event(name, attributes, at) for name, at, attributes in span.events],
        kind=SpanKind[span.kind],
        status=Status(StatusCode.ERROR, span.error) if span.error is not None else Status(),
        start_time=span.start,
        end_time=span.end,
        instrumentation_scope=InstrumentationScope(SCOPE),
    )
