"""What the CLI prints for people and for scripts, driven through the real CLI in subprocesses.

Tables with headers, times in ISO 8601 with their zone, JSON data as JSON, ids alone
on stdout for `ID=$(...)`, the embedded Redis under `redis` (and `server`, its former
name), `notify send` refusing an unconfigured channel, and graph labels escaped.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from orchestrator.core.graph import dot, mermaid
from orchestrator.core.spec import Definition, StateSpec, TransitionSpec
from orchestrator.entry.bootstrap import App
from orchestrator.runtime.notify.recipients import Recipient, Recipients
from orchestrator.store.deadletters import dead_letter
from tests.conftest import ROOT, cli_env, run_cli

Env = dict[str, str]
ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:Z|[+-]\d\d:\d\d)"
EPOCH = re.compile(r"(?<![\d.])\d{10}(?:\.\d+)?(?![\d:])")
NEW_ID = re.compile(r"[0-9a-f]{20}")
CHANNEL_PREFIXES = ("SMTP_", "TWILIO_", "VAPID_", "WEBHOOK_")


@pytest.fixture
def env(redis_url: str, tmp_path: Path) -> Env:
    base = cli_env(redis_url, tmp_path)
    return {k: v for k, v in base.items() if not k.startswith(CHANNEL_PREFIXES)}


def ok(*args: str, env: Env) -> str:
    result = run_cli(*args, env=env)
    assert result.returncode == 0, f"{args} exited {result.returncode}: {result.stderr}"
    return result.stdout


def header(text: str) -> list[str]:
    return text.splitlines()[0].split()


def shell(script: str, env: Env) -> str:
    """Run a bash script with `orchestrator` as a function calling the CLI; its stdout."""
    prelude = f'orchestrator() {{ "{sys.executable}" -m cli.main "$@"; }}\n'
    result = subprocess.run(
        ["bash", "-c", prelude + script],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


# -- tables and times ----------------------------------------------------------------------


def test_list_and_history_are_tables_with_iso_times(env: Env) -> None:
    # Given an approval waiting with its timer, and a counter that ticked
    request = ok("start", "approval", "--input", '{"request_id": "T1", "minimum": 5}', env=env)
    counter = ok("start", "counter", env=env).strip()
    ok("emit", "tick", "--instance", counter, env=env)
    ok("worker", "--burst", env=env)

    # When they are listed
    listed = ok("list", env=env)
    # Then under a header, in aligned columns, with the time in ISO 8601 and its zone
    assert header(listed) == ["ID", "WORKFLOW", "STATE", "STATUS", "UPDATED"]
    rows = listed.splitlines()[1:]
    assert {row.split()[0] for row in rows} == {request.strip(), counter}
    assert len({row.index(row.split()[1]) for row in rows}) == 1  # the second column aligned
    for row in rows:
        assert re.search(rf"\s{ISO}$", row), row

    # And history is a table too, whose timers show their due time, never an epoch
    text = ok("history", request.strip(), env=env)
    assert header(text) == ["SEQ", "AT", "EVENT", "OUTCOME", "TRANSITION", "DETAILS"]
    assert re.search(rf"-> timer approval\.expired due {ISO}", text), text
    assert re.search(rf"^1\s+{ISO}\s+workflow\.started", text.splitlines()[1]), text
    assert not EPOCH.search(text), text
    # while --json keeps its shape (the raw numbers scripts read)
    entries = json.loads(ok("history", request.strip(), "--json", env=env))
    assert isinstance(entries[0]["event"]["at"], float)
    assert any(re.search(r"due \d+\.\d+$", e) for entry in entries for e in entry["effects"])


def test_dead_letters_and_recipients_are_tables(env: Env, app: App) -> None:
    # Given a dead letter and two recipients
    event = json.dumps({"type": "tick", "instance": "gone"})
    app.redis.xadd(app.keys.deadletters, dead_letter("inbox", "k", "1-0", event, "no such one"))
    ok("recipients", "add", "ann", "--email", "ann@example.com", env=env)
    ok(
        "recipients", "add", "bob", "--email", "bob@example.com", "--quiet-hours",
        "22:00-07:00", "--timezone", "Asia/Tokyo", env=env,
    )  # fmt: skip

    # Then each listing has a header, and its rows the values under it
    letters = ok("dead-letters", env=env)
    assert header(letters) == ["ID", "AT", "EVENT", "INSTANCE", "REASON"]
    assert re.search(rf"^\S+\s+{ISO}\s+tick\s+gone\s+no such one$", letters.splitlines()[1])
    people = ok("recipients", "list", env=env)
    assert header(people)[:2] == ["ID", "CHANNELS"]
    assert [line.split()[0] for line in people.splitlines()[1:]] == ["ann", "bob"]
    assert "22:00-07:00" in people and "Asia/Tokyo" in people
    # and --json is unchanged: the raw records
    assert json.loads(ok("dead-letters", "--json", env=env))[0]["reason"] == "no such one"
    assert [r["id"] for r in json.loads(ok("recipients", "list", "--json", env=env))] == [
        "ann",
        "bob",
    ]


def test_a_quiet_hours_delay_is_shown_in_the_recipients_zone(env: Env, app: App) -> None:
    # Given a recipient in Tokyo, in their quiet hours now
    local = datetime.now(UTC).astimezone(ZoneInfo("Asia/Tokyo"))
    quiet = f"{(local - timedelta(hours=1)):%H:%M}-{(local + timedelta(hours=2)):%H:%M}"
    Recipients(app.redis, app.keys).save(
        Recipient("kei", addresses={"console": "kei@tty"}, quiet_hours=quiet, timezone="Asia/Tokyo")
    )
    # When a notification that is not urgent is sent to them
    out = ok(
        "notify", "send", "console", "--to", "kei", "--template", "order_shipped",
        "--data", '{"order_id": "A1", "tracking": "T"}', env=env,
    )  # fmt: skip
    # Then the delay ends at a time in their zone, said with its offset
    assert re.fullmatch(
        r"delayed until \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+09:00: a running worker sends it then\n",
        out,
    ), out


# -- status, start, emit -------------------------------------------------------------------


def test_status_prints_the_context_as_json(env: Env) -> None:
    data = {"n": 1, "nested": {"flag": True, "none": None, "list": [1, "x"]}}
    instance = ok("start", "counter", "--input", json.dumps(data), env=env).strip()
    ok("worker", "--burst", env=env)
    text = ok("status", instance, env=env)
    assert re.search(rf"created: {ISO}\s+updated: {ISO}", text), text
    context = text.split("  context: ", 1)[1]
    assert json.loads(context) == data  # true, null: JSON, not a Python repr
    assert "True" not in text and "None" not in text


def test_start_and_emit_print_the_id_alone_for_a_shell_variable(env: Env) -> None:
    out = shell(
        """
        set -e
        ID=$(orchestrator start counter)
        AGAIN=$(orchestrator emit tick --instance "$ID")
        OLD=$(orchestrator emit tick --workflow "$ID")
        NEW=$(orchestrator emit request.opened --data '{"request_id": "S1", "minimum": 1}')
        BYKEY=$(orchestrator emit approve --key request_id=S1 --data '{"amount": 2}')
        printf '%s|%s|%s|%s|%s' "$ID" "$AGAIN" "$OLD" "$NEW" "$BYKEY"
        """,
        env,
    )
    started, again, old, new, by_key = out.split("|")
    assert NEW_ID.fullmatch(started) and NEW_ID.fullmatch(new), out
    assert again == old == started and by_key == new
    listed = {i["id"]: i["workflow"] for i in json.loads(ok("list", "--json", env=env))}
    assert listed == {started: "counter", new: "approval"}


def test_emit_says_what_happened_on_stderr_and_in_json(env: Env) -> None:
    instance = ok("start", "counter", env=env).strip()
    result = run_cli("emit", "tick", "--instance", instance, "--id", "t-1", env=env)
    assert (result.returncode, result.stdout) == (0, f"{instance}\n")
    assert result.stderr.strip() == f"t-1 -> {instance}"
    shown = json.loads(ok("emit", "tick", "--instance", instance, "--json", env=env))
    assert (shown["instance"], shown["started"]) == (instance, False)


# -- the embedded Redis ------------------------------------------------------------------


def test_redis_status_and_its_former_name_server(tmp_path: Path) -> None:
    env = cli_env(None, tmp_path)
    home = tmp_path / "home"
    try:
        stopped = run_cli("redis", "status", env=env)
        assert stopped.returncode == 3 and stopped.stdout.startswith("stopped\n"), stopped
        assert ok("redis", "start", env=env).startswith("unix://")
        running = ok("redis", "status", env=env)
        assert running.startswith("running\n") and f"data folder: {home}" in running
        # the former name still works, and says what to use now
        legacy = run_cli("server", "status", env=env)
        assert (legacy.returncode, legacy.stdout) == (0, running)
        assert "`orchestrator server` is now `orchestrator redis`" in legacy.stderr
        assert re.search(r"^\s+redis\s", ok("--help", env=env), re.M)
        assert not re.search(r"^\s+server\s", ok("--help", env=env), re.M)
    finally:
        run_cli("redis", "stop", env=env)
    assert run_cli("server", "status", env=env).returncode == 3


# -- notify send -----------------------------------------------------------------------------

SEND = ("--template", "order_shipped", "--data", '{"order_id": "A1", "tracking": "T"}')


def test_notify_send_on_an_unconfigured_channel_fails_naming_the_variable(env: Env) -> None:
    result = run_cli("notify", "send", "email", "--to", "ann@example.com", *SEND, env=env)
    assert (result.returncode, result.stdout) == (1, ""), result
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: the email channel is not configured: SMTP_HOST")
    assert "--console" in lines[0]
    as_json = run_cli("notify", "send", "sms", "--to", "+15005550006", *SEND, "--json", env=env)
    assert as_json.returncode == 1 and "TWILIO_ACCOUNT_SID" in as_json.stderr


def test_notify_send_with_console_says_which_provider_was_used(env: Env) -> None:
    args = ("notify", "send", "email", "--to", "ann@example.com", *SEND, "--json")
    stood_in = json.loads(ok(*args, "--console", env=env))
    assert (stood_in["status"], stood_in["channel"], stood_in["provider"]) == (
        "sent",
        "email",
        "console",
    )
    console = json.loads(ok("notify", "send", "console", "--to", "me", *SEND, "--json", env=env))
    assert console["provider"] == "console"


# -- graphs -----------------------------------------------------------------------------

HOSTILE_EVENT = 'go "now"\\ \n<b>{x}|y;#z'
HOSTILE_STATE = 'wait "here"\\\n<i>{a|b}'
DOT_STRING = r'"(?:[^"\\\n]|\\.)*"'


def hostile_definition() -> Definition:
    """Two states and an event with every character DOT or Mermaid reads specially."""

    def spec(name: str, **kw: Any) -> StateSpec:
        return StateSpec(
            name=name, initial=False, final=False, outcome="completed", task=None,
            compensation=None, notify=(), timeout=None, timeout_event="timeout", **kw,
        )  # fmt: skip

    first = replace(spec(HOSTILE_STATE), initial=True)
    last = replace(spec("done"), final=True)
    row = TransitionSpec(
        event=HOSTILE_EVENT, sources=frozenset({HOSTILE_STATE}), target="done", guard=None,
        compensate=False,
    )  # fmt: skip
    return Definition(
        name='evil "wf"\\', version=1, states={HOSTILE_STATE: first, "done": last},
        initial=HOSTILE_STATE, transitions=(row,), starts_on=frozenset(), start_if=None,
        correlate_by=None, cancel_state="cancelled",
    )  # fmt: skip


def check_dot(text: str) -> None:
    """Every line a statement whose strings are well-formed; no quote outside a string."""
    lines = text.splitlines()
    assert lines[0].startswith("digraph ") and lines[-1] == "}"
    for line in lines[1:-1]:
        outside = re.sub(DOT_STRING, "S", line)
        assert '"' not in outside and "\\" not in outside, line
        assert outside.strip().endswith(";"), line


def test_dot_escapes_quotes_backslashes_and_newlines() -> None:
    text = dot(hostile_definition())
    check_dot(text)
    assert r'digraph "evil \"wf\"\\" {' in text
    assert r'"wait \"here\"\\\n<i>{a|b}" -> "done"' in text
    assert r'[label="go \"now\"\\ \n<b>{x}|y;#z"];' in text
    assert len(text.splitlines()) == 8  # no statement split by a raw newline


def test_mermaid_escapes_hostile_names() -> None:
    text = mermaid(hostile_definition())
    lines = text.splitlines()
    # a state whose name is not a plain identifier gets an id, its name shown as a label
    assert '    state "wait #quot;here#quot;\\<br/>#lt;i#gt;#123;a|b#125;" as s1' in lines
    assert "    [*] --> s1" in lines
    assert "    s1 --> done : go #quot;now#quot;\\ <br/>#lt;b#gt;#123;x#125;|y#59;#35;z" in lines
    for line in lines[1:]:
        bare = re.sub(r"#[a-z0-9]+;|<br/>| --> ", " ", line)
        assert not re.search(r"[;{}<>]", bare), line
        assert bare.count('"') == (2 if bare.lstrip().startswith("state ") else 0), line


def test_graph_command_escapes_a_hostile_event_name(env: Env, tmp_path: Path) -> None:
    # Given a workflow module whose event name holds quotes, a backslash and a newline
    folder = tmp_path / "app"
    folder.mkdir()
    (folder / "hostile.py").write_text(
        textwrap.dedent(
            f"""
            from orchestrator import On, State, Workflow

            class Hostile(Workflow):
                name = "hostile"
                a = State(initial=True)
                b = State(final=True)
                transitions = [On({HOSTILE_EVENT!r}, a, b)]
            """
        )
    )
    given = {**env, "PYTHONPATH": f"{ROOT}:{folder}", "ORCHESTRATOR_WORKFLOWS": "hostile"}
    shown = ok("graph", "hostile", "--format", "dot", env=given)
    check_dot(shown)
    assert r'"a" -> "b" [label="go \"now\"\\ \n<b>{x}|y;#z"];' in shown
    mermaid_text = ok("graph", "hostile", env=given)
    assert (
        "    a --> b : go #quot;now#quot;\\ <br/>#lt;b#gt;#123;x#125;|y#59;#35;z\n" in mermaid_text
    )
