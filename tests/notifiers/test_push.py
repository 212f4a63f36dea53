"""The Web Push channel against a real push service on 127.0.0.1 (support/push_service.py).

The service checks every VAPID token (ES256 signature, aud, exp, sub) and
decrypts every aes128gcm body with the browser's key, so a send that passes
here was encrypted for that browser and signed by our key.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from py_vapid import Vapid  # type: ignore[import-untyped]
from pywebpush import WebPusher  # type: ignore[import-untyped]

import orchestrator.runtime.context
from notifiers.base import Message
from notifiers.errors import ChannelConfigError, PermanentError, TransientError
from notifiers.push import MAX_PLAINTEXT, PushNotifier
from notifiers.registry import Notifiers
from orchestrator.entry.bootstrap import App
from orchestrator.entry.worker import run_burst
from orchestrator.runtime.notify.recipients import Recipient, Recipients
from orchestrator.runtime.registry import Registry
from support.push_service import Browser, PushService, b64url
from tests.conftest import ROOT
from tests.push_flow import PushAlert

SUBJECT = "mailto:ops@example.com"


@pytest.fixture
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


@pytest.fixture
def raw_key(key: ec.EllipticCurvePrivateKey) -> str:
    """The form `vapid --gen` users paste: base64url of the 32-octet private scalar."""
    return b64url(key.private_numbers().private_value.to_bytes(32, "big"))


@pytest.fixture
def public_key(key: ec.EllipticCurvePrivateKey) -> str:
    return b64url(
        key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
    )


@pytest.fixture
def service() -> Iterator[PushService]:
    with PushService() as running:
        yield running


@pytest.fixture
def notifier(pem: str) -> Iterator[PushNotifier]:
    built = PushNotifier.from_env({"VAPID_PRIVATE_KEY": pem, "VAPID_SUBJECT": SUBJECT})
    yield built
    built.close()


def message(browser: Browser, body: str = "Boiler 1 reads 97", key: str = "n1:r1") -> Message:
    return Message(
        channel="push",
        to=browser.endpoint,
        body=body,
        subject="Alert",
        key=key,
        push_subscription=browser.subscription,
    )


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# sending


def test_a_push_is_encrypted_for_the_browser_and_signed_with_the_vapid_key(
    service: PushService, notifier: PushNotifier, public_key: str
) -> None:
    # Given a browser subscribed with our key as its applicationServerKey
    browser = service.subscribe(application_server_key=public_key)
    # When a notification is sent to its subscription
    delivery = notifier.send(message(browser))
    # Then the browser decrypts exactly the JSON payload
    (received,) = service.received_by(browser)
    assert received.json() == {"title": "Alert", "body": "Boiler 1 reads 97", "key": "n1:r1"}
    # And the push service verified a VAPID token for its own origin, from our key
    assert service.refused == []
    assert received.vapid_key == public_key == notifier.public_key
    assert received.claims["aud"] == service.origin
    assert received.claims["sub"] == SUBJECT
    assert time.time() < received.claims["exp"] <= time.time() + 24 * 3600
    assert received.headers["content-encoding"] == "aes128gcm"
    assert received.headers["ttl"] == "86400"
    assert len(received.headers["topic"]) <= 32
    # And the provider id is the message resource the push service created
    assert delivery.provider_id.startswith(f"{service.origin}/message/")
    assert delivery.accepted == (browser.endpoint,)
    assert delivery.warnings == ()


@pytest.mark.parametrize("form", ["raw", "pem_file", "pem_one_line"])
def test_the_key_is_read_raw_from_a_file_or_as_a_one_line_pem(
    form: str, service: PushService, pem: str, raw_key: str, public_key: str, tmp_path: Path
) -> None:
    env = {"VAPID_SUBJECT": "https://example.com", "PUSH_TTL": "60"}
    if form == "raw":
        env["VAPID_PRIVATE_KEY"] = raw_key
    elif form == "pem_file":
        (tmp_path / "vapid.pem").write_text(pem)
        env["VAPID_PRIVATE_KEY_FILE"] = str(tmp_path / "vapid.pem")
    else:
        env["VAPID_PRIVATE_KEY"] = pem.replace("\n", "\\n")
    browser = service.subscribe(application_server_key=public_key)
    built = PushNotifier.from_env(env)
    try:
        built.send(message(browser))
    finally:
        built.close()
    (received,) = service.received_by(browser)
    assert received.vapid_key == public_key
    assert received.claims["sub"] == "https://example.com"
    assert received.headers["ttl"] == "60"


def test_one_connection_carries_every_send(service: PushService, notifier: PushNotifier) -> None:
    first, second = service.subscribe(), service.subscribe()
    for browser in (first, second, first):
        notifier.send(message(browser))
    assert [r.browser for r in service.received] == [first.id, second.id, first.id]
    assert service.connections == 1


def test_a_body_too_long_for_a_push_message_is_cut_with_a_warning(
    service: PushService, notifier: PushNotifier
) -> None:
    browser = service.subscribe()
    delivery = notifier.send(message(browser, body="é" * 5000))
    (received,) = service.received_by(browser)
    assert len(received.payload) <= MAX_PLAINTEXT
    body = received.json()["body"]
    assert body.endswith("…") and set(body[:-1]) == {"é"}
    assert len(received.payload) > MAX_PLAINTEXT - 4  # cut no more than needed
    assert delivery.warnings == ("push body truncated to fit the 4 KB push payload",)


def test_a_token_signed_by_another_key_is_refused_and_that_is_permanent(
    service: PushService, notifier: PushNotifier
) -> None:
    # Given a subscription made for another application server's key
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    point = other.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    browser = service.subscribe(application_server_key=b64url(point))
    # When we send to it, the push service refuses our token
    with pytest.raises(PermanentError) as caught:
        notifier.send(message(browser))
    assert (caught.value.code, caught.value.gone) == ("403", False)
    assert "VAPID authorization refused" in str(caught.value)
    assert service.refused == ["k is not the subscription's applicationServerKey"]
    assert service.received == []


# the push service's answers


@pytest.mark.parametrize("status", [410, 404])
def test_a_gone_subscription_is_permanent_and_marked_gone(
    status: int, service: PushService, notifier: PushNotifier
) -> None:
    browser = service.subscribe()
    service.answer(browser, status)
    with pytest.raises(PermanentError) as caught:
        notifier.send(message(browser))
    assert caught.value.gone is True
    assert caught.value.code == str(status)
    assert service.origin in str(caught.value)
    assert browser.id not in str(caught.value)  # the subscription's path stays out of errors
    assert service.refused == []  # the token was good; the subscription is what is gone


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("7", 7.0),
        ("an HTTP date 30 s ahead", 30.0),
        ("soon", None),
        (None, None),
    ],
)
def test_429_is_transient_with_the_retry_after_the_push_service_asked_for(
    header: str | None, expected: float | None, service: PushService, notifier: PushNotifier
) -> None:
    if header == "an HTTP date 30 s ahead":
        header = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    browser = service.subscribe()
    service.answer(browser, 429, retry_after=header)
    with pytest.raises(TransientError) as caught:
        notifier.send(message(browser))
    assert caught.value.code == "429"
    if expected is None:
        assert caught.value.retry_after is None
    else:
        assert caught.value.retry_after == pytest.approx(expected, abs=2)


@pytest.mark.parametrize(("status", "retry_after"), [(500, None), (503, 120.0)])
def test_a_failing_push_service_is_transient(
    status: int, retry_after: float | None, service: PushService, notifier: PushNotifier
) -> None:
    browser = service.subscribe()
    service.answer(browser, status, retry_after="120" if retry_after else None)
    with pytest.raises(TransientError) as caught:
        notifier.send(message(browser))
    assert (caught.value.code, caught.value.retry_after) == (str(status), retry_after)


@pytest.mark.parametrize(
    ("status", "why"),
    [(413, "payload too large"), (400, "bad request"), (403, "VAPID authorization refused")],
)
def test_other_refusals_are_permanent_with_the_status_as_code(
    status: int, why: str, service: PushService, notifier: PushNotifier
) -> None:
    browser = service.subscribe()
    service.answer(browser, status)
    with pytest.raises(PermanentError) as caught:
        notifier.send(message(browser))
    assert (caught.value.code, caught.value.gone) == (str(status), False)
    assert why in str(caught.value)
    assert f"scripted {status}" in str(caught.value)  # the push service's explanation


def test_a_scripted_answer_lasts_as_many_times_as_asked(
    service: PushService, notifier: PushNotifier
) -> None:
    browser = service.subscribe()
    service.answer(browser, 500, times=1)
    with pytest.raises(TransientError):
        notifier.send(message(browser))
    notifier.send(message(browser))
    assert service.answered == [(browser.id, 500), (browser.id, 201)]


def test_a_closed_port_is_transient(notifier: PushNotifier) -> None:
    port = closed_port()
    browser = Browser(
        "gone",
        f"http://127.0.0.1:{port}/push/abc",
        ec.generate_private_key(ec.SECP256R1()),
        b"0123456789abcdef",
    )
    with pytest.raises(TransientError) as caught:
        notifier.send(message(browser))
    assert (
        str(caught.value) == f"cannot reach push service http://127.0.0.1:{port}: ConnectionError"
    )


def test_a_push_service_slower_than_push_timeout_is_transient(
    service: PushService, pem: str
) -> None:
    built = PushNotifier.from_env(
        {"VAPID_PRIVATE_KEY": pem, "VAPID_SUBJECT": SUBJECT, "PUSH_TIMEOUT": "0.3"}
    )
    browser = service.subscribe()
    service.answer(browser, 201, delay=3)
    try:
        with pytest.raises(TransientError, match="ReadTimeout"):
            built.send(message(browser))
    finally:
        built.close()


@pytest.mark.parametrize(
    ("subscription", "error"),
    [
        (None, "needs a push subscription"),
        ({"keys": {}}, "has no endpoint"),
        ({"endpoint": "http://push.example.com/x", "keys": {}}, "is not https"),
        ({"endpoint": "ftp://127.0.0.1/x", "keys": {}}, "is not an https URL"),
        ({"endpoint": "https://push.example.com/x"}, "has no keys"),
        (
            {"endpoint": "https://push.example.com/x", "keys": {"p256dh": "AAAA", "auth": "x"}},
            "p256dh is not a P-256 public key",
        ),
    ],
)
def test_a_malformed_subscription_is_permanent_before_any_request(
    subscription: dict[str, Any] | None, error: str, notifier: PushNotifier
) -> None:
    with pytest.raises(PermanentError, match=error) as caught:
        notifier.send(Message("push", "x", "body", push_subscription=subscription))
    assert caught.value.gone is False


def test_a_bad_auth_secret_is_permanent(service: PushService, notifier: PushNotifier) -> None:
    subscription = service.subscribe().subscription
    subscription["keys"]["auth"] = b64url(b"short")
    with pytest.raises(PermanentError, match="auth secret is not 16 octets"):
        notifier.send(Message("push", "x", "body", push_subscription=subscription))
    assert service.answered == []


# configuration and secrets


@pytest.mark.parametrize(
    ("env", "error"),
    [
        ({"VAPID_SUBJECT": SUBJECT}, "VAPID_PRIVATE_KEY .or VAPID_PRIVATE_KEY_FILE. is not set"),
        ({"VAPID_PRIVATE_KEY": "PEM"}, "VAPID_SUBJECT is not set"),
        ({"VAPID_PRIVATE_KEY": "PEM", "VAPID_SUBJECT": "ops@example.com"}, "mailto: or https:"),
        ({"VAPID_PRIVATE_KEY": "PEM", "VAPID_SUBJECT": "mailto:nobody"}, "refused by py_vapid"),
        ({"VAPID_PRIVATE_KEY": "PEM", "VAPID_SUBJECT": SUBJECT, "PUSH_TTL": "1d"}, "PUSH_TTL"),
        ({"VAPID_PRIVATE_KEY": "PEM", "VAPID_SUBJECT": SUBJECT, "PUSH_TTL": "-1"}, "PUSH_TTL"),
        ({"VAPID_PRIVATE_KEY": "PEM", "VAPID_SUBJECT": SUBJECT, "PUSH_TIMEOUT": "0"}, "TIMEOUT"),
        ({"VAPID_PRIVATE_KEY_FILE": "/nonexistent/vapid.pem"}, "VAPID_PRIVATE_KEY_FILE cannot"),
    ],
)
def test_configuration_errors_name_the_variable(env: dict[str, str], error: str, pem: str) -> None:
    env = {k: pem if v == "PEM" else v for k, v in env.items()}
    with pytest.raises(ChannelConfigError, match=error) as caught:
        PushNotifier.from_env(env)
    assert pem.splitlines()[1] not in str(caught.value)


def rsa_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


@pytest.mark.parametrize(
    ("bad_key", "error"),
    [
        ("SECRETnot-a-key-at-all", "not a valid private key"),
        (b64url(b"\xff" * 32), "not a valid private key"),  # 32 octets, beyond the curve order
        ("-----BEGIN PRIVATE KEY-----\nSECRETgarbage\n-----END PRIVATE KEY-----", "not a valid"),
        ("RSA", "must be a P-256"),
    ],
)
def test_a_bad_key_is_a_configuration_error_that_never_quotes_it(bad_key: str, error: str) -> None:
    if bad_key == "RSA":
        bad_key = rsa_pem()
    secret_part = bad_key.splitlines()[1] if "\n" in bad_key else bad_key
    try:
        PushNotifier.from_env({"VAPID_PRIVATE_KEY": bad_key, "VAPID_SUBJECT": SUBJECT})
    except ChannelConfigError as exc:
        assert error in str(exc)
        assert secret_part not in "".join(traceback.format_exception(exc))
    else:
        pytest.fail(f"{bad_key[:10]}... was accepted")


def test_the_private_key_never_shows(
    service: PushService, notifier: PushNotifier, pem: str, raw_key: str
) -> None:
    # Given every way the notifier and its errors are shown
    browser = service.subscribe()
    shown = [repr(notifier), str(notifier), repr(vars(notifier))]
    for status in (410, 429, 403, 500):
        service.answer(browser, status)
        try:
            notifier.send(message(browser))
        except (PermanentError, TransientError) as exc:
            shown += [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
    service.answer(browser, 201)
    shown.append(json.dumps(notifier.send(message(browser)).summary()))
    # Then neither form of the private key is in any of them
    body = "".join(pem.splitlines()[1:-1])
    for text in shown:
        assert raw_key not in text
        assert body[:40] not in text and body[-40:] not in text
    assert "public_key=" in repr(notifier)  # the public key is public: browsers need it


def test_an_unconfigured_push_channel_falls_back_to_the_console_naming_what_is_missing() -> None:
    channels = Notifiers({"VAPID_SUBJECT": SUBJECT})
    try:
        notifier, warning = channels.get("push")
    finally:
        channels.close()
    assert type(notifier).__name__ == "ConsoleNotifier"
    assert warning is not None and "VAPID_PRIVATE_KEY" in warning


def test_importing_the_channel_does_not_import_pywebpush() -> None:
    probe = "import sys, notifiers.push; print('pywebpush' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


# through the real job flow


@pytest.fixture
def push_app(app: App, service: PushService, pem: str, monkeypatch: pytest.MonkeyPatch) -> App:
    """The engine with the push workflow and VAPID configured; RQ's forked job
    processes inherit the environment and reach the push service over its socket."""
    monkeypatch.setenv("VAPID_PRIVATE_KEY", pem)
    monkeypatch.setenv("VAPID_SUBJECT", SUBJECT)
    monkeypatch.setenv("ORCHESTRATOR_REQUIRE_CHANNELS", "1")  # no silent console stand-in
    monkeypatch.setattr(orchestrator.runtime.context, "_installed", None)
    app.registry = Registry([PushAlert])
    return app


def alert(app: App) -> str:
    return app.client.start(
        "push_alert", {"recipient": "r1", "sensor": "boiler-1", "value": 97, "threshold": 90}
    )


def test_a_notification_reaches_the_live_subscription_and_drops_the_gone_one(
    push_app: App, service: PushService
) -> None:
    # Given a recipient with two subscriptions, one of which the push service says is gone
    live, gone = service.subscribe(), service.subscribe()
    service.answer(gone, 410)
    recipients = Recipients(push_app.redis, push_app.keys)
    recipients.save(Recipient(id="r1", push=[gone.subscription, live.subscription]))
    # When a workflow enters a state that notifies the recipient by push
    iid = alert(push_app)
    run_burst(push_app)
    # Then the live browser decrypted the rendered template
    (received,) = service.received_by(live)
    payload = received.json()
    assert (payload["title"], payload["body"]) == (
        "Alert on boiler-1",
        "boiler-1 reads 97, over 90.",
    )
    assert payload["key"].startswith(iid) and payload["key"].endswith(":r1")
    # And the gone subscription was tried, then removed from the recipient
    assert (gone.id, 410) in service.answered
    recipient = recipients.get("r1")
    assert recipient is not None and recipient.push == [live.subscription]
    # And the workflow heard notification.sent with the push service's message id
    assert push_app.client.status(iid).state == "notified"
    (sent,) = [
        h["event"]
        for h in push_app.client.history(iid)
        if h["event"]["type"] == "notification.sent"
    ]
    assert sent["data"]["channel"] == "push"
    assert sent["data"]["provider_id"].startswith(f"{service.origin}/message/")
    assert service.refused == []


def test_a_rate_limited_push_is_retried_after_the_push_services_retry_after(
    push_app: App, service: PushService
) -> None:
    # Given a push service that answers 429 "retry after 1 second" once
    browser = service.subscribe()
    service.answer(browser, 429, retry_after="1", times=1)
    Recipients(push_app.redis, push_app.keys).save(Recipient(id="r1", push=[browser.subscription]))
    # When the notification is sent
    started = time.monotonic()
    iid = alert(push_app)
    run_burst(push_app)
    # Then the second try, a second later, is delivered
    assert service.answered == [(browser.id, 429), (browser.id, 201)]
    assert time.monotonic() - started >= 1
    assert len(service.received_by(browser)) == 1
    assert push_app.client.status(iid).state == "notified"


def test_a_recipient_whose_every_subscription_is_gone_fails_the_notification(
    push_app: App, service: PushService
) -> None:
    browser = service.subscribe()
    service.answer(browser, 404)
    recipients = Recipients(push_app.redis, push_app.keys)
    recipients.save(Recipient(id="r1", push=[browser.subscription]))
    iid = alert(push_app)
    run_burst(push_app)
    assert push_app.client.status(iid).state == "failed"
    (failed,) = [
        h["event"]
        for h in push_app.client.history(iid)
        if h["event"]["type"] == "notification.failed"
    ]
    assert "every push subscription of r1 is gone" in failed["data"]["reason"]
    recipient = recipients.get("r1")
    assert recipient is not None and recipient.push == []


# the test push service itself: its checks must be able to refuse


@pytest.mark.parametrize(
    ("forgery", "status", "reason"),
    [
        ("none", 201, None),
        ("signed by another key", 403, "JWT signature does not verify with k"),
        ("aud of another origin", 403, "aud 'http://127.0.0.1:1' is not"),
        ("expired", 403, "is not within the next 24 hours"),
        ("two days ahead", 403, "is not within the next 24 hours"),
        ("no authorization", 401, "no vapid authorization"),
        ("encrypted with another auth secret", 400, "cannot decrypt"),
    ],
)
def test_the_push_service_refuses_what_a_real_one_would(
    forgery: str,
    status: int,
    reason: str | None,
    service: PushService,
    key: ec.EllipticCurvePrivateKey,
    public_key: str,
) -> None:
    browser = service.subscribe(application_server_key=public_key)
    claims: dict[str, Any] = {
        "sub": SUBJECT,
        "aud": service.origin,
        "exp": int(time.time()) + 3600,
    }
    signer = Vapid(private_key=key)
    subscription = browser.subscription
    if forgery == "signed by another key":
        signer = Vapid(private_key=ec.generate_private_key(ec.SECP256R1()))
    elif forgery == "aud of another origin":
        claims["aud"] = "http://127.0.0.1:1"
    elif forgery == "expired":
        claims["exp"] = int(time.time()) - 10
    elif forgery == "two days ahead":
        claims["exp"] = int(time.time()) + 2 * 24 * 3600
    elif forgery == "encrypted with another auth secret":
        subscription["keys"]["auth"] = b64url(b"another secret!!")
    headers = signer.sign(claims)
    if forgery == "signed by another key":  # claim to be the subscription's key
        headers["Authorization"] = headers["Authorization"].split(",k=")[0] + f",k={public_key}"
    if forgery == "no authorization":
        headers = {}
    with requests.Session() as session:
        response = WebPusher(subscription, requests_session=session).send(
            b"hello", headers, ttl=60, timeout=5
        )
    assert response.status_code == status
    if reason is None:
        assert service.refused == [] and service.received_by(browser)[0].payload == b"hello"
    else:
        (refusal,) = service.refused
        assert reason in refusal
        assert service.received == []
