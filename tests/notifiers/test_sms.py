"""The SMS channel: Twilio's own SDK against Prism serving Twilio's own OpenAPI description.

Prism validates every request the SDK sends against the description (and logs
it, body included), and answers with the description's examples; the error
responses Twilio documents only in prose are added by
tests/fixtures/twilio/errors.merge-patch.json. A test picks the answer with
Prism's `Prefer: code=...` header, which a small subclass of the channel's
HTTP client adds.
"""

from __future__ import annotations

import base64
import contextlib
import gc
import logging
import re
import socket
import ssl
import threading
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import trustme

from notifiers import loop
from notifiers.base import Message
from notifiers.errors import ChannelConfigError, PermanentError, TransientError
from notifiers.sms import SmsNotifier, segment_warning, segments
from notifiers.sms_transport import http_client_class
from orchestrator.entry.bootstrap import App
from orchestrator.entry.worker import run_burst
from orchestrator.runtime import context as worker_context
from support.ports import free_port
from support.prism import Prism, Received, patched_spec, prism_mock
from support.twilio_server import TwilioServer
from tests.conftest import in_forked_child, root_logging

FIXTURES = Path(__file__).parent.parent / "fixtures" / "twilio"
SID = "AC" + "0123456789abcdef" * 2
TOKEN = "tok-5ecret-never-shown"
FROM = "+15005550001"
TO = "+15005550006"
SERVICE = "MG" + "fedcba9876543210" * 2
PRISM_SID = "SMaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"  # the description's example
MESSAGES_PATH = f"/2010-04-01/Accounts/{SID}/Messages.json"


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """A request that escaped the base-URL rewrite goes to a dead loopback proxy, not Twilio."""
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture(scope="module")
def prism(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prism]:
    folder = tmp_path_factory.mktemp("prism")
    spec = patched_spec(
        FIXTURES / "twilio_api_v2010.messages.json",
        FIXTURES / "errors.merge-patch.json",
        folder / "twilio.json",
    )
    with prism_mock(spec, free_port(), folder / "prism.log") as server:
        yield server


def preferring(prefer: str | None, base: str) -> Any:
    """The channel's own HTTP client, plus Prism's Prefer header on every request."""

    class Preferring(http_client_class()):  # type: ignore[misc]
        async def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            if prefer:
                kwargs["headers"] = {**(kwargs.get("headers") or {}), "Prefer": prefer}
            return await super().request(method, url, *args, **kwargs)

    return Preferring(base, 5.0)


Make = Callable[..., SmsNotifier]


@pytest.fixture
def make(prism: Prism) -> Iterator[Make]:
    built: list[SmsNotifier] = []

    def build(prefer: str | None = None, **options: Any) -> SmsNotifier:
        options.setdefault("from_", FROM)
        notifier = SmsNotifier(
            SID, TOKEN, api_base=prism.url, http_client=preferring(prefer, prism.url), **options
        )
        built.append(notifier)
        return notifier

    yield build
    for notifier in built:
        notifier.close()


def sms(body: str = "Order A1 shipped.", to: str = TO) -> Message:
    return Message(channel="sms", to=to, body=body, key="k1")


def sent_through(prism: Prism, action: Callable[[], Any]) -> tuple[Any, Received]:
    """Run `action`, then the request Prism logged for it."""
    before = len(prism.received())
    result = action()
    received = prism.wait_for(before + 1)
    assert len(received) == before + 1, "Prism logged no request"
    return result, received[-1]


def error_of(action: Callable[[], Any]) -> Exception:
    with pytest.raises(Exception) as caught:
        action()
    return caught.value


def send_error(notifier: SmsNotifier) -> Exception:
    """The error that sending one SMS raised; the notifier closed after it."""
    try:
        return error_of(lambda: notifier.send(sms()))
    finally:
        notifier.close()


# -- sending ----------------------------------------------------------------


def test_send_returns_prisms_sid_after_a_request_twilio_would_accept(
    prism: Prism, make: Make
) -> None:
    notifier = make()
    delivery, request = sent_through(prism, lambda: notifier.send(sms()))
    # The SID is the one in Twilio's example; the recipient is accepted; no warning
    assert delivery.provider_id == PRISM_SID
    assert delivery.accepted == (TO,)
    assert delivery.warnings == ()
    # Prism saw the SDK's request and found it valid against Twilio's description
    assert (request.method, request.path) == ("POST", MESSAGES_PATH)
    assert request.passed_validation
    assert request.form() == {"To": TO, "From": FROM, "Body": "Order A1 shipped."}
    scheme, _, credentials = request.headers["authorization"].partition(" ")
    assert scheme == "Basic"
    assert base64.b64decode(credentials).decode() == f"{SID}:{TOKEN}"


def test_sends_share_kept_alive_connections_across_threads() -> None:
    # Given a local Twilio API
    with TwilioServer() as server:
        notifier = SmsNotifier.from_env(server.env)
        try:
            # When two SMS go out one after the other
            notifier.send(sms(to="+12025550100"))
            notifier.send(sms(to="+12025550101"))
            sequential = server.connections
            # then four at once from four threads (the API holds them until all are inside)
            server.together = 4
            with ThreadPoolExecutor(4) as pool:
                sids = list(pool.map(notifier.send, [sms(to=f"+1202555011{i}") for i in range(4)]))
            # and four more at once, on the connections the others left open
            with ThreadPoolExecutor(4) as pool:
                sids += pool.map(notifier.send, [sms(to=f"+1202555012{i}") for i in range(4)])
        finally:
            notifier.close()
    # Then the first two shared one connection, the four overlapping sends needed four,
    # and the next four reused them
    assert sequential == 1
    assert server.most_at_once == 4
    assert server.connections == 4
    assert len({d.provider_id for d in sids}) == 8 and len(server.messages) == 10


class RecordingProxy:
    """A forward proxy that never forwards (or a server: it does the same as either): it
    keeps each request whole and answers 503 with Retry-After: 3, so a test sees what
    reached it and what came back."""

    def __init__(self) -> None:
        self.heads: list[str] = []  # each request: its head, and its body after it
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                connection, _ = self._socket.accept()
                with connection:
                    head = b""
                    while b"\r\n\r\n" not in head:
                        head += connection.recv(65536)
                    length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
                    expected = head.index(b"\r\n\r\n") + 4 + int(length[1] if length else 0)
                    while len(head) < expected:
                        head += connection.recv(65536)
                    self.heads.append(head.decode("latin-1"))
                    body = b'{"code": 20503, "message": "busy", "status": 503}'
                    connection.sendall(
                        b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 3\r\n"
                        b"Content-Type: application/json\r\nConnection: close\r\n"
                        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
                    )

    def close(self) -> None:
        self._socket.close()


@pytest.fixture
def proxy() -> Iterator[RecordingProxy]:
    recording = RecordingProxy()
    yield recording
    recording.close()


def test_requests_go_through_the_proxy_the_environment_names(
    proxy: RecordingProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given HTTP_PROXY naming a proxy with credentials, and a Twilio host it does not exempt
    netloc = proxy.url.removeprefix("http://")
    monkeypatch.setenv("HTTP_PROXY", f"http://agent:pr0xy-pass@{netloc}")
    notifier = SmsNotifier(SID, TOKEN, from_=FROM, api_base="http://twilio.test", timeout=5)
    # When an SMS is sent
    exc = send_error(notifier)
    # Then the proxy got the request for the absolute URL, with the proxy's credentials
    (head,) = proxy.heads
    assert head.startswith(f"POST http://twilio.test{MESSAGES_PATH} HTTP/1.1\r\n")
    proxy_auth = base64.b64encode(b"agent:pr0xy-pass").decode()
    fields = dict(line.split(": ", 1) for line in head.split("\r\n\r\n")[0].split("\r\n")[1:])
    assert {k.lower(): v for k, v in fields.items()}["proxy-authorization"] == f"Basic {proxy_auth}"
    # and its 503 is transient, retried after the Retry-After it gave
    assert isinstance(exc, TransientError)
    assert exc.retry_after == 3.0


def test_a_json_request_of_the_sdk_goes_as_json_and_a_form_as_a_form(
    proxy: RecordingProxy,
) -> None:
    # Given the channel's HTTP client, and a server that keeps what it receives
    client = http_client_class()(proxy.url, 5.0)
    try:
        # When the SDK sends a JSON body (its newer APIs), then a form (Messages)
        as_json = {"Content-Type": "application/json"}
        x = "https://api.twilio.com/v1/x"
        loop.run(client.request("POST", x, data={"a": [1, 2]}, headers=as_json))
        loop.run(client.request("POST", "https://api.twilio.com/v1/y", data={"To": ["+1", "+2"]}))
    finally:
        loop.run(client.aclose())
    # Then the first went as JSON, the second form-encoded (a list as repeated fields)
    first, second = proxy.heads
    assert first.startswith("POST /v1/x HTTP/1.1\r\n")
    assert first.endswith('\r\n\r\n{"a": [1, 2]}')
    assert "application/x-www-form-urlencoded" in second
    assert second.endswith("\r\n\r\nTo=%2B1&To=%2B2")


def test_a_host_in_no_proxy_is_reached_directly(
    proxy: RecordingProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a proxy for every host but the local Twilio API's
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    with TwilioServer() as server:
        notifier = SmsNotifier.from_env(server.env)  # NO_PROXY: 127.0.0.1 (loopback_only)
        try:
            # When an SMS is sent, Then it reached Twilio, and the proxy saw nothing
            assert notifier.send(sms()).provider_id == server.messages[0]["sid"]
        finally:
            notifier.close()
    assert proxy.heads == []


@pytest.fixture
def https_twilio(tmp_path: Path) -> Iterator[tuple[TwilioServer, Path]]:
    """The local Twilio API over TLS, its certificate signed by a private CA (the CA's
    file is the second item)."""
    authority = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(context)
    bundle = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(bundle))
    with TwilioServer(tls=context) as server:
        yield server, bundle


def test_a_ca_bundle_named_in_the_environment_is_trusted(
    https_twilio: tuple[TwilioServer, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the local Twilio API over TLS, its CA named by REQUESTS_CA_BUNDLE
    server, bundle = https_twilio
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    notifier = SmsNotifier.from_env(server.env)
    try:
        # When an SMS is sent, Then it went out over TLS
        assert notifier.send(sms()).provider_id == server.messages[0]["sid"]
    finally:
        notifier.close()


def test_a_certificate_no_trusted_ca_signed_is_a_transient_failure(
    https_twilio: tuple[TwilioServer, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the same server, and no CA bundle named (certifi's CAs, as requests trusts)
    server, _ = https_twilio
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    # When an SMS is sent
    exc = send_error(SmsNotifier.from_env(server.env))
    # Then the certificate was refused, before anything reached Twilio
    assert isinstance(exc, TransientError)
    assert "CERTIFICATE_VERIFY_FAILED" in exc.reason
    assert server.messages == []


def test_a_socks_proxy_is_refused_as_a_transient_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given ALL_PROXY naming a SOCKS proxy (not supported), with credentials in it
    monkeypatch.setenv("ALL_PROXY", "socks5://agent:s0cks-pass@127.0.0.1:1080")
    notifier = SmsNotifier(SID, TOKEN, from_=FROM, api_base="http://twilio.test", timeout=5)
    # When an SMS is sent
    exc = send_error(notifier)
    # Then it fails for now (fixed in the environment, the retry goes out), saying why,
    # without the proxy's password
    assert isinstance(exc, TransientError)
    assert "unsupported scheme socks5" in exc.reason
    assert "s0cks-pass" not in exc.reason


@pytest.mark.parametrize(("level", "chatter"), [("INFO", False), ("DEBUG", True)])
def test_the_sdks_request_lines_show_only_at_debug(
    prism: Prism, make: Make, level: str, chatter: bool
) -> None:
    """Twilio's SDK logs every request at INFO (ten-odd lines); the worker's INFO keeps
    them out, DEBUG lets them through, and the SDK's warnings show at every level."""
    with root_logging(level, "text") as stream:
        assert make().send(sms()).provider_id == PRISM_SID
        logging.getLogger("twilio.http_client").warning("the SDK's own warning")
    written = stream.getvalue()
    assert ("BEGIN Twilio API Request" in written) is chatter
    assert "the SDK's own warning" in written
    assert TOKEN not in written


def test_messaging_service_sid_replaces_the_sender_number(prism: Prism, make: Make) -> None:
    notifier = make(from_=None, messaging_service_sid=SERVICE)
    delivery, request = sent_through(prism, lambda: notifier.send(sms()))
    assert delivery.provider_id == PRISM_SID
    assert request.passed_validation
    assert request.form() == {"To": TO, "MessagingServiceSid": SERVICE, "Body": "Order A1 shipped."}


def test_status_callback_is_passed_to_twilio(prism: Prism, make: Make) -> None:
    callback = "https://hooks.example.com/twilio/status?tenant=7"
    notifier = make(status_callback=callback)
    _, request = sent_through(prism, lambda: notifier.send(sms()))
    assert request.passed_validation
    assert request.form()["StatusCallback"] == callback


def test_a_161_character_gsm_body_warns_of_two_segments(prism: Prism, make: Make) -> None:
    delivery = make().send(sms("x" * 161))
    assert delivery.provider_id == PRISM_SID
    assert delivery.warnings == ("SMS needs 2 segments (GSM-7, 161 septets)",)


def test_one_emoji_makes_the_body_ucs2_with_70_units_in_one_segment(
    prism: Prism, make: Make
) -> None:
    notifier = make()
    # 68 letters + one emoji (a surrogate pair: 2 UTF-16 units) = 70 units: one segment
    assert notifier.send(sms("a" * 68 + "👍")).warnings == ()
    # 69 letters + the emoji = 71 units: two segments, and the warning names the emoji
    (warning,) = notifier.send(sms("a" * 69 + "👍")).warnings
    assert warning == "SMS needs 2 segments (UCS-2, 71 UTF-16 units; '👍' is not in GSM-7)"


# -- errors -----------------------------------------------------------------


def test_invalid_number_is_permanent_with_twilios_code(make: Make) -> None:
    exc = error_of(lambda: make(prefer="code=400").send(sms(to="+15005550001")))
    assert isinstance(exc, PermanentError)
    assert exc.code == "21211"
    assert "is not a valid phone number" in exc.reason


def test_unsubscribed_recipient_is_permanent(make: Make) -> None:
    exc = error_of(lambda: make(prefer="code=400, example=unsubscribed").send(sms()))
    assert isinstance(exc, PermanentError)
    assert exc.code == "21610"
    assert "unsubscribed" in exc.reason


@pytest.mark.parametrize(
    ("status", "code", "retry_after"),
    [(429, "20429", 7.0), (500, "20500", None), (503, "20503", None)],
)
def test_throttling_and_server_errors_are_transient(
    make: Make, status: int, code: str, retry_after: float | None
) -> None:
    exc = error_of(lambda: make(prefer=f"code={status}").send(sms()))
    assert isinstance(exc, TransientError)
    assert exc.code == code
    assert exc.retry_after == retry_after  # 429 carries Retry-After: 7 in the overlay


def test_unknown_client_error_is_permanent(make: Make) -> None:
    # Prism answers 404 (problem+json, no Twilio code) for a status code not in the description
    exc = error_of(lambda: make(prefer="code=418").send(sms()))
    assert isinstance(exc, PermanentError)
    assert exc.code == "404"


def test_a_closed_port_is_transient() -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    exc = send_error(SmsNotifier(SID, TOKEN, from_=FROM, api_base=closed, timeout=2))
    assert isinstance(exc, TransientError)
    assert exc.retry_after is None
    assert "Cannot connect to host 127.0.0.1" in exc.reason


def test_the_auth_token_appears_in_no_repr_and_no_error(make: Make, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    from_file = SmsNotifier.from_env(
        {"TWILIO_ACCOUNT_SID": SID, "TWILIO_AUTH_TOKEN_FILE": str(token_file), "TWILIO_FROM": FROM}
    )
    closed = SmsNotifier(SID, TOKEN, from_=FROM, api_base=f"http://127.0.0.1:{free_port()}")
    try:
        notifiers = [make(), from_file, closed]
        errors = [
            error_of(lambda: make(prefer="code=400").send(sms())),
            error_of(lambda: make(prefer="code=429").send(sms())),
            error_of(lambda: closed.send(sms())),
        ]
        shown = [repr(n) for n in notifiers] + [str(n) for n in notifiers]
        shown += [repr(e) for e in errors] + [str(e) for e in errors]
        shown += [repr(vars(e)) for e in errors] + [repr(e.__cause__) for e in errors]
        assert all(TOKEN not in text for text in shown), shown
        assert SID in repr(from_file)  # the notifier still says which account it uses
    finally:
        from_file.close()
        closed.close()


# -- configuration ----------------------------------------------------------

GOOD = {"TWILIO_ACCOUNT_SID": SID, "TWILIO_AUTH_TOKEN": TOKEN, "TWILIO_FROM": FROM}


@pytest.mark.parametrize(
    ("change", "names"),
    [
        ({"TWILIO_ACCOUNT_SID": ""}, "TWILIO_ACCOUNT_SID is not set"),
        ({"TWILIO_ACCOUNT_SID": SERVICE}, "TWILIO_ACCOUNT_SID must be"),
        ({"TWILIO_AUTH_TOKEN": ""}, "TWILIO_AUTH_TOKEN (or TWILIO_AUTH_TOKEN_FILE) is not set"),
        ({"TWILIO_AUTH_TOKEN": "", "TWILIO_AUTH_TOKEN_FILE": "/nonexistent"}, "TOKEN_FILE"),
        ({"TWILIO_FROM": ""}, "TWILIO_FROM (the sender's number) or TWILIO_MESSAGING_SERVICE"),
        ({"TWILIO_MESSAGING_SERVICE_SID": SID}, "TWILIO_MESSAGING_SERVICE_SID must be"),
        ({"TWILIO_STATUS_CALLBACK": "ftp://x/y"}, "TWILIO_STATUS_CALLBACK must be an http(s)"),
        ({"TWILIO_API_BASE": "127.0.0.1:4010"}, "TWILIO_API_BASE must be an http(s)"),
        ({"TWILIO_TIMEOUT": "0"}, "TWILIO_TIMEOUT must be a positive"),
        ({"TWILIO_TIMEOUT": "soon"}, "TWILIO_TIMEOUT must be a positive"),
    ],
)
def test_from_env_names_what_is_missing_or_wrong(change: dict[str, str], names: str) -> None:
    with pytest.raises(ChannelConfigError) as caught:
        SmsNotifier.from_env({**GOOD, **change})
    assert names in str(caught.value)
    assert TOKEN not in str(caught.value)


def test_from_env_reads_every_setting() -> None:
    notifier = SmsNotifier.from_env(
        {
            **GOOD,
            "TWILIO_FROM": "",
            "TWILIO_MESSAGING_SERVICE_SID": SERVICE,
            "TWILIO_STATUS_CALLBACK": "https://hooks.example.com/s",
            "TWILIO_API_BASE": "http://127.0.0.1:4010",
            "TWILIO_TIMEOUT": "2.5",
        }
    )
    try:
        assert (notifier.from_, notifier.messaging_service_sid) == (None, SERVICE)
        assert notifier.status_callback == "https://hooks.example.com/s"
        assert notifier.http.base.netloc == "127.0.0.1:4010"
        assert notifier.http.timeout == 2.5
        assert (notifier.channel, notifier.rate_per_second) == ("sms", 10.0)
    finally:
        notifier.close()


# -- segments ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "encoding", "units", "count"),
    [
        ("", "GSM-7", 0, 1),
        ("x" * 160, "GSM-7", 160, 1),
        ("x" * 161, "GSM-7", 161, 2),
        ("x" * 306, "GSM-7", 306, 2),
        ("x" * 307, "GSM-7", 307, 3),
        ("€" * 80, "GSM-7", 160, 1),  # extension characters take two septets
        ("€" * 81, "GSM-7", 162, 2),
        ("{}[]~|^\\\f" + "x" * 142, "GSM-7", 160, 1),
        # 306 septets, but the escape pair cannot straddle two parts: three segments
        ("x" * 152 + "€" + "x" * 152, "GSM-7", 306, 3),
        ("Ça coûte 5 €", "UCS-2", 12, 1),  # û is not in GSM-7
        ("é" * 160, "GSM-7", 160, 1),  # é is
        ("ж" * 70, "UCS-2", 70, 1),
        ("ж" * 71, "UCS-2", 71, 2),
        ("ж" * 134, "UCS-2", 134, 2),
        ("ж" * 135, "UCS-2", 135, 3),
        # a surrogate pair is not split: 66 + 2 does not fit in a 67-unit part
        ("ж" * 66 + "👍" + "ж" * 66, "UCS-2", 134, 3),
    ],
)
def test_segments(body: str, encoding: str, units: int, count: int) -> None:
    seg = segments(body)
    assert (seg.encoding, seg.units, seg.count) == (encoding, units, count)
    assert (segment_warning(body) is None) == (count == 1)


# -- end to end -------------------------------------------------------------


def test_an_order_texts_its_customer_through_twilio(
    app: App, prism: Prism, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the SMS channel configured for Prism in the worker's environment
    for name, value in {**GOOD, "TWILIO_API_BASE": prism.url}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(worker_context, "_installed", None)
    # When an order with a phone number ships
    iid = app.client.start("order", {"order_id": "S1", "phone": TO, "work_seconds": 0})
    before = len(prism.received())
    try:
        run_burst(app)
    finally:
        if worker_context._installed is not None:
            worker_context._installed.close()
    # Then the workflow hears notification.sent for the SMS, with Twilio's SID
    sent = [
        h["event"]["data"]
        for h in app.client.history(iid)
        if h["event"]["type"] == "notification.sent" and h["event"]["data"]["channel"] == "sms"
    ]
    assert len(sent) == 1
    assert sent[0]["provider_id"] == PRISM_SID
    assert sent[0]["to"] == TO
    assert app.client.status(iid).state == "shipped"
    # And the text Prism received is the rendered template
    request = prism.wait_for(before + 1)[-1]
    assert request.passed_validation
    assert request.form()["Body"] == "Order S1 shipped, tracking TRK-S1."


def test_a_forked_child_sends_on_connections_of_its_own_and_leaves_its_parents_open() -> None:
    # Given a notifier that sent once, its connection kept alive in this process
    with TwilioServer() as server:
        notifier = SmsNotifier.from_env(server.env)
        try:
            notifier.send(sms(to="+12025550130"))

            def in_child() -> str:
                with warnings.catch_warnings(record=True) as seen:
                    warnings.simplefilter("always")
                    notifier.send(sms(to="+12025550131"))
                    gc.collect()
                return f"sent {not any('Unclosed' in str(w.message) for w in seen)}"

            # When a forked child sends with the notifier it inherited
            child = in_forked_child(in_child)
            # and the parent sends again afterwards
            notifier.send(sms(to="+12025550132"))
        finally:
            notifier.close()
    # Then the child's SMS went out on a connection of its own, without a word about the
    # parent's session, and the parent's kept connection still served it afterwards
    assert child == "sent True"
    assert [m["To"] for m in server.messages] == ["+12025550130", "+12025550131", "+12025550132"]
    assert server.connections == 2
