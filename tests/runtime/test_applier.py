"""The applier against a real Redis: atomicity, ordering, leases, parking, timers, dead letters."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import redis

from orchestrator.core.events import Event
from orchestrator.entry.bootstrap import App, bootstrap
from orchestrator.entry.settings import Settings
from orchestrator.runtime.applier import Applier
from orchestrator.store.keys import INBOX_GROUP
from tests.conftest import ROOT, cli_env, run_cli


def counters(app: App, count: int) -> list[str]:
    ids = [app.client.start("counter", instance_id=f"c{i}") for i in range(count)]
    applier = app.applier()
    applier.drain()
    applier.leases.release_all()
    return ids


def emit_ticks(app: App, ids: list[str], per_instance: int) -> dict[str, list[str]]:
    sent: dict[str, list[str]] = {i: [] for i in ids}
    for n in range(per_instance):
        for instance_id in ids:
            event_id = f"{instance_id}-t{n}"
            app.client.emit("tick", {"n": n}, instance_id=instance_id, event_id=event_id)
            sent[instance_id].append(event_id)
    return sent


def applied_ticks(app: App, instance_id: str) -> list[str]:
    """Ticks applied: copies of an id applied before are recorded too, as duplicates."""
    return [
        h["event"]["id"]
        for h in app.client.history(instance_id)
        if h["event"]["type"] == "tick" and not h["note"].startswith("duplicate")
    ]


def assert_exactly_once_in_order(app: App, sent: dict[str, list[str]]) -> None:
    for instance_id, event_ids in sent.items():
        history = app.client.history(instance_id)
        assert [h["seq"] for h in history] == list(range(1, len(history) + 1))
        assert applied_ticks(app, instance_id) == event_ids
        assert app.client.status(instance_id).seq == len(history)


def pending(app: App) -> int:
    total = 0
    for partition in range(app.keys.partitions):
        with contextlib.suppress(redis.ResponseError):  # no group: nothing was read
            total += app.redis.xpending(app.keys.inbox(partition), INBOX_GROUP)["pending"]
    return total


def test_batch_applies_each_event_once_in_order(app: App) -> None:
    ids = counters(app, 5)
    sent = emit_ticks(app, ids, 20)
    applier = app.applier(batch_size=7)
    applier.drain()
    assert_exactly_once_in_order(app, sent)
    assert pending(app) == 0


def test_duplicate_event_id_is_applied_once(app: App) -> None:
    (iid,) = counters(app, 1)
    for _ in range(3):
        app.client.emit("tick", instance_id=iid, event_id="same")
    app.applier().drain()
    assert applied_ticks(app, iid) == ["same"]
    # and the two copies are in the history, recorded as ignored duplicates
    copies = [h for h in app.client.history(iid) if h["note"].startswith("duplicate")]
    assert [(h["event"]["id"], h["outcome"]) for h in copies] == [("same", "ignored")] * 2
    assert app.client.replay(iid).matches


@pytest.mark.parametrize("point", ["before_commit", "after_commit"])
def test_applier_killed_around_commit_loses_and_repeats_nothing(
    app: App, settings: Settings, tmp_path: Path, point: str
) -> None:
    # Given instances with ticks waiting in their inboxes
    ids = counters(app, 4)
    sent = emit_ticks(app, ids, 30)
    # When an applier process kills itself with SIGKILL at the crash point
    env = cli_env(
        settings.redis_url, tmp_path, ORCHESTRATOR_CRASH_AT=point, ORCHESTRATOR_LEASE_TTL="1"
    )
    crashed = run_cli("worker", "--burst", env=env)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    ticks_after_crash = sum(len(applied_ticks(app, i)) for i in ids)
    if point == "before_commit":
        assert ticks_after_crash == 0
        assert pending(app) > 0
    else:
        assert ticks_after_crash > 0
    # Then a new applier takes the partitions over once the lease expires, and
    # every event is applied exactly once, in order
    survivor = replace(settings, lease_ttl=1.0)
    applier = bootstrap(survivor).applier()
    deadline = time.monotonic() + 10
    while len(applier.leases.owned) < app.keys.partitions and time.monotonic() < deadline:
        applier.leases.maintain(force=True)
        time.sleep(0.1)
    applier.drain()
    assert_exactly_once_in_order(app, sent)
    assert pending(app) == 0


def test_two_appliers_with_a_kill_never_apply_twice_or_out_of_order(
    app: App, settings: Settings, tmp_path: Path
) -> None:
    # Given two applier processes sharing the partitions
    ids = counters(app, 8)
    env = cli_env(settings.redis_url, tmp_path, ORCHESTRATOR_LEASE_TTL="1")
    script = (
        "import sys, signal; from orchestrator.entry.bootstrap import bootstrap;"
        "from orchestrator.entry.settings import Settings;"
        "stop = []; signal.signal(signal.SIGTERM, lambda *a: stop.append(1));"
        "bootstrap(Settings.from_env()).applier().run(lambda: bool(stop), block_ms=20)"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script], env=env, cwd=ROOT) for _ in range(2)]
    try:
        # When events arrive while one applier is killed and another replaces it
        sent = emit_ticks(app, ids, 10)
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait()
        procs.append(subprocess.Popen([sys.executable, "-c", script], env=env, cwd=ROOT))
        for n in range(10, 20):
            for iid in ids:
                app.client.emit("tick", instance_id=iid, event_id=f"{iid}-t{n}")
                sent[iid].append(f"{iid}-t{n}")
        deadline = time.monotonic() + 30
        while sum(len(applied_ticks(app, i)) for i in ids) < 8 * 20:
            assert time.monotonic() < deadline, "events were not all applied in 30 s"
            time.sleep(0.1)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(10)
    # Then every event was applied exactly once, in the order it was appended
    assert_exactly_once_in_order(app, sent)


class StealingApplier(Applier):
    """Loses its lease between loading the batch and committing it."""

    def _apply_all(self, events, loaded):  # type: ignore[no-untyped-def]
        for partition in self.leases.owned:
            self.redis.set(self.keys.lease(partition), "someone-else")
        return super()._apply_all(events, loaded)


def test_fenced_out_applier_cannot_commit(app: App) -> None:
    (iid,) = counters(app, 1)
    app.client.emit("tick", instance_id=iid)
    applier = StealingApplier(app.redis, app.keys, app.registry)
    applier.leases.maintain(force=True)
    assert applier.apply_batch() == 0
    assert app.keys.partition_of(iid) not in applier.leases.owned
    assert applied_ticks(app, iid) == []
    assert pending(app) == 1


def test_applier_that_lost_its_lease_lets_the_partition_go(app: App) -> None:
    (iid,) = counters(app, 1)
    app.client.emit("tick", instance_id=iid)
    applier = app.applier()
    applier.leases.maintain(force=True)
    partition = app.keys.partition_of(iid)
    app.redis.set(app.keys.lease(partition), "someone-else")
    applier.drain()
    assert partition not in applier.leases.owned
    assert applied_ticks(app, iid) == []


def test_a_batch_read_before_a_lease_was_lost_is_applied_when_the_lease_comes_back(
    app: App,
) -> None:
    # Given an applier that read a batch (pending, not acknowledged) and then, its commit
    # refused on a lease that expired during a Redis pause, let its partitions go
    ids = counters(app, 4)
    sent = emit_ticks(app, ids, 1)
    applier = app.applier()
    applier.leases.maintain(force=True)
    assert len(applier.reader.read(0)) == 4
    for partition in list(applier.leases.owned):
        applier.leases.forget(partition)
        app.redis.delete(app.keys.lease(partition))
    assert pending(app) == 4
    # When it takes the same partitions back and goes on
    applier.leases.check_soon()
    applier.drain()
    # Then the batch it had read is applied, not left pending for ever
    assert pending(app) == 0
    for iid in ids:
        assert applied_ticks(app, iid) == sent[iid]


def test_early_event_is_parked_then_applied_after_the_transition_it_waits_for(app: App) -> None:
    client = app.client
    iid = client.start("approval", {"request_id": "R1", "minimum": 5})
    applier = app.applier()
    applier.drain()
    # When `pay` arrives before `approve`
    client.emit("pay", instance_id=iid)
    applier.drain()
    waiting = client.status(iid)
    assert (waiting.state, [e.type for e in waiting.parked]) == ("waiting", ["pay"])
    # and an approval too small for the guard changes nothing
    client.emit("approve", {"amount": 1}, instance_id=iid)
    applier.drain()
    assert client.status(iid).state == "waiting"
    # Then the approval that passes the guard moves it on, and the parked payment follows
    client.emit("approve", {"amount": 10}, key=("request_id", "R1"))
    applier.drain()
    done = client.status(iid)
    assert (done.state, done.status, done.parked) == ("paid", "completed", ())
    outcomes = [h["outcome"] for h in client.history(iid)]
    assert outcomes == ["started", "parked", "parked", "passed", "transition"]


def test_timeout_fires_and_a_stale_timer_changes_nothing(app: App) -> None:
    client = app.client
    expiring = client.start("approval", {"request_id": "E1"})
    approved = client.start("approval", {"request_id": "E2"})
    applier = app.applier()
    applier.drain()
    client.emit("approve", {"amount": 1}, instance_id=approved)
    applier.drain()
    # The approved one's timer was cancelled when it left `waiting`
    partitions = list(range(app.keys.partitions))
    armed = [m.decode() for p in partitions for m in app.redis.zrange(app.keys.timers(p), 0, -1)]
    assert armed == [f"{expiring}-1-approval.expired-0"]
    # When the clock passes the timeout, the expiring one expires
    assert applier.timers.fire_due(partitions, time.time() + 61) == 1
    applier.drain()
    assert client.status(expiring).state == "expired"
    # And a timer event for a state already left (one that fired in the race) is stale
    stale = Event(
        id=f"timer-{approved}-1-approval.expired-0",
        type="approval.expired",
        instance_id=approved,
        at=time.time(),
        data={"entered_seq": 1, "state": "waiting", "timer": f"{approved}-1-approval.expired-0"},
    )
    app.redis.xadd(app.keys.inbox(app.keys.partition_of(approved)), {"e": stale.to_json()})
    applier.drain()
    after = client.status(approved)
    assert after.state == "approved"
    last = client.history(approved)[-1]
    assert (last["outcome"], last["note"].startswith("stale")) == ("ignored", True)


def test_unappliable_events_go_to_the_dead_letters_with_a_reason(app: App) -> None:
    client = app.client
    guarded = client.start("guarded")
    applier = app.applier()
    applier.drain()
    client.emit("go", instance_id=guarded)
    ghost = Event(id="g1", type="tick", instance_id="ghost", at=time.time())
    app.redis.xadd(app.keys.inbox(app.keys.partition_of("ghost")), {"e": ghost.to_json()})
    app.redis.xadd(app.keys.inbox(0), {"e": "{not json"})
    applier.drain()
    app.redis.hset(app.keys.instance(guarded), "version", "99")
    client.emit("go", instance_id=guarded)
    applier.drain()
    app.redis.hset(app.keys.instance(guarded), "version", "1")
    reasons = sorted(
        fields[b"reason"].decode() for _, fields in app.redis.xrange(app.keys.deadletters)
    )
    assert len(reasons) == 4
    assert any("guard" in r and "ValueError: guard exploded" in r for r in reasons)
    assert any("no instance 'ghost'" in r for r in reasons)
    assert any("malformed" in r for r in reasons)
    assert any("version 99 is not loaded" in r for r in reasons)
    assert pending(app) == 0
    assert client.status(guarded).state == "start"


def test_history_records_every_event_with_what_it_did(app: App) -> None:
    client = app.client
    iid = client.start("approval", {"request_id": "H1"})
    applier = app.applier()
    applier.drain()
    client.emit("approve", {"amount": 3}, instance_id=iid)
    applier.drain()
    first, second = client.history(iid)
    assert first["event"]["type"] == "workflow.started"
    assert first["effects"] == [json.loads(json.dumps(first["effects"]))[0]]
    assert first["effects"][0].startswith("timer approval.expired")
    assert (second["from"], second["to"], second["outcome"]) == (
        "waiting",
        "approved",
        "transition",
    )
    assert second["effects"] == ["cancel 1 timer(s)"]


def test_an_entry_read_by_an_applier_whose_lease_expired_is_applied_in_order(
    settings: Settings,
) -> None:
    # Given applier A, caught up, that stalls past its lease, and B that takes over
    settings = replace(settings, partitions=1, lease_ttl=1.0)
    app = bootstrap(settings)
    a = app.applier()
    a.leases.maintain(force=True)
    a.tick()
    time.sleep(1.2)
    b = bootstrap(settings).applier()
    b.leases.maintain(force=True)
    b.tick()  # its recovery read: nothing pending yet
    # When A, not knowing, reads an acknowledged start (pending now) and cannot commit it
    first = app.client.start("counter", {}, instance_id="first")
    assert a.apply_batch() == 0
    # and a later start arrives for B
    second = app.client.start("counter", {}, instance_id="second")
    applied = sum(b.tick() for _ in range(3))
    # Then B applies both, the older first, and trims nothing still pending
    assert applied == 2
    assert app.client.status(first).state == "counting"
    assert app.client.status(second).state == "counting"
    assert app.redis.xpending(app.keys.inbox(0), INBOX_GROUP)["pending"] == 0
    assert app.redis.xlen(app.keys.deadletters) == 0


def test_a_busy_applier_looks_for_due_timers_every_due_every_an_idle_one_every_tick(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("orchestrator.runtime.applier.DUE_EVERY", 0.5)
    client = app.client
    expiring = client.start("approval", {"request_id": "D1"})
    applier = app.applier()
    applier.drain()  # ticks that do not block look every time
    partition = app.keys.partition_of(expiring)
    timers = app.keys.timers(partition)
    (armed,) = app.redis.zrange(timers, 0, -1)
    app.redis.zadd(timers, {armed: time.time() - 1})  # now due
    # A blocking tick (the worker's) within DUE_EVERY of the last look does not look again
    applier.tick(block_ms=1)
    assert app.redis.zcard(timers) == 1
    # one past it does: the timer fires and its event is applied
    time.sleep(0.5)
    applier.tick(block_ms=1)
    assert app.redis.zcard(timers) == 0
    applier.drain()
    assert client.status(expiring).state == "expired"
