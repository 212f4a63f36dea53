"""`orchestrator subscriptions` and the worker that delivers them, as a user runs them:
the CLI in a process of its own, a real Redis, a real receiver on 127.0.0.1 checking each
request with standardwebhooks (tests/runtime/test_relay.py has the receiver)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.entry.bootstrap import App, bootstrap
from orchestrator.entry.settings import Settings
from orchestrator.entry.subscriptions import Subscriptions
from orchestrator.runtime.relay import secret_problem
from orchestrator.store.published import PublishedStreams
from tests.conftest import ROOT, cli_env, run_cli
from tests.runtime.test_relay import SECRET, Receiver, serve

WORKFLOWS = "tests.webhook_workflows"


@pytest.fixture
def shop(redis_url: str, tmp_path: Path) -> App:
    return bootstrap(
        Settings(redis_url=redis_url, workflows=(WORKFLOWS,), partitions=4, data_dir=tmp_path)
    )


@pytest.fixture
def env(redis_url: str, tmp_path: Path) -> dict[str, str]:
    return cli_env(
        redis_url,
        tmp_path,
        ORCHESTRATOR_WORKFLOWS=WORKFLOWS,
        HOOK_SECRET=SECRET,
        WEBHOOK_ALLOW_PRIVATE="1",
        WEBHOOK_SUBSCRIPTION_TRIES="2",
        WEBHOOK_SUBSCRIPTION_BACKOFF="0.05",
        WEBHOOK_SUBSCRIPTION_MAX_BACKOFF="0.2",
    )


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    server = serve(found)
    try:
        yield found
    finally:
        server.shutdown()
        server.server_close()


def ok(*args: str, env: dict[str, str]) -> str:
    result = run_cli(*args, env=env)
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stdout + result.stderr
    return result.stdout


def place(app: App, order_id: str) -> str:
    iid = app.client.start("webhook_order", {"order_id": order_id, "amount": 1.0})
    applier = app.applier()
    try:
        applier.drain()
    finally:
        applier.release()
    return iid


def nothing_written(app: App) -> bool:
    return (
        not app.redis.exists(app.keys.subscriptions)
        and PublishedStreams(app.redis, app.keys).groups() == []
    )


def test_add_list_dead_letters_redeliver_and_remove(
    shop: App, env: dict[str, str], receiver: Receiver
) -> None:
    # a fresh secret, fit for a subscription's variable
    made = ok("subscriptions", "new-secret", env=env).strip()
    assert made != SECRET and secret_problem("S", {"S": made}) is None
    # Given a subscription added from the command line
    added = json.loads(
        ok(
            "subscriptions",
            "add",
            f"{receiver.url}/hooks?token=abc",
            "--events",
            "order.*",
            "--events",
            "invoice.created",
            "--secret-env",
            "HOOK_SECRET",
            "--id",
            "orders",
            "--json",
            env=env,
        )
    )
    assert added["id"] == "orders" and added["secret_env"] == "HOOK_SECRET"
    assert added["events"] == ["order.*", "invoice.created"] and added["dead"] == 0
    # and a receiver that refuses order.placed of order A for good
    receiver.answer = lambda event, n: (
        410 if (event["type"], event["data"]["order_id"]) == ("order.placed", "A") else 200
    )
    place(shop, "A")
    # When a worker runs in burst mode, it delivers what is due
    ok("worker", "--burst", env=env)
    assert [(r.type, r.status) for r in receiver.requests] == [
        ("order.placed", 410),
        ("invoice.created", 200),
    ]
    assert all(r.verified and r.path == "/hooks?token=abc" for r in receiver.requests)
    # Then list shows the counts and the last error, with the variable's name only
    (listed,) = json.loads(ok("subscriptions", "list", "--json", env=env))
    assert (listed["delivered"], listed["pending"], listed["dead"]) == (1, 0, 1)
    assert listed["last_error"]["status"] == 410 and "token" not in listed["last_error"]["error"]
    text = ok("subscriptions", "list", env=env)
    assert "orders" in text and "HOOK_SECRET" in text and "410" in text
    (letter,) = json.loads(ok("subscriptions", "dead-letters", "orders", "--json", env=env))
    assert (letter["type"], letter["attempts"], letter["status"]) == ("order.placed", 1, 410)
    assert letter["id"] == receiver.requests[0].headers["webhook-id"]
    # When the receiver takes it now and it is redelivered
    receiver.answer = lambda event, n: 200
    refused = run_cli("subscriptions", "redeliver", "orders", "no-such-id", env=env)
    assert refused.returncode == 1 and "no dead letter no-such-id" in refused.stderr
    queued = ok("subscriptions", "redeliver", "orders", letter["id"], env=env)
    assert "1 dead letters queued" in queued
    ok("worker", "--burst", env=env)
    # Then it went out again with its id, and the dead letters are empty
    assert receiver.requests[-1].headers["webhook-id"] == letter["id"]
    assert receiver.requests[-1].status == 200 and receiver.requests[-1].verified
    assert "no dead letters" in ok("subscriptions", "dead-letters", "orders", env=env)
    # And remove drops it, its group and its dead letters
    assert "removed" in ok("subscriptions", "remove", "orders", env=env)
    assert nothing_written(shop)
    assert "no subscriptions" in ok("subscriptions", "list", env=env)
    gone = run_cli("subscriptions", "remove", "orders", env=env)
    assert gone.returncode == 1 and "no subscription 'orders'" in gone.stderr


@pytest.mark.parametrize(
    ("args", "extra", "message"),
    [
        (("ftp://example.com/hooks", "--events", "order.*"), {}, "http or https"),
        (("https://example.com/hooks", "--events", "Order.*"), {}, "a pattern is an event type"),
        (
            ("https://example.com/hooks", "--events", "order.*"),
            {"HOOK_SECRET": ""},
            "HOOK_SECRET is not set",
        ),
        (
            ("https://example.com/hooks", "--events", "order.*"),
            {"HOOK_SECRET": "swordfish-not-a-key"},
            "does not hold a Standard Webhooks secret",
        ),
        (
            ("http://127.0.0.1:9/hooks", "--events", "order.*"),
            {"WEBHOOK_ALLOW_PRIVATE": "0"},
            "loopback address; refused",
        ),
    ],
    ids=["scheme", "pattern", "unset-secret", "malformed-secret", "private"],
)
def test_add_refuses_and_writes_nothing(
    shop: App, env: dict[str, str], args: tuple[str, ...], extra: dict[str, str], message: str
) -> None:
    given = {**env, **extra}
    if given.get("HOOK_SECRET") == "":
        del given["HOOK_SECRET"]
    result = run_cli("subscriptions", "add", *args, "--secret-env", "HOOK_SECRET", env=given)
    assert result.returncode == 1, result.stdout
    assert message in result.stderr and len(result.stderr.splitlines()) == 1
    assert "swordfish" not in result.stderr and SECRET not in result.stderr
    assert nothing_written(shop)


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, what
        time.sleep(0.05)
    return found


def test_a_worker_delivers_and_ctrl_c_stops_its_relay_with_it(
    shop: App, env: dict[str, str], receiver: Receiver
) -> None:
    subs = Subscriptions(shop.redis, shop.keys, environ=env)
    sub = subs.add(receiver.url, ["order.*"], "HOOK_SECRET")
    worker = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "worker", "--processes", "1", "--notifiers", "0"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        place(shop, "A")
        wait_for(lambda: receiver.delivered(), 20, "the worker delivered nothing")
        assert receiver.types() == ["order.placed"] and receiver.requests[0].verified
        owner = subs.get(sub.id).subscription.state.owner
        assert owner is not None  # the worker's relay holds the subscription
        began = time.monotonic()
        os.killpg(worker.pid, signal.SIGINT)
        worker.wait(10)
        took = time.monotonic() - began
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
        output, _ = worker.communicate(timeout=10)
    assert worker.returncode == 0, output
    assert took < 3, f"stopping took {took:.2f}s\n{output}"
    assert "Traceback" not in output and SECRET not in output
    # the relay stopped with it: it gave its lease back on the way out
    assert subs.get(sub.id).subscription.state.owner is None
