"""End to end: an order told of by email and SMS through a real `orchestrator worker`,
and what a notification worker killed in the middle of a send costs.

Everything is real: the worker is the CLI in a subprocess (a supervisor with an
applier, a forking task worker and a non-forking notification worker), the email
goes to an SMTP server in this process (support/smtp_server.py: STARTTLS, AUTH, a
CA the client verifies), the SMS to Prism serving Twilio's description. With
ORCHESTRATOR_REQUIRE_CHANNELS=1 a channel that does not configure fails its
notification instead of printing to the console, so a "sent" here went out.

The kill tests hold the SMTP dialogue at a chosen point with a gate the test
opens, find the supervisor's child that holds the TCP connection to the SMTP
server, SIGKILL it, and let the engine recover on its own: the job's heartbeat
key expires (5 s), the watchdog (every 3 s) puts the job back, the ledger claim
is taken over. Nothing is slept for a fixed time; every wait polls to a deadline.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Self, TypeVar

import jinja2
import pytest
from aiosmtpd.smtp import SMTP
from rq import Queue
from rq.serializers import JSONSerializer

from orchestrator.entry.bootstrap import App
from orchestrator.runtime.dispatch import NOTIFICATION_QUEUE
from support.ports import free_port
from support.prism import Prism, patched_spec, prism_mock
from support.procs import children
from support.smtp_server import SmtpServer
from tests.conftest import ROOT, cli_env, run_cli

pytestmark = pytest.mark.slow

TWILIO = Path(__file__).parent.parent / "fixtures" / "twilio"
SUBJECT = ROOT / "workflows" / "order" / "templates" / "order_shipped" / "subject.txt"
SID = "AC" + "0123456789abcdef" * 2
TOKEN = "tok-5ecret-never-shown"
PHONE = "+15005550006"
PRISM_SID = "SMaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"  # the SID in Twilio's example answer
RECOVERY = 40.0  # heartbeat TTL 5 s + watchdog every 3 s + the mover + the send, with room
GATE_LIMIT = 30.0  # a gate never holds longer, so a failing test cannot hang the server

T = TypeVar("T")


@pytest.fixture(scope="module")
def prism(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prism]:
    folder = tmp_path_factory.mktemp("prism")
    spec = patched_spec(
        TWILIO / "twilio_api_v2010.messages.json",
        TWILIO / "errors.merge-patch.json",
        folder / "twilio.json",
    )
    with prism_mock(spec, free_port(), folder / "prism.log") as server:
        yield server


class GatedSmtpServer(SmtpServer):
    """An SMTP server whose DATA waits at a gate until the test opens it.

    `hold="before"`: the gate comes before the message is kept and before 250,
    exactly where SmtpServer's own `delay` sleeps. The client has sent the whole
    message but the server has not accepted it; aiosmtpd cancels the session's
    handler when the connection is lost, so a client that dies there leaves
    nothing behind (as an MTA drops a transaction that never got its 250).
    A gate rather than `delay` tells the test when the client is inside it.

    `hold="after"`: the message is kept first, then the gate, then 250: the
    provider has the message and the client has not heard so (the window).
    """

    def __init__(self, hold: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if hold not in ("before", "after"):
            raise ValueError(f"hold is before or after, not {hold!r}")
        self.hold = hold
        self.held = threading.Event()  # a client is waiting at the gate
        self.gate = threading.Event()  # set: every DATA goes through at once

    def __enter__(self) -> Self:
        self.start()
        return self

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
        if self.hold == "before":
            await self._wait_at_gate()
            return await super().handle_DATA(server, session, envelope)
        reply = await super().handle_DATA(server, session, envelope)
        await self._wait_at_gate()
        return reply

    async def _wait_at_gate(self) -> None:
        deadline = time.monotonic() + GATE_LIMIT
        while not self.gate.is_set() and time.monotonic() < deadline:
            self.held.set()
            await asyncio.sleep(0.02)


# -- helpers ------------------------------------------------------------------------


def wait_for(probe: Callable[[], T | None], timeout: float, what: str, log: Path) -> T:
    """Poll `probe` until it returns something truthy; fail with the worker's log tail."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}\nworker log:\n{tail}")
        time.sleep(0.05)


def holding_connection_to(pids: list[int], port: int) -> list[int]:
    """The processes among `pids` with an open TCP connection to 127.0.0.1:`port`.

    The supervisor's children are forks with one command line; the one in the
    middle of a send is the one whose socket's far end is the SMTP server.
    """
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if remote_port == port and fields[3] == "01":  # ESTABLISHED
                inodes.add(fields[9])
    holders = []
    for pid in pids:
        try:
            links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            continue  # exited meanwhile
        if any(link.startswith("socket:[") and link[8:-1] in inodes for link in links):
            holders.append(pid)
    return holders


def worker_env(app: App, tmp_path: Path, smtp: SmtpServer, prism: Prism) -> dict[str, str]:
    env = cli_env(
        app.settings.redis_url,
        tmp_path,
        **{**smtp.env, "SMTP_TIMEOUT": "30"},  # longer than a gate holds before the kill
        TWILIO_ACCOUNT_SID=SID,
        TWILIO_AUTH_TOKEN=TOKEN,
        TWILIO_FROM="+15005550001",
        TWILIO_API_BASE=prism.url,
        ORCHESTRATOR_REQUIRE_CHANNELS="1",
    )
    # A request that escaped the base-URL rewrite goes to a dead loopback proxy, not Twilio
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "https_proxy", "no_proxy"):
        env.pop(name, None)
    env.update(HTTPS_PROXY="http://127.0.0.1:9", NO_PROXY="127.0.0.1,localhost")
    return env


@contextmanager
def running_worker(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`orchestrator worker --processes 1 --notifiers 1`, stopped (and reaped) at the end."""
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "worker", "--processes", "1", "--notifiers", "1"],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        wait_for(lambda: len(children(worker.pid)) == 3, 20, "the worker's three children", log)
        yield worker
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            for pid in children(worker.pid):  # still its children: no pid reused yet
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            worker.kill()
            worker.wait(10)


def sent_events(app: App, iid: str, channel: str) -> list[dict[str, Any]]:
    return [
        h["event"]["data"]
        for h in app.client.history(iid)
        if h["event"]["type"] == "notification.sent" and h["event"]["data"]["channel"] == channel
    ]


def ledger(env: dict[str, str], iid: str) -> dict[str, dict[str, Any]]:
    """`orchestrator notifications ID --json`, by channel."""
    result = run_cli("notifications", iid, "--json", env=env)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    by_channel = {row["channel"]: row for row in rows}
    assert len(by_channel) == len(rows), rows
    return by_channel


def engine_idle(app: App) -> bool:
    """No notification job queued, watched or waiting to run again: nothing more can send."""
    keys = app.keys
    watched = sum(int(app.redis.zcard(keys.outstanding(p))) for p in range(keys.partitions))
    later = int(app.redis.zcard(keys.notify_later))
    queue = Queue(NOTIFICATION_QUEUE, connection=app.redis, serializer=JSONSerializer)
    return watched == 0 and later == 0 and queue.count == 0


def shipped_subject(order_id: str) -> str:
    return str(jinja2.Template(SUBJECT.read_text()).render(order_id=order_id)).strip()


def kill_the_sender(worker: subprocess.Popen[bytes], smtp: SmtpServer, log: Path) -> int:
    """SIGKILL the supervisor's child in the SMTP dialogue; wait until it is replaced."""
    forks = children(worker.pid)
    holders = holding_connection_to(forks, smtp.port)
    assert len(holders) == 1, f"children {forks}, holding the SMTP connection {holders}"
    victim = holders[0]
    os.kill(victim, signal.SIGKILL)
    wait_for(
        lambda: victim not in children(worker.pid) and len(children(worker.pid)) == 3,
        10,
        "the supervisor to replace the killed notification worker",
        log,
    )
    return victim


# -- the happy path -------------------------------------------------------------------


def test_a_shipped_order_is_emailed_and_texted_once_by_a_real_worker(
    app: App, prism: Prism, tmp_path: Path
) -> None:
    log = tmp_path / "worker.log"
    with SmtpServer(tls="starttls") as smtp:
        env = worker_env(app, tmp_path, smtp, prism)
        texts_before = len(prism.received())
        with running_worker(env, log):
            # Given a running worker, when an order with an email and a phone is started
            order = {"order_id": "E2E-1", "email": "ana@example.com", "phone": PHONE}
            started = run_cli(
                "start", "order", "--input", json.dumps({**order, "work_seconds": 0}), "--json",
                env=env,
            )  # fmt: skip
            assert started.returncode == 0, started.stderr
            iid = json.loads(started.stdout)["id"]
            # Then it ships, and the workflow hears of both sends
            wait_for(
                lambda: sent_events(app, iid, "email") and sent_events(app, iid, "sms"),
                30,
                "notification.sent for email and sms",
                log,
            )
            wait_for(lambda: engine_idle(app), 10, "the notification jobs to finish", log)
        assert app.client.status(iid).state == "shipped"
        # The SMTP server received exactly one message, with the rendered subject
        [received] = smtp.messages
        assert received.rcpt_tos == ("ana@example.com",)
        assert received.message["Subject"] == shipped_subject("E2E-1") != ""
        assert "E2E-1" in received.message["Subject"]
        message_id = received.message["Message-ID"]
        # The history holds one notification.sent per channel, with the provider's ids
        [email] = sent_events(app, iid, "email")
        [sms] = sent_events(app, iid, "sms")
        assert email["provider_id"] == message_id
        assert sms["provider_id"] == PRISM_SID
        assert (email["to"], sms["to"]) == ("ana@example.com", PHONE)
        # Prism received one request Twilio's description accepts, to that number
        texts = prism.wait_for(texts_before + 1)[texts_before:]
        assert len(texts) == 1
        assert texts[0].passed_validation
        assert texts[0].form()["To"] == PHONE
        # `orchestrator notifications ID --json` lists both as sent, with the same ids
        records = ledger(env, iid)
        assert set(records) == {"email", "sms"}
        assert records["email"]["status"] == records["sms"]["status"] == "sent"
        assert records["email"]["provider_id"] == message_id
        assert records["sms"]["provider_id"] == PRISM_SID
        assert records["email"]["attempts"] == records["sms"]["attempts"] == 1
        assert not records["email"]["warnings"]  # no console stood in for the channel
        assert TOKEN not in json.dumps(records) and smtp.password not in json.dumps(records)


# -- killed in the middle of a send --------------------------------------------------


def test_a_worker_killed_before_the_server_accepted_the_email_sends_it_exactly_once(
    app: App, prism: Prism, tmp_path: Path
) -> None:
    log = tmp_path / "worker.log"
    # Given an SMTP server that holds DATA before keeping the message or answering 250
    with GatedSmtpServer("before", tls="starttls") as smtp:
        env = worker_env(app, tmp_path, smtp, prism)
        try:
            with running_worker(env, log) as worker:
                iid = app.client.start(
                    "order",
                    {"order_id": "E2E-2", "email": "bo@example.com", "phone": PHONE,
                     "work_seconds": 0},
                )  # fmt: skip
                wait_for(smtp.held.is_set, 30, "the email to be held in DATA", log)
                # When the notification worker is killed while it waits for the answer
                kill_the_sender(worker, smtp, log)
                assert smtp.messages == []  # the server never accepted that try
                smtp.gate.set()
                # Then the engine notices, runs the job again, and the email goes out
                wait_for(
                    lambda: ledger(env, iid).get("email", {}).get("status") == "sent",
                    RECOVERY,
                    "the email's ledger record to reach sent",
                    log,
                )
                wait_for(lambda: engine_idle(app), 20, "the notification jobs to finish", log)
        finally:
            smtp.gate.set()  # never leave a client held while the worker stops
        # Exactly once at the server, with the Message-ID derived from the key
        assert len(smtp.messages) == 1, [m.message["Message-ID"] for m in smtp.messages]
        assert smtp.connections >= 2  # the retry came on a new connection
        message_id = smtp.messages[0].message["Message-ID"]
        assert smtp.messages[0].message["Subject"] == shipped_subject("E2E-2")
        # The record: sent, on the second try. `resends` counts a takeover of a claim
        # whose owner died with the outcome unknown, so it is 1 although this message
        # was never accepted before: an upper bound on duplicates, not a count of them.
        record = ledger(env, iid)["email"]
        assert record["status"] == "sent"
        assert record["attempts"] >= 2
        assert record["resends"] == 1
        assert record["provider_id"] == message_id
        # The workflow heard of it once; the SMS, queued behind it, went out once too
        assert [e["provider_id"] for e in sent_events(app, iid, "email")] == [message_id]
        assert [e["provider_id"] for e in sent_events(app, iid, "sms")] == [PRISM_SID]
        assert ledger(env, iid)["sms"]["status"] == "sent"


def test_the_at_least_once_window_a_kill_after_the_server_accepted_resends(
    app: App, prism: Prism, tmp_path: Path
) -> None:
    """DOCUMENTS THE WINDOW the README names, measured rather than hidden: the server
    has kept the message, the worker dies before it reads the 250, and nothing can
    tell the retry that the first try arrived. The message is sent a second time,
    with the same Message-ID (so the receiver can drop it), and `resends` says so."""
    log = tmp_path / "worker.log"
    # Given an SMTP server that keeps the message, then holds before answering 250
    with GatedSmtpServer("after", tls="starttls") as smtp:
        env = worker_env(app, tmp_path, smtp, prism)
        try:
            with running_worker(env, log) as worker:
                iid = app.client.start(
                    "order",
                    {"order_id": "E2E-3", "email": "cy@example.com", "phone": PHONE,
                     "work_seconds": 0},
                )  # fmt: skip
                wait_for(smtp.held.is_set, 30, "the email to be held before its 250", log)
                # When the notification worker is killed in that window
                kill_the_sender(worker, smtp, log)
                assert len(smtp.messages) == 1  # the server already has it
                smtp.gate.set()
                wait_for(lambda: len(smtp.messages) >= 2, RECOVERY, "the second send", log)
                wait_for(
                    lambda: ledger(env, iid).get("email", {}).get("status") == "sent",
                    10,
                    "the email's ledger record to reach sent",
                    log,
                )
                wait_for(lambda: engine_idle(app), 20, "the notification jobs to finish", log)
        finally:
            smtp.gate.set()
        # Then the server holds it twice, both copies with the same Message-ID
        ids = [m.message["Message-ID"] for m in smtp.messages]
        assert len(ids) == 2 and ids[0] == ids[1], ids
        # and the ledger counts the resend; the workflow still hears of it once
        record = ledger(env, iid)["email"]
        assert (record["status"], record["attempts"], record["resends"]) == ("sent", 2, 1)
        assert record["provider_id"] == ids[0]
        assert [e["provider_id"] for e in sent_events(app, iid, "email")] == [ids[0]]
