"""The scheduler against a real Redis: each tick starts one instance, whoever races."""

from __future__ import annotations

import json
import threading
from dataclasses import replace

import pytest
import redis

from orchestrator.core.errors import InputError, InvalidOperation, UnknownInstance
from orchestrator.core.schedule import Schedule, ScheduleSpec, check, tick_id
from orchestrator.entry.bootstrap import App
from orchestrator.entry.client import Orchestrator
from orchestrator.runtime.applier import Applier
from orchestrator.runtime.registry import Registry
from orchestrator.runtime.scheduler import Scheduler
from orchestrator.store.schedules import Schedules
from tests import schedule_workflows as wf

T0 = 1_800_000_000.0  # a whole minute, UTC
REGISTRY = Registry([wf.Heartbeat, wf.Waiter, wf.Keyed])


def spec_of(workflow: str = "waiter", **given: object) -> ScheduleSpec:
    fields: dict[str, object] = {"every": 60, "name": "s", "overlap": "allow", **given}
    return check(Schedule(**fields), workflow, declared=False)  # type: ignore[arg-type]


def scheduler(app: App, registry: Registry = REGISTRY) -> Scheduler:
    found = Scheduler(app.redis, app.keys, registry)
    found._next_sync = float("inf")  # declared schedules only where a test asks for them
    return found


def applier(app: App) -> Applier:
    """An applier whose own scheduler (on the real clock) writes no declared schedule."""
    found = Applier(app.redis, app.keys, REGISTRY)
    found.scheduler._next_sync = float("inf")
    return found


def instances(app: App, workflow: str = "waiter") -> list[str]:
    ids: list[bytes] = app.redis.zrange(app.keys.by_workflow(workflow), 0, -1)  # type: ignore[assignment]
    return sorted(i.decode() for i in ids)


def client(app: App) -> Orchestrator:
    return Orchestrator(app.redis, app.keys, REGISTRY)


def test_a_tick_starts_one_instance_with_the_input_and_the_tick(app: App) -> None:
    Schedules(app.redis, app.keys).add(spec_of(input={"region": "eu"}), T0)
    # Before the tick nothing starts; at it, one instance whose id names the tick
    assert scheduler(app).run_due(T0 + 59) == 0
    assert scheduler(app).run_due(T0 + 60.4) == 1
    assert instances(app) == ["s-20270115T080100Z"] == [tick_id("s", T0 + 60)]
    applier(app).drain()
    started = client(app).status("s-20270115T080100Z")
    assert started.context == {"region": "eu", "scheduled_at": "2027-01-15T08:01:00Z"}
    assert started.state == "waiting"
    # Where it stands: one started, next round at the next tick
    standing = client(app).schedules.get("s").standing
    assert (standing.started, standing.instance, standing.next_due) == (
        1,
        "s-20270115T080100Z",
        T0 + 120,
    )
    # The same round played again (a late second look) starts nothing more
    assert scheduler(app).run_due(T0 + 60.9) == 0
    assert len(instances(app)) == 1


def test_schedulers_racing_start_each_tick_exactly_once(app: App) -> None:
    Schedules(app.redis, app.keys).add(spec_of(every=1, catch_up="all", catch_up_window="1h"), T0)
    rounds = [T0 + n * 0.5 for n in range(1, 61)]  # 30 s of rounds, every half second
    barrier = threading.Barrier(3)
    started: list[int] = []

    def race() -> None:
        mine = Scheduler(redis.Redis.from_url(app.settings.redis_url or ""), app.keys, REGISTRY)
        mine._next_sync = float("inf")
        for now in rounds:
            barrier.wait()
            started.append(mine.run_due(now))

    threads = [threading.Thread(target=race) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    expected = sorted(tick_id("s", T0 + n) for n in range(1, 31))
    assert instances(app) == expected
    assert sum(started) == 30  # no start claimed twice
    assert client(app).schedules.get("s").standing.started == 30


def test_overlap_skip_starts_nothing_while_the_last_one_runs(app: App) -> None:
    Schedules(app.redis, app.keys).add(spec_of(overlap="skip"), T0)
    applying = applier(app)
    assert scheduler(app).run_due(T0 + 60) == 1
    applying.drain()
    # The next tick finds the first still waiting: skipped
    assert scheduler(app).run_due(T0 + 120) == 0
    assert client(app).schedules.get("s").standing.skipped == 1
    # Once it has finished, the next tick starts again
    client(app).emit("go", instance_id=tick_id("s", T0 + 60))
    applying.drain()
    assert scheduler(app).run_due(T0 + 180) == 1
    assert instances(app) == [tick_id("s", T0 + 60), tick_id("s", T0 + 180)]


def test_a_tick_whose_business_key_is_in_use_starts_nothing(app: App) -> None:
    Schedules(app.redis, app.keys).add(spec_of("keyed", input={"account": "A"}), T0)
    assert scheduler(app).run_due(T0 + 60) == 1
    applier(app).drain()
    assert scheduler(app).run_due(T0 + 120) == 0
    assert instances(app, "keyed") == [tick_id("s", T0 + 60)]
    assert client(app).schedules.get("s").standing.skipped == 1


def test_a_keyed_workflow_schedule_needs_the_key_in_its_input(app: App) -> None:
    with pytest.raises(InputError, match="'account'"):
        client(app).schedules.add("keyed", Schedule(every=60, name="k"))
    assert client(app).schedules.all() == []


@pytest.mark.parametrize(
    ("catch_up", "expected"),
    [("skip", [600]), ("one", [540, 600]), ("all", [60 * n for n in range(1, 11)])],
)
def test_ticks_missed_while_down_follow_the_catch_up_policy(
    app: App, catch_up: str, expected: list[int]
) -> None:
    # Given a schedule added at T0 and no scheduler for ten and a half minutes
    Schedules(app.redis, app.keys).add(spec_of(catch_up=catch_up), T0)
    # When one runs again, then the tick 30 s late is on time; the others by the policy
    scheduler(app).run_due(T0 + 630)
    assert instances(app) == [tick_id("s", T0 + t) for t in expected]


def test_ticks_older_than_the_window_never_start(app: App) -> None:
    Schedules(app.redis, app.keys).add(spec_of(catch_up="all", catch_up_window="5m"), T0)
    scheduler(app).run_due(T0 + 3600 + 30)
    # the window reaches back 5 minutes from now: 56 to 59 caught up, 60 on time
    assert instances(app) == [tick_id("s", T0 + 60 * n) for n in range(56, 61)]


def test_paused_ticks_are_not_caught_up_on_resume(app: App) -> None:
    schedules = Schedules(app.redis, app.keys)
    schedules.add(spec_of(catch_up="all"), T0)
    schedules.pause("s")
    assert scheduler(app).run_due(T0 + 300) == 0
    assert schedules.get("s").standing.next_due is None
    schedules.resume("s", T0 + 330)
    assert scheduler(app).run_due(T0 + 360) == 1
    assert instances(app) == [tick_id("s", T0 + 360)]


def test_remove_and_unknown_names(app: App) -> None:
    schedules = client(app).schedules
    schedules.store.add(spec_of(), T0)
    schedules.remove("s")
    assert schedules.all() == []
    assert scheduler(app).run_due(T0 + 600) == 0
    for operation in (schedules.remove, schedules.pause, schedules.resume, schedules.get):
        with pytest.raises(UnknownInstance, match="no schedule named 'nope'"):
            operation("nope")


def test_a_name_is_added_once(app: App) -> None:
    schedules = Schedules(app.redis, app.keys)
    schedules.add(spec_of(), T0)
    with pytest.raises(InvalidOperation, match="exists already"):
        schedules.add(spec_of(every=5), T0)
    assert schedules.get("s").spec.every == 60


def test_declared_schedules_follow_the_deployed_classes(app: App) -> None:
    # Given a worker loading Heartbeat: its declared schedule is written
    first = scheduler(app, Registry([wf.Heartbeat]))
    first.sync(T0)
    (found,) = client(app).schedules.all()
    assert (found.spec.name, found.spec.declared, found.spec.every) == ("heartbeat", True, 1.0)
    # A declared one cannot be removed from the CLI
    with pytest.raises(InvalidOperation, match="declared on workflow heartbeat"):
        client(app).schedules.remove("heartbeat")
    # When a deployment changes it, it is rewritten, where it stands kept
    app.redis.hset(app.keys.schedule("heartbeat"), "started", 7)
    changed = replace(
        wf.Heartbeat.definition, schedules=(replace(found.spec, every=30.0),), version=2
    )
    scheduler(app, Registry([changed])).sync(T0 + 5)
    (found,) = client(app).schedules.all()
    assert found.spec.every == 30.0 and found.standing.started == 7
    # And when the class no longer declares it, it goes
    scheduler(app, Registry([replace(changed, schedules=(), version=3)])).sync(T0 + 10)
    assert client(app).schedules.all() == []


def test_a_run_time_schedule_of_a_declared_name_is_left_alone(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    Schedules(app.redis, app.keys).add(spec_of("heartbeat", name="heartbeat", every=600), T0)
    scheduler(app, Registry([wf.Heartbeat])).sync(T0)
    (found,) = client(app).schedules.all()
    assert (found.spec.declared, found.spec.every) == (False, 600.0)
    assert "also added at run time" in caplog.text


def test_an_unreadable_stored_schedule_is_set_aside_and_the_others_run(app: App) -> None:
    schedules = Schedules(app.redis, app.keys)
    schedules.add(spec_of(), T0)
    schedules.add(spec_of(name="t"), T0)
    app.redis.hset(app.keys.schedules, "t", b'{"name": "t", "cron": "not a cron"}')
    assert scheduler(app).run_due(T0 + 60) == 1
    assert instances(app) == [tick_id("s", T0 + 60)]
    (letter,) = client(app).dead_letters.read()
    assert letter["source"] == "schedules" and "unreadable" in letter["reason"]
    assert [s.spec.name for s in schedules.all()] == ["s"]


def test_a_schedule_of_a_workflow_not_loaded_here_waits(app: App) -> None:
    Schedules(app.redis, app.keys).add(spec_of("heartbeat", name="h"), T0)
    assert scheduler(app, Registry([wf.Waiter])).run_due(T0 + 60) == 0
    assert instances(app, "heartbeat") == []
    due = app.redis.zscore(app.keys.schedules_due, "h")
    assert due == T0 + 120  # tried again a minute later
    # A worker that loads it starts the missed tick (catch-up "one") and the current one
    assert scheduler(app).run_due(T0 + 120) == 2
    assert instances(app, "heartbeat") == [tick_id("h", T0 + 60), tick_id("h", T0 + 120)]


def test_the_stored_spec_is_plain_json_without_secrets_of_code(app: App) -> None:
    Schedules(app.redis, app.keys).add(spec_of(cron="0 9 * * MON-FRI", every=None), T0)
    raw = app.redis.hget(app.keys.schedules, "s")
    assert raw is not None
    assert json.loads(raw)["cron"] == "0 9 * * MON-FRI"
