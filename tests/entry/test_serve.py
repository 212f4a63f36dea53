"""`orchestrator serve` on a free port, called over real HTTP.

Twilio's callbacks are signed with twilio's own RequestValidator, as Twilio
signs them; /events requests are signed with hmac here, not with the code
under test.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from twilio.request_validator import RequestValidator

from orchestrator.core.errors import ConfigurationError
from orchestrator.entry.bootstrap import App
from orchestrator.entry.http.config import ServerConfig
from orchestrator.entry.http.server import make_server
from orchestrator.entry.settings import Settings
from orchestrator.runtime.applier import Applier
from orchestrator.runtime.notify.ledger import Ledger
from support.ports import free_port
from tests.conftest import ROOT, cli_env

PUBLIC = "https://hooks.example.com"
TOKEN = "twilio-token-5e1d2c"
EVENTS_KEY = "events-key-77b0a9"
ENV = {
    "ORCHESTRATOR_PUBLIC_URL": PUBLIC,
    "TWILIO_AUTH_TOKEN": TOKEN,
    "ORCHESTRATOR_EVENTS_SECRET": EVENTS_KEY,
}
SID = "SM123"


@dataclass
class Served:
    url: str
    app: App
    applier: Applier  # one for the test: a second would wait for the first one's leases

    def drain(self) -> None:
        self.applier.drain()


@pytest.fixture
def served(app: App) -> Iterator[Served]:
    server = make_server(app, "127.0.0.1", 0, ServerConfig.from_env(ENV))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield Served(f"http://127.0.0.1:{server.server_port}", app, app.applier())
    server.shutdown()
    server.server_close()
    thread.join(5)


# -- Twilio ---------------------------------------------------------------------


def sent_sms(served: Served) -> tuple[str, str]:
    """A running counter instance and its notification, recorded as sent with SID."""
    app = served.app
    instance = app.client.start("counter")
    served.drain()
    key = f"{instance}:1:0:+15550001111"
    ledger = Ledger(app.redis, app.keys)
    ledger.claim(key, "job", {"instance": instance, "channel": "sms", "to": "+15550001111"})
    assert ledger.advance(key, "sent", provider_id=SID)
    ledger.remember_provider_id(SID, key)
    return instance, key


def receipt(
    served: Served, status: str, signed: dict[str, str] | None = None, **params: str
) -> requests.Response:
    """POST Twilio's form; signed over `signed` (default: the params sent), as Twilio would."""
    form = {"MessageSid": SID, "MessageStatus": status, "AccountSid": "AC1", **params}
    signature = RequestValidator(TOKEN).compute_signature(
        PUBLIC + "/twilio/status", form if signed is None else signed
    )
    return requests.post(
        served.url + "/twilio/status",
        data=form,
        headers={"X-Twilio-Signature": signature},
        timeout=10,
    )


def notification_events(served: Served, instance: str) -> list[dict[str, Any]]:
    served.drain()
    return [
        entry["event"]
        for entry in served.app.client.history(instance)
        if entry["event"]["type"].startswith("notification.")
    ]


def status_of(app: App, key: str) -> str:
    record = Ledger(app.redis, app.keys).get(key)
    assert record is not None
    return record["status"]


def test_a_signed_delivery_receipt_records_delivered_and_tells_the_workflow(
    served: Served,
) -> None:
    instance, key = sent_sms(served)
    answer = receipt(served, "delivered")
    assert answer.status_code == 200
    assert answer.json() == {"ok": True, "changed": True}
    record = Ledger(served.app.redis, served.app.keys).get(key)
    assert record is not None
    assert record["status"] == "delivered"
    assert record["provider_status"] == "delivered"
    (event,) = notification_events(served, instance)
    assert event["type"] == "notification.delivered"
    assert event["id"] == f"{key}-delivered"
    assert event["data"] == {
        "key": key,
        "channel": "sms",
        "provider_id": SID,
        "status": "delivered",
        "error_code": None,
    }


@pytest.mark.parametrize(("status", "code"), [("undelivered", "30003"), ("failed", "30008")])
def test_an_undelivered_or_failed_receipt_records_undelivered_with_the_code(
    served: Served, status: str, code: str
) -> None:
    instance, key = sent_sms(served)
    assert receipt(served, status, ErrorCode=code).status_code == 200
    record = Ledger(served.app.redis, served.app.keys).get(key)
    assert record is not None
    assert (record["status"], record["provider_status"], record["error_code"]) == (
        "undelivered",
        status,
        code,
    )
    (event,) = notification_events(served, instance)
    assert event["type"] == "notification.undelivered"
    assert event["data"]["status"] == status
    assert event["data"]["error_code"] == code


def test_unsigned_wrongly_signed_or_tampered_receipts_are_refused_and_change_nothing(
    served: Served,
) -> None:
    instance, key = sent_sms(served)
    base = {"MessageSid": SID, "MessageStatus": "delivered", "AccountSid": "AC1"}
    attempts = [
        # no signature at all
        requests.post(served.url + "/twilio/status", data=base, timeout=10),
        # signed with another token
        requests.post(
            served.url + "/twilio/status",
            data=base,
            headers={
                "X-Twilio-Signature": RequestValidator("other").compute_signature(
                    PUBLIC + "/twilio/status", base
                )
            },
            timeout=10,
        ),
        # Twilio signed "undelivered"; someone changed it to "delivered" on the way
        receipt(served, "delivered", signed={**base, "MessageStatus": "undelivered"}),
        # a parameter added after signing
        receipt(served, "delivered", signed=base, ErrorCode="1"),
        # signed for another URL (a callback meant for someone else, replayed here)
        requests.post(
            served.url + "/twilio/status",
            data=base,
            headers={
                "X-Twilio-Signature": RequestValidator(TOKEN).compute_signature(
                    "https://other.example.com/twilio/status", base
                )
            },
            timeout=10,
        ),
    ]
    assert [a.status_code for a in attempts] == [403] * 5
    assert status_of(served.app, key) == "sent"
    assert notification_events(served, instance) == []


def test_a_replayed_receipt_changes_state_once(served: Served) -> None:
    instance, key = sent_sms(served)
    first, again = receipt(served, "delivered"), receipt(served, "delivered")
    assert (first.status_code, again.status_code) == (200, 200)
    assert (first.json()["changed"], again.json()["changed"]) == (True, False)
    assert status_of(served.app, key) == "delivered"
    assert [e["type"] for e in notification_events(served, instance)] == ["notification.delivered"]


def test_receipts_out_of_order_never_move_the_status_back(served: Served) -> None:
    # Given a delivered receipt
    instance, key = sent_sms(served)
    assert receipt(served, "delivered").status_code == 200
    # When the earlier "sent" and a contradicting "undelivered" arrive after it
    for late in ("sent", "sending", "undelivered"):
        answer = receipt(served, late)
        assert answer.status_code == 200
        assert answer.json()["changed"] is False
    # Then it stays delivered, and the workflow heard one thing
    assert status_of(served.app, key) == "delivered"
    assert [e["type"] for e in notification_events(served, instance)] == ["notification.delivered"]


@pytest.mark.parametrize("status", ["queued", "sending", "sent", "accepted"])
def test_intermediate_statuses_are_acknowledged_and_change_nothing(
    served: Served, status: str
) -> None:
    instance, key = sent_sms(served)
    answer = receipt(served, status)
    assert answer.status_code == 200
    record = Ledger(served.app.redis, served.app.keys).get(key)
    assert record is not None
    assert record["status"] == "sent" and "provider_status" not in record
    assert notification_events(served, instance) == []


def test_an_unknown_message_is_acknowledged_and_logged(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "orchestrator.entry.http")
    answer = receipt(served, "delivered")  # nothing was ever sent with SID
    assert answer.status_code == 200
    assert answer.json()["changed"] is False
    assert "unknown message SM123" in caplog.text
    assert served.app.redis.keys(f"{served.app.keys.namespace}:notification:*") == []


def test_a_receipt_without_sid_or_status_is_a_bad_request(served: Served) -> None:
    form = {"AccountSid": "AC1"}
    signature = RequestValidator(TOKEN).compute_signature(PUBLIC + "/twilio/status", form)
    answer = requests.post(
        served.url + "/twilio/status",
        data=form,
        headers={"X-Twilio-Signature": signature},
        timeout=10,
    )
    assert answer.status_code == 400


# -- /events ----------------------------------------------------------------------


def signed_post(
    served: Served,
    body: bytes | dict[str, Any],
    *,
    key: str = EVENTS_KEY,
    at: float | None = None,
    headers: dict[str, str] | None = None,
) -> requests.Response:
    raw = json.dumps(body).encode() if isinstance(body, dict) else body
    timestamp = str(int(time.time() if at is None else at))
    mac = hmac.new(key.encode(), timestamp.encode() + b"." + raw, hashlib.sha256).hexdigest()
    sent = {
        "Content-Type": "application/json",
        "X-Orchestrator-Timestamp": timestamp,
        "X-Orchestrator-Signature": f"sha256={mac}",
        **(headers or {}),
    }
    return requests.post(served.url + "/events", data=raw, headers=sent, timeout=10)


def types_of(served: Served, instance: str) -> list[str]:
    served.drain()
    return [entry["event"]["type"] for entry in served.app.client.history(instance)]


def test_a_signed_event_is_applied_to_its_instance(served: Served) -> None:
    instance = served.app.client.start("counter")
    answer = signed_post(served, {"type": "tick", "workflow": instance, "id": "tick-1"})
    assert answer.status_code == 202
    assert answer.json() == {"event_id": "tick-1", "instance": instance, "started": False}
    assert types_of(served, instance) == ["workflow.started", "tick"]


def test_events_start_and_find_instances_by_business_key(served: Served) -> None:
    opened = signed_post(
        served, {"type": "request.opened", "data": {"request_id": "R1", "minimum": 5}}
    )
    assert opened.status_code == 202 and opened.json()["started"] is True
    instance = opened.json()["instance"]
    served.drain()
    approve = signed_post(
        served,
        {"type": "approve", "key": {"name": "request_id", "value": "R1"}, "data": {"amount": 9}},
    )
    assert approve.status_code == 202 and approve.json()["instance"] == instance
    pay = signed_post(served, {"type": "pay", "key": "request_id=R1"})
    assert pay.status_code == 202
    served.drain()
    assert served.app.client.status(instance).state == "paid"


def test_an_external_system_completes_a_running_task(served: Served) -> None:
    # Given an instance whose task runs (no RQ worker here: nobody else will answer)
    instance = served.app.client.start("stuck")
    served.drain()
    assert served.app.client.status(instance).state == "working"
    # When another system reports the task completed over HTTP
    answer = signed_post(
        served,
        {"type": "task.completed", "workflow": instance, "task": "working", "data": {"ok": 1}},
    )
    # Then the instance moves on with the result in its context
    assert answer.status_code == 202
    served.drain()
    done = served.app.client.status(instance)
    assert (done.state, done.context["ok"]) == ("done", 1)


def test_a_task_answer_for_a_task_not_running_is_a_bad_request(served: Served) -> None:
    instance = served.app.client.start("stuck")
    served.drain()
    answer = signed_post(
        served, {"type": "task.completed", "workflow": instance, "task": "other_task"}
    )
    assert answer.status_code == 400
    assert "other_task" in answer.json()["error"]


def test_unsigned_wrong_stale_or_tampered_events_are_refused(served: Served) -> None:
    instance = served.app.client.start("counter")
    body = {"type": "tick", "workflow": instance}
    raw = json.dumps(body).encode()
    unsigned = requests.post(served.url + "/events", data=raw, timeout=10)
    wrong_key = signed_post(served, body, key="not-the-key")
    stale = signed_post(served, body, at=time.time() - 301)
    future = signed_post(served, body, at=time.time() + 600)
    bad_timestamp = signed_post(served, body, headers={"X-Orchestrator-Timestamp": "soon"})
    # a signature taken from a genuine request, put on another body
    genuine = signed_post(served, {"type": "tick", "workflow": instance, "id": "t1"})
    tampered = requests.post(
        served.url + "/events",
        data=json.dumps({"type": "finish", "workflow": instance}).encode(),
        headers={
            "X-Orchestrator-Timestamp": genuine.request.headers["X-Orchestrator-Timestamp"],
            "X-Orchestrator-Signature": genuine.request.headers["X-Orchestrator-Signature"],
        },
        timeout=10,
    )
    refused = [unsigned, wrong_key, stale, future, bad_timestamp, tampered]
    assert [r.status_code for r in refused] == [403] * len(refused)
    assert genuine.status_code == 202
    assert types_of(served, instance) == ["workflow.started", "tick"]


def test_a_replayed_event_request_is_refused_the_second_time(served: Served) -> None:
    instance = served.app.client.start("counter")
    first = signed_post(served, {"type": "tick", "workflow": instance})
    replay = requests.post(
        served.url + "/events",
        data=first.request.body,
        headers=dict(first.request.headers),
        timeout=10,
    )
    assert (first.status_code, replay.status_code) == (202, 403)
    assert "replayed" in replay.json()["error"]
    assert types_of(served, instance) == ["workflow.started", "tick"]
    seen = served.app.redis.keys(f"{served.app.keys.namespace}:seen-signature:*")
    assert len(seen) == 1 and 0 < served.app.redis.ttl(seen[0]) <= 600


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b"\xff\xfe", "UTF-8"),
        (b"[" * 100_000, "nested too deeply"),
        (b'{"type": "tick", "data": {"x": NaN}}', "NaN"),
        (json.dumps({"type": "tick", "wat": 1}).encode(), "unknown field(s) wat"),
        (json.dumps({"data": {}}).encode(), '"type"'),
        (json.dumps({"type": "tick", "data": [1]}).encode(), '"data"'),
        (json.dumps({"type": "tick", "key": "no-equals"}).encode(), '"key"'),
        (json.dumps({"type": "tick", "workflow": 7}).encode(), '"workflow"'),
    ],
)
def test_malformed_bodies_are_bad_requests(served: Served, body: bytes, says: str | None) -> None:
    answer = signed_post(served, body)
    assert answer.status_code == 400
    if says:
        assert says in answer.json()["error"]


# -- malformed input: a user error, nothing written, nothing consumed ---------------


def inbox_length(served: Served) -> int:
    keys = served.app.keys
    return sum(served.app.redis.xlen(keys.inbox(p)) for p in range(keys.partitions))


def seen_signatures(served: Served) -> list[Any]:
    return list(served.app.redis.keys(f"{served.app.keys.namespace}:seen-signature:*"))


def resend(served: Served, first: requests.Response) -> requests.Response:
    """The very same request again: its bytes and its signature headers."""
    return requests.post(
        served.url + "/events",
        data=first.request.body,
        headers=dict(first.request.headers),
        timeout=10,
    )


@pytest.mark.parametrize(
    ("template", "status", "says"),
    [
        (b'{"type": "tick", "workflow": "@", "data": {"s": "caf\xe9"}}', 400, "UTF-8"),
        (b'{"type": "tick", "workflow": "@", "data": {"s": "\\ud800"}}', 400, "surrogate"),
        (b'{"type": "tick", "workflow": "@", "data": {"s": "\\udfff x"}}', 400, "surrogate"),
        (b'{"type": "tick", "workflow": "@", "data": {"n": ' + b"7" * 5000 + b"}}", 400, "digits"),
        (b'{"type": "tick", "workflow": "@", "data": {"n": -' + b"1" * 4301 + b"}}", 400, "digits"),
        (
            b'{"type": "tick", "workflow": "@", "data": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
            400,
            "nested",
        ),
        (b'{"type": "tick", "workflow": "@", "data": {"x": 1e999}}', 400, "out of range"),
        (b'{"type": "tick", "workflow": "@", "id": 12}', 400, '"id"'),
        (b'{"type": ["tick"], "workflow": "@"}', 400, '"type"'),
        (b'{"type": "tick", "workflow": "@", "task": {}}', 400, '"task"'),
        (b'{"type": "tick", "workflow": "@", "key": {"name": 1, "value": 2}}', 400, '"key"'),
        (b'{"type": "tick", "workflow": "@", "data": "text"}', 400, '"data"'),
        (b'{"type": "tick", "workflow": "@", "id": "bad id!"}', 400, "event id"),
    ],
)
def test_malformed_input_is_a_user_error_that_writes_and_consumes_nothing(
    served: Served, template: bytes, status: int, says: str
) -> None:
    # Given a running instance and the inbox as it is
    instance = served.app.client.start("counter")
    before = inbox_length(served)
    # When a correctly signed request carries a malformed body
    first = signed_post(served, template.replace(b"@", instance.encode()))
    # Then it is a user error naming the fault, and nothing is written
    assert first.status_code == status, first.text
    assert says in first.json()["error"]
    assert inbox_length(served) == before
    assert seen_signatures(served) == []
    # And its signature was not consumed: the same request is judged again, not "replayed"
    again = resend(served, first)
    assert (again.status_code, again.json()) == (first.status_code, first.json())
    assert types_of(served, instance) == ["workflow.started"]


def test_a_refused_request_can_be_retried_once_it_can_succeed(served: Served) -> None:
    # Given an instance not yet in its working state (its start event not yet applied)
    instance = served.app.client.start("stuck")
    body = {"type": "task.completed", "workflow": instance, "task": "working", "data": {"ok": 1}}
    early = signed_post(served, body)
    assert early.status_code == 400
    assert seen_signatures(served) == []
    # When the task runs and the sender retries the very same signed request
    served.drain()
    retry = resend(served, early)
    # Then it is accepted, once
    assert retry.status_code == 202, retry.text
    assert resend(served, early).status_code == 403
    served.drain()
    assert served.app.client.status(instance).state == "done"


def test_a_failure_inside_the_server_consumes_nothing(served: Served) -> None:
    # Given an instance whose record Redis cannot read as an instance (a real WRONGTYPE fault)
    instance = served.app.client.start("counter")
    served.drain()
    record = served.app.keys.instance(instance)
    saved = served.app.redis.dump(record)
    assert isinstance(saved, bytes)
    served.app.redis.delete(record)
    served.app.redis.set(record, "not a hash")
    failed = signed_post(served, {"type": "tick", "workflow": instance, "id": "t-500"})
    # Then the answer is a plain 500 and the signature is still unused
    assert failed.status_code == 500
    assert failed.json() == {"error": "internal error"}
    assert seen_signatures(served) == []
    # And once the fault is mended, the same request is accepted
    served.app.redis.delete(record)
    served.app.redis.restore(record, 0, saved)
    assert resend(served, failed).status_code == 202
    assert types_of(served, instance) == ["workflow.started", "tick"]


def test_data_nested_too_deeply_is_a_bad_request(served: Served) -> None:
    instance = served.app.client.start("counter")
    data: dict[str, Any] = {}
    for _ in range(40):
        data = {"d": data}
    answer = signed_post(served, {"type": "tick", "workflow": instance, "data": data})
    assert answer.status_code == 400
    assert "nested" in answer.json()["error"]
    assert types_of(served, instance) == ["workflow.started"]


def test_an_unknown_workflow_or_event_type_is_a_bad_request_naming_it(served: Served) -> None:
    missing = signed_post(served, {"type": "tick", "workflow": "no-such-instance"})
    assert missing.status_code == 400
    assert "no-such-instance" in missing.json()["error"]
    unknown_type = signed_post(served, {"type": "made.up"})
    assert unknown_type.status_code == 400
    assert "made.up" in unknown_type.json()["error"]


def test_a_body_over_the_limit_is_refused_unread(served: Served) -> None:
    instance = served.app.client.start("counter")
    body = {"type": "tick", "workflow": instance, "data": {"x": "y" * 300_000}}
    answer = signed_post(served, body)
    assert answer.status_code == 413
    chunked = requests.post(served.url + "/events", data=iter([b"{}"]), timeout=10)
    assert chunked.status_code == 411
    assert types_of(served, instance) == ["workflow.started"]


# -- the server ---------------------------------------------------------------------


def test_health_and_unknown_paths(served: Served) -> None:
    health = requests.get(served.url + "/health", timeout=10)
    assert (health.status_code, health.json()) == (200, {"ok": True})
    assert requests.get(served.url + "/nope", timeout=10).status_code == 404
    assert requests.post(served.url + "/nope", data=b"{}", timeout=10).status_code == 404


def test_an_endpoint_without_its_secret_answers_503(app: App) -> None:
    server = make_server(app, "127.0.0.1", 0, ServerConfig())
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        assert requests.post(url + "/twilio/status", data={"a": "b"}, timeout=10).status_code == 503
        assert requests.post(url + "/events", data=b"{}", timeout=10).status_code == 503
        assert requests.get(url + "/health", timeout=10).status_code == 200
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_bad_configuration_fails_at_start(app: App) -> None:
    with pytest.raises(ConfigurationError, match="ORCHESTRATOR_PUBLIC_URL"):
        ServerConfig.from_env({"TWILIO_AUTH_TOKEN": TOKEN})
    with pytest.raises(ConfigurationError, match="ORCHESTRATOR_PUBLIC_URL"):
        ServerConfig.from_env({**ENV, "ORCHESTRATOR_PUBLIC_URL": "hooks.example.com"})
    with pytest.raises(ConfigurationError, match="ORCHESTRATOR_EVENTS_SECRET_FILE"):
        ServerConfig.of(Settings.from_env({"ORCHESTRATOR_EVENTS_SECRET_FILE": "/nonexistent/key"}))


def test_secrets_come_from_files(app: App, tmp_path: Any) -> None:
    token_file, events_file = tmp_path / "twilio", tmp_path / "events"
    token_file.write_text(TOKEN + "\n")
    events_file.write_text(EVENTS_KEY + "\n")
    server = make_server(
        app,
        "127.0.0.1",
        0,
        ServerConfig.of(
            Settings.from_env(
                {
                    "ORCHESTRATOR_PUBLIC_URL": PUBLIC + "/",
                    "TWILIO_AUTH_TOKEN_FILE": str(token_file),
                    "ORCHESTRATOR_EVENTS_SECRET_FILE": str(events_file),
                }
            )
        ),
    )
    try:
        config = server.config
        assert (config.public_url, config.twilio_token, config.events_secret) == (
            PUBLIC,
            TOKEN,
            EVENTS_KEY,
        )
        assert TOKEN not in repr(config) and EVENTS_KEY not in repr(config)
    finally:
        server.server_close()


def test_logs_hold_no_secret_and_no_body(served: Served, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    instance, _ = sent_sms(served)
    receipt(served, "delivered", Body="private-marker-1")
    receipt(served, "delivered", signed={"x": "y"}, Body="private-marker-2")
    signed_post(served, {"type": "tick", "workflow": instance, "data": {"m": "private-marker-3"}})
    signed_post(served, {"type": "tick"}, key="wrong")
    assert "POST /twilio/status 200" in caplog.text
    assert "refused" in caplog.text
    for hidden in (TOKEN, EVENTS_KEY, "private-marker", "sha256="):
        assert hidden not in caplog.text


def test_the_serve_command_runs_until_sigterm(redis_url: str, tmp_path: Any) -> None:
    # The lead registers cli.serve in cli.main; until then the command is added here.
    launcher = (
        "from cli.main import app, run\n"
        "from cli import serve\n"
        "if not any(c.name == 'serve' for c in app.registered_commands):\n"
        "    app.registered_commands += serve.commands.registered_commands\n"
        "run()\n"
    )
    port = free_port()
    env = cli_env(redis_url, tmp_path, ORCHESTRATOR_EVENTS_SECRET=EVENTS_KEY)
    process = subprocess.Popen(
        [sys.executable, "-c", launcher, "serve", "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                health = requests.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except requests.ConnectionError:
                assert process.poll() is None, process.communicate()
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert health.json() == {"ok": True}
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert f"serving on http://127.0.0.1:{port}" in out
    assert "/twilio/status off" in out and "/events off" not in out
    assert "stopped" in out
    assert EVENTS_KEY not in out + err


def test_a_client_that_stalls_mid_body_gets_408(app: App) -> None:
    # Given a server whose requests must arrive within 0.3 s
    server = make_server(app, "127.0.0.1", 0, ServerConfig.from_env(ENV), request_timeout=0.3)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        # When a client promises 100 bytes and sends 2
        with socket.create_connection(("127.0.0.1", server.server_port), timeout=5) as sock:
            sock.sendall(
                b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
                b"X-Orchestrator-Timestamp: 1\r\nX-Orchestrator-Signature: sha256=0\r\n\r\n{}"
            )
            answer = sock.makefile("rb").read()
        # Then it is answered 408 and cut, and the server is free again
        assert answer.split(b" ", 2)[1:2] == [b"408"], answer
        url = f"http://127.0.0.1:{server.server_port}/health"
        assert requests.get(url, timeout=5).status_code == 200
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
