"""`GET /metrics` (orchestrator.entry.http.metrics) on a real uvicorn server: Prometheus's
text format, the counts every process wrote, and the gauges read live from Redis."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import requests
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette

from orchestrator.entry.bootstrap import App
from orchestrator.entry.http.metrics import metrics_route
from orchestrator.runtime import metrics
from orchestrator.runtime.dispatch import TASK_QUEUE
from orchestrator.store.metrics import MetricsStore
from support.ports import free_port

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def url(app: App) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            Starlette(routes=[metrics_route(app)]),
            host="127.0.0.1",
            port=port,
            lifespan="off",
            log_config=None,
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}/metrics"
    server.should_exit = True
    thread.join(5)


def scrape(url: str) -> Samples:
    answer = requests.get(url, timeout=10)
    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == CONTENT_TYPE_LATEST
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(answer.text)
        for s in family.samples
    }


def test_the_live_gauges_show_inbox_lag_queue_depth_dead_letters_and_appliers(
    app: App, url: str
) -> None:
    # Given started instances no applier has read yet
    for _ in range(3):
        app.client.start("counter", {})
    found = scrape(url)
    lag = {
        dict(labels)["partition"]: v
        for (name, labels), v in found.items()
        if name == "orchestrator_inbox_lag"
    }
    assert sum(lag.values()) == 3 and set(lag) <= {str(p) for p in range(app.keys.partitions)}
    # When an applier reads them, and an entry it cannot read goes to the dead letters
    applier = app.applier()
    app.redis.xadd(app.keys.inbox(0), {"e": b"\xff not an event"})
    applier.drain()
    found = scrape(url)
    assert sum(v for (n, _), v in found.items() if n == "orchestrator_inbox_lag") == 0
    assert sum(v for (n, _), v in found.items() if n == "orchestrator_inbox_pending") == 0
    assert found[("orchestrator_dead_letters_stored", ())] == 1
    assert found[("orchestrator_appliers_live", ())] == 1
    assert found[("orchestrator_rq_queue_depth", (("queue", TASK_QUEUE),))] == 0
    assert found[("orchestrator_rq_queue_depth", (("queue", "notifications"),))] == 0


def test_counts_written_by_a_process_are_shown_with_their_help_and_type(app: App, url: str) -> None:
    # Given this process counting while an applier applies, and writing its counts
    installed = metrics.install(MetricsStore(app.redis, app.keys), every=3600)
    try:
        app.client.start("counter", {})
        app.redis.xadd(app.keys.inbox(1), {"e": b"{}"})
        app.applier().drain()
    finally:
        metrics.uninstall()  # writes them one last time
    assert installed.pid
    answer = requests.get(url, timeout=10)
    text = answer.text
    assert "# TYPE orchestrator_events_applied_total counter" in text
    assert "# HELP orchestrator_task_duration_seconds" in text
    found = scrape(url)
    assert found[("orchestrator_events_applied_total", (("workflow", "counter"),))] == 1
    assert found[("orchestrator_dead_letters_total", (("source", "inbox"),))] == 1
    assert found[("orchestrator_metrics_processes", ())] == 1


def test_only_get_is_answered(url: str) -> None:
    assert requests.post(url, data=b"x", timeout=10).status_code == 405
