"""Tracing's set-up: the settings that turn it on, refused by name when wrong; nothing set
up when off; the OTLP exporter's absence said with the fix; a burst worker tracing to the
console."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.core.errors import ConfigurationError
from orchestrator.entry import telemetry
from orchestrator.entry.bootstrap import App
from orchestrator.entry.settings import Settings
from orchestrator.runtime import tracing
from tests.conftest import cli_env, run_cli


def test_tracing_is_off_unless_set_and_a_bad_mode_is_refused_by_name() -> None:
    assert Settings.from_env({}).tracing == "off"
    assert Settings.from_env({}).service_name == "orchestrator"
    given = Settings.from_env({"ORCHESTRATOR_TRACING": " OTLP ", "OTEL_SERVICE_NAME": "shop"})
    assert (given.tracing, given.service_name) == ("otlp", "shop")
    with pytest.raises(ConfigurationError, match="ORCHESTRATOR_TRACING must be one of"):
        Settings.from_env({"ORCHESTRATOR_TRACING": "jaeger"})


def test_setup_does_nothing_when_off() -> None:
    assert telemetry.setup(Settings(tracing="off"), "cli") is False
    assert not tracing.enabled


def test_a_missing_otlp_exporter_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given the `otlp` extra not installed (its module cannot be imported)
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http.trace_exporter", None)
    with pytest.raises(ConfigurationError, match=r"pip install 'orchestrator\[otlp\]'"):
        telemetry.exporter("otlp")
    with pytest.raises(ConfigurationError, match="must be off, otlp or console"):
        telemetry.exporter("zipkin")


def test_a_bad_tracing_setting_stops_a_command_before_it_starts(
    redis_url: str, tmp_path: Path
) -> None:
    env = cli_env(redis_url, tmp_path, ORCHESTRATOR_TRACING="yes please")
    result = run_cli("worker", "--burst", env=env)
    assert result.returncode == 1
    assert "ORCHESTRATOR_TRACING must be one of off, otlp, console" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_burst_worker_traces_to_the_console(app: App, redis_url: str, tmp_path: Path) -> None:
    # Given a started counter and a tick for it
    counter = app.client.start("counter", {})
    app.client.emit("tick", instance_id=counter)
    # When a burst worker runs with console tracing
    env = cli_env(redis_url, tmp_path, ORCHESTRATOR_TRACING="console")
    result = run_cli("worker", "--burst", env=env)
    assert result.returncode == 0, result.stderr
    # Then it printed its apply spans, as JSON, flushed before it exited
    decoder, text, spans = json.JSONDecoder(), result.stdout, []
    at = text.find("{")
    while at != -1:
        span, end = decoder.raw_decode(text, at)
        spans.append(span)
        at = text.find("{", end)
    names = [span["name"] for span in spans]
    assert names == ["apply workflow.started", "apply tick"]
    assert spans[0]["attributes"][tracing.INSTANCE] == counter
    assert spans[0]["resource"]["attributes"]["orchestrator.process.role"] == "burst"
    assert spans[0]["parent_id"] is None  # started here with tracing off: a new trace


COMMAND = """
import sys
from orchestrator.entry import telemetry
from orchestrator.entry.settings import Settings
from orchestrator.runtime import tracing

settings = Settings.from_env()
with telemetry.command(settings, "start", sys.argv[1] or None):
    print("inside", tracing.current(), flush=True)
print("after", tracing.enabled, flush=True)
"""


@pytest.mark.parametrize("parent", ["00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", ""])
def test_a_cli_command_is_one_span_exported_before_it_returns(tmp_path: Path, parent: str) -> None:
    env = cli_env(None, tmp_path, ORCHESTRATOR_TRACING="console")
    done = subprocess.run(
        [sys.executable, "-c", COMMAND, parent], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    inside, rest = done.stdout.split("\n", 1)
    assert inside.startswith("inside 00-")
    span, end = json.JSONDecoder().raw_decode(rest, rest.index("{"))
    assert span["name"] == "orchestrator start" and span["kind"] == "SpanKind.CLIENT"
    assert rest[end:].strip() == "after False"
    trace_id = span["context"]["trace_id"]
    assert inside.split("-")[1] == trace_id.removeprefix("0x")
    if parent:
        assert trace_id.removeprefix("0x") == parent.split("-")[1]
        assert span["parent_id"] is not None
    else:
        assert span["parent_id"] is None


def test_span_batches_follow_the_sdks_variables_and_bad_values_fall_back_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert telemetry.batching({}) == {"delay": 5.0, "capacity": 2048, "size": 512}
    given = {
        "OTEL_BSP_SCHEDULE_DELAY": "250",
        "OTEL_BSP_MAX_QUEUE_SIZE": "8192",
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "2048",
    }
    assert telemetry.batching(given) == {"delay": 0.25, "capacity": 8192, "size": 2048}
    bad = {"OTEL_BSP_SCHEDULE_DELAY": "-1", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "4096"}
    assert telemetry.batching(bad) == {"delay": 5.0, "capacity": 2048, "size": 2048}
    assert "OTEL_BSP_SCHEDULE_DELAY must be a positive integer, not '-1'" in caplog.text
    assert "OTEL_BSP_MAX_EXPORT_BATCH_SIZE is over OTEL_BSP_MAX_QUEUE_SIZE" in caplog.text


PRELOAD = """
import json, sys
if sys.argv[2] == "missing":  # the `otlp` extra not installed
    sys.modules["opentelemetry.exporter.otlp.proto.http.trace_exporter"] = None
from orchestrator.entry import telemetry
from orchestrator.entry.settings import Settings

settings = Settings(tracing=sys.argv[1])
before = set(sys.modules)
telemetry.preload(settings)
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def preloaded(mode: str, exporter: str = "installed") -> set[str]:
    """The modules that preload imported, in a fresh interpreter."""
    done = subprocess.run(
        [sys.executable, "-c", PRELOAD, mode, exporter],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return set(json.loads(done.stdout))


def test_the_supervisor_imports_what_the_workers_setup_will_before_it_forks_them() -> None:
    # tracing off: nothing is imported
    assert preloaded("off") == set()
    # OTLP: the SDK, the exporter and the HTTP client it makes, so that a fork inherits them
    otlp = preloaded("otlp")
    assert {"opentelemetry.sdk.trace.export", "requests"} <= otlp
    assert "opentelemetry.exporter.otlp.proto.http.trace_exporter" in otlp
    # the console: the SDK only
    console = preloaded("console")
    assert "opentelemetry.sdk.trace.export" in console
    assert "requests" not in console
    # a missing exporter is no error here: setup names the fix when the worker starts
    assert "opentelemetry.sdk.trace.export" in preloaded("otlp", "missing")
