"""Operations: retry after a failure, replay against the stored state, dead letters, versions."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from orchestrator.core.errors import InvalidOperation
from orchestrator.entry.bootstrap import App, bootstrap
from orchestrator.entry.settings import Settings
from orchestrator.entry.worker import run_burst
from orchestrator.runtime.registry import Registry
from tests import sample_workflows as samples
from tests.conftest import cli_env, run_cli


def test_failed_compensation_leaves_a_reason_and_retry_finishes_it(
    app: App, tmp_path: Path
) -> None:
    # Given a saga whose compensation fails after its retries
    fixed = tmp_path / "fixed"
    iid = app.client.start("bad_compensation", {"fail_at": "step2", "fixed": str(fixed)})
    run_burst(app)
    stuck = app.client.status(iid)
    assert stuck.status == "failed"
    assert stuck.reason == "compensation of state 'one' failed: RuntimeError: cannot undo"
    assert stuck.compensations == ("one",)
    assert not stuck.finished
    # When the operator fixes the cause and retries
    fixed.touch()
    app.client.retry(iid)
    run_burst(app)
    # Then the compensation runs and the instance ends where the failure was going
    done = app.client.status(iid)
    assert (done.state, done.status, done.compensations, done.reason) == (
        "undone",
        "failed",
        (),
        None,
    )
    assert done.finished
    assert app.client.replay(iid).matches


def test_retry_reruns_a_failed_task_that_no_transition_handled(app: App, tmp_path: Path) -> None:
    fixed = tmp_path / "fixed"
    iid = app.client.start("stuck", {"fixed": str(fixed)})
    run_burst(app)
    assert (app.client.status(iid).state, app.client.status(iid).attempt) == ("working", 0)
    fixed.touch()
    app.client.retry(iid)
    run_burst(app)
    assert app.client.status(iid).state == "done"
    assert app.client.replay(iid).matches


def test_retry_of_an_instance_with_nothing_to_retry_is_a_clear_error(app: App) -> None:
    iid = app.client.start("counter")
    run_burst(app)
    with pytest.raises(InvalidOperation, match="nothing to retry"):
        app.client.retry(iid)


def test_cancel_compensates_and_ends_cancelled_and_finished_cannot_be_cancelled(
    app: App,
) -> None:
    iid = app.client.start("approval", {"request_id": "C1"})
    run_burst(app)
    app.client.cancel(iid, reason="changed my mind")
    run_burst(app)
    cancelled = app.client.status(iid)
    assert (cancelled.state, cancelled.status) == ("cancelled", "cancelled")
    assert cancelled.reason == "cancelled: changed my mind"
    with pytest.raises(InvalidOperation, match="already cancelled"):
        app.client.cancel(iid)


@pytest.mark.parametrize(
    "order",
    [
        {"card": "ok"},
        {"card": "declined"},
        {"items": 40},
        {"address": "nowhere"},
        {"card": "slow", "slow_seconds": 3.5},
    ],
    ids=["shipped", "declined", "out-of-stock", "undeliverable", "payment-timeout"],
)
def test_replay_equals_the_stored_state_for_every_order_path(
    app: App, order: dict[str, object]
) -> None:
    iid = app.client.start("order", {"order_id": "P1", "work_seconds": 0, **order})
    run_burst(app)
    assert app.client.status(iid).finished
    report = app.client.replay(iid)
    assert report.matches, report.summary()


def test_replay_reports_where_a_tampered_instance_diverges(app: App) -> None:
    iid = app.client.start("order", {"order_id": "T1", "work_seconds": 0})
    run_burst(app)
    app.redis.hset(app.keys.instance(iid), "state", "charging")
    report = app.client.replay(iid)
    assert not report.matches
    assert report.differences["state"] == ("charging", "shipped")


def test_unknown_version_is_dead_lettered_then_applied_after_deploying_it(
    settings: Settings, tmp_path: Path
) -> None:
    # Given a client that knows version 2, and a worker that only has version 1
    new = bootstrap(settings)
    old = bootstrap(settings)
    old.registry = Registry([samples.VersionedV1])
    iid = new.client.start("versioned")
    assert new.client.status(iid).version == 2
    old_applier = old.applier()
    old_applier.drain()
    old_applier.leases.release_all()
    # Then the worker dead-letters the start event, naming the missing version
    (letter,) = new.client.dead_letters.read()
    assert "version 2 is not loaded here" in letter["reason"]
    assert new.client.status(iid).status == "pending"
    # When version 2 is deployed and the letter put back (through the CLI)
    env = cli_env(settings.redis_url, tmp_path)
    listed = run_cli("dead-letters", env=env)
    assert letter["id"] in listed.stdout and "version 2" in listed.stdout
    replayed = run_cli("dead-letters", "replay", "--all", env=env)
    assert replayed.returncode == 0, replayed.stderr
    new.applier().drain()
    # Then it is applied on its own version
    assert new.client.status(iid).state == "first"
    assert new.client.dead_letters.read() == []


def test_two_versions_run_side_by_side(settings: Settings) -> None:
    old = bootstrap(settings)
    old.registry = Registry([samples.VersionedV1])
    first = old.client.start("versioned")
    both = bootstrap(settings)
    second = both.client.start("versioned")
    applier = both.applier()
    applier.drain()
    for iid in (first, second):
        both.client.emit("go", instance_id=iid)
    applier.drain()
    assert (both.client.status(first).version, both.client.status(first).state) == (1, "old_end")
    assert (both.client.status(second).version, both.client.status(second).state) == (2, "middle")


def test_cli_retry_and_replay(app: App, tmp_path: Path) -> None:
    env = cli_env(app.settings.redis_url, tmp_path)
    iid = app.client.start("order", {"order_id": "R9", "work_seconds": 0})
    run_burst(app)
    ok = run_cli("replay", iid, env=env)
    assert ok.returncode == 0 and "equals the stored state" in ok.stdout
    app.redis.hset(app.keys.instance(iid), "status", "running")
    diverged = run_cli("replay", iid, "--json", env=env)
    assert diverged.returncode == 3
    assert '"matches": false' in diverged.stdout
    refused = run_cli("retry", iid, env=env)
    assert refused.returncode == 1 and "nothing to retry" in refused.stderr


def test_a_try_slower_than_its_timeout_is_cut_off_and_retried_then_fails(app: App) -> None:
    iid = app.client.start("time_boxed", {"seconds": 30})
    started = time.monotonic()
    run_burst(app)
    assert time.monotonic() - started < 20  # two tries of one second, not thirty
    final = app.client.status(iid)
    assert (final.state, final.status) == ("gave_up", "failed")
    failures = [h for h in app.client.history(iid) if h["event"]["type"] == "task.failed"]
    assert [h["outcome"] for h in failures] == ["retry", "transition"]
    assert all(h["event"]["data"]["error_type"] == "JobTimeoutException" for h in failures)
