"""Under load several ready tasks ride in one RQ job; each keeps its own semantics."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from rq.job import Job
from rq.serializers import JSONSerializer

from orchestrator.entry.bootstrap import App
from orchestrator.entry.worker import rq_worker, run_burst
from orchestrator.runtime.dispatch import RUN_TASK, RUN_TASKS, TASKS_PER_JOB, _packs
from orchestrator.runtime.watchdog import CHECK_EVERY, INTERMEDIATE
from tests.conftest import ROOT, cli_env


def queued_jobs(app: App) -> list[Job]:
    ids = [raw.decode() for raw in app.redis.lrange("rq:queue:tasks", 0, -1)]
    return [Job.fetch(i, connection=app.redis, serializer=JSONSerializer) for i in ids]


def apply_all(app: App) -> None:
    """Apply what is in the inboxes now, then give the partitions back for run_burst."""
    applier = app.applier()
    applier.drain()
    applier.leases.release_all()


def answers(app: App, iid: str) -> list[dict[str, Any]]:
    return [h["event"] for h in app.client.history(iid) if h["event"]["type"].startswith("task.")]


def test_a_lone_task_gets_a_job_of_its_own(app: App) -> None:
    iid = app.client.start("saga", {})
    apply_all(app)
    (job,) = queued_jobs(app)
    assert job.func_name == RUN_TASK
    assert job.id == job.kwargs["payload"]["job"]
    run_burst(app)
    assert app.client.status(iid).state == "finished"


def test_tasks_made_ready_together_share_a_job_and_so_do_their_next_steps(app: App) -> None:
    # Given five instances started together and no worker listening yet
    iids = [app.client.start("saga", {"n": n}) for n in range(5)]
    # When one applier batch applies their starts
    apply_all(app)
    # Then their five first tasks wait in one job, each with its own id and deadline
    (job,) = queued_jobs(app)
    assert job.func_name == RUN_TASKS
    items = job.kwargs["payload"]["items"]
    assert sorted(item["instance"] for item in items) == sorted(iids)
    assert len({item["job"] for item in items}) == 5
    assert all(item["timeout"] >= 1 for item in items)
    # and the watchdog knows each by its own id, run by the packing job
    records = {}
    for partition in range(app.keys.partitions):
        for key, raw in app.redis.hgetall(app.keys.outstanding_jobs(partition)).items():
            records[key.decode()] = json.loads(raw)
    assert set(records) == {item["job"] for item in items}
    assert {record["rq_job"] for record in records.values()} == {job.id}
    # And when a worker runs that one job, the five answers arrive together, so the
    # five second steps are packed in one job again
    rq_worker(app, burst=True).work(burst=True, max_jobs=1, logging_level="WARNING")
    apply_all(app)
    (second,) = queued_jobs(app)
    assert second.func_name == RUN_TASKS
    assert {item["state"] for item in second.kwargs["payload"]["items"]} == {"two"}
    # And when the workers run the rest, every instance finishes through its own answers
    run_burst(app)
    for iid in iids:
        assert app.client.status(iid).state == "finished"
        events = answers(app, iid)
        assert [e["type"] for e in events] == ["task.completed"] * 4
        assert all(e["id"] == f"{e['data']['job']}-task.completed" for e in events)
    assert not any(app.redis.hlen(app.keys.outstanding_jobs(p)) for p in range(4))


def test_a_slow_task_in_a_packed_job_is_cut_off_at_its_own_deadline(app: App) -> None:
    # Given a task slower than its own 1-second timeout, ready together with three quick ones
    slow = app.client.start("time_boxed", {"seconds": 30})
    quick = [app.client.start("saga", {"n": n}) for n in range(3)]
    apply_all(app)
    (job,) = queued_jobs(app)
    assert job.func_name == RUN_TASKS and len(job.kwargs["payload"]["items"]) == 4
    # When they run
    started = time.monotonic()
    run_burst(app)
    # Then only the slow one timed out (on each of its two tries) and gave up
    assert time.monotonic() - started < 20, "the 30 s sleep was not cut off"
    assert app.client.status(slow).state == "gave_up"
    failures = [e for e in answers(app, slow) if e["type"] == "task.failed"]
    assert [e["data"]["error_type"] for e in failures] == ["JobTimeoutException"] * 2
    for iid in quick:
        assert app.client.status(iid).state == "finished"


def test_a_packed_job_whose_work_horse_dies_loses_no_task(app: App, tmp_path: Path) -> None:
    # Given quick tasks packed in one job with a task that kills its work-horse on its first try
    marker, marker2 = tmp_path / "horse", tmp_path / "sleeper"
    marker2.write_text("already slept")  # the fragile workflow's second step runs at once
    iids = [app.client.start("two_steps", {"n": n}) for n in range(2)]
    fragile = app.client.start("fragile", {"marker": str(marker), "marker2": str(marker2)})
    iids += [app.client.start("two_steps", {"n": n}) for n in range(2, 4)]
    apply_all(app)
    (job,) = queued_jobs(app)
    order = [item["instance"] for item in job.kwargs["payload"]["items"]]
    assert sorted(order) == sorted([*iids, fragile])
    before, after = order[: order.index(fragile)], order[order.index(fragile) + 1 :]
    env = cli_env(app.settings.redis_url, tmp_path, ORCHESTRATOR_LEASE_TTL="2")
    # When a worker (one task process) runs them
    worker = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "worker", "--processes", "1", "--isolation", "job"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not all(app.client.status(i).finished for i in [*before, fragile, *after]):
            assert time.monotonic() < deadline, "instances did not finish"
            time.sleep(0.1)
    finally:
        worker.terminate()
        output, _ = worker.communicate(timeout=30)
    # Then every instance finished; the dead work-horse's task and those still waiting
    # their turn in its job were reported lost and retried once
    assert marker.exists(), output
    assert app.client.status(fragile).state == "done", output
    lost = {
        iid: [e for e in answers(app, iid) if e["data"].get("error_type") == "TaskLost"]
        for iid in [*before, fragile, *after]
    }
    assert len(lost[fragile]) == 1
    for iid in before:  # ran before it died; their answers may not have gone out yet
        assert app.client.status(iid).state == "done", output
        assert len(lost[iid]) <= 1
    for iid in after:  # still waiting their turn in the dead job
        assert app.client.status(iid).state == "done", output
        assert len(lost[iid]) == 1
    for iid in [*before, *after]:
        completed = [e for e in answers(app, iid) if e["type"] == "task.completed"]
        assert len(completed) == 2  # one per step: nothing applied twice


def test_packs_spread_over_the_workers_and_never_exceed_the_cap() -> None:
    def sizes(n: int, workers: int) -> list[int]:
        ready = [(f"j{i}", {}) for i in range(n)]
        packs = _packs(ready, workers, TASKS_PER_JOB)
        assert [job for pack in packs for job, _ in pack] == [job for job, _ in ready]
        return [len(pack) for pack in packs]

    assert sizes(1, 1) == [1]
    assert sizes(2, 2) == [1, 1]
    assert sizes(3, 4) == [1, 1, 1]
    assert sizes(10, 2) == [5, 5]
    assert sizes(7, 2) == [4, 3]
    assert sizes(100, 2) == [TASKS_PER_JOB] * (100 // TASKS_PER_JOB)
    assert sizes(0, 2) == []


def test_a_packed_job_stranded_by_a_dying_worker_reports_every_task_it_carries(
    app: App,
) -> None:
    # Given two tasks packed in one job, which a worker took off the queue (into RQ's
    # intermediate list) and died before starting
    iids = [app.client.start("two_steps", {"n": n}) for n in range(2)]
    applier = app.applier()
    applier.drain()
    (job,) = queued_jobs(app)
    assert len(job.kwargs["payload"]["items"]) == 2
    app.redis.lmove("rq:queue:tasks", INTERMEDIATE[0], "LEFT", "RIGHT")
    # When the watchdog has seen it stranded for a whole check period
    partitions = list(range(app.keys.partitions))
    now = time.time()
    reported = [
        applier.dispatcher.watchdog.check(partitions, now + n * (CHECK_EVERY + 0.1))
        for n in range(1, 5)
    ]
    # Then both tasks are reported lost, whichever was due first, and nothing is left
    assert sum(reported) == 2
    assert not any(app.redis.hlen(app.keys.outstanding_jobs(p)) for p in partitions)
    assert app.redis.lpos(INTERMEDIATE[0], job.id) is None
    applier.drain()
    for iid in iids:  # each try failed as lost, to be tried again
        lost = [e for e in answers(app, iid) if e["data"].get("error_type") == "TaskLost"]
        assert len(lost) == 1
        assert any("task.retry" in timer for timer in app.client.status(iid).timers)


def test_quick_answers_of_a_packed_job_go_out_while_a_slow_task_still_runs(app: App) -> None:
    # Given three quick tasks packed ahead of one that takes most of a second (a batch
    # is read partition by partition: the slow one's instance in the last partition)
    last = app.keys.partitions - 1
    ids = (f"pack-{n}" for n in range(10_000))
    early = [i for i in ids if app.keys.partition_of(i) < last][:3]
    late = next(f"slow-{n}" for n in range(10_000) if app.keys.partition_of(f"slow-{n}") == last)
    quick = [app.client.start("saga", {"n": n}, instance_id=i) for n, i in enumerate(early)]
    slow = app.client.start("time_boxed", {"seconds": 0.8}, instance_id=late)
    apply_all(app)
    (job,) = queued_jobs(app)
    items = job.kwargs["payload"]["items"]
    assert [item["instance"] for item in items][-1] == slow

    def answered() -> set[str]:
        found = set()
        for partition in range(app.keys.partitions):
            for _, fields in app.redis.xrange(app.keys.inbox(partition)):
                event = json.loads(fields[b"e"])
                if event["type"] == "task.completed":
                    found.add(event["instance"])
        return found

    # When a worker runs the job (in a work-horse of its own, as a forking worker
    # does), the inboxes watched meanwhile
    seen: list[set[str]] = []

    def watch() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            found = answered()
            if set(quick) <= found:
                seen.append(found)
                return
            time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    rq_worker(app, burst=True).work(burst=True, max_jobs=1, logging_level="WARNING")
    watcher.join()
    # Then the quick ones' answers were in the inboxes while the slow one still ran
    (first,) = seen
    assert slow not in first
    assert slow in answered()  # and its own once it was done
