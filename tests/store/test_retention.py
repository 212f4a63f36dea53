"""Retention: finished instances and their history expire; status and list say so."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import pytest

from orchestrator.core.durations import duration
from orchestrator.core.errors import ConfigurationError, UnknownInstance
from orchestrator.entry.bootstrap import bootstrap
from orchestrator.entry.settings import Settings
from orchestrator.entry.worker import run_burst
from tests.conftest import cli_env, run_cli


def test_finished_instances_expire_and_say_so(settings: Settings, tmp_path: Path) -> None:
    app = bootstrap(replace(settings, retention=1.0))
    done = app.client.start("counter")
    running = app.client.start("counter")
    run_burst(app)
    app.client.emit("finish", instance_id=done)
    run_burst(app)
    # The finished one's keys carry a time to live; the running one's do not
    assert 0 < app.redis.ttl(app.keys.instance(done)) <= 1
    assert 0 < app.redis.ttl(app.keys.archive(done)) <= 1  # its history, folded
    assert not app.redis.exists(app.keys.history(done))
    assert app.redis.ttl(app.keys.instance(running)) == -1
    time.sleep(1.2)
    assert app.applier().retention.clean() == 1
    # Then status names the expiry, list leaves it out and says so
    with pytest.raises(UnknownInstance, match=r"has expired: .* kept for 1s"):
        app.client.status(done)
    with pytest.raises(UnknownInstance, match="no instance with id 'never'"):
        app.client.status("never")
    assert [i.id for i in app.client.list()] == [running]
    env = cli_env(settings.redis_url, tmp_path, ORCHESTRATOR_RETENTION="1s")
    shown = run_cli("status", done, env=env)
    assert shown.returncode == 1 and "has expired" in shown.stderr
    listed = run_cli("list", env=env)
    assert running in listed.stdout and done not in listed.stdout
    assert "1 finished instance(s) expired" in listed.stdout


def test_a_finished_history_is_archived_whole_and_late_events_join_it(settings: Settings) -> None:
    app = bootstrap(replace(settings, retention=3600.0))
    iid = app.client.start("counter")
    run_burst(app)
    app.client.emit("tick", instance_id=iid)
    run_burst(app)
    live = app.client.history(iid)
    # When it finishes, the stream goes and the archive holds every entry, in order
    app.client.emit("finish", instance_id=iid)
    run_burst(app)
    archived = app.client.history(iid)
    assert archived[: len(live)] == live
    assert [h["seq"] for h in archived] == list(range(1, len(live) + 2))
    assert archived[-1]["event"]["type"] == "finish"
    assert not app.redis.exists(app.keys.history(iid))
    ttl = app.redis.pttl(app.keys.archive(iid))
    assert 0 < ttl <= 3600_000
    # And an event arriving later is recorded at the end, the archive keeping its expiry
    app.client.emit("tick", instance_id=iid)
    run_burst(app)
    late = app.client.history(iid)
    assert late[:-1] == archived
    assert (late[-1]["event"]["type"], late[-1]["outcome"]) == ("tick", "ignored")
    assert not app.redis.exists(app.keys.history(iid))
    assert 0 < app.redis.pttl(app.keys.archive(iid)) <= ttl
    # And replay from the archive gives the stored instance
    report = app.client.replay(iid)
    assert report.matches and report.events == len(late)


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("15m", 900), ("12h", 43200), ("7d", 604800)]
)
def test_durations(text: str, seconds: float) -> None:
    assert duration(text, "X") == seconds


@pytest.mark.parametrize("text", ["", "0", "-1d", "soon", "7w"])
def test_bad_durations_are_clear_errors(text: str) -> None:
    with pytest.raises(ConfigurationError, match="X must be a positive duration"):
        duration(text, "X")


def test_the_janitor_keeps_up_with_more_than_a_batch_a_minute(settings: Settings) -> None:
    # Given 2,500 finished instances past their retention (150 a second finish in a soak,
    # 9,000 between two runs of the janitor), filed as the finishing commit files them
    app = bootstrap(replace(settings, retention=1.0))
    retention = app.applier().retention
    keys = app.keys
    pipe = app.redis.pipeline(transaction=False)
    for n in range(2500):
        iid = f"i{n}"
        member = {"id": iid, "workflow": "counter", "state": "done", "status": "completed"}
        pipe.zadd(keys.expiring, {json.dumps(member, sort_keys=True): time.time() - 1})
        pipe.zadd(keys.all_instances, {iid: n})
        pipe.zadd(keys.by_workflow("counter"), {iid: n})
        pipe.sadd(keys.by_status("completed"), iid)
        pipe.sadd(keys.by_state("counter", "done"), iid)
    pipe.execute()
    # When the janitor runs once
    assert retention.clean() == 2500
    # Then every one left the indexes, and is remembered as expired
    for key in (keys.expiring, keys.all_instances, keys.by_workflow("counter")):
        assert app.redis.zcard(key) == 0
    assert not app.redis.exists(keys.by_status("completed"), keys.by_state("counter", "done"))
    assert app.redis.zcard(keys.expired) == 2500
    # And forgotten once expired for as long as the retention, though none expires then
    assert retention.clean(time.time() + 1.5) == 0
    assert not app.redis.exists(keys.expired)
    assert float(app.redis.hget(keys.meta, "retention") or 0) == 1.0  # published for the ledger
