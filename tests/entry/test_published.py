"""Published events against a real Redis: written in the step's commit as CloudEvents,
shaped by their schemas, read back by position and by consumer group (issue #17)."""

from __future__ import annotations

import json
import signal
import time
from dataclasses import replace
from pathlib import Path

import pytest
from cloudevents.core.formats.json import JSONFormat

from orchestrator.entry.bootstrap import App, bootstrap
from orchestrator.entry.settings import Settings
from orchestrator.store.published import PublishedStreams, position
from tests.conftest import cli_env, run_cli

WORKFLOWS = ("tests.outbox_workflows",)


@pytest.fixture
def shop(redis_url: str, tmp_path: Path) -> App:
    return bootstrap(
        Settings(redis_url=redis_url, workflows=WORKFLOWS, partitions=4, data_dir=tmp_path)
    )


def sell(app: App, sale_id: str, *, ship: bool = True) -> str:
    iid = app.client.start("sale", {"sale_id": sale_id, "amount": 12.5, "secret": "x"})
    app.client.emit("sale.paid", {"method": "iban"}, key=("sale_id", sale_id))
    if ship:
        app.client.emit("sale.shipped", {"tracking": f"T-{sale_id}"}, key=("sale_id", sale_id))
    return iid


def published(app: App) -> list[dict[str, object]]:
    return [p.event for p in app.client.published("start")]


def test_each_step_publishes_its_events_as_cloudevents_in_order(shop: App) -> None:
    iid = sell(shop, "S1")
    shop.applier().drain()
    events = published(shop)
    assert [e["type"] for e in events] == ["sale.opened", "sale.paid", "sale.shipped"]
    # shaped by the schema: its fields only (the context's "secret" is not published)
    assert [e["data"] for e in events] == [
        {"sale_id": "S1", "amount": 12.5},
        {"sale_id": "S1", "method": "iban"},
        {"sale_id": "S1", "tracking": "T-S1"},
    ]
    first = events[0]
    assert first["subject"] == iid and first["source"] == "/orch/workflows/sale"
    assert first["dataschema"] == "urn:orch:schemas:sale.opened:v1"
    assert events[2]["dataschema"] == "urn:orch:schemas:sale.shipped:v2"
    # ids: the instance, its step and the effect's place: unique and stable
    assert len({e["id"] for e in events}) == 3 and all(str(e["id"]).startswith(iid) for e in events)
    # the CloudEvents SDK reads them as they are stored
    parsed = JSONFormat().read(None, json.dumps(first))
    assert (parsed.get_type(), parsed.get_specversion(), parsed.get_data()) == (
        "sale.opened",
        "1.0",
        {"sale_id": "S1", "amount": 12.5},
    )
    # history names what the step published
    effects = [e for h in shop.client.history(iid) for e in h["effects"]]
    assert "publish sale.paid" in effects


def test_a_payload_that_does_not_fit_its_schema_dead_letters_its_event(shop: App) -> None:
    iid = shop.client.start("sale", {"sale_id": "S2", "amount": "not a number"})
    shop.applier().drain()
    assert shop.client.status(iid).state is None  # not applied: no transition, no event
    assert published(shop) == []
    (letter,) = shop.client.dead_letters.read()
    assert "published event sale.opened data does not fit its schema" in letter["reason"]
    assert "field 'amount'" in letter["reason"]


def test_lifecycle_events_when_the_deployment_asks_for_them(shop: App) -> None:
    app = bootstrap(replace(shop.settings, publish_lifecycle=True))
    sell(app, "S3", ship=False)
    app.client.emit("sale.voided", key=("sale_id", "S3"))
    app.applier().drain()
    types = [e["type"] for e in published(app)]
    assert types == [
        "sale.opened",
        "orchestrator.workflow.started",
        "sale.paid",
        "orchestrator.workflow.transitioned",
        "orchestrator.workflow.transitioned",
        "orchestrator.workflow.failed",
    ]
    last = published(app)[-1]
    assert last["data"] == {"workflow": "sale", "version": 1, "state": "voided"}
    assert "dataschema" not in last


def test_without_lifecycle_a_workflow_that_publishes_nothing_writes_no_stream(app: App) -> None:
    iid = app.client.start("counter")
    app.applier().drain()
    assert app.client.status(iid).state is not None
    assert all(app.redis.exists(k) == 0 for k in app.keys.all_published())


def test_killed_before_its_commit_the_step_publishes_once_with_the_same_ids(
    shop: App, tmp_path: Path
) -> None:
    ids = [sell(shop, f"K{n}") for n in range(4)]
    env = cli_env(
        shop.settings.redis_url,
        tmp_path,
        ORCHESTRATOR_CRASH_AT="before_commit",
        ORCHESTRATOR_LEASE_TTL="1",
        ORCHESTRATOR_WORKFLOWS=",".join(WORKFLOWS),
    )
    crashed = run_cli("worker", "--burst", env=env)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    assert published(shop) == []  # killed before the commit: no step, no event
    survivor = bootstrap(replace(shop.settings, lease_ttl=1.0)).applier()
    deadline = time.monotonic() + 10
    while len(survivor.leases.owned) < shop.keys.partitions and time.monotonic() < deadline:
        survivor.leases.maintain(force=True)
        time.sleep(0.1)
    survivor.drain()
    events = published(shop)
    assert len(events) == 12 and len({e["id"] for e in events}) == 12
    for iid in ids:  # in order per instance, one per step that publishes
        mine = [e["type"] for e in events if e["subject"] == iid]
        assert mine == ["sale.opened", "sale.paid", "sale.shipped"]


def test_a_subscriber_acknowledges_after_its_handler_and_gets_back_what_it_left(
    shop: App,
) -> None:
    client = shop.client
    for n in range(3):
        sell(shop, f"G{n}")
    # a group created now reads only what comes next
    assert list(client.subscribe("billing", idle_timeout=0.2, block=0.05)) == []
    shop.applier().drain()
    seen = []
    for event in client.subscribe("billing", types=["sale.paid"], consumer="c1", block=0.05):
        seen.append(event.id)
        if len(seen) == 2:
            break  # the handler of the second did not return: not acknowledged
    # the same consumer, back: from the unacknowledged one on, in order, once each (the
    # batch it had read was delivered to it; what came before was acknowledged)
    # (an entry holds the events of one commit of a partition and is acknowledged as a
    # whole: the events before seen[1] in its entry come again too)
    every = [e.id for e in client.published("start")]
    again = [e.id for e in client.subscribe("billing", consumer="c1", idle_timeout=0.3)]
    assert len(every) == 9 and seen[1] in again
    assert again == every[every.index(again[0]) :]
    assert every.index(again[0]) <= every.index(seen[1])
    # nothing left pending for the group
    assert list(client.subscribe("billing", consumer="c1", idle_timeout=0.2, block=0.05)) == []


def test_another_consumer_claims_what_a_dead_one_left_pending(shop: App) -> None:
    sell(shop, "D1", ship=False)
    client = shop.client
    list(client.subscribe("audit", start="start", idle_timeout=0.1, block=0.05, stop=lambda: True))
    shop.applier().drain()
    dead = client.subscribe("audit", consumer="dead", block=0.05)
    first = next(dead)  # read, never acknowledged: its process "died"
    taken = [
        e.id
        for e in client.subscribe(
            "audit", consumer="heir", claim_after=0.2, block=0.05, idle_timeout=0.6
        )
    ]
    assert first.id in taken and len(taken) == 2


def test_positions_from_start_moment_ago_entry_id_and_refusals() -> None:
    assert position("start") == "0-0" and position(None) == "$" and position("end") == "$"
    assert position("1733500000000-3") == "1733500000000-3"
    assert position("2026-12-06T10:00:00Z") == "1796551200000-0"
    assert position("15m", now=1000.0) == "100000-0"
    assert position(12.5) == "12500-0"
    for bad in ("yesterday", "2026-12-06T10:00:00", "-5"):
        with pytest.raises(Exception, match="--from"):
            position(bad)


def test_the_streams_are_trimmed_by_age(shop: App) -> None:
    sell(shop, "R1")
    shop.applier().drain()
    streams = PublishedStreams(shop.redis, shop.keys)
    streams.trim(range(shop.keys.partitions), keep_for=3600, now=time.time())
    assert len(published(shop)) == 3
    streams.trim(range(shop.keys.partitions), keep_for=0, now=time.time() + 5)
    assert published(shop) == []


def test_events_tail_prints_filters_and_follows(shop: App, tmp_path: Path) -> None:
    for n in range(3):
        sell(shop, f"T{n}")
    applier = shop.applier()
    applier.drain()
    env = cli_env(shop.settings.redis_url, tmp_path, ORCHESTRATOR_WORKFLOWS=",".join(WORKFLOWS))
    last = run_cli("events", "tail", "-n", "2", env=env)
    assert last.returncode == 0, last.stderr
    every = run_cli("events", "tail", "--from", "start", env=env).stdout.splitlines()
    assert len(every) == 9 and last.stdout.splitlines() == every[-2:]
    assert any("sale.shipped" in line and '"tracking":"T-T2"' in line for line in every)
    paid = run_cli("events", "tail", "--from", "start", "--type", "sale.p*", "--json", env=env)
    docs = [json.loads(line) for line in paid.stdout.splitlines()]
    assert sorted(d["data"]["sale_id"] for d in docs) == ["T0", "T1", "T2"]
    assert {d["type"] for d in docs} == {"sale.paid"} and docs[0]["specversion"] == "1.0"
    bad = run_cli("events", "tail", "--from", "yesterday", env=env)
    assert bad.returncode != 0 and "--from 'yesterday'" in bad.stderr
    assert "Traceback" not in bad.stderr
    # --follow prints what comes next, until stopped
    import subprocess
    import sys

    from tests.conftest import ROOT

    follower = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "events", "tail", "-f", "--json"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.5)  # started and waiting at the end of the streams
        sell(shop, "T9", ship=False)
        applier.drain()
        assert follower.stdout is not None
        first = json.loads(follower.stdout.readline())  # the test times out if none comes
        assert (first["type"], first["data"]["sale_id"]) == ("sale.opened", "T9")
    finally:
        follower.terminate()
        follower.wait(timeout=10)
        if follower.stdout is not None:
            follower.stdout.close()
    assert follower.returncode == 0


SUBSCRIBER = """
import json, sys, time
from orchestrator.entry.bootstrap import bootstrap
from orchestrator.entry.settings import Settings
app = bootstrap(Settings.from_env())
with open(sys.argv[1], "a") as out:
    for event in app.client.subscribe("audit", start="start", consumer="c1", idle_timeout=1.0):
        out.write(json.dumps([event.id, event.subject]) + "\\n")
        out.flush()
        time.sleep(0.02)  # a handler at work: the kill lands mid-stream
"""


def test_a_subscriber_killed_mid_stream_resumes_losing_and_reordering_nothing(
    shop: App, tmp_path: Path
) -> None:
    import subprocess
    import sys

    from tests.conftest import ROOT

    for n in range(30):
        sell(shop, f"M{n}")
    shop.applier().drain()
    every = shop.client.published("start")
    assert len(every) == 90
    env = cli_env(shop.settings.redis_url, tmp_path, ORCHESTRATOR_WORKFLOWS=",".join(WORKFLOWS))
    log = tmp_path / "received.jsonl"
    command = [sys.executable, "-c", SUBSCRIBER, str(log)]
    first = subprocess.Popen(command, env=env, cwd=ROOT)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (
        not log.exists() or len(log.read_text().splitlines()) < 30
    ):
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)  # mid-stream, a batch read and not acknowledged
    first.wait(10)
    before = len(log.read_text().splitlines())
    assert 30 <= before < 90
    again = subprocess.run(command, env=env, cwd=ROOT, timeout=60)
    assert again.returncode == 0
    received = [tuple(json.loads(line)) for line in log.read_text().splitlines()]
    # nothing lost: every event was handled, at least once
    assert {i for i, _ in received} == {e.id for e in every}
    # nothing reordered: each instance's events, first handlings in published order
    for subject in {e.subject for e in every}:
        published_order = [e.id for e in every if e.subject == subject]
        handled: list[str] = []
        for event_id, s in received:
            if s == subject and event_id not in handled:
                handled.append(event_id)
        assert handled == published_order
    # at least once: only what was in flight at the kill came twice
    assert len(received) - len(set(received)) <= 100
