"""End to end: the `orchestrator` command line, run in subprocesses against a real Redis.

Every command here is a separate `python -m cli.main` process, as a user would
run it; the state they share lives only in Redis. Errors meant for users must
be one line on stderr starting with "error: ", exit code 1 and no traceback
(exit 70, "internal error", is how the CLI reports its own bugs).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from orchestrator.store.embedded import socket_path
from support.ports import free_port
from tests.conftest import ROOT, cli_env, run_cli

Env = dict[str, str]
NEW_ID = re.compile(r"[0-9a-f]{20}")
SECRET = "s3cretpass"
# what `status --json` promises, at least
STATUS_FIELDS = {
    "id",
    "workflow",
    "version",
    "state",
    "status",
    "context",
    "created_at",
    "updated_at",
}


# -- helpers ----------------------------------------------------------------------


@pytest.fixture
def env(redis_url: str, tmp_path: Path) -> Env:
    return cli_env(redis_url, tmp_path)


@pytest.fixture
def unreachable() -> tuple[Env, int]:
    """An environment whose REDIS_URL (with a password) names a port nobody listens on."""
    port = free_port()
    url = f"redis://:{SECRET}@127.0.0.1:{port}/0"
    return cli_env(url, Path("/nonexistent-orchestrator-home")), port


def ok(*args: str, env: Env, input_text: str | None = None) -> str:
    """Run a command that must succeed; return its standard output."""
    result = run_cli(*args, env=env, input_text=input_text)
    assert result.returncode == 0, f"{args} exited {result.returncode}: {result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    return result.stdout


def ok_json(*args: str, env: Env) -> Any:
    return json.loads(ok(*args, "--json", env=env))


def fails(*args: str, env: Env, input_text: str | None = None) -> str:
    """Run a command that must fail as a user error; return its one line on stderr."""
    result = run_cli(*args, env=env, input_text=input_text)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 1, f"{args} exited {result.returncode}: {result.stderr}"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got: {result.stderr!r}"
    assert lines[0].startswith("error: "), lines[0]
    assert result.stdout == "", result.stdout
    return lines[0]


def start(env: Env, workflow: str, data: dict[str, Any] | None = None) -> str:
    args = ["start", workflow] + (["--input", json.dumps(data)] if data is not None else [])
    out = ok(*args, env=env).strip()
    assert NEW_ID.fullmatch(out), out
    return out


def burst(env: Env) -> int:
    """Run `worker --burst`; return how many events it applied."""
    result = run_cli("worker", "--burst", env=env)
    out, err = result.stdout, result.stderr
    assert result.returncode == 0, err
    # the only tracebacks are those of failed tasks, logged at WARNING
    assert err.count("Traceback") == err.count(" WARNING orchestrator.runtime.tasks: "), err
    found = re.search(r"burst done: (\d+) events applied", out)
    assert found, out
    return int(found.group(1))


def status(env: Env, instance_id: str) -> dict[str, Any]:
    found: dict[str, Any] = ok_json("status", instance_id, env=env)
    return found


def history(env: Env, instance_id: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = ok_json("history", instance_id, env=env)
    return found


def order(order_id: str, **extra: Any) -> dict[str, Any]:
    return {"order_id": order_id, "email": f"{order_id}@example.com", "work_seconds": 0, **extra}


def listed_ids(text: str) -> list[str]:
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines[0].split()[:2] == ["ID", "WORKFLOW"], text  # the table's header
    return [line.split()[0] for line in lines[1:]]


def stop_embedded(env: Env, home: Path) -> None:
    """Stop the embedded Redis a test started, even if `server stop` is broken."""
    pidfile = home / "redis.pid"
    if not pidfile.exists():
        return
    try:
        pid = int(pidfile.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        cmdline = b""
    if b"redis-server" in cmdline:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    else:
        run_cli("server", "stop", env=env)
    deadline = time.monotonic() + 10
    while pidfile.exists() and time.monotonic() < deadline:  # redis removes it on exit
        time.sleep(0.05)


# -- the happy path ---------------------------------------------------------------------


def test_start_runs_to_the_end_and_is_visible_in_status_and_list(env: Env) -> None:
    # Given an order that will ship and one whose card will be declined
    good = start(env, "order", order("A1"))
    started = ok_json(
        "start", "order", "--input", json.dumps(order("A2", card="declined")), env=env
    )
    assert started["workflow"] == "order"
    bad = started["id"]
    assert NEW_ID.fullmatch(bad) and bad != good
    # (starting runs nothing: both wait for a worker)
    assert status(env, good)["status"] == "pending"

    # When a burst worker runs until nothing is left to do
    assert burst(env) > 0

    # Then the first shipped, with every documented field in `status --json`
    shipped = status(env, good)
    assert set(shipped) >= STATUS_FIELDS
    assert (shipped["id"], shipped["workflow"], shipped["version"]) == (good, "order", 1)
    assert (shipped["state"], shipped["status"]) == ("shipped", "completed")
    assert shipped["context"]["tracking"] == "TRK-A1"
    assert shipped["context"]["charge"] == "CH-A1"
    assert shipped["created_at"] <= shipped["updated_at"]
    # and the declined one failed, after releasing its stock
    failed = status(env, bad)
    assert (failed["state"], failed["status"]) == ("failed", "failed")
    assert failed["context"]["released"] == "R-A2"
    assert "charge" not in failed["context"]
    text = ok("status", good, env=env)
    assert text.startswith(f"{good}  order v1")
    assert re.search(r"state:\s+shipped", text) and re.search(r"status:\s+completed", text)

    # And `list` shows both, and filters them by workflow, status and state
    everything = ok_json("list", env=env)
    assert {i["id"]: (i["state"], i["status"]) for i in everything} == {
        good: ("shipped", "completed"),
        bad: ("failed", "failed"),
    }
    assert all(set(i) >= STATUS_FIELDS for i in everything)
    assert listed_ids(ok("list", "--workflow", "order", "--status", "completed", env=env)) == [good]
    assert listed_ids(ok("list", "--workflow", "order", "--status", "failed", env=env)) == [bad]
    assert listed_ids(ok("list", "--state", "shipped", "--workflow", "order", env=env)) == [good]
    assert listed_ids(ok("list", "--state", "shipped", env=env)) == [good]


def test_history_shows_every_transition_in_order(env: Env) -> None:
    # Given an order run to the end
    instance = start(env, "order", order("H1"))
    burst(env)

    # When its history is read, as JSON and as text
    entries = history(env, instance)
    text = ok("history", instance, env=env)

    # Then the entries are numbered 1..n, each starting where the previous one ended
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
    assert entries[0]["event"]["type"] == "workflow.started"
    assert entries[0]["event"]["data"]["input"]["order_id"] == "H1"
    for before, after in itertools.pairwise(entries):
        assert after["from"] == before["to"]
    moves = [(e["from"], e["to"]) for e in entries if e["outcome"] in ("started", "transition")]
    assert moves == [
        (None, "reserving"),
        ("reserving", "charging"),
        ("charging", "shipping"),
        ("shipping", "shipped"),
    ]
    assert entries[-1]["to"] == "shipped"
    # and the text has one numbered line per entry, in the same order, effects indented
    numbered = [line for line in text.splitlines() if re.match(r"\s*\d+\s", line)]
    assert [int(line.split()[0]) for line in numbered] == [e["seq"] for e in entries]
    for line, entry in zip(numbered, entries, strict=True):
        assert entry["event"]["type"] in line
        assert f"{entry['from'] or '-'} -> {entry['to'] or '-'}" in line
    assert "-> run task workflows.order.tasks:reserve_stock" in text


def test_input_from_a_file_and_from_stdin(env: Env, tmp_path: Path) -> None:
    # Given inputs in a file (with non-ASCII text) and on standard input
    given = {"who": "Zoë", "nested": {"list": [1, 2.5, None, True]}}
    path = tmp_path / "input.json"
    path.write_text(json.dumps(given, ensure_ascii=False), encoding="utf-8")

    # When counters are started from them and applied
    from_file = ok("start", "counter", "--input", f"@{path}", env=env).strip()
    assert NEW_ID.fullmatch(from_file)
    from_stdin = ok(
        "start", "counter", "--input", "@-", env=env, input_text='{"via": "stdin"}'
    ).strip()
    burst(env)

    # Then their context is exactly that input
    assert status(env, from_file)["context"] == given
    assert status(env, from_stdin)["context"] == {"via": "stdin"}


def test_workflows_and_graph_need_no_redis(unreachable: tuple[Env, int]) -> None:
    # Given a REDIS_URL nobody answers: reading definitions must not need it
    env, _ = unreachable

    # When the workflows are listed
    rows = {row["name"]: row for row in ok_json("workflows", env=env)}

    # Then the order workflow is described with its states and what starts it
    assert {"order", "approval", "counter"} <= set(rows)
    assert rows["order"]["version"] == 1
    assert rows["order"]["versions"] == [1]
    assert rows["order"]["initial"] == "reserving"
    assert rows["order"]["starts_on"] == ["order.placed"]
    assert rows["order"]["correlate_by"] == "order_id"
    assert rows["order"]["states"] == ["reserving", "charging", "shipping", "shipped", "failed"]
    assert rows["approval"]["starts_on"] == ["request.opened"]
    text = ok("workflows", env=env)
    assert re.search(r"^order v1 .*starts on: order\.placed$", text, re.M)

    # And its graph prints as Mermaid by default, and as Graphviz DOT on request
    mermaid = ok("graph", "order", env=env)
    assert mermaid.startswith("stateDiagram-v2")
    assert "[*] --> reserving" in mermaid
    assert "reserving --> charging : task.completed" in mermaid
    assert "charging --> failed : task.failed / compensate" in mermaid
    assert "shipped --> [*]" in mermaid
    dot = ok("graph", "order", "--format", "dot", env=env)
    assert dot.startswith("digraph")
    assert '"reserving" -> "charging" [label="task.completed"]' in dot
    assert dot.rstrip().endswith("}")


def test_help_of_the_root_and_of_emit(unreachable: tuple[Env, int]) -> None:
    # Given no reachable Redis (help needs none)
    env, _ = unreachable

    # Then the root's help lists its options and every command, one a line
    root = ok("--help", env=env)
    for option in ("--redis-url", "--workflows", "--debug"):
        assert option in root, option
    for command in ("workflows", "graph", "start", "emit", "status", "list", "history", "cancel"):
        assert re.search(rf"^\s+{command}\s+\S", root, re.M), command
    assert re.search(r"^\s+worker\s", root, re.M) and re.search(r"^\s+redis\s", root, re.M)
    assert not re.search(r"^\s+server\s", root, re.M)  # its former name: hidden, still works
    # and emit's help its argument and options
    emit = ok("emit", "--help", env=env)
    assert "event_type" in emit.lower()
    for option in ("--instance", "--key", "--task", "--data", "--id", "--json"):
        assert re.search(rf"(^|\s){option}\b", emit, re.M), option


# -- events -------------------------------------------------------------------------


def test_emit_starts_an_instance_and_a_key_reaches_it_again(env: Env) -> None:
    # Given nothing running: an event type that starts a workflow starts one
    out = ok("emit", "order.placed", "--data", json.dumps(order("X1")), env=env)
    found = re.fullmatch(r"([0-9a-f]{20})\n", out)  # the id alone: ID=$(orchestrator emit)
    assert found, out
    x1 = found.group(1)
    second = ok_json("emit", "order.placed", "--data", json.dumps(order("X2")), env=env)
    assert second["started"] is True
    assert NEW_ID.fullmatch(second["instance"]) and second["instance"] != x1

    # When events are sent by business key
    again = ok_json("emit", "order.placed", "--key", "order_id=X1", env=env)
    line = ok("emit", "order.placed", "--key", "order_id=X1", "--id", "placed-again", env=env)

    # Then they reach the instance that answers to it, without starting another
    assert again["started"] is False and again["instance"] == x1
    assert line == f"{x1}\n"
    burst(env)
    event_ids = [e["event"]["id"] for e in history(env, x1)]
    assert again["event_id"] in event_ids and "placed-again" in event_ids


def test_approval_is_driven_by_external_events(env: Env) -> None:
    # Given a request opened by an event, approved and paid by its business key
    out = ok("emit", "request.opened", "--data", '{"request_id": "R1", "minimum": 5}', env=env)
    request = out.strip()
    assert NEW_ID.fullmatch(request), out
    approved = ok("emit", "approve", "--key", "request_id=R1", "--data", '{"amount": 10}', env=env)
    assert approved == f"{request}\n"
    ok("emit", "pay", "--key", "request_id=R1", env=env)

    # When a burst worker applies them
    burst(env)

    # Then the request is paid, after exactly those events
    paid = status(env, request)
    assert (paid["state"], paid["status"]) == ("paid", "completed")
    assert paid["context"] == {"request_id": "R1", "minimum": 5}
    entries = history(env, request)
    assert [e["event"]["type"] for e in entries] == ["workflow.started", "approve", "pay"]
    assert [e["to"] for e in entries] == ["waiting", "approved", "paid"]
    assert entries[1]["event"]["data"] == {"amount": 10}


def test_an_event_id_is_applied_once(env: Env) -> None:
    # Given a counter
    counter = start(env, "counter")

    # When the same tick is emitted twice (and another tick once), before and after a burst
    first = ok("emit", "tick", "--instance", counter, "--id", "tick-1", env=env)
    repeat = ok("emit", "tick", "--instance", counter, "--id", "tick-1", env=env)
    ok("emit", "tick", "--instance", counter, "--id", "tick-2", env=env)
    burst(env)
    ok("emit", "tick", "--instance", counter, "--id", "tick-1", env=env)
    burst(env)

    # Then each id was applied once
    assert first == repeat == f"{counter}\n"
    ticks = [
        (e["event"]["id"], e["outcome"])
        for e in history(env, counter)
        if e["event"]["type"] == "tick"
    ]
    # and the copies were recorded, ignored
    assert ticks == [
        ("tick-1", "transition"),
        ("tick-1", "ignored"),
        ("tick-2", "transition"),
        ("tick-1", "ignored"),
    ]
    assert status(env, counter)["seq"] == 5


def test_task_completed_from_outside_needs_a_task_name_and_a_running_task(env: Env) -> None:
    # Given an order not yet picked up by any worker
    instance = start(env, "order", order("P1"))

    # Then answering its task needs --task, and a task that is running
    line = fails("emit", "task.completed", "--instance", instance, env=env)
    assert "task.completed needs --task" in line
    line = fails("emit", "task.failed", "--instance", instance, env=env)
    assert "task.failed needs --task" in line
    line = fails("emit", "task.completed", "--instance", instance, "--task", "reserving", env=env)
    assert f"instance {instance} is running no task" in line and "pending" in line


def test_task_completed_from_outside_answers_the_running_task(env: Env) -> None:
    # Given an order whose payment takes 4 s, run by a burst worker in the background
    instance = start(env, "order", order("T1", card="slow", slow_seconds=4))
    worker = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "worker", "--burst"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 20
        while (state := status(env, instance)["state"]) in (None, "reserving"):
            assert time.monotonic() < deadline, "the order never reached charging"
            time.sleep(0.05)
        assert state == "charging"

        # When the payment is answered from outside: first naming the wrong task, then the right
        wrong = fails(
            "emit", "task.completed", "--instance", instance, "--task", "shipping", env=env
        )
        answered = ok_json(
            "emit",
            "task.completed",
            "--instance",
            instance,
            "--task",
            "charge_payment",
            "--data",
            '{"charge": "CH-OUTSIDE"}',
            env=env,
        )
        _, err = worker.communicate(timeout=60)
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.communicate()
    assert worker.returncode == 0, err

    # Then the wrong name was refused, naming the task that runs
    assert "workflows.order.tasks:charge_payment" in wrong and "charging" in wrong
    assert "'shipping'" in wrong
    # and the outside answer moved the order on; the task's own late answer was stale
    assert answered["instance"] == instance and answered["started"] is False
    done = status(env, instance)
    assert (done["state"], done["status"]) == ("shipped", "completed")
    assert done["context"]["charge"] == "CH-OUTSIDE"
    entries = history(env, instance)
    outside = next(e for e in entries if e["event"]["id"] == answered["event_id"])
    assert (outside["outcome"], outside["from"], outside["to"]) == (
        "transition",
        "charging",
        "shipping",
    )
    late = [e for e in entries if e["seq"] > outside["seq"] and e["from"] == "shipping"]
    assert any(e["outcome"] == "ignored" and "stale" in e["note"] for e in late), late


def test_cancel_ends_a_running_instance_and_refuses_a_finished_one(env: Env) -> None:
    # Given a request waiting for approval (an approval too small leaves it waiting)
    out = ok("emit", "request.opened", "--data", '{"request_id": "C1", "minimum": 5}', env=env)
    request = out.removeprefix("started ").strip()
    ok("emit", "approve", "--key", "request_id=C1", "--data", '{"amount": 1}', env=env)
    burst(env)
    waiting = status(env, request)
    assert (waiting["state"], waiting["status"]) == ("waiting", "running")

    # When it is cancelled
    out = ok("cancel", request, "--reason", "changed my mind", env=env)
    assert out == f"cancelling {request}\n"
    burst(env)

    # Then it ends cancelled, the reason kept in its history
    cancelled = status(env, request)
    assert (cancelled["state"], cancelled["status"]) == ("cancelled", "cancelled")
    last = history(env, request)[-1]
    assert last["event"]["type"] == "workflow.cancel"
    assert last["event"]["data"] == {"reason": "changed my mind"}
    assert (last["from"], last["to"]) == ("waiting", "cancelled")
    # and cancelling it again is a clear error
    line = fails("cancel", request, env=env)
    assert f"instance {request} is already cancelled" in line
    assert "nothing to cancel" in line


# -- errors -------------------------------------------------------------------------

USER_ERRORS = {
    "malformed --input": (
        ["start", "order", "--input", '{"order_id": "A1",}'],
        ["--input is not valid JSON", "line 1 column 19"],
    ),
    "malformed --input, third line": (
        ["start", "counter", "--input", '{\n  "a": 1,\n  "b": }'],
        ["--input is not valid JSON", "line 3 column 8"],
    ),
    "malformed --data": (
        ["emit", "order.placed", "--data", '{"order_id": X1}'],
        ["--data is not valid JSON", "line 1 column 14"],
    ),
    "--input array": (["start", "order", "--input", "[1, 2]"], ["--input must be a JSON object"]),
    "unknown workflow": (
        ["start", "nope", "--input", "{}"],
        ["unknown workflow 'nope'", "order", "approval", "counter"],
    ),
    "unknown workflow in graph": (["graph", "nope"], ["unknown workflow 'nope'", "order"]),
    "unknown event type": (
        ["emit", "nope.happened", "--instance", "x"],
        ["unknown event type 'nope.happened'", "order.placed", "tick", "approve"],
    ),
    "invalid instance id": (
        ["start", "counter", "--id", "bad id!"],
        ["instance id 'bad id!'", "letters, digits"],
    ),
    "invalid event id": (
        ["emit", "tick", "--instance", "x", "--id", "a/b"],
        ["event id 'a/b'", "letters, digits"],
    ),
    "--key without =": (["emit", "tick", "--key", "order_id"], ["--key must look like NAME=VALUE"]),
    "--key without value": (["emit", "tick", "--key", "order_id="], ["NAME=VALUE"]),
    "both --instance and --key": (
        ["emit", "tick", "--instance", "x", "--key", "order_id=X1"],
        ["either an instance id or a key, not both"],
    ),
    "starts nothing, addressed to nobody": (
        ["emit", "tick"],
        ["'tick' starts no workflow", "--instance", "--key"],
    ),
    "key that nothing answers to": (
        ["emit", "approve", "--key", "request_id=NOPE"],
        ["no running instance answers to request_id=NOPE"],
    ),
    "starting event without its key": (
        ["emit", "order.placed", "--data", '{"items": 1}'],
        ["correlates by 'order_id'"],
    ),
    "unknown instance: status": (["status", "nosuch"], ["no instance with id 'nosuch'"]),
    "unknown instance: history": (["history", "nosuch"], ["no instance with id 'nosuch'"]),
    "unknown instance: cancel": (["cancel", "nosuch"], ["no instance with id 'nosuch'"]),
    "unknown instance: emit": (
        ["emit", "tick", "--instance", "nosuch"],
        ["no instance with id 'nosuch'"],
    ),
    "unknown workflow module": (
        ["--workflows", "no_such_module", "workflows"],
        ["cannot import workflow module 'no_such_module'"],
    ),
}


@pytest.mark.parametrize(("args", "fragments"), USER_ERRORS.values(), ids=USER_ERRORS.keys())
def test_a_user_error_is_one_clear_line(env: Env, args: list[str], fragments: list[str]) -> None:
    line = fails(*args, env=env)
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"


def test_missing_input_file_is_one_clear_line(env: Env, tmp_path: Path) -> None:
    missing = tmp_path / "missing.json"
    line = fails("start", "order", "--input", f"@{missing}", env=env)
    assert f"cannot read --input from {missing}" in line
    assert "No such file or directory" in line
    line = fails("emit", "order.placed", "--data", f"@{tmp_path}", env=env)
    assert f"cannot read --data from {tmp_path}" in line


def test_duplicate_ids_and_keys_are_refused(env: Env) -> None:
    # Given a counter started with a chosen id, and an order with a business key
    assert ok("start", "counter", "--id", "my-counter", env=env) == "my-counter\n"
    first = start(env, "order", order("D1"))

    # Then a second start with that id, or that key, is refused, naming what exists
    line = fails("start", "counter", "--id", "my-counter", env=env)
    assert "'my-counter' exists already" in line
    line = fails("start", "order", "--input", json.dumps(order("D1")), env=env)
    assert f"instance {first} of order already answers to order_id=D1" in line
    assert [i["id"] for i in ok_json("list", env=env)] == [first, "my-counter"]


def test_a_bad_setting_is_one_clear_line(env: Env) -> None:
    line = fails("list", env={**env, "ORCHESTRATOR_PARTITIONS": "abc"})
    assert "ORCHESTRATOR_PARTITIONS must be a whole number" in line
    # a deployment keeps the partition count it was created with
    start(env, "counter")
    line = fails("list", env={**env, "ORCHESTRATOR_PARTITIONS": "8"})
    assert "created with 4 partitions, but 8 are configured" in line


@pytest.mark.parametrize(
    "args",
    [
        ["status", "abc"],
        ["start", "order", "--input", '{"order_id": "U1"}'],
        ["emit", "order.placed", "--data", '{"order_id": "U1"}'],
        ["worker", "--burst"],
    ],
    ids=lambda args: args[0],
)
def test_unreachable_redis_is_one_line_without_the_password(
    unreachable: tuple[Env, int], args: list[str]
) -> None:
    env, port = unreachable
    line = fails(*args, env=env)
    assert "cannot reach Redis" in line
    assert f"127.0.0.1:{port}" in line
    assert SECRET not in line


def test_debug_shows_the_traceback(unreachable: tuple[Env, int]) -> None:
    env, port = unreachable
    result = run_cli("--debug", "status", "abc", env=env)
    assert result.returncode != 0
    assert "Traceback (most recent call last)" in result.stderr
    assert "RedisUnavailable" in result.stderr
    assert f"127.0.0.1:{port}" in result.stderr
    assert SECRET not in result.stderr


# -- the embedded Redis ----------------------------------------------------------------


def test_embedded_redis_is_shared_by_separate_processes(tmp_path: Path) -> None:
    # Given no REDIS_URL: the first command starts the embedded Redis in ORCHESTRATOR_HOME
    env = cli_env(None, tmp_path)
    home = tmp_path / "home"
    try:
        instance = start(env, "counter", {"n": 1})
        ok("emit", "tick", "--instance", instance, env=env)

        # When a worker in a second process runs a burst
        assert burst(env) == 2

        # Then a third process sees what it did
        seen = status(env, instance)
        assert (seen["state"], seen["status"], seen["seq"]) == ("counting", "running", 2)
        info = ok("server", "info", env=env)
        assert f"data folder: {home}" in info and "url: unix://" in info

        # When the server is stopped
        assert ok("server", "stop", env=env) == "stopped\n"
        assert "no embedded Redis is running" in ok("server", "stop", env=env)

        # Then the next command starts it again, and the data outlived it
        assert status(env, instance)["seq"] == 2
    finally:
        stop_embedded(env, home)


# -- bugs found while writing these tests (see the reasons) --------------------------------


def test_password_in_the_url_query_is_not_shown() -> None:
    port = free_port()
    env = cli_env(f"redis://127.0.0.1:{port}/0?password={SECRET}", Path("/nonexistent"))
    line = fails("status", "abc", env=env)
    assert f"127.0.0.1:{port}" in line
    assert SECRET not in line


AWKWARD_PASSWORDS = {
    "at": "Zq@Xv-Kq7@W0rd",
    "colon": "Zq:Xv-Kq7:W0rd",
    "slash": "Zq/Xv-Kq7/W0rd",
    "question": "Zq?Xv-Kq7=W0rd",
    "hash": "Zq#Xv-Kq7#W0rd",
    "percent": "Zq%40Xv-Kq7W0rd",
    "all": "Zq@:/?#&=Kq7 W0rd",
}


@pytest.mark.parametrize("password", AWKWARD_PASSWORDS.values(), ids=list(AWKWARD_PASSWORDS))
@pytest.mark.parametrize("where", ["userinfo", "user", "query"])
def test_no_piece_of_a_password_is_shown_whatever_it_holds(password: str, where: str) -> None:
    port = free_port()
    url = {
        "userinfo": f"redis://:{password}@127.0.0.1:{port}/0",
        "user": f"redis://orch:{password}@127.0.0.1:{port}/0",
        "query": f"redis://127.0.0.1:{port}/0?password={password}&db=0",
    }[where]
    result = run_cli("status", "abc", env=cli_env(url, Path("/nonexistent")))
    assert result.returncode == 1 and result.stderr.startswith("error: "), result.stderr
    for piece in re.findall(r"[A-Za-z0-9]{2,}", password):
        assert piece not in result.stderr, f"{piece!r} of the password in {result.stderr!r}"
    if "/" not in password or where == "query":  # a raw / cuts the authority short
        assert f"127.0.0.1:{port}" in result.stderr


@pytest.mark.parametrize("port", ["99999", "abc"])
def test_a_redis_url_with_a_bad_port_is_a_clear_error(port: str) -> None:
    env = cli_env(f"redis://:{SECRET}@127.0.0.1:{port}/0", Path("/nonexistent"))
    line = fails("status", "abc", env=env)
    assert "invalid Redis URL" in line
    assert SECRET not in line


def test_an_ipv6_redis_url_is_shown_with_its_brackets() -> None:
    port = free_port()
    env = cli_env(f"redis://:{SECRET}@[::1]:{port}/0", Path("/nonexistent"))
    line = fails("status", "abc", env=env)
    assert f"[::1]:{port}" in line
    assert SECRET not in line


def test_an_input_file_that_is_not_utf8_is_a_clear_error(env: Env, tmp_path: Path) -> None:
    path = tmp_path / "latin1.json"
    path.write_bytes('{"who": "Zoë"}'.encode("latin-1"))
    line = fails("start", "counter", "--input", f"@{path}", env=env)
    assert str(path) in line


def test_deeply_nested_input_is_a_clear_error(env: Env) -> None:
    line = fails("start", "counter", "--input", "[" * 2000, env=env)
    assert "--input" in line


def test_non_json_numbers_are_refused_or_never_printed(env: Env) -> None:
    result = run_cli("start", "counter", "--input", '{"x": NaN}', env=env)
    if result.returncode == 0:
        burst(env)
        out = ok("status", result.stdout.strip(), "--json", env=env)

        def refuse(constant: str) -> None:
            raise ValueError(f"{constant} is not JSON")

        json.loads(out, parse_constant=refuse)  # strict JSON, as any other tool would read it
    else:
        assert result.returncode == 1 and "Traceback" not in result.stderr
        assert result.stderr.startswith("error: --input") and "NaN" in result.stderr


def test_server_stop_stops_the_embedded_server_before_returning(tmp_path: Path) -> None:
    env = cli_env(None, tmp_path)
    try:
        start(env, "counter")
        assert ok("server", "stop", env=env) == "stopped\n"
        client = redis.Redis(unix_socket_path=str(socket_path(tmp_path / "home")))
        with pytest.raises(redis.ConnectionError):  # down when the command returns
            client.ping()
    finally:
        stop_embedded(env, tmp_path / "home")
