"""`orchestrator notify send` and `orchestrator notifications ID` in subprocesses,
and the delivery flow's preferences (opt-out, quiet hours, urgency) driven
directly through orchestrator.runtime.notify.delivery.Deliverer on the real Redis.

No channel is configured here: email and SMS fall back to the console, which
prints the rendered message, so what was sent can be read back.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from notifiers.registry import Notifiers
from orchestrator.core import events as ev
from orchestrator.entry.bootstrap import App
from orchestrator.entry.worker import rq_worker, run_burst
from orchestrator.runtime.notify.delivery import Deliverer
from orchestrator.runtime.notify.ledger import Ledger
from orchestrator.runtime.notify.recipients import Recipient, Recipients
from tests.conftest import ROOT, cli_env, run_cli
from tests.notifiers.test_templates import write_workflow

Env = dict[str, str]
SHIPPED = {"order_id": "A1", "tracking": "T"}
SHIPPED_LINE = (
    "[console -> someone] Your order A1 is on its way: "
    "Good news: order A1 has shipped. Tracking number: T."
)
SMTP_SECRET = "sMtP-pa55w0rd"
CHANNEL_PREFIXES = ("SMTP_", "TWILIO_", "VAPID_", "WEBHOOK_")


@pytest.fixture
def env(redis_url: str, tmp_path: Path) -> Env:
    """No channel configured (a stray password alone configures nothing and must not show)."""
    base = cli_env(redis_url, tmp_path)
    clean = {k: v for k, v in base.items() if not k.startswith(CHANNEL_PREFIXES)}
    return {**clean, "SMTP_PASSWORD": SMTP_SECRET}


def send(*args: str, env: Env) -> Any:
    return run_cli("notify", "send", *args, env=env)


def one_error(result: Any) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return str(lines[0])


# -- notify send ------------------------------------------------------------------------


def test_send_on_the_console_prints_the_rendered_line(env: Env) -> None:
    result = send(
        "console", "--to", "someone", "--template", "order_shipped",
        "--data", json.dumps(SHIPPED), env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == SHIPPED_LINE
    assert lines[1].startswith("sent: provider id console-")


def test_each_send_is_a_new_notification(env: Env) -> None:
    # Given the same notification sent twice
    args = ("console", "--to", "someone", "--template", "order_shipped", "--data", "@-")
    first = run_cli("notify", "send", *args, "--json", env=env, input_text=json.dumps(SHIPPED))
    second = run_cli("notify", "send", *args, "--json", env=env, input_text=json.dumps(SHIPPED))
    # Then both were sent (a fresh ledger key each time), and with --json stdout is JSON only
    a, b = json.loads(first.stdout), json.loads(second.stdout)
    assert (a["status"], b["status"]) == ("sent", "sent")
    assert a["key"] != b["key"]
    assert a["provider_id"] != b["provider_id"]
    assert a["provider_id"].startswith("console-")
    assert SHIPPED_LINE in first.stderr and SHIPPED_LINE in second.stderr


def test_an_unconfigured_email_falls_back_to_the_console_with_a_warning(env: Env) -> None:
    result = send(
        "email", "--to", "ann@example.com", "--template", "order_shipped",
        "--data", json.dumps(SHIPPED), "--json", "--console", env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["status"] == "sent"
    assert (outcome["channel"], outcome["provider"]) == ("email", "console")
    assert outcome["provider_id"].startswith("console-")
    assert any("email is not configured" in w for w in outcome["warnings"])
    assert "[email -> ann@example.com] Your order A1 is on its way" in result.stderr
    assert SMTP_SECRET not in result.stdout + result.stderr


def test_the_warning_is_shown_once_in_text_mode(env: Env) -> None:
    result = send(
        "email", "--to", "ann@example.com", "--template", "order_shipped",
        "--data", json.dumps(SHIPPED), "--console", env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].startswith("sent: provider id console-")
    assert result.stderr.count("email is not configured (SMTP_HOST") == 1


def test_a_password_in_the_address_is_not_in_the_outcome(env: Env) -> None:
    url = "https://user:hunter2@127.0.0.1:9/hook"
    result = send(
        "webhook", "--to", url, "--template", "order_shipped",
        "--data", json.dumps(SHIPPED), "--json", "--console", env=env,
    )  # fmt: skip
    outcome = json.loads(result.stdout)
    assert outcome["to"] == "https://user:***@127.0.0.1:9/hook"
    assert "hunter2" not in result.stdout


def test_a_missing_variable_fails_naming_the_template_file(env: Env) -> None:
    result = send(
        "console", "--to", "someone", "--template", "order_shipped",
        "--data", '{"order_id": "A1"}', env=env,
    )  # fmt: skip
    line = one_error(result)
    assert "template order_shipped/body.txt: 'tracking' is undefined (line 1)" in line
    assert "Your order" not in result.stdout  # nothing was sent


def test_a_missing_variable_fails_in_json_too(env: Env) -> None:
    result = send(
        "sms",
        "--to",
        "+15005550006",
        "--template",
        "order_shipped",
        "--data",
        "{}",
        "--json",
        "--console",
        env=env,
    )
    assert result.returncode == 1
    outcome = json.loads(result.stdout)
    assert outcome["status"] == "failed"
    assert "template order_shipped/sms.txt: 'order_id' is undefined" in outcome["reason"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("console", "--to", "x", "--template", "nope"),
            "error: no loaded workflow has a template 'nope' (templates: alert_escalated,",
        ),
        (
            ("console", "--to", "x", "--template", "order_shipped", "--workflow", "registration"),
            "error: workflow 'registration' has no template 'order_shipped' (templates: ",
        ),
        (
            ("console", "--to", "x", "--template", "../order", "--workflow", "order"),
            "has no template '../order'",
        ),
        (
            ("console", "--to", "x", "--template", "order_shipped", "--workflow", "shop"),
            "error: unknown workflow 'shop'",
        ),
        (
            ("pigeon", "--to", "x", "--template", "order_shipped"),
            "error: unknown channel 'pigeon' (channels: console, email, push, sms, webhook)",
        ),
        (
            ("console", "--to", "x", "--template", "order_shipped", "--data", "[1]"),
            "--data",
        ),
    ],
)
def test_send_errors_are_one_line(env: Env, args: tuple[str, ...], message: str) -> None:
    assert message in one_error(send(*args, env=env))


def test_a_template_in_several_workflows_must_be_chosen(env: Env, tmp_path: Path) -> None:
    # Given a second workflow with a template of the same name
    write_workflow(
        tmp_path,
        "rival_shop",
        {"order_shipped/body.txt": "Rival: {{ order_id }} is out"},
        samples={"order_shipped": {"order_id": "A1"}},
    )
    both = {
        **env,
        "PYTHONPATH": f"{ROOT}:{tmp_path}",
        "ORCHESTRATOR_WORKFLOWS": "workflows,rival_shop",
    }
    args = (
        "console",
        "--to",
        "someone",
        "--template",
        "order_shipped",
        "--data",
        '{"order_id": 7}',
    )
    # When it is sent without --workflow, Then the error names both workflows
    line = one_error(send(*args, env=both))
    assert "template 'order_shipped' is in several workflows (order, rival_shop)" in line
    # And --workflow picks one
    chosen = send(*args, "--workflow", "rival_shop", env=both)
    assert chosen.returncode == 0, chosen.stderr
    assert chosen.stdout.splitlines()[0] == "[console -> someone] Rival: 7 is out"


def test_send_to_a_recipient_in_quiet_hours_is_scheduled(
    env: Env, app: App, capfd: pytest.CaptureFixture[str]
) -> None:
    # Given a recipient in their quiet hours right now
    Recipients(app.redis, app.keys).save(quiet_now("ann", addresses={"console": "ann@tty"}))
    args = ("console", "--to", "ann", "--template", "order_shipped", "--data", json.dumps(SHIPPED))
    # When a notification is sent to them
    result = send(*args, env=env)
    # Then nothing is printed now, and it waits in notify-later for a worker
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("delayed until ")
    assert "Your order" not in result.stdout
    later: Any = app.redis.zrange(app.keys.notify_later, 0, -1, withscores=True)
    [(member, due)] = later
    waiting = json.loads(member)
    assert (waiting["to"], waiting["template"], waiting["instance"]) == (
        "ann",
        "order_shipped",
        None,
    )
    assert time.time() + 3000 < due < time.time() + 7400
    # And when it falls due, a worker sends it (the scheduled job is one a worker can run)
    Recipients(app.redis, app.keys).save(Recipient("ann", addresses={"console": "ann@tty"}))
    applier = app.applier()
    assert applier.later.move_due(applier.dispatcher, now=due + 1) == 1
    rq_worker(app, burst=True).work(burst=True, logging_level="WARNING")
    assert capfd.readouterr().out.startswith("[console -> ann@tty] Your order A1 is on its way")
    record = Ledger(app.redis, app.keys).get(f"{waiting['key']}:ann")
    assert record is not None and record["status"] == "sent"
    # And --urgent sends it now
    urgent = send(*args, "--urgent", env=env)
    assert urgent.returncode == 0, urgent.stderr
    assert urgent.stdout.startswith("[console -> ann@tty] Your order A1 is on its way")


def test_send_to_an_opted_out_recipient_is_skipped(env: Env, app: App) -> None:
    Recipients(app.redis, app.keys).save(
        Recipient("ann", addresses={"console": "ann@tty"}, opted_out=["console"])
    )
    args = ("console", "--to", "ann", "--template", "order_shipped", "--data", json.dumps(SHIPPED))
    line = one_error(send(*args, env=env))
    assert line == "error: notification skipped: recipient opted out of console"


# -- notifications ID ---------------------------------------------------------------------


def test_notifications_of_an_order_after_it_ran(env: Env, app: App) -> None:
    # Given an order that shipped, its notifications delivered by a worker
    iid = app.client.start(
        "order", {"order_id": "N1", "email": "ann@example.com", "phone": "+15005550006"}
    )
    worker = run_cli("worker", "--burst", env=env)
    assert worker.returncode == 0, worker.stderr
    assert app.client.status(iid).state == "shipped"
    # When its notifications are listed
    rows = json.loads(run_cli("notifications", iid, "--json", env=env).stdout)
    # Then the email and the SMS show as sent, by the console standing in, with a warning
    assert [(r["channel"], r["to"], r["template"], r["status"]) for r in rows] == [
        ("email", "ann@example.com", "order_shipped", "sent"),
        ("sms", "+15005550006", "order_shipped", "sent"),
    ]
    for row in rows:
        assert row["provider_id"].startswith("console-")
        assert row["attempts"] == 1
        assert row["reason"] is None
        assert any(f"{row['channel']} is not configured" in w for w in row["warnings"])
        assert row["updated_at"] >= row["created_at"] > 0
    text = run_cli("notifications", iid, env=env)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].split()[:4] == ["CHANNEL", "TO", "TEMPLATE", "STATUS"]  # a header
    assert lines[1].split()[:5] == ["email", "ann@example.com", "order_shipped", "sent", "1"]
    assert "warning: email is not configured" in text.stdout
    assert SMTP_SECRET not in text.stdout + text.stderr + worker.stdout + worker.stderr


def test_notifications_show_why_one_failed(env: Env, app: App) -> None:
    # Given an order with no phone number: its SMS has no address
    iid = app.client.start("order", {"order_id": "N2", "email": "ann@example.com"})
    run_burst(app)
    rows = json.loads(run_cli("notifications", iid, "--json", env=env).stdout)
    failed = [r for r in rows if r["channel"] == "sms"]
    assert [(r["to"], r["status"]) for r in failed] == [(None, "failed")]
    assert failed[0]["reason"] == "no sms address for the recipient"
    text = run_cli("notifications", iid, env=env).stdout
    assert "  reason: no sms address for the recipient" in text


def test_notifications_of_an_unknown_instance_is_an_error(env: Env) -> None:
    line = one_error(run_cli("notifications", "no-such-instance", env=env))
    assert "no-such-instance" in line


def test_an_instance_without_notifications_says_so(env: Env, app: App) -> None:
    iid = app.client.start("order", {"order_id": "N3"})
    assert run_cli("notifications", iid, env=env).stdout.strip() == "no notifications"
    assert json.loads(run_cli("notifications", iid, "--json", env=env).stdout) == []


# -- preferences in the delivery flow ----------------------------------------------------


def quiet_now(recipient_id: str, **fields: Any) -> Recipient:
    """A recipient whose quiet hours (in Tokyo) run from an hour ago to two hours from now."""
    zone = "Asia/Tokyo"
    local = datetime.now(UTC).astimezone(ZoneInfo(zone))
    start = (local - timedelta(hours=1)).strftime("%H:%M")
    end = (local + timedelta(hours=2)).strftime("%H:%M")
    return Recipient(recipient_id, quiet_hours=f"{start}-{end}", timezone=zone, **fields)


def payload(channel: str, to: str, key: str, urgent: bool = False) -> dict[str, Any]:
    """What the dispatcher puts in a notification job (orchestrator.runtime.dispatch)."""
    return {
        "instance": None,
        "channel": channel,
        "to": to,
        "template": "order_shipped",
        "templates": "workflows.order",
        "urgent": urgent,
        "context": SHIPPED,
        "key": key,
    }


@pytest.fixture
def deliverer(app: App) -> Iterator[Deliverer]:
    """The delivery flow with no channel configured: the console stands in for every one."""
    notifiers = Notifiers({})
    yield Deliverer(app.redis, app.keys, {}, notifiers)
    notifiers.close()


def test_an_opted_out_channel_is_skipped(
    app: App, deliverer: Deliverer, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a recipient who opted out of SMS
    Recipients(app.redis, app.keys).save(
        Recipient(
            "ann", addresses={"sms": "+15005550006", "email": "a@example.com"}, opted_out=["sms"]
        )
    )
    # When an SMS is delivered to them
    outcome = deliverer.deliver(payload("sms", "ann", "pref-1"), "job-1")
    # Then it is skipped, the workflow hears notification.failed with skipped, nothing is sent
    assert (outcome.status, outcome.event) == ("skipped", ev.NOTIFICATION_FAILED)
    assert outcome.data["skipped"] is True
    assert outcome.data["reason"] == "recipient opted out of sms"
    assert outcome.later is None
    record = Ledger(app.redis, app.keys).get("pref-1:ann")
    assert record is not None and record["status"] == "skipped"
    assert capsys.readouterr().out == ""
    # And the channel they did not opt out of still reaches them
    sent = deliverer.deliver(payload("email", "ann", "pref-2"), "job-2")
    assert (sent.status, sent.event) == ("sent", ev.NOTIFICATION_SENT)
    assert "[email -> a@example.com] Your order A1 is on its way" in capsys.readouterr().out


def test_quiet_hours_delay_what_is_not_urgent(
    app: App, deliverer: Deliverer, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a recipient in their quiet hours
    Recipients(app.redis, app.keys).save(quiet_now("ann", addresses={"console": "ann@tty"}))
    ledger = Ledger(app.redis, app.keys)
    # When a notification that is not urgent is delivered
    before = time.time()
    delayed = deliverer.deliver(payload("console", "ann", "quiet-1"), "job-1")
    # Then it waits until the quiet hours end (within two hours), unsent, nobody told yet
    assert (delayed.status, delayed.event) == ("delayed", None)
    assert delayed.later is not None
    assert before + 3600 < delayed.later <= before + 2 * 3600 + 60
    record = ledger.get("quiet-1:ann")
    assert record is not None and record["status"] == "delayed"
    assert float(record["until"]) == delayed.later
    assert capsys.readouterr().out == ""
    # When an urgent one is delivered
    urgent = deliverer.deliver(payload("console", "ann", "quiet-2", urgent=True), "job-2")
    # Then it is sent at once
    assert (urgent.status, urgent.event) == ("sent", ev.NOTIFICATION_SENT)
    record = ledger.get("quiet-2:ann")
    assert record is not None and record["status"] == "sent"
    assert capsys.readouterr().out.startswith("[console -> ann@tty] Your order A1 is on its way")


def test_a_workflow_notification_in_quiet_hours_waits_in_notify_later(app: App) -> None:
    # Given a recipient in quiet hours, named by an order's email field
    Recipients(app.redis, app.keys).save(quiet_now("ann", addresses={"email": "ann@example.com"}))
    # When the order ships and its notification jobs run
    iid = app.client.start("order", {"order_id": "Q1", "email": "ann"})
    run_burst(app)
    assert app.client.status(iid).state == "shipped"
    # Then the email is delayed in the ledger and scheduled in notify-later
    [record] = [r for r in Ledger(app.redis, app.keys).of_instance(iid) if r["channel"] == "email"]
    assert (record["to"], record["status"]) == ("ann", "delayed")
    later: Any = app.redis.zrange(app.keys.notify_later, 0, -1)
    waiting = [json.loads(m) for m in later]
    assert [(w["instance"], w["channel"], w["to"]) for w in waiting] == [(iid, "email", "ann")]
    # And the workflow has not heard of it yet
    heard = [h["event"]["type"] for h in app.client.history(iid)]
    assert ev.NOTIFICATION_SENT not in heard
