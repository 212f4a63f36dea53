"""Packed notification jobs (orchestrator.runtime.notify.batch), and ambiguous provider answers.

A packed job carries several notifications; each must end exactly as it would
in a job of its own: sent once, its ledger record, its event in its inbox, its
watchdog entry answered, its heartbeat ended. The items are sent at the same
time, on threads that keep their connections from one job to the next. The
servers are real: aiosmtpd (support/smtp_server.py, tests/smtp_faults.py) and a
local Twilio Messages API for the real `twilio` client (support/twilio_server.py).
The jobs run in an RQ SimpleWorker in this process, as the notification
worker runs them (no fork), with the worker's guarded job class.

Ambiguous answers: when the whole message went out and no answer came back,
the server may have it. The send is not repeated on the spot, the ledger
notes it, and the retry's send counts in `resends`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from rq import Queue, SimpleWorker
from rq.job import Job
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer

import orchestrator.runtime.context as worker_context
import orchestrator.runtime.notify.batch as batch
from notifiers.base import Message
from notifiers.email import EmailNotifier
from notifiers.errors import AmbiguousError, TransientError
from notifiers.registry import Notifiers
from notifiers.sms import SmsNotifier
from orchestrator.entry.bootstrap import App
from orchestrator.entry.worker import start_worker_process
from orchestrator.runtime.dispatch import (
    NOTIFICATION_QUEUE,
    SEND_NOTIFICATIONS,
    Dispatcher,
    carrier_id,
)
from orchestrator.runtime.guard import GuardedJob, JobCheck, guarded
from orchestrator.runtime.notify.delivery import Deliverer
from orchestrator.runtime.notify.later import Later
from orchestrator.runtime.notify.ledger import Ledger, record_key
from orchestrator.runtime.notify.recipients import Recipient, Recipients
from orchestrator.runtime.registry import Registry
from orchestrator.runtime.watchdog import CHECK_EVERY, MAX_LOST_RUNS, Watchdog
from support.ports import free_port
from support.smtp_server import SmtpServer
from support.twilio_server import TwilioServer
from tests.smtp_faults import AmbiguousSmtpServer, CrowdedSmtpServer

SHIPPED = {"order_id": "A1", "tracking": "TRK-A1"}


# -- helpers ------------------------------------------------------------------------


@pytest.fixture
def channels(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """Fresh process notifiers and send threads for the test; closed after it."""
    monkeypatch.setattr(worker_context, "_installed", None)
    monkeypatch.setattr(batch, "_pool", None)
    monkeypatch.setenv("ORCHESTRATOR_REQUIRE_CHANNELS", "1")
    monkeypatch.setenv("ORCHESTRATOR_RATE_SMS", "0")
    yield monkeypatch
    if worker_context._installed is not None:
        worker_context._installed.close()
    if batch._pool is not None:
        batch._pool[1].shutdown(wait=True)


BOMBED_WORKFLOW = """
from orchestrator import Notify, On, State, Workflow


class Bombed(Workflow):
    name = "bombed"
    start = State(initial=True, notify=[Notify("email", "boom", to="email")])
    done = State(final=True)
    transitions = [On("go", source=start, target=done)]
"""


def use(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)


def item(app: App, n: int, **changes: Any) -> dict[str, Any]:
    """A notification payload as the dispatcher writes it (instance i-N, its first notify)."""
    instance = f"i-{n}"
    partition = app.keys.partition_of(instance)
    key = f"{instance}-1-0"
    payload: dict[str, Any] = {
        "instance": instance,
        "workflow": "order",
        "version": 1,
        "channel": "email",
        "to": f"buyer-{n}@example.com",
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
    payload.update(changes)
    return payload


def enqueue_packed(app: App, items: list[dict[str, Any]]) -> str:
    """One job carrying `items`, each watched under its own key, as orchestrator.runtime.dispatch
    packs the notifications of one commit; returns the job's id."""
    carrier = carrier_id([str(one["key"]) for one in items])
    queue = Queue(NOTIFICATION_QUEUE, connection=app.redis, serializer=JSONSerializer)
    pipe = app.redis.pipeline(transaction=True)
    pipe.multi()
    job = Job.create(
        SEND_NOTIFICATIONS,
        kwargs={"payload": {"items": items}},
        id=carrier,
        timeout=120,
        result_ttl=0,
        failure_ttl=3600,
        connection=app.redis,
        serializer=JSONSerializer,
        origin=queue.name,
    )
    queue.enqueue_job(job, pipeline=pipe)
    watchdog = Watchdog(app.redis, app.keys)
    for one in items:
        record = {str(one["key"]): watchdog.record(one, carrier)}
        watchdog.watch_many(pipe, int(one["partition"]), record)
    pipe.execute()
    return carrier


class _BurstWorker(SimpleWorker):
    """Takes no remote commands, so it opens no pub/sub thread: its shutdown at the end of a
    burst can wait for a minute (as orchestrator.entry.worker.BurstWorker says)."""

    def subscribe(self) -> None:
        pass


def run_jobs(app: App, job_class: type[GuardedJob] | None = None) -> None:
    """The notification worker's loop, in this process, until the queue is empty."""
    job_class = job_class or app.job_class
    start_worker_process(app, again=False)
    queue = Queue(
        NOTIFICATION_QUEUE, connection=app.redis, serializer=JSONSerializer, job_class=job_class
    )
    worker = _BurstWorker(
        [queue], connection=app.redis, serializer=JSONSerializer, job_class=job_class
    )
    worker.work(burst=True, logging_level="WARNING")
    deadline = time.monotonic() + 30
    while batch.handed_over() and time.monotonic() < deadline:  # a job handed sends over
        time.sleep(0.01)


def events(app: App, one: dict[str, Any]) -> list[dict[str, Any]]:
    """The events sent to `one`'s instance through its inbox."""
    inbox = app.keys.inbox(one["partition"])
    entries: list[tuple[bytes, dict[bytes, bytes]]] = app.redis.xrange(inbox)  # type: ignore[assignment]
    found = [json.loads(fields[b"e"]) for _, fields in entries]
    return [e for e in found if e.get("instance") == one["instance"]]


def outstanding(app: App) -> int:
    return sum(int(app.redis.zcard(app.keys.outstanding(p))) for p in range(app.keys.partitions))


def later(app: App) -> list[dict[str, Any]]:
    members: list[bytes] = app.redis.zrange(app.keys.notify_later, 0, -1)  # type: ignore[assignment]
    return [json.loads(m) for m in members]


def record(app: App, one: dict[str, Any]) -> dict[str, str]:
    return Ledger(app.redis, app.keys).get(f"{one['key']}:{one['to']}") or {}


def alive_keys(app: App, items: list[dict[str, Any]]) -> int:
    return sum(int(app.redis.exists(app.keys.alive(one["partition"], one["key"]))) for one in items)


def run_packed(
    app: App, channels: pytest.MonkeyPatch, server: SmtpServer, count: int
) -> list[dict[str, Any]]:
    """One job carrying `count` emails to `server`, run by the notification worker."""
    use(channels, server.env)
    items = [item(app, n) for n in range(count)]
    enqueue_packed(app, items)
    run_jobs(app)
    return items


def received(server: SmtpServer) -> list[str]:
    """The recipients of the messages the server took, sorted."""
    return sorted(r for m in server.messages for r in m.rcpt_tos)


def message_ids(server: SmtpServer) -> list[str]:
    return [str(m.message["Message-ID"]) for m in server.messages]


# -- packed jobs -----------------------------------------------------------------------


def test_a_packed_job_sends_every_item_once_and_at_the_same_time(
    app: App, channels: pytest.MonkeyPatch
) -> None:
    # Given a server that holds each message until eight are being sent at once
    with CrowdedSmtpServer(together=8) as server:
        # When one job carries the eight notifications
        items = run_packed(app, channels, server, 8)
    # Then they were sent together (none waited for another's answer), once each
    assert server.most_at_once == 8
    assert received(server) == sorted(one["to"] for one in items)
    assert len(set(message_ids(server))) == 8
    # and each ended as a job of its own would: recorded, told, answered, no heartbeat left
    for one in items:
        assert record(app, one)["status"] == "sent"
        told = events(app, one)
        assert [e["type"] for e in told] == ["notification.sent"]
        assert told[0]["data"]["key"] == f"{one['key']}:{one['to']}"
    assert outstanding(app) == 0
    assert alive_keys(app, items) == 0
    assert later(app) == []


def test_a_worker_sends_no_more_at_once_than_its_send_threads(
    app: App, channels: pytest.MonkeyPatch
) -> None:
    # Given a notification worker of three send threads (ORCHESTRATOR_NOTIFY_THREADS=3),
    # and a server that answers each message after 0.2 s
    app.settings = replace(app.settings, notify_threads=3)
    with CrowdedSmtpServer(together=3, delay=0.2) as server:
        # When one job carries nine notifications
        items = run_packed(app, channels, server, 9)
    # Then three were sent at a time, never more, and each once
    assert server.most_at_once == 3
    assert received(server) == sorted(one["to"] for one in items)
    assert server.connections == 3
    assert all(record(app, one)["status"] == "sent" for one in items)


def test_send_threads_keep_their_connections_from_one_job_to_the_next(
    app: App, channels: pytest.MonkeyPatch
) -> None:
    # Given a STARTTLS + AUTH server, and two packed jobs of eight notifications
    with CrowdedSmtpServer(together=8) as server:
        use(channels, server.env)
        # When the worker runs one, then the other (jobs waiting together may overlap)
        enqueue_packed(app, [item(app, n) for n in range(8)])
        run_jobs(app)
        enqueue_packed(app, [item(app, n) for n in range(8, 16)])
        run_jobs(app)
    # Then sixteen messages went over the eight connections the first job opened
    assert len(server.messages) == 16
    assert server.connections == 8


def test_sms_in_a_packed_job_go_out_together_over_kept_connections(
    app: App, channels: pytest.MonkeyPatch
) -> None:
    # Given a Twilio API that holds each request until eight are inside at once
    with TwilioServer(together=8) as server:
        use(channels, server.env)
        first = [item(app, n, channel="sms", to=f"+1500555{n:04d}") for n in range(8)]
        second = [item(app, n, channel="sms", to=f"+1500555{n:04d}") for n in range(8, 16)]
        # When two packed jobs of eight SMS run, one after the other
        enqueue_packed(app, first)
        run_jobs(app)
        enqueue_packed(app, second)
        run_jobs(app)
    # Then the eight of a job were sent at the same time, each SMS once,
    assert server.most_at_once == 8
    assert sorted(m["To"] for m in server.messages) == sorted(o["to"] for o in first + second)
    # over one kept-alive connection per send thread,
    assert server.connections == 8
    # and each notification carries its own Twilio sid
    sids = [events(app, one)[0]["data"]["provider_id"] for one in first + second]
    assert sorted(sids) == sorted(m["sid"] for m in server.messages)


def test_each_item_of_a_packed_job_ends_its_own_way(app: App, channels: pytest.MonkeyPatch) -> None:
    # Given a server that refuses one address for good and another for now,
    # a recipient who opted out of email, and a notification already sent
    refused, busy = "gone@example.com", "busy@example.com"
    with SmtpServer(permanent=[refused], transient=[busy]) as server:
        use(channels, server.env)
        Recipients(app.redis, app.keys).save(
            Recipient("r-quiet", addresses={"email": "quiet@example.com"}, opted_out=["email"])
        )
        done = item(app, 0)
        enqueue_packed(app, [done])
        run_jobs(app)
        assert len(server.messages) == 1
        items = {
            "done": done,
            "sent": item(app, 1),
            "refused": item(app, 2, to=refused),
            "busy": item(app, 3, to=busy),
            "skipped": item(app, 4, to="r-quiet"),
        }
        # When one job carries all five
        enqueue_packed(app, list(items.values()))
        run_jobs(app)
    # Then only the new one went out; the one already sent was not sent again
    assert len(server.messages) == 2
    assert server.messages[1].rcpt_tos == (items["sent"]["to"],)
    told = {name: events(app, one) for name, one in items.items()}
    # the sent one, told again, with the same event id (so the workflow sees it once)
    assert [e["type"] for e in told["done"]] == ["notification.sent"] * 2
    assert told["done"][0]["id"] == told["done"][1]["id"]
    assert told["done"][1]["data"]["repeated"] is True
    assert [e["type"] for e in told["sent"]] == ["notification.sent"]
    # the refused one failed for good, with the server's code
    (failed,) = told["refused"]
    assert failed["type"] == "notification.failed"
    assert (failed["data"]["code"], failed["data"]["permanent"]) == ("550", True)
    # the opted-out one was skipped, the busy one waits to be tried again (and says nothing)
    assert told["skipped"][0]["data"]["skipped"] is True
    assert told["busy"] == []
    (again,) = later(app)
    assert (again["key"], again["attempt"]) == (items["busy"]["key"], 2)
    assert record(app, items["busy"])["status"] == "retrying"
    # and every one of them was answered, its heartbeat ended
    assert outstanding(app) == 0
    assert alive_keys(app, list(items.values())) == 0


def test_a_packed_job_with_a_malformed_item_is_refused_whole_before_anything_is_sent(
    app: App, channels: pytest.MonkeyPatch
) -> None:
    # Given a packed job whose third item cannot even be read (no channel)
    with SmtpServer() as server:
        use(channels, server.env)
        items = [item(app, n) for n in range(4)]
        broken = items[2]
        del broken["channel"]
        carrier = enqueue_packed(app, items)
        # When the worker runs it
        run_jobs(app)
        # Then the worker's guard refused the whole job before any send, naming the fault
        assert server.messages == []
        assert carrier in FailedJobRegistry(NOTIFICATION_QUEUE, connection=app.redis)
        job = Job.fetch(carrier, connection=app.redis, serializer=JSONSerializer)
        result = job.latest_result()
        assert result is not None and "RefusedJob" in (result.exc_string or "")
        assert "items.2.channel: Field required" in (result.exc_string or "")
        assert [events(app, one) for one in items] == [[], [], [], []]
        # and the watchdog puts every item back, each to be run again in a job of its own
        watchdog = Watchdog(app.redis, app.keys)
        lost = watchdog.check(list(range(app.keys.partitions)), time.time() + CHECK_EVERY + 1)
        assert lost == 4
        assert sorted(again["key"] for again in later(app)) == sorted(i["key"] for i in items)


def test_a_notification_job_lost_every_time_is_dead_lettered_after_its_budget(
    app: App, channels: pytest.MonkeyPatch
) -> None:
    # Given a notification that its worker refuses every time (no channel: the guard's
    # refusal leaves the job failed without an answer, as a killed work-horse does)
    with SmtpServer() as server:
        use(channels, server.env)
        broken = item(app, 0)
        del broken["channel"]
        ledger = Ledger(app.redis, app.keys)
        ledger.claim(record_key(broken["key"], broken["to"]), "a-dead-worker", {})
        enqueue_packed(app, [broken])
        watchdog = Watchdog(app.redis, app.keys)
        mover = Later(app.redis, app.keys)
        dispatcher = Dispatcher(app.redis, app.keys)
        now = time.time()
        runs = 0
        # When the watchdog finds it lost, and the mover runs it again, round after round
        for _ in range(MAX_LOST_RUNS + 3):
            run_jobs(app)
            runs += 1
            now += CHECK_EVERY + 1
            if not watchdog.check(list(range(app.keys.partitions)), now):
                break
            mover.move_due(dispatcher, now)
        # Then it ran MAX_LOST_RUNS times, no more, and nothing of it is left to run
        assert runs == MAX_LOST_RUNS + 1  # the last round finds nothing lost
        assert later(app) == [] and outstanding(app) == 0
        assert server.messages == []
    # and it is a dead letter that says why, its ledger record failed with that reason
    (letter,) = app.client.dead_letters.read()
    assert letter["source"] == "notification"
    assert f"lost {MAX_LOST_RUNS} times in a row" in letter["reason"]
    record = ledger.get(record_key(broken["key"], broken["to"]))
    assert record is not None and record["status"] == "failed"
    assert "not run again" in record["reason"]


def test_a_template_bomb_in_a_packed_job_is_cut_off_and_fails_only_its_notification(
    app: App, channels: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Given a workflow template that would loop for hours, and two good notifications
    package = tmp_path / "bombed_batch"
    (package / "templates" / "boom").mkdir(parents=True)
    (package / "__init__.py").write_text(BOMBED_WORKFLOW)
    (package / "templates" / "boom" / "subject.txt").write_text("Boom")
    loop = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    (package / "templates" / "boom" / "body.txt").write_text(loop)
    channels.syspath_prepend(str(tmp_path))
    with SmtpServer() as server:
        use(channels, server.env)
        bomb = item(app, 0, templates="bombed_batch", template="boom", context={})
        bomb["workflow"] = "bombed"
        items = [bomb, item(app, 1), item(app, 2)]
        # When one job carries the three, run by a worker that loaded that workflow
        enqueue_packed(app, items)
        registry = Registry.from_modules(["workflows", "bombed_batch"])
        run_jobs(app, guarded(JobCheck(registry, app.keys)))
    # Then the bomb's render was cut off by the CPU limit (on its send thread's own
    # CPU clock): its notification failed, the others went out
    (failed,) = events(app, bomb)
    assert failed["type"] == "notification.failed"
    assert "rendering took more than" in failed["data"]["reason"]
    assert len(server.messages) == 2
    assert outstanding(app) == 0


def test_threads_asking_for_a_channel_at_once_share_one_notifier() -> None:
    env = {"TWILIO_ACCOUNT_SID": "AC" + "0" * 32, "TWILIO_AUTH_TOKEN": "t", "TWILIO_FROM": "+1500"}
    notifiers = Notifiers({**env, "ORCHESTRATOR_REQUIRE_CHANNELS": "1"})
    try:
        with ThreadPoolExecutor(16) as pool:
            built = list(pool.map(lambda _: notifiers.get("sms")[0], range(16)))
        assert len({id(n) for n in built}) == 1
    finally:
        notifiers.close()


def test_sms_sessions_still_follow_the_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given HTTP_PROXY naming a port where nothing listens
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "NO_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{free_port()}")
    with TwilioServer() as server:
        sms = Message(channel="sms", to="+15005550006", body="hi", key="k")
        notifier = SmsNotifier.from_env(server.env)
        try:
            # When an SMS is sent, Then it goes to the proxy (and fails: nobody there)
            with pytest.raises(TransientError, match="Twilio not reached"):
                notifier.send(sms)
        finally:
            notifier.close()
        # and once NO_PROXY names the host, it goes straight to the server
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        notifier = SmsNotifier.from_env(server.env)
        try:
            notifier.send(sms)
        finally:
            notifier.close()
        assert [m["To"] for m in server.messages] == ["+15005550006"]


# -- ambiguous answers (issue #5) ---------------------------------------------------------


@pytest.mark.parametrize("how", ["drop", "late"])
def test_an_ambiguous_answer_is_retried_and_the_retry_counts_as_a_resend(
    app: App, how: str
) -> None:
    # Given a server that keeps the first message, then drops the connection before
    # its 250 (or sends the 250 after the client stopped waiting)
    with AmbiguousSmtpServer(how, tls="none", auth=False, late=2.0) as server:
        env = {**server.env, "SMTP_TIMEOUT": "0.5"}
        notifiers = Notifiers(env)
        try:
            deliverer = Deliverer(app.redis, app.keys, env, notifiers)
            one = item(app, 0)
            # When it is delivered, then tried again
            first = deliverer.deliver(one, "job-1")
            noted = record(app, one)
            second = deliverer.deliver({**one, "attempt": 2}, "job-2")
        finally:
            notifiers.close()
        kept = message_ids(server)
    # Then the first try is a retry, noted ambiguous, not yet a resend
    assert first.status == "retrying" and first.later is not None
    assert noted["status"] == "retrying"
    assert "may have kept it" in noted["ambiguous"]
    assert noted.get("resends", "0") == "0"
    # the second sent it again, and the ledger counts that send as a resend
    assert second.status == "sent"
    final = record(app, one)
    assert (final["status"], final["resends"], final["attempts"]) == ("sent", "1", "2")
    assert "ambiguous" not in final
    # the server has the two copies, with the one Message-ID a receiver can drop on
    assert len(kept) == 2 and len(set(kept)) == 1


def test_a_kept_connection_dropped_after_the_message_is_not_resent_on_the_spot() -> None:
    # Given a notifier whose connection served one message, and a server that keeps
    # the next one and drops the connection before its 250
    with AmbiguousSmtpServer("drop", tls="none", auth=False) as server:
        notifier = EmailNotifier.from_env(server.env)
        try:
            server.faults_left = 0
            notifier.send(mail("a"))
            server.faults_left = 1
            # When the next message goes out on that kept connection
            with pytest.raises(AmbiguousError):
                notifier.send(mail("b"))
        finally:
            notifier.close()
        # Then it was not sent a second time on a new connection (the server has it once)
        assert len(server.messages) == 2
        assert server.connections == 1


def test_an_answer_the_sms_client_stopped_waiting_for_is_ambiguous() -> None:
    # Given a Twilio API that answers after 1.5 s, and a client that waits 0.3 s
    with TwilioServer(delay=1.5) as server:
        notifier = SmsNotifier.from_env({**server.env, "TWILIO_TIMEOUT": "0.3"})
        try:
            # When an SMS is sent, Then the outcome is ambiguous (Twilio may have queued it)
            with pytest.raises(AmbiguousError, match="may have the SMS"):
                notifier.send(Message(channel="sms", to="+15005550006", body="hi", key="k"))
        finally:
            notifier.close()


def mail(key: str) -> Message:
    return Message(channel="email", to="buyer@example.com", subject="Hello", body="Hello.", key=key)
