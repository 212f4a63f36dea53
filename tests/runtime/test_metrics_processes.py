"""Metrics across real worker processes: `orchestrator worker` (one applier process and
one task worker process, each counting in its own registry) against the test's Redis;
what /metrics shows is their sum."""

from __future__ import annotations

import time
from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.entry.bootstrap import App
from orchestrator.entry.http.metrics import registry_of
from orchestrator.store.metrics import MetricsStore
from tests.conftest import cli_env, worker_process


def scrape(app: App) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry_of(app.redis, app.keys)).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def run_sagas(app: App, redis_url: str, tmp_path: Path, **env: str) -> list[str]:
    """Three sagas that complete and one that fails and compensates, run by a worker that
    is stopped (SIGTERM) once they all finished."""
    ids = [app.client.start("saga", {}) for _ in range(3)]
    ids.append(app.client.start("saga", {"fail_at": "step2"}))
    with worker_process(cli_env(redis_url, tmp_path, **env), tmp_path / "worker.log"):
        deadline = time.monotonic() + 60
        while not all(app.client.status(i).finished for i in ids):
            assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()
            time.sleep(0.05)
    return ids


def test_counts_of_the_applier_and_of_a_task_worker_process_appear_summed(
    app: App, redis_url: str, tmp_path: Path
) -> None:
    # Given a worker that ran four sagas, and stopped (each process writes as it ends)
    run_sagas(app, redis_url, tmp_path)
    # Then two processes wrote: the applier (events) and the task worker (tasks)
    processes = MetricsStore(app.redis, app.keys).read()
    names = {name for samples in processes.values() for name, _ in samples}
    assert len(processes) == 2, processes.keys()
    by_process = [{name for name, _ in samples} for samples in processes.values()]
    assert any("orchestrator_events_applied_total" in p for p in by_process)
    assert any("orchestrator_task_duration_seconds_count" in p for p in by_process)
    assert "orchestrator_events_applied_total" in names
    # and /metrics shows what each counted, summed
    found = scrape(app)
    assert found[("orchestrator_events_applied_total", (("workflow", "saga"),))] == 19
    finished = "orchestrator_instances_finished_total"
    assert found[(finished, (("status", "completed"), ("workflow", "saga")))] == 3
    assert found[(finished, (("status", "failed"), ("workflow", "saga")))] == 1
    tries = ("orchestrator_task_duration_seconds_count", (("task", "tests.sample_workflows:step"),))
    assert found[tries] == 14
    failed = (
        "orchestrator_task_failures_total",
        (("error_type", "RuntimeError"), ("task", "tests.sample_workflows:step")),
    )
    assert found[failed] == 1
    assert found[("orchestrator_metrics_processes", ())] == 2
    # and every key written expires
    for key in app.redis.scan_iter(match=f"{app.keys.namespace}:metrics*"):
        assert app.redis.pttl(key) > 0, key


def test_with_orchestrator_metrics_0_nothing_is_written(
    app: App, redis_url: str, tmp_path: Path
) -> None:
    ids = run_sagas(app, redis_url, tmp_path, ORCHESTRATOR_METRICS="0")
    assert sum(app.client.status(i).status == "completed" for i in ids) == 3
    assert list(app.redis.scan_iter(match=f"{app.keys.namespace}:metrics*")) == []
    found = scrape(app)
    assert ("orchestrator_events_applied_total", (("workflow", "saga"),)) not in found
    assert found[("orchestrator_metrics_processes", ())] == 0
