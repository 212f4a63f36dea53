"""Tracing in one process: the spans of a three-step order, in one trace, in order, each
the child of what caused it; nothing traced (and no byte changed) with tracing off; a
malformed traceparent ignored, never a failure.

The engine runs here: the App's applier and RQ SimpleWorkers (jobs in this process, so
the SDK's in-memory exporter sees every span), round after round until nothing is left.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from rq import Queue, SimpleWorker
from rq.serializers import JSONSerializer

from orchestrator.core.events import Event
from orchestrator.entry.bootstrap import App
from orchestrator.entry.http.tracing import TracingMiddleware
from orchestrator.entry.worker import QUEUES, start_worker_process
from orchestrator.runtime import tracing
from orchestrator.runtime.notify import batch
from orchestrator.runtime.payloads import read_task
from orchestrator.runtime.spans import Immediate, exporting

ORDER = {"order_id": "T1", "email": "t1@example.com", "phone": "+15555550100", "work_seconds": 0}
GOOD_PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class _Worker(SimpleWorker):
    def subscribe(self) -> None:  # no pub/sub thread (orchestrator.entry.worker.BurstWorker)
        pass


def run_here(app: App, rounds: int = 50) -> None:
    """Apply and run jobs in this process until a round does nothing."""
    applier = app.applier()
    applier.leases.maintain(force=True)
    start_worker_process(app, again=False)
    queues = [
        Queue(name, connection=app.redis, serializer=JSONSerializer, job_class=app.job_class)
        for name in QUEUES
    ]
    try:
        for _ in range(rounds):
            applied = applier.drain()
            worker = _Worker(
                queues, connection=app.redis, serializer=JSONSerializer, job_class=app.job_class
            )
            ran = worker.work(burst=True, logging_level="WARNING")
            while batch.handed_over():  # a notification handed to the process: let it end
                pass
            if not applied and not ran:
                return
    finally:
        applier.release()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "test"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.enable(Immediate(exporting(exporter, provider.resource)), provider)
    try:
        yield exporter
    finally:
        tracing.disable()
        provider.shutdown()


def by_start(found: tuple[ReadableSpan, ...]) -> list[ReadableSpan]:
    return sorted(found, key=lambda span: span.start_time or 0)


def parent_of(span: ReadableSpan, found: list[ReadableSpan]) -> ReadableSpan | None:
    if span.parent is None:
        return None
    (parent,) = [s for s in found if s.context.span_id == span.parent.span_id]
    return parent


def inbox_entries(app: App) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for partition in range(app.keys.partitions):
        entries: list[tuple[bytes, dict[bytes, bytes]]] = app.redis.xrange(  # type: ignore[assignment]
            app.keys.inbox(partition)
        )
        found.extend(json.loads(fields[b"e"]) for _, fields in entries)
    return found


def test_one_trace_holds_a_three_step_order_in_order_each_span_the_child_of_its_cause(
    app: App, spans: InMemorySpanExporter
) -> None:
    # Given tracing on, when an order is started and the engine runs it to the end
    order = app.client.start("order", ORDER)
    run_here(app)
    assert app.client.status(order).state == "shipped"

    # Then every span is in the one trace the start began
    found = by_start(spans.get_finished_spans())
    assert len({span.context.trace_id for span in found}) == 1
    names = [span.name for span in found]
    assert names[:8] == [
        "start order",
        "apply workflow.started",
        "task reserve_stock",
        "apply task.completed",
        "task charge_payment",
        "apply task.completed",
        "task ship_order",
        "apply task.completed",
    ]
    assert sorted(names[8:10]) == ["notify email", "notify sms"]
    assert len(names) == 12 and all(n.startswith("apply notification.") for n in names[10:])
    # each the child of the span that caused it: start -> apply -> task -> apply -> ...
    chain = found[:8]
    assert chain[0].parent is None
    for cause, effect in itertools.pairwise(chain):
        assert parent_of(effect, found) is cause, (effect.name, cause.name)
    last_apply = chain[7]
    for notify in found[8:10]:
        assert parent_of(notify, found) is last_apply
    for answer in found[10:]:  # the notification's answer: applied as the send's child
        assert parent_of(answer, found) in found[8:10]
    # with bounded attributes
    task = chain[2].attributes or {}
    assert task[tracing.INSTANCE] == order
    assert task[tracing.WORKFLOW] == "order"
    assert task[tracing.STATE] == "reserving"
    assert task[tracing.ATTEMPT] == 1
    assert str(task[tracing.TASK]).endswith("reserve_stock")
    apply = chain[3].attributes or {}
    assert apply[tracing.STATE] == "reserving" and apply[tracing.EVENT] == "task.completed"
    assert (found[8].attributes or {})[tracing.CHANNEL] in ("email", "sms")


def test_a_failed_task_span_is_marked_failed_and_its_answer_stays_in_the_trace(
    app: App, spans: InMemorySpanExporter
) -> None:
    # Given a saga whose second step fails
    saga = app.client.start("saga", {"fail_at": "step2"})
    run_here(app)
    assert app.client.status(saga).status == "failed"
    found = by_start(spans.get_finished_spans())
    # Then the failed try's span says so, and its answer's apply is its child
    (failed,) = [s for s in found if s.name == "task step" and s.status.status_code.name == "ERROR"]
    assert (failed.attributes or {})["error.type"] == "RuntimeError"
    answers = [s for s in found if parent_of(s, found) is failed]
    assert [s.name for s in answers] == ["apply task.failed"]
    # compensations follow in the same trace
    assert "compensation undo" in [s.name for s in found]
    assert len({span.context.trace_id for span in found}) == 1


def test_tracing_off_writes_no_trace_field_and_makes_no_span(app: App) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    assert not tracing.enabled  # the default
    # When an order runs with tracing off
    order = app.client.start("order", ORDER)
    (start,) = inbox_entries(app)
    # Then its start event is stored as before tracing existed: no trace field
    assert set(start) == {"id", "type", "instance", "at", "data"}
    applier = app.applier()
    applier.leases.maintain(force=True)
    applier.drain()
    applier.release()
    jobs = Queue("tasks", connection=app.redis, serializer=JSONSerializer).get_jobs()
    assert [read_task(job.kwargs["payload"])["instance"] for job in jobs] == [order]
    assert "trace" not in jobs[0].kwargs["payload"]
    run_here(app)
    assert app.client.status(order).state == "shipped"
    for entry in app.client.history(order):
        assert "trace" not in entry["event"]
    assert exporter.get_finished_spans() == ()
    provider.shutdown()


@pytest.mark.parametrize(
    "carried",
    [
        "not a traceparent",
        "00-00000000000000000000000000000000-0000000000000000-01",  # all-zero ids: invalid
        "zz-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" + "x" * 1000,
        "",
    ],
)
def test_a_malformed_traceparent_on_an_event_starts_a_new_trace_and_fails_nothing(
    app: App, spans: InMemorySpanExporter, carried: str
) -> None:
    # Given a counter, and a tick carrying a traceparent that cannot be read
    counter = app.client.start("counter", {})
    app.client.inbox.append(Event("tick-1", "tick", counter, 1.0, {}, trace=carried))
    # When it is applied
    run_here(app)
    # Then it was applied, in a span of a new trace of its own
    assert [e["outcome"] for e in app.client.history(counter)][-1] != "dead"
    assert app.client.status(counter).seq == 2
    (tick,) = [s for s in spans.get_finished_spans() if s.name == "apply tick"]
    assert tick.parent is None
    assert not app.redis.xlen(app.keys.deadletters)


def test_an_event_whose_trace_is_not_text_is_read_without_it() -> None:
    raw = json.dumps({"id": "e", "type": "tick", "instance": "i", "at": 1, "trace": {"x": 1}})
    assert Event.from_json(raw).trace is None
    kept = Event.from_json(json.dumps({"id": "e", "type": "t", "instance": "i", "at": 1.0}))
    assert kept.trace is None and "trace" not in kept.to_json()
    carried = Event("e", "t", "i", 1.0, {}, trace=GOOD_PARENT)
    assert Event.from_json(carried.to_json()) == carried


# -- the HTTP door's traceparent --------------------------------------------------------


def call(app: Any, headers: list[tuple[bytes, bytes]]) -> int:
    """One GET through an ASGI app; its status."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/events", "headers": headers}
    asyncio.run(app(scope, receive, send))
    return int(sent[0]["status"])


def _inner() -> tuple[Any, list[str | None]]:
    """An ASGI app that records the traceparent the client's start would see."""
    seen: list[str | None] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(tracing.current())
        await send({"type": "http.response.start", "status": 202, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    return app, seen


@pytest.mark.parametrize(
    ("header", "same_trace"),
    [
        (GOOD_PARENT.encode(), True),
        (b"garbage", False),
        (b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331", False),  # no flags
        ("00-\u00e9".encode(), False),  # not ASCII
    ],
)
def test_a_request_traceparent_parents_what_the_request_does_and_a_bad_one_is_ignored(
    spans: InMemorySpanExporter, header: bytes, same_trace: bool
) -> None:
    inner, seen = _inner()
    status = call(TracingMiddleware(inner), [(b"traceparent", header)])
    assert status == 202
    (server,) = spans.get_finished_spans()
    assert server.name == "POST"
    assert (server.attributes or {})["http.response.status_code"] == 202
    assert seen[0] is not None and seen[0].split("-")[1] == f"{server.context.trace_id:032x}"
    if same_trace:
        assert f"{server.context.trace_id:032x}" == GOOD_PARENT.split("-")[1]
        assert server.parent is not None
    else:
        assert server.parent is None


def test_the_middleware_makes_nothing_with_tracing_off() -> None:
    inner, seen = _inner()
    assert call(TracingMiddleware(inner), [(b"traceparent", GOOD_PARENT.encode())]) == 202
    assert seen == [None]


def test_a_start_inside_a_request_is_its_child_and_its_event_carries_the_trace(
    app: App, spans: InMemorySpanExporter
) -> None:
    async def starts(scope: Any, receive: Any, send: Any) -> None:
        app.client.start("counter", {})
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    call(TracingMiddleware(starts), [(b"traceparent", GOOD_PARENT.encode())])
    (start,) = inbox_entries(app)
    trace_id = GOOD_PARENT.split("-")[1]
    assert start["trace"].split("-")[1] == trace_id
    names = {s.name: s for s in spans.get_finished_spans()}
    assert names["start counter"].parent is not None
    assert names["start counter"].parent.span_id == names["POST"].context.span_id


def workflow_of(span: ReadableSpan | None) -> object:
    return None if span is None else (span.attributes or {}).get(tracing.WORKFLOW)


def test_a_child_workflow_and_its_answer_stay_in_the_parents_trace(
    app: App, spans: InMemorySpanExporter
) -> None:
    # Given a parcel, whose shipping is a child workflow
    child_app = App(replace(app.settings, workflows=("tests.child_workflows",)))
    parcel = child_app.client.start("parcel", {"order_id": 7, "address": "here"})
    # When it runs to the end
    run_here(child_app)
    assert child_app.client.status(parcel).state == "done"
    found = by_start(spans.get_finished_spans())
    # Then the child's steps are in the parent's trace: its start applied as the child of
    # the parent's apply that started it, and its answer to the parent likewise
    assert len({span.context.trace_id for span in found}) == 1
    children = [s for s in found if workflow_of(s) == "shipment"]
    assert children[0].name == "apply workflow.started"
    assert workflow_of(parent_of(children[0], found)) == "parcel"
    assert {"task pack", "task dispatch"} <= {s.name for s in children}
    answered = [
        s
        for s in found
        if workflow_of(s) == "parcel"
        and (s.attributes or {}).get(tracing.STATE) == "shipping"
        and s.name.startswith("apply ")
    ]
    assert answered and workflow_of(parent_of(answered[-1], found)) == "shipment"


@pytest.mark.parametrize(
    "given",
    [
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",  # not sampled
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # zero span id
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",  # upper case
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",  # no flags
        "00-+bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",  # int() would take it
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f0_7aa0ba902b7-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # version ff: invalid
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future",  # a later version
        " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "",
    ],
)
def test_the_fast_traceparent_reading_agrees_with_the_propagator(given: str) -> None:
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    ours = trace.get_current_span(tracing.parse(given)).get_span_context()
    theirs = trace.get_current_span(
        TraceContextTextMapPropagator().extract({"traceparent": given})
    ).get_span_context()
    assert (ours.is_valid, ours.trace_id, ours.span_id, ours.trace_flags, ours.is_remote) == (
        theirs.is_valid,
        theirs.trace_id,
        theirs.span_id,
        theirs.trace_flags,
        theirs.is_remote,
    )
    if ours.is_valid:  # and written back as it came
        written = tracing.traceparent_of(trace.NonRecordingSpan(ours))
        carrier: dict[str, str] = {}
        TraceContextTextMapPropagator().inject(
            carrier, trace.set_span_in_context(trace.NonRecordingSpan(theirs))
        )
        assert written == carrier["traceparent"]


@pytest.mark.parametrize("follows_parent", [True, False])
def test_a_parent_not_sampled_makes_no_span_when_the_sampler_follows_the_parent(
    follows_parent: bool,
) -> None:
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased

    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(ALWAYS_ON) if follows_parent else ALWAYS_ON)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.enable(Immediate(exporting(exporter, provider.resource)), provider)
    unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
    sampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    try:
        with tracing.span("apply x", unsampled, {tracing.STATE: "s"}) as made:
            made.set_attribute(tracing.OUTCOME, "transition")
        passed_on = tracing.traceparent_of(made)
        with tracing.span("apply y", sampled) as recorded:
            pass
    finally:
        tracing.disable()
        provider.shutdown()
    names = [s.name for s in exporter.get_finished_spans()]
    if follows_parent:  # skipped: the parent's context goes on as it came
        assert passed_on == unsampled
        assert names == ["apply y"]
    else:  # a sampler that decides for itself still gets its span
        assert passed_on is not None and passed_on != unsampled
        assert passed_on.startswith("00-4bf92f3577b34da6a3ce929d0e0e4736-")
        assert names == ["apply x", "apply y"]
    assert tracing.traceparent_of(recorded) != sampled  # a sampled parent: a span of its own
