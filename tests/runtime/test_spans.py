"""The engine's spans recorded by hand (orchestrator.runtime.spans) and encoded by hand for
OTLP (orchestrator.entry.otlp): the bytes read back by the OTLP protobuf classes equal the
SDK's own encoding of the same spans; the batch sink sends in batches, drops past its
capacity, survives a failing exporter, and a fork does not send its parent's spans again;
the sampler decides roots; an exception is recorded as the SDK records it."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, TraceIdRatioBased

from orchestrator.entry import otlp
from orchestrator.runtime import spans, tracing
from orchestrator.runtime.spans import Batched, Immediate, Recorded, exporting, readable

RESOURCE = Resource.create({"service.name": "test", "process.pid": 42, "flag": True})
PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def recorded() -> Iterator[list[Recorded]]:
    """Tracing on, every span recorded into a list."""
    found: list[Recorded] = []
    tracing.enable(Immediate(found.extend), TracerProvider())
    try:
        yield found
    finally:
        tracing.disable()


def made_here(found: list[Recorded]) -> list[Recorded]:
    """Spans of every shape: a remote parent, a local parent, a root, an error, every kind
    and type of attribute."""
    attributes = {"s": "x", "n": 3, "neg": -5}
    with (
        tracing.span("apply task.completed", PARENT, attributes, "CONSUMER"),
        tracing.entering("start order", {"f": 0.5, "b": False, "list": ["a", "b"]}),
    ):
        pass
    with (
        pytest.raises(RuntimeError),
        tracing.span("task charge", None, {tracing.TASK: "charge"}, "SERVER"),
    ):
        raise RuntimeError("card declined")
    with tracing.span("notify email", None, kind="CLIENT") as failing:
        tracing.failed(failing, "SMTPError", "refused " * 100)
    with tracing.span("serve", None, kind="INTERNAL") as plain:
        plain.set_attribute("none", None)
    return found


def test_the_hand_encoding_reads_back_equal_to_the_sdks_encoding(
    recorded: list[Recorded],
) -> None:
    made = made_here(recorded)
    assert len(made) == 5
    ours = ExportTraceServiceRequest.FromString(otlp.encode(made, otlp._resource_head(RESOURCE)))
    theirs = encode_spans([readable(span, RESOURCE) for span in made])
    assert ours == theirs
    # and what that means, read back
    (resource_spans,) = ours.resource_spans
    (scope_spans,) = resource_spans.scope_spans
    assert scope_spans.scope.name == "orchestrator"
    start, apply, task, notify, serve = scope_spans.spans  # in the order they ended
    assert apply.parent_span_id == bytes.fromhex("b7ad6b7169203331")
    assert apply.flags == 0x300  # the parent came from another process
    assert start.parent_span_id == apply.span_id and start.flags == 0x100  # a local parent
    assert task.parent_span_id == b"" and task.trace_id != apply.trace_id  # a new root
    assert task.status.code == 2 and task.status.message == "RuntimeError: card declined"
    (event,) = task.events
    assert event.name == "exception"
    assert "card declined" in {kv.value.string_value for kv in event.attributes}
    assert notify.status.message == ("refused " * 100)[:200]
    assert {kv.key for kv in serve.attributes} == set()  # None values left out
    negative = {kv.key: kv.value.int_value for kv in apply.attributes}["neg"]
    assert negative == -5


def test_a_recorded_span_is_the_current_span_and_ids_are_carried(
    recorded: list[Recorded],
) -> None:
    with tracing.span("apply x", PARENT) as made:
        assert tracing.current() == tracing.traceparent_of(made)
        current = trace.get_current_span().get_span_context()
        assert isinstance(made, Recorded) and current.span_id == made.span_id
    assert tracing.current() is None  # detached again
    (found,) = recorded
    assert found.trace_id == int("0af7651916cd43dd8448eb211c80319c", 16)
    assert found.end >= found.start > 0


def test_a_root_sampler_that_says_no_records_nothing_and_its_children_follow() -> None:
    found: list[Recorded] = []
    tracing.enable(Immediate(found.extend), TracerProvider(sampler=ParentBased(ALWAYS_OFF)))
    try:
        with tracing.span("orchestrator start", None) as root:
            passed = tracing.traceparent_of(root)
            with tracing.entering("start order") as child:
                assert tracing.traceparent_of(child) == passed  # passed on as it came
        assert passed is not None and passed.endswith("-00")
        with tracing.span("apply workflow.started", passed):
            pass
    finally:
        tracing.disable()
    assert found == []


def test_a_ratio_sampler_decides_by_trace_id() -> None:
    found: list[Recorded] = []
    tracing.enable(Immediate(found.extend), TracerProvider(sampler=TraceIdRatioBased(0.5)))
    try:
        for _ in range(400):
            with tracing.span("root", None):
                pass
    finally:
        tracing.disable()
    assert 100 < len(found) < 300


def test_spans_go_through_any_exporter_as_the_sdks_readable_spans(
    recorded: list[Recorded],
) -> None:
    memory = InMemorySpanExporter()
    exporting(memory, RESOURCE)(made_here(recorded))
    found: Sequence[ReadableSpan] = memory.get_finished_spans()
    assert [span.name for span in found] == [
        "start order",
        "apply task.completed",
        "task charge",
        "notify email",
        "serve",
    ]
    assert found[0].parent is not None and found[0].parent.span_id == found[1].context.span_id
    assert found[0].resource is RESOURCE


class Collect:
    """A send that keeps what it is given, failing when told."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.fail = False
        self.sent = threading.Event()

    def __call__(self, batch: Sequence[Recorded]) -> None:
        if self.fail:
            raise ConnectionError("collector down")
        self.batches.append([span.name for span in batch])
        self.sent.set()


def a_span(name: str) -> Recorded:
    return Recorded(name, 1, 2, 0, False, "INTERNAL", time.time_ns(), {})


def test_the_batch_sink_sends_when_a_batch_is_full_and_on_flush() -> None:
    sent = Collect()
    sink = Batched(sent, size=3, delay=60.0, capacity=10)
    try:
        for n in range(4):
            sink.record(a_span(f"s{n}"))
        assert sent.sent.wait(10)  # the full batch, early, by the sink's thread
        sink.flush()
        assert sent.batches == [["s0", "s1", "s2"], ["s3"]]
    finally:
        sink.shutdown()


def test_woken_by_a_full_batch_the_sink_sends_full_batches_only() -> None:
    """Spans that end while a batch is on its way wait for the next full batch or the
    delay: they are not sent one or two a request."""
    release = threading.Event()
    sent = Collect()

    def slow(batch: Sequence[Recorded]) -> None:
        sent(batch)
        release.wait(10)  # the POST on its way while more spans end

    sink = Batched(slow, size=3, delay=1.0, capacity=10)
    try:
        for n in range(3):
            sink.record(a_span(f"s{n}"))
        assert sent.sent.wait(10)  # the full batch, early
        sink.record(a_span("s3"))
        sent.sent.clear()
        release.set()
        assert not sent.sent.wait(0.3)  # s3 alone is not sent on the full batch's heels
        assert sent.sent.wait(10)  # but once the delay is over
        assert sent.batches == [["s0", "s1", "s2"], ["s3"]]
    finally:
        release.set()
        sink.shutdown()


def test_the_batch_sink_sends_after_its_delay_and_at_shutdown() -> None:
    sent = Collect()
    sink = Batched(sent, size=100, delay=0.05)
    sink.record(a_span("early"))
    assert sent.sent.wait(10)
    sink.record(a_span("late"))
    sink.shutdown()
    assert [name for batch in sent.batches for name in batch] == ["early", "late"]


def test_past_capacity_spans_are_dropped_and_counted_and_a_failing_send_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sent = Collect()
    sink = Batched(sent, size=100, delay=60.0, capacity=3)
    try:
        for n in range(5):
            sink.record(a_span(f"s{n}"))
        assert sink.dropped == 2
        sent.fail = True
        with caplog.at_level(logging.WARNING, logger=spans.__name__):
            sink.flush()  # lost, logged, the process goes on
        assert "exporting 3 spans failed" in caplog.text
        assert "2 spans dropped" in caplog.text
        sent.fail = False
        sink.record(a_span("after"))
        sink.flush()
        assert sent.batches == [["after"]]
    finally:
        sink.shutdown()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_send_its_parents_spans_again(tmp_path: object) -> None:
    reader, writer = os.pipe()
    sent = Collect()
    sink = Batched(sent, size=100, delay=60.0)
    try:
        sink.record(a_span("parent's"))
        child = os.fork()
        if child == 0:  # the work-horse: its own span only
            try:
                sink.record(a_span("child's"))
                sink.flush()
                os.write(writer, repr(sent.batches).encode())
            finally:
                os._exit(0)
        os.waitpid(child, 0)
        assert os.read(reader, 1000).decode() == '[["child\'s"]]'
        sink.flush()
        assert sent.batches == [["parent's"]]
    finally:
        os.close(reader)
        os.close(writer)
        sink.shutdown()
