"""One conformance table for every registered channel, in the spirit of Apprise's plugin tester.

Each channel contributes a `Case`: how to configure it against its local
server, a message that server takes, and how to provoke every failure. The
same tests then hold every channel to the same contract: configuration errors
name the variable, a dead port and a provider's "later" are TransientError, a
provider's "never" is PermanentError with the provider's code, a send really
arrives, a secret shows nowhere, an unconfigured channel falls back to the
console (or fails under ORCHESTRATOR_REQUIRE_CHANNELS), and the console loads
no vendor SDK. A combination that cannot fail (the console has no
configuration, no provider) is left out of that test's parameters, not
skipped. A channel that does not conform is marked xfail(strict=True) with
the reason, so the table shows it and a fix turns it into a pass.

Every server is real and local: SmtpServer, Prism serving Twilio's own
description, PushService, and the small HookServer below. A Twilio answer is
chosen with Prism's `Prefer` header, which a small proxy (prefer_proxy) adds
to requests whose path starts with /prefer/<value>, so the SMS channel is
built from its environment like any other (TWILIO_API_BASE points at the proxy).
"""

from __future__ import annotations

import http.client
import json
import logging
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from notifiers.base import Delivery, Message, Notifier
from notifiers.console import ConsoleNotifier
from notifiers.errors import ChannelConfigError, DeliveryError, PermanentError, TransientError
from notifiers.registry import CHANNELS, Notifiers, notifier_class
from support.ports import free_port
from support.prism import Prism, merge_patch, patched_spec, prism_mock
from support.push_service import PushService, b64url
from support.smtp_server import SmtpServer
from tests.conftest import ROOT

CANARY = "canary-secret-XYZ123"
MISSING_FILE = "/nonexistent/conformance/secret"
SDKS = ("twilio", "pywebpush", "py_vapid", "http_ece")  # vendor packages a channel may load
TWILIO = Path(__file__).parent.parent / "fixtures" / "twilio"
SID = "AC" + "0123456789abcdef" * 2
MESSAGES = "/2010-04-01/Accounts/{AccountSid}/Messages.json"
# Twilio answers refused credentials with 401 and code 20003, which it documents in prose only
UNAUTHORIZED = {
    "description": "The credentials were refused.",
    "content": {
        "application/json": {
            "schema": {"$ref": "#/components/schemas/twilio_error"},
            "example": {"code": 20003, "message": "Authenticate", "status": 401},
        }
    },
}

Env = dict[str, str]
Setup = Callable[[Any], tuple[Env, Message]]  # the channel's server -> env and message


# -- the local servers ------------------------------------------------------------


class _Threaded(ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True


@contextmanager
def http_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serve `handler` on 127.0.0.1 until the block ends; yields http://127.0.0.1:PORT."""
    server = _Threaded(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,))
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


class _Quiet(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@dataclass
class HookServer:
    """A webhook receiver: POST /status/<code> is answered <code> (with Retry-After: 7
    for 429 and 503); every body is kept."""

    url: str = ""
    bodies: list[bytes] = field(default_factory=list)


@dataclass
class Twilio:
    prism: Prism
    proxy: str  # prefer_proxy's base URL

    def prefer(self, value: str) -> str:
        """A TWILIO_API_BASE whose requests Prism answers as `Prefer: value` asks."""
        return f"{self.proxy}/prefer/{quote(value, safe='')}"


@dataclass
class Push:
    service: PushService
    key_file: str  # the working VAPID key
    public_key: str


def prefer_proxy(upstream: str) -> type[BaseHTTPRequestHandler]:
    """A handler forwarding /prefer/<value>/<path> to upstream/<path> with `Prefer: value`."""
    host, port = upstream.removeprefix("http://").split(":")

    class Proxy(_Quiet):
        def do_POST(self) -> None:
            _, _, value, rest = self.path.split("/", 3)
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
            connection = http.client.HTTPConnection(host, int(port), timeout=10)
            try:
                connection.request("POST", "/" + rest, body, {**headers, "Prefer": unquote(value)})
                answer = connection.getresponse()
                data = answer.read()
                skip = {"content-length", "transfer-encoding", "connection"}
                kept = {k: v for k, v in answer.getheaders() if k.lower() not in skip}
            finally:
                connection.close()
            self.reply(answer.status, data, kept)

    return Proxy


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpServer]:
    busy, gone = ["busy@example.com"], ["gone@example.com"]
    with SmtpServer(transient=busy, permanent=gone) as server:
        yield server


@pytest.fixture(scope="module")
def twilio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Twilio]:
    folder = tmp_path_factory.mktemp("prism")
    spec = patched_spec(
        TWILIO / "twilio_api_v2010.messages.json",
        TWILIO / "errors.merge-patch.json",
        folder / "twilio.json",
    )
    patch = {"paths": {MESSAGES: {"post": {"responses": {"401": UNAUTHORIZED}}}}}
    spec.write_text(json.dumps(merge_patch(json.loads(spec.read_text()), patch)))
    with prism_mock(spec, free_port(), folder / "prism.log") as prism:
        proxied = http_server(prefer_proxy(prism.url))
        with proxied as proxy:
            yield Twilio(prism, proxy)


@pytest.fixture(scope="module")
def push(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Push]:
    key = ec.generate_private_key(ec.SECP256R1())
    key_file = tmp_path_factory.mktemp("vapid") / "vapid.pem"
    key_file.write_text(pem_of(key))
    point = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    with PushService() as service:
        yield Push(service, str(key_file), b64url(point))


@pytest.fixture(scope="module")
def hooks() -> Iterator[HookServer]:
    found = HookServer()

    class Receiver(_Quiet):
        def do_POST(self) -> None:
            found.bodies.append(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
            status = int(self.path.rsplit("/", 1)[-1])
            wait = {"Retry-After": "7"} if status in (429, 503) else {}
            self.reply(status, b"{}", wait)

    with http_server(Receiver) as url:
        found.url = url
        yield found


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy from the environment: every request stays on 127.0.0.1."""
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


def pem_of(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


# -- the cases ----------------------------------------------------------------------


@dataclass(frozen=True)
class Failure:
    """One way to make the provider refuse, and what the error must then say."""

    name: str
    setup: Setup
    code: str | None = None
    retry_after: float | None = None
    gone: bool = False


@dataclass(frozen=True)
class Bad:
    """A malformed configuration: these changes, and the variable the error must name."""

    name: str
    changes: Env
    names: str


def unreadable(secret: str) -> Bad:
    """The secret's *_FILE names a file that cannot be read."""
    return Bad(
        "unreadable-secret-file", {secret: "", f"{secret}_FILE": MISSING_FILE}, f"{secret}_FILE"
    )


@dataclass(frozen=True)
class Canary:
    env: Env  # the secret, set to the canary
    forms: tuple[str, ...]  # every text that would give the secret away


@dataclass(frozen=True)
class Case:
    channel: str
    server: str  # the fixture running the channel's local server
    working: Setup
    received: Callable[[Any, Message], bool]  # the server has the message
    config: Env = field(default_factory=dict)  # valid, with no server needed (plus the canary)
    canary: Callable[[Path], Canary] = lambda folder: Canary({}, ())
    required: tuple[str, ...] = ()
    malformed: tuple[Bad, ...] = ()
    unreachable: Callable[[Any, int], tuple[Env, Message]] | None = None
    transient: tuple[Failure, ...] = ()
    permanent: tuple[Failure, ...] = ()
    refused_credentials: Setup | None = None


def note(channel: str, to: str = "", **fields: Any) -> Message:
    """A message whose body is unique, so its arrival can be looked for."""
    body = f"conformance {uuid.uuid4().hex}"
    return Message(channel=channel, to=to, body=body, subject="Conformance", key=body, **fields)


def email(smtp: SmtpServer, to: str = "buyer@example.com", **env: str) -> tuple[Env, Message]:
    return {**smtp.env, **env}, note("email", to)


def sms(tw: Twilio, base: str | None = None) -> tuple[Env, Message]:
    env = {"TWILIO_ACCOUNT_SID": SID, "TWILIO_AUTH_TOKEN": "tok-conformance"}
    env |= {"TWILIO_FROM": "+15005550001", "TWILIO_TIMEOUT": "5"}
    return {**env, "TWILIO_API_BASE": base or tw.prism.url}, note("sms", "+15005550006")


def sms_received(tw: Twilio, message: Message) -> bool:
    """Prism logged the request (a moment after answering it) and found it valid."""
    deadline = time.monotonic() + 5
    while True:
        logged = [r for r in tw.prism.received() if r.form().get("Body") == message.body]
        if (logged and logged[-1].answered) or time.monotonic() > deadline:
            return bool(logged) and logged[-1].passed_validation
        time.sleep(0.02)


def web_push(
    rig: Push,
    status: int | None = None,
    *,
    retry_after: str | None = None,
    endpoint: str | None = None,
    bound: str | None = None,  # the one applicationServerKey the subscription accepts
) -> tuple[Env, Message]:
    browser = rig.service.subscribe(application_server_key=bound)
    if status is not None:
        rig.service.answer(browser, status, retry_after=retry_after)
    subscription = browser.subscription
    if endpoint is not None:
        subscription = {**subscription, "endpoint": endpoint}
    env = {"VAPID_PRIVATE_KEY_FILE": rig.key_file, "VAPID_SUBJECT": "mailto:ops@example.com"}
    message = note("push", browser.endpoint, push_subscription=subscription)
    return env | {"PUSH_TIMEOUT": "5"}, message


def push_received(rig: Push, message: Message) -> bool:
    return any(r.json().get("body") == message.body for r in rig.service.received)


def vapid_canary(folder: Path) -> Canary:
    key = ec.generate_private_key(ec.SECP256R1())
    content = pem_of(key)
    (folder / "canary.pem").write_text(content)
    scalar = b64url(key.private_numbers().private_value.to_bytes(32, "big"))
    lines = tuple(line for line in content.splitlines() if "-----" not in line)
    forms = (content.strip(), scalar, *lines)
    return Canary({"VAPID_PRIVATE_KEY_FILE": str(folder / "canary.pem")}, forms)


def webhook(hooks: HookServer, status: int = 200) -> tuple[Env, Message]:
    env = {
        "WEBHOOK_SECRET": "whsec-conformance",
        "WEBHOOK_TIMEOUT": "5",
        "WEBHOOK_ALLOW_PRIVATE": "1",  # the receiver is on 127.0.0.1
    }
    return env, note("webhook", f"{hooks.url}/status/{status}")


def webhook_received(hooks: HookServer, message: Message) -> bool:
    return any(json.loads(body).get("body") == message.body for body in hooks.bodies)


def closed(port: int, path: str = "") -> str:
    return f"http://127.0.0.1:{port}{path}"


CASES = (
    Case(
        channel="email",
        server="smtp",
        working=lambda s: email(s),
        received=lambda s, m: any(r.message.get_content().strip() == m.body for r in s.messages),
        config={"SMTP_HOST": "127.0.0.1", "SMTP_PORT": "2525", "SMTP_FROM": "shop@example.com"}
        | {"SMTP_USERNAME": "mailer"},
        canary=lambda folder: Canary({"SMTP_PASSWORD": CANARY}, (CANARY,)),
        required=("SMTP_HOST", "SMTP_FROM", "SMTP_PASSWORD"),
        malformed=(
            Bad("port-not-a-number", {"SMTP_PORT": "25x"}, "SMTP_PORT"),
            Bad("port-out-of-range", {"SMTP_PORT": "70000"}, "SMTP_PORT"),
            Bad("unknown-security", {"SMTP_SECURITY": "ssl3"}, "SMTP_SECURITY"),
            Bad("bad-sender", {"SMTP_FROM": "not an address"}, "SMTP_FROM"),
            unreadable("SMTP_PASSWORD"),
        ),
        unreachable=lambda s, port: email(s, SMTP_PORT=str(port)),
        transient=(Failure("451", lambda s: email(s, "busy@example.com"), "451"),),
        permanent=(Failure("550", lambda s: email(s, "gone@example.com"), "550"),),
        refused_credentials=lambda s: email(s),  # the canary is not the server's password
    ),
    Case(
        channel="sms",
        server="twilio",
        working=lambda t: sms(t),
        received=sms_received,
        config={"TWILIO_ACCOUNT_SID": SID, "TWILIO_FROM": "+15005550001"}
        | {"TWILIO_API_BASE": "http://127.0.0.1:9"},
        canary=lambda folder: Canary({"TWILIO_AUTH_TOKEN": CANARY}, (CANARY,)),
        required=("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_FROM"),
        malformed=(
            Bad("api-base-not-a-url", {"TWILIO_API_BASE": "127.0.0.1:4010"}, "TWILIO_API_BASE"),
            Bad("not-an-account-sid", {"TWILIO_ACCOUNT_SID": "MG0123"}, "TWILIO_ACCOUNT_SID"),
            Bad("timeout-not-a-number", {"TWILIO_TIMEOUT": "soon"}, "TWILIO_TIMEOUT"),
            unreadable("TWILIO_AUTH_TOKEN"),
        ),
        unreachable=lambda t, port: sms(t, closed(port)),
        transient=(
            Failure("429", lambda t: sms(t, t.prefer("code=429")), "20429", retry_after=7.0),
            Failure("503", lambda t: sms(t, t.prefer("code=503")), "20503"),
        ),
        permanent=(Failure("400", lambda t: sms(t, t.prefer("code=400")), "21211"),),
        refused_credentials=lambda t: sms(t, t.prefer("code=401")),
    ),
    Case(
        channel="push",
        server="push",
        working=lambda p: web_push(p),
        received=push_received,
        config={"VAPID_SUBJECT": "mailto:ops@example.com"},
        canary=vapid_canary,
        required=("VAPID_PRIVATE_KEY_FILE", "VAPID_SUBJECT"),
        malformed=(
            Bad("not-a-key", {"VAPID_PRIVATE_KEY": "not-a-key"}, "VAPID_PRIVATE_KEY"),
            Bad("subject-not-a-url", {"VAPID_SUBJECT": "ops@example.com"}, "VAPID_SUBJECT"),
            Bad("timeout-not-a-number", {"PUSH_TIMEOUT": "soon"}, "PUSH_TIMEOUT"),
            unreadable("VAPID_PRIVATE_KEY"),
        ),
        unreachable=lambda p, port: web_push(p, endpoint=closed(port, "/push/ab12")),
        transient=(
            Failure("429", lambda p: web_push(p, 429, retry_after="7"), "429", retry_after=7.0),
            Failure("503", lambda p: web_push(p, 503), "503"),
        ),
        permanent=(
            Failure("410", lambda p: web_push(p, 410), "410", gone=True),
            Failure("404", lambda p: web_push(p, 404), "404", gone=True),
        ),
        # the subscription accepts only the working key; the canary key is refused (403)
        refused_credentials=lambda p: web_push(p, bound=p.public_key),
    ),
    Case(
        channel="webhook",
        server="hooks",
        working=lambda h: webhook(h),
        received=webhook_received,
        canary=lambda folder: Canary({"WEBHOOK_SECRET": CANARY}, (CANARY,)),
        required=("WEBHOOK_SECRET",),
        malformed=(
            Bad("timeout-not-a-number", {"WEBHOOK_TIMEOUT": "soon"}, "WEBHOOK_TIMEOUT"),
            Bad("timeout-zero", {"WEBHOOK_TIMEOUT": "0"}, "WEBHOOK_TIMEOUT"),
            unreadable("WEBHOOK_SECRET"),
        ),
        unreachable=lambda h, port: (webhook(h)[0], note("webhook", closed(port, "/hook"))),
        transient=(
            Failure("429", lambda h: webhook(h, 429), "429", retry_after=7.0),
            Failure("503", lambda h: webhook(h, 503), "503", retry_after=7.0),
        ),
        permanent=(Failure("404", lambda h: webhook(h, 404), "404"),),
        refused_credentials=lambda h: webhook(h, 401),
    ),
    Case(
        channel="console",
        server="capsys",
        working=lambda capsys: ({}, note("console", "ops")),
        received=lambda capsys, m: m.body in capsys.readouterr().out,
    ),
)

# Known non-conformance: (test, channel) -> reason. The test shows it; a fix makes it XPASS.
NONCONFORMING: dict[tuple[str, str], str] = {}


def marks(test: str, channel: str) -> list[Any]:
    reason = NONCONFORMING.get((test, channel))
    return [pytest.mark.xfail(strict=True, reason=reason)] if reason else []


def cases(test: str, when: Callable[[Case], bool] = lambda c: True) -> list[Any]:
    return [
        pytest.param(case, id=case.channel, marks=marks(test, case.channel))
        for case in CASES
        if when(case)
    ]


def failures(kind: str) -> list[Any]:
    return [
        pytest.param(case, f, id=f"{case.channel}-{f.name}", marks=marks(kind, case.channel))
        for case in CASES
        for f in getattr(case, kind)
    ]


@contextmanager
def built(case: Case, env: Env) -> Iterator[Notifier]:
    notifier = notifier_class(case.channel).from_env(env)
    try:
        yield notifier
    finally:
        notifier.close()


def refusal(case: Case, env: Env, message: Message) -> DeliveryError:
    with built(case, env) as notifier, pytest.raises(DeliveryError) as caught:
        notifier.send(message)
    return caught.value


def config_error(case: Case, env: Env) -> ChannelConfigError:
    with pytest.raises(ChannelConfigError) as caught, built(case, env):
        pass
    return caught.value


def config_params() -> list[Any]:
    rows = [(c, {name: ""}, name, f"no-{name}") for c in CASES for name in c.required]
    rows += [(c, bad.changes, bad.names, bad.name) for c in CASES for bad in c.malformed]
    return [
        pytest.param(c, changes, names, id=f"{c.channel}-{label}", marks=marks("config", c.channel))
        for c, changes, names, label in rows
    ]


# -- 1. configuration ----------------------------------------------------------------


@pytest.mark.parametrize(("case", "changes", "names"), config_params())
def test_a_missing_or_malformed_variable_is_a_config_error_naming_it(
    case: Case, changes: Env, names: str, tmp_path: Path
) -> None:
    # Given a configuration the channel accepts, with the canary as its secret
    canary = case.canary(tmp_path)
    good = {**case.config, **canary.env}
    with built(case, good):
        pass
    # When one variable is removed (set empty) or malformed
    error = config_error(case, {k: v for k, v in {**good, **changes}.items() if v})
    # Then the error names it, and not the secret
    assert names in str(error)
    assert not [form for form in canary.forms if form in str(error)]


# -- 2 to 5. sending -------------------------------------------------------------------


@pytest.mark.parametrize("case", cases("unreachable", lambda c: c.unreachable is not None))
def test_nothing_listening_is_transient(case: Case, request: pytest.FixtureRequest) -> None:
    assert case.unreachable is not None
    env, message = case.unreachable(request.getfixturevalue(case.server), free_port())
    error = refusal(case, env, message)
    assert isinstance(error, TransientError), repr(error)


@pytest.mark.parametrize(("case", "failure"), failures("transient"))
def test_a_providers_try_again_later_is_transient(
    case: Case, failure: Failure, request: pytest.FixtureRequest
) -> None:
    error = refusal(case, *failure.setup(request.getfixturevalue(case.server)))
    assert isinstance(error, TransientError), repr(error)
    assert (error.code, error.retry_after) == (failure.code, failure.retry_after)


@pytest.mark.parametrize(("case", "failure"), failures("permanent"))
def test_a_providers_never_is_permanent_with_its_code(
    case: Case, failure: Failure, request: pytest.FixtureRequest
) -> None:
    error = refusal(case, *failure.setup(request.getfixturevalue(case.server)))
    assert isinstance(error, PermanentError), repr(error)
    assert (error.code, error.gone) == (failure.code, failure.gone)


@pytest.mark.parametrize("case", cases("send"))
def test_a_send_arrives_and_returns_the_providers_id(
    case: Case, request: pytest.FixtureRequest
) -> None:
    server = request.getfixturevalue(case.server)
    env, message = case.working(server)
    with built(case, env) as notifier:
        delivery = notifier.send(message)
    assert isinstance(delivery, Delivery)
    assert isinstance(delivery.provider_id, str) and delivery.provider_id.strip()
    assert case.received(server, message)


# -- 6. secrets ------------------------------------------------------------------------


@contextmanager
def every_logger_at_debug() -> Iterator[None]:
    """Every logger passes DEBUG records on to the root (where caplog listens)."""
    loggers = [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)]
    saved = [(lg, lg.level, lg.propagate, lg.disabled) for lg in loggers]
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
        logger.propagate, logger.disabled = True, False
    try:
        yield
    finally:
        for logger, level, propagate, disabled in saved:
            logger.setLevel(level)
            logger.propagate, logger.disabled = propagate, disabled


@pytest.mark.parametrize("case", cases("secret", lambda c: c.refused_credentials is not None))
def test_the_secret_shows_nowhere(
    case: Case, request: pytest.FixtureRequest, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert case.refused_credentials is not None and case.unreachable is not None
    server = request.getfixturevalue(case.server)
    canary = case.canary(tmp_path)
    attempts = [case.refused_credentials(server), case.unreachable(server, free_port())]
    shown: list[str] = []
    errors: list[DeliveryError] = []
    caplog.set_level(logging.DEBUG)
    with every_logger_at_debug():
        # When the canary's credentials are refused, then when nothing is listening
        for env, message in attempts:
            with built(case, {**env, **canary.env}) as notifier:
                shown += [repr(notifier), str(notifier)]
                with pytest.raises(DeliveryError) as caught:
                    notifier.send(message)
            errors.append(caught.value)
    for error in errors:
        shown += [str(error), repr(error), "".join(traceback.format_exception(error))]
    shown += [caplog.text, *(r.getMessage() for r in caplog.records)]
    # Then refused credentials are final, and no form of the secret appears anywhere
    assert isinstance(errors[0], PermanentError), repr(errors[0])
    leaks = [(form, text[:300]) for form in canary.forms for text in shown if form in text]
    assert not leaks


# -- 7 and 8. the registry ----------------------------------------------------------


@pytest.mark.parametrize("case", cases("registry", lambda c: bool(c.required)))
def test_an_unconfigured_channel_falls_back_to_the_console_unless_required(
    case: Case, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    channels = Notifiers({})
    try:
        notifier, warning = channels.get(case.channel)
    finally:
        channels.close()
    assert isinstance(notifier, ConsoleNotifier)
    assert notifier.stands_in_for == case.channel
    assert warning is not None and case.channel in warning and case.required[0] in warning
    assert warning in [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    strict = Notifiers({"ORCHESTRATOR_REQUIRE_CHANNELS": "1"})
    with pytest.raises(ChannelConfigError) as caught:
        strict.get(case.channel)
    assert case.required[0] in str(caught.value)


PROBE = """
import json, sys
from notifiers.registry import Notifiers
notifier, _ = Notifiers({}).get(sys.argv[1])
loaded = sorted({name.split(".")[0] for name in sys.modules} & set(sys.argv[2:]))
print(json.dumps([type(notifier).__name__, loaded]))
"""


@pytest.mark.parametrize("case", cases("sdk"))
def test_the_console_loads_no_vendor_sdk(case: Case) -> None:
    # Given a fresh interpreter, when the registry builds the channel with no configuration
    result = subprocess.run(
        [sys.executable, "-c", PROBE, case.channel, *SDKS],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    # Then what it built is the console, and no vendor SDK was imported for it
    assert json.loads(result.stdout.splitlines()[-1]) == ["ConsoleNotifier", []]


def test_the_table_covers_every_registered_channel() -> None:
    assert sorted(case.channel for case in CASES) == sorted(CHANNELS)
