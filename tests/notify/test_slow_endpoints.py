"""A slow webhook endpoint slows only itself (issue #11, item 3 and item 7).

Before: each try to a webhook receiver that never answered held the notification
worker for the whole WEBHOOK_TIMEOUT, and every notification queued behind it
waited: unrelated emails were delayed by seconds with three such endpoints, by a
minute with ten. Now a job hands a slow send over to its process and the worker
goes on (orchestrator.runtime.notify.batch), each host has a bounded share of the
sends and a circuit breaker (notifiers.webhook.Hosts), and a timeout after the request went out is
ambiguous, so its retry counts as a resend.

Everything is real: the endpoints are sockets on 127.0.0.1 that read a request and
never answer, the emails go to an aiosmtpd server (support/smtp_server.py), and the
end-to-end test runs `orchestrator worker` (one notification worker, the default)
in a subprocess against the suite's Redis.
"""

from __future__ import annotations

import json
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP
from rq import Queue, SimpleWorker
from rq.serializers import JSONSerializer
from rq.worker_registration import WORKERS_BY_QUEUE_KEY

import orchestrator.runtime.context as worker_context
import orchestrator.runtime.notify.batch as batch
from notifiers.base import Message
from notifiers.errors import DeferredError, TransientError
from notifiers.registry import Notifiers
from notifiers.webhook import Hosts, WebhookNotifier
from orchestrator.entry.bootstrap import App
from orchestrator.entry.worker import start_worker_process
from orchestrator.runtime.dispatch import NOTIFICATION_QUEUE, Dispatcher
from orchestrator.runtime.notify.delivery import Deliverer
from orchestrator.runtime.notify.ledger import Ledger
from support.smtp_server import SmtpServer
from tests.conftest import ROOT, cli_env

KEY = "whsec-slow-endpoints"
SHIPPED = {"order_id": "S1", "tracking": "TRK-S1"}
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class HungEndpoint:
    """An HTTP endpoint on 127.0.0.1 that reads each request whole and does not answer,
    until `answering` is set: then it answers 200 to what it holds and what comes next."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.05)  # accept() looks at `closed` this often
        self.port = int(self.listener.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.answering = threading.Event()
        self.closed = threading.Event()
        self.requests: list[dict[str, str]] = []  # the headers of each request read
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.closed.set()
        self.thread.join(5)
        self.listener.close()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                connection, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        with connection:
            connection.settimeout(0.05)
            data = b""
            while b"\r\n\r\n" not in data or len(data) < _request_length(data):
                if self.closed.is_set():
                    return
                try:
                    chunk = connection.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not chunk:
                    return
                data += chunk
            head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")[1:]
            with self.lock:
                self.requests.append(dict(line.split(": ", 1) for line in head))
            while not self.answering.wait(0.05):
                if self.closed.is_set():
                    return
            with suppress(OSError):  # the client may have stopped waiting
                connection.sendall(ANSWER)


def _request_length(data: bytes) -> int:
    head, _, _ = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(head) + 4 + int(value)
    return len(head) + 4


@contextmanager
def hung_endpoints(count: int) -> Iterator[list[HungEndpoint]]:
    endpoints = [HungEndpoint() for _ in range(count)]
    try:
        yield endpoints
    finally:
        for endpoint in endpoints:
            endpoint.close()


class TimedSmtpServer(SmtpServer):
    """Notes when each message arrived (time.monotonic), by recipient."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.arrived: dict[str, float] = {}

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
        reply = await super().handle_DATA(server, session, envelope)
        with self.lock:
            for rcpt in envelope.rcpt_tos:
                self.arrived.setdefault(rcpt, time.monotonic())
        return reply


def notifier(timeout: float, hosts: Hosts | None = None) -> WebhookNotifier:
    return WebhookNotifier(KEY, timeout, connect_timeout=timeout, hosts=hosts, allow_private=True)


def hook(to: str, key: str = "inst1:3:0:hook") -> Message:
    return Message(channel="webhook", to=to, subject="Order shipped", body="On its way", key=key)


# -- the channel on its own --------------------------------------------------------------


def test_the_circuit_opens_after_timeouts_in_a_row_and_closes_after_its_cool_down() -> None:
    with hung_endpoints(1) as (endpoint,):
        hosts = Hosts(per_host=4, trip=3, cooldown=1.0)
        sender = notifier(0.3, hosts)
        # Given three sends in a row that the endpoint never answered
        for n in range(3):
            with pytest.raises(TransientError) as caught:
                sender.send(hook(endpoint.url, key=f"k{n}"))
            assert caught.value.code == "timeout"
        assert len(endpoint.requests) == 3
        # Then its circuit is open: the next send fails at once, without a request,
        # and says when to try again
        assert hosts.state(_origin(endpoint)) == "open"
        began = time.monotonic()
        with pytest.raises(TransientError) as caught:
            sender.send(hook(endpoint.url, key="k3"))
        assert time.monotonic() - began < 0.2
        assert caught.value.code == "circuit-open"
        assert caught.value.retry_after is not None and 0.5 < caught.value.retry_after <= 1.5
        assert len(endpoint.requests) == 3
        # When the cool-down is over, one send tries the host (half open); a timeout
        # opens the circuit again
        time.sleep(1.1)
        assert hosts.state(_origin(endpoint)) == "half-open"
        with pytest.raises(TransientError) as caught:
            sender.send(hook(endpoint.url, key="k4"))
        assert caught.value.code == "timeout"
        assert len(endpoint.requests) == 4
        assert hosts.state(_origin(endpoint)) == "open"
        # and once the endpoint answers again, the trial after the next cool-down closes it
        endpoint.answering.set()
        time.sleep(1.1)
        assert sender.send(hook(endpoint.url, key="k5")).provider_id == "k5"
        assert hosts.state(_origin(endpoint)) == "closed"
        assert sender.send(hook(endpoint.url, key="k6")).provider_id == "k6"
        assert len(endpoint.requests) == 6


def test_a_host_gets_a_bounded_share_of_the_sends_and_others_are_not_held() -> None:
    with hung_endpoints(2) as (slow, other):
        sender = notifier(2.0, Hosts(per_host=2, trip=10, cooldown=1.0))
        # Given two sends in flight to a host that does not answer
        threads = [
            threading.Thread(target=_swallow, args=(sender, hook(slow.url, key=f"s{n}")))
            for n in range(2)
        ]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 5
        while len(slow.requests) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        # Then a third is deferred at once (not a try: nothing went out)
        began = time.monotonic()
        with pytest.raises(DeferredError) as caught:
            sender.send(hook(slow.url, key="s2"))
        assert time.monotonic() - began < 0.2
        assert caught.value.code == "host-busy" and caught.value.retry_after is not None
        # while another host's sends go through
        other.answering.set()
        assert sender.send(hook(other.url, key="o1")).provider_id == "o1"
        for thread in threads:
            thread.join(5)
        assert len(slow.requests) == 2


def _swallow(sender: WebhookNotifier, message: Message) -> None:
    with suppress(TransientError):
        sender.send(message)


def _origin(endpoint: HungEndpoint) -> str:
    return f"http://127.0.0.1:{endpoint.port}"


def test_a_webhook_timeout_after_the_request_went_out_is_ambiguous_and_its_retry_a_resend(
    app: App,
) -> None:
    # Given an endpoint that reads the notification and answers only after the client
    # stopped waiting
    with hung_endpoints(1) as (endpoint,):
        env = {
            "WEBHOOK_SECRET": KEY,
            "WEBHOOK_ALLOW_PRIVATE": "1",
            "WEBHOOK_TIMEOUT": "0.5",
            "ORCHESTRATOR_REQUIRE_CHANNELS": "1",
        }
        notifiers = Notifiers(env)
        try:
            deliverer = Deliverer(app.redis, app.keys, env, notifiers)
            one = payload(app, "webhook", endpoint.url)
            key = f"{one['key']}:{one['to']}"
            # When it is delivered
            first = deliverer.deliver(one, "job-1")
            noted = Ledger(app.redis, app.keys).get(key) or {}
            # Then the try is retried later, noted ambiguous: the receiver may have it
            assert first.status == "retrying" and first.later is not None
            assert noted["status"] == "retrying"
            assert "may have the notification" in noted["ambiguous"]
            # and when the retry goes out (the endpoint answers now), it counts as a resend
            endpoint.answering.set()
            second = deliverer.deliver({**one, "attempt": 2}, "job-2")
        finally:
            notifiers.close()
        assert second.status == "sent"
        final = Ledger(app.redis, app.keys).get(key) or {}
        assert (final["status"], final["attempts"], final["resends"]) == ("sent", "2", "1")
        # The endpoint got the two copies, with the one key it can drop the repeat on
        keys = [r["Idempotency-Key"] for r in endpoint.requests]
        assert keys == [key] * 2


# -- a job that does not hold its worker ------------------------------------------------


@pytest.fixture
def channels(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """Fresh process notifiers and send threads for the test; closed after it."""
    monkeypatch.setattr(worker_context, "_installed", None)
    monkeypatch.setattr(batch, "_pool", None)
    monkeypatch.setenv("ORCHESTRATOR_REQUIRE_CHANNELS", "1")
    monkeypatch.setenv("WEBHOOK_SECRET", KEY)
    monkeypatch.setenv("WEBHOOK_ALLOW_PRIVATE", "1")  # the endpoints are on 127.0.0.1
    yield monkeypatch
    if worker_context._installed is not None:
        worker_context._installed.close()
    if batch._pool is not None:
        batch._pool[1].shutdown(wait=True)


class _BurstWorker(SimpleWorker):
    def subscribe(self) -> None:  # no pub/sub thread to wait for at the end of a burst
        pass


def run_jobs(app: App) -> None:
    """The notification worker's loop, in this process, until the queue is empty."""
    start_worker_process(app, again=False)
    queue = Queue(
        NOTIFICATION_QUEUE, connection=app.redis, serializer=JSONSerializer, job_class=app.job_class
    )
    _BurstWorker(
        [queue], connection=app.redis, serializer=JSONSerializer, job_class=app.job_class
    ).work(burst=True, logging_level="WARNING")


def later(app: App) -> list[tuple[dict[str, Any], float]]:
    found: list[tuple[bytes, float]] = app.redis.zrange(  # type: ignore[assignment]
        app.keys.notify_later, 0, -1, withscores=True
    )
    return [(json.loads(member), due) for member, due in found]


def outstanding(app: App) -> int:
    return sum(int(app.redis.zcard(app.keys.outstanding(p))) for p in range(app.keys.partitions))


def test_a_slow_send_is_handed_over_and_the_next_job_runs_meanwhile(
    app: App, channels: pytest.MonkeyPatch
) -> None:
    with hung_endpoints(1) as (endpoint,), SmtpServer() as smtp:
        for name, value in {**smtp.env, "WEBHOOK_TIMEOUT": "2"}.items():
            channels.setenv(name, value)
        # Given a webhook to an endpoint that does not answer, and an email queued behind it
        hook_job, email_job = payload(app, "webhook", endpoint.url), payload(app, "email", "a@x.io")
        enqueue(app, hook_job)
        enqueue(app, email_job)
        # When the worker runs the queue
        began = time.monotonic()
        run_jobs(app)
        # Then it is through both well before the webhook's 2 s are up: the email went out
        assert time.monotonic() - began < 1.5
        assert [m.rcpt_tos for m in smtp.messages] == [("a@x.io",)]
        # and the webhook is still sending, handed over to the process: its heartbeat
        # beats (so its claim holds), its watchdog entry is answered, and its safety net
        # waits in Later, to run it again if this process died
        assert batch.handed_over() == 1
        key = f"{hook_job['key']}:{hook_job['to']}"
        assert (Ledger(app.redis, app.keys).get(key) or {})["status"] == "sending"
        alive = app.keys.alive(hook_job["partition"], hook_job["key"])
        assert app.redis.exists(alive)
        assert outstanding(app) == 0
        ((net, due),) = later(app)
        assert net["key"] == hook_job["key"] and net.get("attempt", 1) == 1
        assert due > time.time() + batch.SAFETY_NET - 5
        # When its try times out, its own commit answers for it: the retry replaces the
        # safety net, the heartbeat ends, the record says the endpoint may have it
        deadline = time.monotonic() + 10
        while batch.handed_over() and time.monotonic() < deadline:
            time.sleep(0.02)
        ((retry, due),) = later(app)
        assert (retry["key"], retry["attempt"]) == (hook_job["key"], 2)
        assert due < time.time() + 10
        assert not app.redis.exists(alive)
        record = Ledger(app.redis, app.keys).get(key) or {}
        assert record["status"] == "retrying" and "may have" in record["ambiguous"]
        assert len(endpoint.requests) == 1


def test_a_send_deferred_for_a_busy_host_keeps_its_try(
    app: App, channels: pytest.MonkeyPatch
) -> None:
    with hung_endpoints(1) as (endpoint,):
        channels.setenv("WEBHOOK_HOST_CONCURRENCY", "1")
        channels.setenv("WEBHOOK_TIMEOUT", "2")
        # Given the process's one send to a host in flight
        sender, _ = start_worker_process(app, again=False).notifiers.get("webhook")
        busy = threading.Thread(target=_swallow, args=(sender, hook(endpoint.url, key="first")))
        busy.start()
        deadline = time.monotonic() + 5
        while not endpoint.requests and time.monotonic() < deadline:
            time.sleep(0.01)
        # When a notification to that host runs
        one = payload(app, "webhook", endpoint.url)
        enqueue(app, one)
        run_jobs(app)
        busy.join(5)
    # Then nothing went out, and it runs again soon as the same try, not the next one
    assert len(endpoint.requests) == 1
    ((again, due),) = later(app)
    assert (again["key"], again.get("attempt", 1)) == (one["key"], 1)
    assert due < time.time() + 3
    record = Ledger(app.redis, app.keys).get(f"{one['key']}:{one['to']}") or {}
    assert record["status"] == "retrying" and "host-busy" in record["last_error"]


# -- a real worker -----------------------------------------------------------------------


def payload(app: App, channel: str, to: str) -> dict[str, Any]:
    """A notification without an instance, as `orchestrator notify send` makes one."""
    key = f"cli-{uuid.uuid4().hex}"
    partition = app.keys.partition_of(key)
    return {
        "instance": None,
        "channel": channel,
        "to": to,
        "template": "order_shipped",
        "templates": "workflows.order",
        "urgent": False,
        "context": SHIPPED,
        "key": key,
        "kind": "notification",
        "partition": partition,
        "namespace": app.keys.namespace,
        "partitions": app.keys.partitions,
    }


def enqueue(app: App, one: dict[str, Any]) -> None:
    """Into the notifications queue as the applier enqueues a notification: a job of its own."""
    pipe = app.redis.pipeline(transaction=True)
    pipe.multi()
    Dispatcher(app.redis, app.keys).enqueue_notification(pipe, one, one["key"])
    pipe.execute()


@contextmanager
def running_worker(env: dict[str, str], log: Path, app: App) -> Iterator[None]:
    """`orchestrator worker --processes 1` (its default one notification worker)."""
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "worker", "--processes", "1"],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + 30
        while not app.redis.scard(WORKERS_BY_QUEUE_KEY % NOTIFICATION_QUEUE):
            assert worker.poll() is None, log.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "the notification worker did not start"
            time.sleep(0.05)
        yield
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(40)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(10)


def email_delays(app: App, smtp: TimedSmtpServer, count: int, every: float) -> list[float]:
    """Send `count` emails, one each `every` seconds; the seconds each took to arrive
    (those that never did: how long the test waited for them)."""
    sent: dict[str, float] = {}
    for _ in range(count):
        to = f"buyer-{uuid.uuid4().hex[:8]}@example.com"
        sent[to] = time.monotonic()
        enqueue(app, payload(app, "email", to))
        time.sleep(every)
    deadline = time.monotonic() + 20
    while not set(sent) <= set(smtp.arrived) and time.monotonic() < deadline:
        time.sleep(0.02)
    now = time.monotonic()
    return [smtp.arrived.get(to, now) - began for to, began in sent.items()]


@pytest.mark.slow
def test_ten_hung_webhook_endpoints_do_not_delay_unrelated_emails(app: App, tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    with ExitStack() as stack:
        smtp = TimedSmtpServer()
        stack.enter_context(smtp)
        endpoints = stack.enter_context(hung_endpoints(10))
        env = cli_env(
            app.settings.redis_url,
            tmp_path,
            **smtp.env,
            WEBHOOK_SECRET=KEY,
            WEBHOOK_ALLOW_PRIVATE="1",
            WEBHOOK_TIMEOUT="3",
            ORCHESTRATOR_REQUIRE_CHANNELS="1",
        )
        stack.enter_context(running_worker(env, log, app))
        # Given the time an email takes to arrive through an idle worker
        email_delays(app, smtp, 2, 0.1)  # warm up: the SMTP connection, imports
        baseline = email_delays(app, smtp, 6, 0.3)
        # When ten endpoints that never answer get two notifications each (every try
        # holds a send for 3 s, then its retry comes back), and emails go on
        hooks = [payload(app, "webhook", e.url) for e in endpoints for _ in range(2)]
        for one in hooks:
            enqueue(app, one)
        delays = email_delays(app, smtp, 24, 0.4)
        tried = [len(endpoint.requests) for endpoint in endpoints]
        ledger = Ledger(app.redis, app.keys)
        records = [ledger.get(f"{one['key']}:{one['to']}") or {} for one in hooks]
    # Then no email waited a second longer than an email waits without them
    usual = statistics.median(baseline)
    late = max(delays) - usual
    report = json.dumps(
        {"baseline": [round(d, 3) for d in baseline], "with_hung": [round(d, 3) for d in delays]}
    )
    print(f"\nunrelated emails: {late:.3f}s later than the usual {usual:.3f}s at worst; {report}")
    assert late < 1.0, f"an email arrived {late:.2f}s late: {report}"
    # while every endpoint was tried, and its tries timed out there: ambiguous, so a retry
    # counts as a resend
    assert all(tried), tried
    assert {r.get("status") for r in records} <= {"sending", "retrying", "failed"}, records
    assert sum(int(r.get("resends") or 0) for r in records) >= 1, records
