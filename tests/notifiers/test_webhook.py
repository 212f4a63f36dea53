"""The webhook channel against a real HTTP server on 127.0.0.1 that checks what it receives."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import trustme

from notifiers.base import Message
from notifiers.console import ConsoleNotifier
from notifiers.errors import (
    AmbiguousError,
    ChannelConfigError,
    DeliveryError,
    PermanentError,
    TransientError,
)
from notifiers.registry import Notifiers
from notifiers.webhook import WebhookNotifier
from support.ports import free_port

KEY = "whsec-test-8f3a1c"


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """What the server answers next, and everything it received."""

    url: str
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    received: list[Received] = field(default_factory=list)
    released: threading.Event = field(default_factory=threading.Event)

    def signature_ok(self, request: Received) -> bool:
        """Checked the way a receiver would, with nothing from notifiers.webhook."""
        timestamp = request.headers["X-Orchestrator-Timestamp"]
        mac = hmac.new(KEY.encode(), f"{timestamp}.".encode() + request.body, hashlib.sha256)
        given = request.headers["X-Orchestrator-Signature"]
        return hmac.compare_digest(given, "sha256=" + mac.hexdigest())


def serve(receiver: Receiver, context: ssl.SSLContext | None = None) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            receiver.received.append(Received(self.path, dict(self.headers.items()), body))
            if receiver.delay:
                receiver.released.wait(receiver.delay)
            self.send_response(receiver.status)
            for name, value in receiver.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def do_GET(self) -> None:  # where a redirect would lead
            receiver.received.append(Received(self.path, dict(self.headers.items()), b""))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    return server


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver(url="")
    server = serve(found)
    found.url = f"http://127.0.0.1:{server.server_port}/hooks/order?src=test"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield found
    found.released.set()
    server.shutdown()
    server.server_close()
    thread.join(5)


def message(to: str, **overrides: Any) -> Message:
    fields: dict[str, Any] = {
        "channel": "webhook",
        "to": to,
        "subject": "Order shipped",
        "body": "Order A1 is on its way",
        "html": "<p>Order A1</p>",
        "key": "inst1:3:0:hook",
        "data": {"instance": "inst1"},
    }
    return Message(**{**fields, **overrides})


def notifier(timeout: float = 5.0) -> WebhookNotifier:
    return WebhookNotifier.from_env(
        {"WEBHOOK_SECRET": KEY, "WEBHOOK_TIMEOUT": str(timeout), "WEBHOOK_ALLOW_PRIVATE": "1"}
    )


def test_a_delivery_is_signed_json_with_an_idempotency_key(receiver: Receiver) -> None:
    # Given a receiver that answers 200 with a request id
    receiver.headers = {"X-Request-Id": "req-42"}
    # When a notification is sent
    delivery = notifier().send(message(receiver.url))
    # Then the receiver got one POST whose signature checks out with the shared key
    assert delivery.provider_id == "req-42"
    assert delivery.accepted == (receiver.url,)
    (got,) = receiver.received
    assert got.path == "/hooks/order?src=test"
    assert receiver.signature_ok(got)
    assert abs(int(got.headers["X-Orchestrator-Timestamp"]) - time.time()) < 5
    assert got.headers["Idempotency-Key"] == "inst1:3:0:hook"
    assert got.headers["Content-Type"] == "application/json"
    doc = json.loads(got.body)
    assert set(doc) == {"key", "to", "subject", "body", "html", "data", "sent_at"}
    assert doc["body"] == "Order A1 is on its way"
    assert doc["html"] == "<p>Order A1</p>"
    assert doc["data"] == {"instance": "inst1"}
    assert datetime.fromisoformat(doc["sent_at"]).tzinfo is not None


def test_a_tampered_body_fails_the_receivers_check(receiver: Receiver) -> None:
    notifier().send(message(receiver.url))
    (got,) = receiver.received
    tampered = Received(got.path, got.headers, got.body.replace(b"A1", b"B2"))
    assert not receiver.signature_ok(tampered)


def test_without_a_request_id_the_provider_id_is_the_key(receiver: Receiver) -> None:
    receiver.status = 202
    assert notifier().send(message(receiver.url)).provider_id == "inst1:3:0:hook"


def test_the_same_notification_sent_twice_carries_the_same_idempotency_key(
    receiver: Receiver,
) -> None:
    sender = notifier()
    sender.send(message(receiver.url))
    sender.send(message(receiver.url))
    assert [r.headers["Idempotency-Key"] for r in receiver.received] == ["inst1:3:0:hook"] * 2


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [("7", 7.0), (None, None), ("soon", None), ("1e309", None)],
)
def test_429_is_transient_with_the_receivers_retry_after(
    receiver: Receiver, retry_after: str | None, expected: float | None
) -> None:
    receiver.status = 429
    if retry_after is not None:
        receiver.headers = {"Retry-After": retry_after}
    with pytest.raises(TransientError) as caught:
        notifier().send(message(receiver.url))
    assert caught.value.code == "429"
    assert caught.value.retry_after == expected


def test_429_with_an_http_date_retries_after_that_date(receiver: Receiver) -> None:
    receiver.status = 429
    when = datetime.now(UTC) + timedelta(seconds=120)
    receiver.headers = {"Retry-After": format_datetime(when, usegmt=True)}
    with pytest.raises(TransientError) as caught:
        notifier().send(message(receiver.url))
    assert caught.value.retry_after is not None
    assert 100 < caught.value.retry_after <= 120


@pytest.mark.parametrize("status", [500, 502, 503, 408])
def test_server_errors_are_transient(receiver: Receiver, status: int) -> None:
    receiver.status = status
    with pytest.raises(TransientError) as caught:
        notifier().send(message(receiver.url))
    assert caught.value.code == str(status)
    assert "127.0.0.1" in str(caught.value)
    assert "/hooks" not in str(caught.value)  # the path and query may hold tokens


@pytest.mark.parametrize("status", [400, 401, 404, 410, 422])
def test_other_client_errors_are_permanent(receiver: Receiver, status: int) -> None:
    receiver.status = status
    with pytest.raises(PermanentError) as caught:
        notifier().send(message(receiver.url))
    assert caught.value.code == str(status)
    assert len(receiver.received) == 1


def test_a_redirect_is_not_followed(receiver: Receiver) -> None:
    # Given a receiver that redirects the POST elsewhere
    receiver.status = 302
    receiver.headers = {"Location": receiver.url.replace("/hooks/order", "/elsewhere")}
    # Then the send fails permanently and nothing follows the redirect
    with pytest.raises(PermanentError) as caught:
        notifier().send(message(receiver.url))
    assert caught.value.code == "302"
    assert [r.path for r in receiver.received] == ["/hooks/order?src=test"]


def test_a_slow_receiver_times_out_as_transient(receiver: Receiver) -> None:
    receiver.delay = 5.0
    with pytest.raises(TransientError) as caught:
        notifier(timeout=0.3).send(message(receiver.url))
    assert caught.value.code == "timeout"  # the client's 0.3 s, not the receiver's 5 s


def test_nothing_listening_is_transient() -> None:
    with pytest.raises(TransientError) as caught:
        notifier().send(message(f"http://127.0.0.1:{free_port()}/hook"))
    assert caught.value.code == "connection"


def test_a_connection_closed_without_an_answer_is_transient() -> None:
    # Given a server that accepts, reads the request and hangs up without answering
    listener = socket.create_server(("127.0.0.1", 0))

    def hang_up() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)

    thread = threading.Thread(target=hang_up, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/hook"
        with pytest.raises(AmbiguousError):  # it read the whole request: it may act on it
            notifier().send(message(url))
    finally:
        thread.join(5)
        listener.close()


@pytest.mark.parametrize(
    "to",
    [
        "ftp://127.0.0.1/hook",
        "file:///etc/passwd",
        "alice@example.com",
        "http:///no-host",
        "http://user:pw@127.0.0.1/hook",
        "http://127.0.0.1/a path",
        "http://127.0.0.1:99999/hook",
        "http://127.0.0.1/caf\u00e9",
    ],
)
def test_anything_but_a_plain_http_url_is_refused_before_sending(
    receiver: Receiver, to: str
) -> None:
    with pytest.raises(PermanentError) as caught:
        notifier().send(message(to))
    assert caught.value.code == "bad-url"
    assert "pw" not in str(caught.value)
    assert receiver.received == []


def test_a_body_over_the_limit_is_refused_before_sending(receiver: Receiver) -> None:
    with pytest.raises(PermanentError) as caught:
        notifier().send(message(receiver.url, body="x" * 300_000))
    assert caught.value.code == "too-large"
    assert receiver.received == []


def test_https_with_a_trusted_certificate() -> None:
    # Given an HTTPS receiver whose certificate a private CA signed
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    found = Receiver(url="")
    server = serve(found, server_context)
    url = f"https://127.0.0.1:{server.server_port}/hook"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        # When the notifier trusts that CA, the delivery goes through, signed
        trusting = WebhookNotifier(KEY, 5.0, ssl_context=client_context, allow_private=True)
        assert trusting.send(message(url)).provider_id == "inst1:3:0:hook"
        assert found.signature_ok(found.received[0])
        # And when it does not, the certificate is refused for good
        with pytest.raises(PermanentError) as caught:
            notifier().send(message(url))
        assert caught.value.code == "tls"
        assert len(found.received) == 1
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_configuration_comes_from_the_environment_or_a_file(tmp_path: Path) -> None:
    with pytest.raises(ChannelConfigError, match="WEBHOOK_SECRET"):
        WebhookNotifier.from_env({})
    secret_file = tmp_path / "webhook.key"
    secret_file.write_text(KEY + "\n")
    from_file = WebhookNotifier.from_env({"WEBHOOK_SECRET_FILE": str(secret_file)})
    assert from_file.timeout == 10.0
    with pytest.raises(ChannelConfigError, match="WEBHOOK_SECRET_FILE"):
        WebhookNotifier.from_env({"WEBHOOK_SECRET_FILE": str(tmp_path / "missing")})
    for bad in ("0", "-1", "ten", "nan", "1000"):
        with pytest.raises(ChannelConfigError, match="WEBHOOK_TIMEOUT"):
            WebhookNotifier.from_env({"WEBHOOK_SECRET": KEY, "WEBHOOK_TIMEOUT": bad})


def test_the_secret_file_is_what_signs(receiver: Receiver, tmp_path: Path) -> None:
    secret_file = tmp_path / "webhook.key"
    secret_file.write_text(KEY + "\n")
    env = {"WEBHOOK_SECRET_FILE": str(secret_file), "WEBHOOK_ALLOW_PRIVATE": "1"}
    WebhookNotifier.from_env(env).send(message(receiver.url))
    assert receiver.signature_ok(receiver.received[0])


def test_the_secret_never_shows(receiver: Receiver) -> None:
    # Given a configured notifier and every kind of failure
    sender = notifier(timeout=0.3)
    assert KEY not in repr(sender)
    assert KEY not in repr(vars(sender))
    errors: list[DeliveryError] = []
    for status in (404, 429, 500):
        receiver.status = status
        with pytest.raises(DeliveryError) as caught:
            sender.send(message(receiver.url))
        errors.append(caught.value)
    for to in ("ftp://x/y", f"http://127.0.0.1:{free_port()}/"):
        with pytest.raises(DeliveryError) as caught:
            sender.send(message(to))
        errors.append(caught.value)
    # Then no message, reason or repr holds the key
    for error in errors:
        assert KEY not in f"{error} {error!r} {error.reason}"


def test_the_registry_builds_the_webhook_channel_when_configured() -> None:
    configured = Notifiers({"WEBHOOK_SECRET": KEY})
    built, warning = configured.get("webhook")
    assert isinstance(built, WebhookNotifier) and warning is None
    fallback, warning = Notifiers({}).get("webhook")
    assert isinstance(fallback, ConsoleNotifier)
    assert warning is not None and "WEBHOOK_SECRET" in warning
    configured.close()


def test_a_key_that_is_no_valid_header_is_sent_percent_encoded(receiver: Receiver) -> None:
    notifier().send(message(receiver.url, key="inst1:3:0:caf\u00e9\r\nX-Evil: 1"))
    (got,) = receiver.received
    assert got.headers["Idempotency-Key"] == "inst1:3:0:caf%C3%A9%0D%0AX-Evil:%201"
    assert "X-Evil" not in got.headers
    assert json.loads(got.body)["key"] == "inst1:3:0:caf\u00e9\r\nX-Evil: 1"


def test_a_receiver_that_drips_its_answer_is_cut_off_at_the_deadline() -> None:
    # Given a receiver that reads the request, then sends its answer a byte every 0.1 s
    # (each byte would restart a timeout per read)
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def drip() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)
            for byte in b"HTTP/1.1 200 OK\r\nX-Padding: " + b"x" * 200:
                if stop.wait(0.1):
                    return
                try:
                    connection.sendall(bytes([byte]))
                except OSError:
                    return

    thread = threading.Thread(target=drip, daemon=True)
    thread.start()
    try:
        # When the notifier allows 1 s for the whole request
        began = time.monotonic()
        with pytest.raises(TransientError) as caught:
            notifier(timeout=1.0).send(message(f"http://127.0.0.1:{listener.getsockname()[1]}/"))
        # Then it gives up at the deadline, as a timeout the receiver may have acted on
        assert time.monotonic() - began < 2.0
        assert caught.value.code == "timeout"
        assert isinstance(caught.value, AmbiguousError)
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def test_the_timeouts_and_the_host_limits_come_from_the_environment() -> None:
    built = WebhookNotifier.from_env(
        {
            "WEBHOOK_SECRET": KEY,
            "WEBHOOK_TIMEOUT": "5",
            "WEBHOOK_CONNECT_TIMEOUT": "8",
            "WEBHOOK_HOST_CONCURRENCY": "2",
            "WEBHOOK_CIRCUIT_TIMEOUTS": "5",
            "WEBHOOK_CIRCUIT_COOLDOWN": "60",
        }
    )
    assert (built.timeout, built.connect_timeout) == (5.0, 5.0)  # connecting fits the whole
    assert (built.hosts.per_host, built.hosts.trip, built.hosts.cooldown) == (2, 5, 60.0)
    default = WebhookNotifier.from_env({"WEBHOOK_SECRET": KEY})
    assert (default.timeout, default.connect_timeout) == (10.0, 3.0)
    assert (default.hosts.per_host, default.hosts.trip, default.hosts.cooldown) == (4, 3, 30.0)
    for name, bad in [
        ("WEBHOOK_CONNECT_TIMEOUT", "0"),
        ("WEBHOOK_HOST_CONCURRENCY", "1.5"),
        ("WEBHOOK_CIRCUIT_TIMEOUTS", "none"),
        ("WEBHOOK_CIRCUIT_COOLDOWN", "-1"),
    ]:
        with pytest.raises(ChannelConfigError, match=name):
            WebhookNotifier.from_env({"WEBHOOK_SECRET": KEY, name: bad})
