"""Structured logs: one JSON object a line, carrying what the line is about (the try's
instance, workflow, state, task and attempt; the applier's instance), the trace and span
ids when a span is current, and a failed task's traceback as its `exception`; the log
options of the long-running commands, refused by name when wrong."""

from __future__ import annotations

import io
import json
import logging
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from orchestrator.entry import logs
from orchestrator.entry.bootstrap import App
from orchestrator.runtime import tracing
from orchestrator.runtime.spans import Immediate, exporting
from tests.conftest import ROOT, cli_env, root_logging, run_cli
from tests.runtime.test_tracing import run_here


@pytest.fixture
def logged() -> Iterator[io.StringIO]:
    """The root logger writing JSON lines to a buffer; as it was, afterwards."""
    with root_logging("INFO", "json") as stream:
        yield stream


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.enable(Immediate(exporting(exporter, provider.resource)), provider)
    try:
        yield exporter
    finally:
        tracing.disable()
        provider.shutdown()


def lines_of(stream: io.StringIO) -> list[dict[str, Any]]:
    """Every line parsed as JSON: a line that is not one object fails the test."""
    found = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert all(isinstance(line, dict) for line in found)
    return found


def failures(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in found if line["logger"] == "orchestrator.runtime.tasks"]


def test_a_failed_task_is_one_json_line_with_its_try_its_traceback_and_its_trace(
    app: App, logged: io.StringIO, spans: InMemorySpanExporter
) -> None:
    # Given tracing on, when a saga's second step fails
    saga = app.client.start("saga", {"fail_at": "step2"})
    run_here(app)
    # Then its failure is one WARNING line naming the try
    (failure,) = failures(lines_of(logged))
    assert failure["level"] == "WARNING"
    assert failure["instance_id"] == saga
    assert (failure["workflow"], failure["state"], failure["attempt"]) == ("saga", "two", 1)
    assert failure["task"].endswith("step")
    # with its traceback as `exception`, not repeated in the message
    assert failure["exception"].startswith("Traceback (most recent call last):")
    assert failure["exception"].rstrip().endswith("RuntimeError: step2 failed on purpose")
    assert "in step" in failure["exception"]
    assert "Traceback" not in failure["message"]
    assert failure["message"].endswith("failed: RuntimeError: step2 failed on purpose")
    # and the ids of the task's span, to find its trace
    (task,) = [
        s
        for s in spans.get_finished_spans()
        if s.name == "task step" and s.status.status_code.name == "ERROR"
    ]
    assert failure["trace_id"] == f"{task.context.trace_id:032x}"
    assert failure["span_id"] == f"{task.context.span_id:016x}"


def test_with_tracing_off_a_line_has_no_trace_fields_and_text_keeps_the_traceback(
    app: App, logged: io.StringIO
) -> None:
    app.client.start("saga", {"fail_at": "step1"})
    run_here(app)
    (failure,) = failures(lines_of(logged))
    assert "trace_id" not in failure and "span_id" not in failure
    assert "RuntimeError: step1 failed on purpose" in failure["exception"]
    # The text format keeps the traceback in the message, as before
    record = logging.LogRecord("orchestrator.runtime.tasks", logging.WARNING, "", 0, "x", (), None)
    record.msg = "task failed: E\nTraceback (most recent call last):\nE"
    text = logging.Formatter(logs.TEXT_FORMAT).format(record)
    assert "Traceback" in text


def test_an_applier_line_about_an_instance_names_it_and_keeps_the_exception(
    logged: io.StringIO,
) -> None:
    log = logging.getLogger("orchestrator.runtime.applier")
    try:
        raise KeyError("boom")
    except KeyError:
        log.exception(
            "applying %s to %s (entry %s)",
            "tick",
            "i-1",
            "1-0",
            extra={"instance_id": "i-1", "workflow": "counter", "state": "counting"},
        )
    (line,) = lines_of(logged)
    assert line["level"] == "ERROR" and line["message"] == "applying tick to i-1 (entry 1-0)"
    assert (line["instance_id"], line["workflow"], line["state"]) == ("i-1", "counter", "counting")
    assert "task" not in line and "attempt" not in line
    assert line["exception"].startswith("Traceback") and "KeyError: 'boom'" in line["exception"]


def test_a_line_logged_inside_a_span_carries_its_ids(
    logged: io.StringIO, spans: InMemorySpanExporter
) -> None:
    with tracing.span("apply tick", None) as span:
        logging.getLogger("orchestrator.x").warning("inside")
    logging.getLogger("orchestrator.x").warning("outside")
    inside, outside = lines_of(logged)
    assert inside["trace_id"] == f"{span.get_span_context().trace_id:032x}"
    assert inside["span_id"] == f"{span.get_span_context().span_id:016x}"
    assert "trace_id" not in outside


@pytest.mark.parametrize(
    ("option", "value"), [("--log-format", "xml"), ("--log-level", "LOUD"), ("--log-level", "")]
)
def test_events_tail_refuses_a_bad_log_option_by_name(
    redis_url: str, tmp_path: Path, option: str, value: str
) -> None:
    result = run_cli("events", "tail", option, value, env=cli_env(redis_url, tmp_path))
    assert result.returncode == 2
    assert option in result.stderr and "Traceback" not in result.stderr


def test_events_tail_follow_logs_json_and_stops_on_sigterm(redis_url: str, tmp_path: Path) -> None:
    # Given `events tail --follow` logging JSON at INFO
    env = cli_env(redis_url, tmp_path)
    follower = subprocess.Popen(
        [
            *(sys.executable, "-m", "cli.main", "events", "tail", "--follow"),
            *("--type", "order.*", "--log-format", "json", "--log-level", "INFO"),
        ],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # When it says it follows, as one JSON line
    assert follower.stderr is not None
    first = json.loads(follower.stderr.readline())
    assert first["level"] == "INFO" and first["logger"] == "cli.events"
    assert first["message"].startswith("following published events of types order.*")
    # and it is told to stop
    follower.send_signal(signal.SIGTERM)
    _, err = follower.communicate(timeout=20)
    # Then it stops cleanly, and whatever else it logged is JSON lines too
    assert follower.returncode == 0, err
    for line in err.splitlines():
        assert isinstance(json.loads(line), dict), line
