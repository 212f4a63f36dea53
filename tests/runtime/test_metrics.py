"""Each process's metrics, written to Redis and summed at scrape time
(orchestrator.runtime.metrics, orchestrator.store.metrics, entry.http.metrics.Summed)."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.core.errors import ConfigurationError
from orchestrator.entry.bootstrap import App, bootstrap
from orchestrator.entry.http.metrics import registry_of
from orchestrator.entry.settings import Settings
from orchestrator.entry.worker import run_burst, start_metrics
from orchestrator.runtime import metrics
from orchestrator.runtime.metrics import OTHER, ProcessMetrics
from orchestrator.store.metrics import MetricsStore, sample_field

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(app: App) -> Samples:
    """What /metrics shows, parsed as Prometheus parses it."""
    text = generate_latest(registry_of(app.redis, app.keys)).decode()
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return found


def value(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def counting(app: App) -> Iterator[ProcessMetrics]:
    """This test process counts (as a worker process does), writing to the test's Redis."""
    installed = metrics.install(MetricsStore(app.redis, app.keys), every=3600)
    yield installed
    metrics.uninstall()


def test_two_processes_counts_are_summed_by_label_set_and_histograms_by_bucket(app: App) -> None:
    # Given two processes that counted, each in its own registry
    store = MetricsStore(app.redis, app.keys)
    one, two = ProcessMetrics(store, "host-a:1"), ProcessMetrics(store, "host-b:2")
    one.task_finished("pkg:work", "task", 0.003)
    one.task_finished("pkg:work", "task", 0.2, "ValueError")
    two.task_finished("pkg:work", "task", 0.2)
    two.task_finished("pkg:other", "task", 7.0, "KeyError")
    one.tasks_lost("task")
    two.tasks_lost("task", 2)
    # When each writes its counts, and /metrics is scraped
    one.flush()
    two.flush()
    found = scrape(app)
    # Then counters are summed per label set
    assert value(found, "orchestrator_tasks_lost_total", kind="task") == 3
    failures = "orchestrator_task_failures_total"
    assert value(found, failures, task="pkg:work", error_type="ValueError") == 1
    assert value(found, failures, task="pkg:other", error_type="KeyError") == 1
    # and histograms bucket by bucket, with their sums and counts
    hist = "orchestrator_task_duration_seconds"
    assert value(found, f"{hist}_bucket", task="pkg:work", le="0.005") == 1
    assert value(found, f"{hist}_bucket", task="pkg:work", le="0.25") == 3
    assert value(found, f"{hist}_bucket", task="pkg:work", le="+Inf") == 3
    assert value(found, f"{hist}_count", task="pkg:work") == 3
    assert value(found, f"{hist}_sum", task="pkg:work") == pytest.approx(0.403)
    assert value(found, f"{hist}_bucket", task="pkg:other", le="5.0") == 0
    assert value(found, f"{hist}_bucket", task="pkg:other", le="10.0") == 1
    assert value(found, "orchestrator_metrics_processes") == 2


def test_a_flush_writes_absolute_values_so_writing_twice_counts_once(app: App) -> None:
    store = MetricsStore(app.redis, app.keys)
    proc = ProcessMetrics(store, "host:1")
    proc.dead_letters("inbox", 4)
    proc.flush()
    proc.flush()
    proc.dead_letters("inbox")
    proc.flush()
    assert value(scrape(app), "orchestrator_dead_letters_total", source="inbox") == 5


def test_a_dead_process_counts_are_kept_until_its_hash_expires(app: App) -> None:
    # Given a process that counted, wrote, and died (its hash lives `ttl` seconds)
    store = MetricsStore(app.redis, app.keys, ttl=1.0)
    gone = ProcessMetrics(store, "host:dead")
    gone.tasks_lost("task", 7)
    gone.flush()
    del gone
    live = ProcessMetrics(MetricsStore(app.redis, app.keys), "host:live")
    live.tasks_lost("task", 1)
    live.flush()
    # Then its counts are still summed
    assert value(scrape(app), "orchestrator_tasks_lost_total", kind="task") == 8
    assert app.redis.pttl(app.keys.metrics_of("host:dead")) > 0
    # until its hash expires: then only the live process's are
    time.sleep(1.2)
    assert value(scrape(app), "orchestrator_tasks_lost_total", kind="task") == 1
    assert value(scrape(app), "orchestrator_metrics_processes") == 1


def test_a_thousand_distinct_messages_make_one_label_value_per_exception_type(
    app: App, counting: ProcessMetrics
) -> None:
    # Given a task that fails with a new message each time, run in this (counting) process
    for index in range(1000):
        counting.task_finished(
            "pkg:flaky", "task", 0.001, type(ValueError(f"bad {index}")).__name__
        )
    counting.flush()
    found = scrape(app)
    failures = [labels for name, labels in found if name == "orchestrator_task_failures_total"]
    # Then one label set: the exception's class name, never its message
    assert failures == [(("error_type", "ValueError"), ("task", "pkg:flaky"))]
    assert (
        value(found, "orchestrator_task_failures_total", task="pkg:flaky", error_type="ValueError")
        == 1000
    )


def test_a_label_takes_at_most_its_limit_of_values_in_a_process(app: App) -> None:
    proc = ProcessMetrics(MetricsStore(app.redis, app.keys), "host:1")
    limit = metrics.LIMITS["error_type"]
    for index in range(limit + 30):
        proc.task_finished("pkg:t", "task", 0.001, f"Error{index}")
    proc.flush()
    found = scrape(app)
    kinds = {
        dict(labels)["error_type"]
        for name, labels in found
        if name == "orchestrator_task_failures_total"
    }
    assert len(kinds) == limit + 1 and OTHER in kinds
    assert value(found, "orchestrator_task_failures_total", task="pkg:t", error_type=OTHER) == 30
    long = "x" * 500
    proc.notification(long, "sent")
    assert len(proc._bounded["channel"].seen.pop()) == metrics.MAX_LABEL


def test_what_redis_holds_is_not_trusted_bad_fields_and_values_are_skipped(app: App) -> None:
    # Given a process hash with a good sample and every kind of junk beside it
    proc = ProcessMetrics(MetricsStore(app.redis, app.keys), "host:1")
    proc.tasks_lost("task", 2)
    proc.flush()
    key = app.keys.metrics_of("host:1")
    good = sample_field("orchestrator_tasks_lost_total", (("kind", "compensation"),))
    app.redis.hset(
        key,
        mapping={
            "not json": "1",
            '{"a": 1}': "1",
            '["x", [["a"]]]': "1",
            good: "not a number",
            sample_field("orchestrator_tasks_lost_total", (("instance", "abc"),)): "5",
            sample_field("orchestrator_unknown_total", ()): "5",
            sample_field("orchestrator_task_duration_seconds_bucket", (("le", "x"),)): "1",
            b"\xff\xfe": "1",
            "[" * 5000: "1",
        },
    )
    app.redis.zadd(app.keys.metrics, {b"\xffhost:9": time.time()})
    app.redis.hset(app.keys.metrics_of("\ufffdhost:9"), "[", "nan")
    # When scraped, the good sample is there and nothing else is
    found = scrape(app)
    assert value(found, "orchestrator_tasks_lost_total", kind="task") == 2
    lost = [labels for name, labels in found if name == "orchestrator_tasks_lost_total"]
    assert lost == [(("kind", "task"),)]
    assert not any("unknown" in name for name, _ in found)


def test_nothing_counted_leaves_nothing_but_the_live_gauges(app: App) -> None:
    found = scrape(app)
    assert value(found, "orchestrator_metrics_processes") == 0
    assert value(found, "orchestrator_rq_queue_depth", queue="tasks") == 0
    assert value(found, "orchestrator_dead_letters_stored") == 0
    assert app.redis.exists(app.keys.metrics) == 0


def test_without_metrics_installed_current_is_none_and_jobs_write_nothing(app: App) -> None:
    assert metrics.current() is None
    metrics.job_done()  # no process counts: nothing to do
    app.client.start("saga", {})
    run_burst(app)
    assert list(app.redis.scan_iter(match=f"{app.keys.namespace}:metrics*")) == []


def test_a_burst_counts_events_transitions_and_finishes_from_the_applier_and_the_work_horses(
    app: App, counting: ProcessMetrics
) -> None:
    # Given instances run by a burst: the applier in this process, each job in a forked
    # work-horse (RQ's Worker), which adds its counts to this process's `:jobs` hash
    ok = [app.client.start("saga", {}) for _ in range(3)]
    app.client.start("saga", {"fail_at": "step2"})
    run_burst(app)
    assert all(app.client.status(i).status == "completed" for i in ok)
    counting.flush()
    found = scrape(app)
    # Then the applier's counts: 4 starts, 3 x 4 completed steps, the failed one's 2
    # answers and 1 compensation answer
    applied = value(found, "orchestrator_events_applied_total", workflow="saga")
    assert applied == 4 + 12 + 2 + 1
    assert value(found, "orchestrator_transitions_total", workflow="saga", outcome="started") == 4
    finished = "orchestrator_instances_finished_total"
    assert value(found, finished, workflow="saga", status="completed") == 3
    assert value(found, finished, workflow="saga", status="failed") == 1
    # and the work-horses': 12 + 2 task tries, one failed, one compensation
    hist = "orchestrator_task_duration_seconds_count"
    assert value(found, hist, task="tests.sample_workflows:step") == 14
    assert value(found, hist, task="tests.sample_workflows:undo") == 1
    failures = "orchestrator_task_failures_total"
    assert (
        value(found, failures, task="tests.sample_workflows:step", error_type="RuntimeError") == 1
    )
    compensations = "orchestrator_compensations_total"
    assert value(found, compensations, task="tests.sample_workflows:undo", outcome="completed") == 1
    jobs = app.keys.metrics_of(f"{counting.process}:jobs")
    assert app.redis.exists(jobs) and app.redis.pttl(jobs) > 0


def _in_a_child(url: str, namespace: str) -> None:
    """A forked child of a counting process, counting as a work-horse does."""
    found = metrics.current()
    assert found is not None and found.horse
    found.tasks_lost("task", 3)
    metrics.job_done()
    found.tasks_lost("task", 1)
    metrics.job_done()  # only what is new since the last is added


def test_a_forked_child_adds_its_own_counts_once_to_its_parents_jobs_hash(
    app: App, counting: ProcessMetrics
) -> None:
    counting.tasks_lost("task", 10)  # the parent's: never added by the child
    child = multiprocessing.get_context("fork").Process(
        target=_in_a_child, args=(app.settings.redis_url, app.keys.namespace)
    )
    child.start()
    child.join(20)
    assert child.exitcode == 0
    jobs = MetricsStore(app.redis, app.keys).read()[f"{counting.process}:jobs"]
    assert jobs[("orchestrator_tasks_lost_total", (("kind", "task"),))] == 4
    counting.flush()
    assert value(scrape(app), "orchestrator_tasks_lost_total", kind="task") == 14


def test_orchestrator_metrics_is_on_by_default_0_turns_it_off_and_bad_values_are_refused(
    app: App,
) -> None:
    assert Settings.from_env({}).metrics is True
    assert Settings.from_env({"ORCHESTRATOR_METRICS": "0"}).metrics is False
    assert Settings.from_env({"ORCHESTRATOR_METRICS": "off"}).metrics is False
    with pytest.raises(ConfigurationError, match="ORCHESTRATOR_METRICS"):
        Settings.from_env({"ORCHESTRATOR_METRICS": "maybe"})
    # off: nothing installed, nothing written
    assert start_metrics(bootstrap(replace(app.settings, metrics=False))) is None
    assert metrics.current() is None
    assert app.redis.exists(app.keys.metrics) == 0
