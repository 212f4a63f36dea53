"""Tracing across processes, to a real OTLP/HTTP receiver on localhost.

The receiver is an http.server in this process that takes POST /v1/traces and decodes
each body as OpenTelemetry's ExportTraceServiceRequest (protobuf). The worker is
`orchestrator worker` in a subprocess (a supervisor, its applier and its task and
notification processes, each exporting its own spans) with ORCHESTRATOR_TRACING=otlp
and OTEL_EXPORTER_OTLP_ENDPOINT pointing at the receiver. This process starts a
three-step order under a span of its own, exported to the same receiver; one trace then
holds the start, every apply, every task and the notifications, from several processes.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from orchestrator.entry import otlp
from orchestrator.entry.bootstrap import App
from orchestrator.runtime import tracing
from orchestrator.runtime.spans import Immediate
from tests.conftest import ROOT, cli_env

ORDER = {"order_id": "X1", "email": "x1@example.com", "work_seconds": 0}


@dataclass(frozen=True)
class Received:
    """One span as the receiver decoded it."""

    name: str
    trace_id: str
    span_id: str
    parent_id: str
    start: int
    pid: int
    role: str


class Receiver:
    """An OTLP/HTTP trace receiver: what it was sent, decoded; 404 for any other path."""

    def __init__(self) -> None:
        self.spans: list[Received] = []
        self.bad: list[str] = []
        received = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path != "/v1/traces":
                    self.send_response(404)
                    self.end_headers()
                    return
                try:
                    received.add(body)
                except Exception as exc:  # the test says so, rather than the exporter retrying
                    received.bad.append(repr(exc))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def add(self, body: bytes) -> None:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        for resource_spans in request.resource_spans:
            attrs = {a.key: a.value for a in resource_spans.resource.attributes}
            pid = attrs["process.pid"].int_value
            role = attrs.get("orchestrator.process.role")
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    self.spans.append(
                        Received(
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_id=span.parent_span_id.hex(),
                            start=span.start_time_unix_nano,
                            pid=pid,
                            role=role.string_value if role is not None else "",
                        )
                    )


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    found.thread.start()
    try:
        yield found
    finally:
        found.server.shutdown()
        found.server.server_close()


@pytest.fixture
def traced_here(receiver: Receiver) -> Iterator[None]:
    """This process traces too (the start's span), exporting to the same receiver."""
    exporter = OTLPSpanExporter(endpoint=f"{receiver.url}/v1/traces")
    provider = TracerProvider(resource=Resource.create({"process.pid": os.getpid()}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.enable(Immediate(otlp.sender(exporter, provider.resource)), provider)
    try:
        yield
    finally:
        tracing.disable()
        provider.shutdown()


def wait_for(check: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError("timed out")


@pytest.mark.parametrize("isolation", ["process", "job"])
def test_one_trace_covers_a_three_step_order_across_processes_sent_over_otlp(
    app: App,
    redis_url: str,
    tmp_path: Path,
    receiver: Receiver,
    traced_here: None,
    isolation: str,
) -> None:
    # Given a worker in a subprocess, tracing to the receiver, its spans batched briefly
    env = cli_env(
        redis_url,
        tmp_path,
        ORCHESTRATOR_TRACING="otlp",
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
        OTEL_BSP_SCHEDULE_DELAY="100",
        OTEL_SERVICE_NAME="orchestrator-test",
    )
    log = tmp_path / "worker.log"
    with log.open("w") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "worker", "-p", "1", "--isolation", isolation],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    try:
        # When this process starts an order and the worker runs it to the end
        order = app.client.start("order", ORDER)
        assert app.client.wait(order, timeout=30).state == "shipped"
        (start,) = wait_for(lambda: [s for s in receiver.spans if s.name == "start order"])
        trace = start.trace_id
        wanted = {"apply workflow.started", "task ship_order", "notify email"}

        def spans_of_trace() -> list[Received]:
            mine = [s for s in receiver.spans if s.trace_id == trace]
            return mine if wanted <= {s.name for s in mine} else []

        wait_for(spans_of_trace)
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=20)
    assert worker.returncode == 0, log.read_text()
    assert not receiver.bad

    # Then one trace holds the whole order, in order, from several processes
    mine = sorted((s for s in receiver.spans if s.trace_id == trace), key=lambda s: s.start)
    names = [s.name for s in mine]
    assert names[:8] == [
        "start order",
        "apply workflow.started",
        "task reserve_stock",
        "apply task.completed",
        "task charge_payment",
        "apply task.completed",
        "task ship_order",
        "apply task.completed",
    ], names
    assert "notify email" in names and "apply notification.sent" in names
    by_id = {s.span_id: s for s in mine}
    for cause, effect in itertools.pairwise(mine[:8]):
        assert by_id[effect.parent_id] == cause, (effect.name, cause.name)
    pids = {s.pid for s in mine}
    assert len(pids) >= 3, pids  # this process, the applier, a task worker (or its horses)
    roles = {s.name.split()[0]: s.role for s in mine if s.pid != os.getpid()}
    assert roles == {"apply": "applier", "task": "tasks", "notify": "notifications"}
    assert start.pid == os.getpid()


def traced_cli(
    redis_url: str, tmp_path: Path, receiver: Receiver, traceparent: str
) -> Callable[..., subprocess.CompletedProcess[str]]:
    """`orchestrator ...` in a subprocess, tracing to the receiver, handed `traceparent`."""
    env = cli_env(
        redis_url,
        tmp_path,
        ORCHESTRATOR_TRACING="otlp",
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
        OTEL_BSP_SCHEDULE_DELAY="100",
        TRACEPARENT=traceparent,
    )

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cli.main", *args],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )

    return cli


def test_a_cli_command_joins_the_trace_handed_to_it_and_the_applier_continues_it(
    app: App, redis_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    # Given tracing on for the CLI and a caller's trace in TRACEPARENT
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    cli = traced_cli(redis_url, tmp_path, receiver, f"00-{trace}-00f067aa0ba902b7-01")

    # When `orchestrator start` runs, then a burst worker applies the start
    started = cli("start", "order", "--input", '{"order_id": "C1", "email": "c1@example.com"}')
    assert started.returncode == 0, started.stderr
    burst = cli("worker", "--burst")
    assert burst.returncode == 0, burst.stderr

    # Then the command's span is the caller's child, and the apply is in the same trace
    command = wait_for(lambda: [s for s in receiver.spans if s.name == "orchestrator start"])[0]
    assert (command.trace_id, command.parent_id) == (trace, "00f067aa0ba902b7")
    names = wait_for(lambda: {s.name for s in receiver.spans if s.trace_id == trace} or None)
    assert {"orchestrator start", "start order", "apply workflow.started"} <= names
    assert not receiver.bad


def test_a_malformed_traceparent_handed_to_the_cli_starts_a_new_trace(
    app: App, redis_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    cli = traced_cli(redis_url, tmp_path, receiver, "00-not-a-trace-01")
    run = cli("start", "order", "--input", '{"order_id": "C2"}')
    assert run.returncode == 0, run.stderr
    command = wait_for(lambda: [s for s in receiver.spans if s.name == "orchestrator start"])[0]
    assert command.parent_id == "" and len(command.trace_id) == 32
