"""The email channel against a real SMTP server (support/smtp_server.py: aiosmtpd, TLS, AUTH)."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from notifiers.base import Delivery, Message
from notifiers.email import EmailNotifier
from notifiers.errors import ChannelConfigError, PermanentError, TransientError
from orchestrator.entry.bootstrap import App
from orchestrator.entry.worker import run_burst
from support.ports import free_port
from support.smtp_server import PASSWORD, USERNAME, SmtpServer, smtp_server

__all__ = ["smtp_server"]  # the fixture, imported for pytest


def mail(to: str = "buyer@example.com", **fields: str) -> Message:
    defaults = {"subject": "Your order", "body": "It shipped.", "key": "order-1:email"}
    return Message(channel="email", to=to, **{**defaults, **fields})  # type: ignore[arg-type]


@pytest.fixture
def notifier(smtp_server: SmtpServer) -> Iterator[EmailNotifier]:
    notifier = EmailNotifier.from_env(smtp_server.env)
    yield notifier
    notifier.close()


def send_once(env: dict[str, str], message: Message) -> Delivery:
    notifier = EmailNotifier.from_env(env)
    try:
        return notifier.send(message)
    finally:
        notifier.close()


# -- what arrives ----------------------------------------------------------------


def test_a_text_and_html_message_arrives_with_its_headers_over_starttls_and_auth(
    smtp_server: SmtpServer,
) -> None:
    # Given a notifier for a STARTTLS + AUTH server, with a Reply-To
    env = {**smtp_server.env, "SMTP_REPLY_TO": "Support <help@example.com>"}
    notifier = EmailNotifier.from_env(env)
    # When it sends a message with an HTML part (and a line holding only a dot)
    delivery = notifier.send(
        mail(
            to="Ana Núñez <ana@example.com>",
            subject="Commande A1 expédiée",
            body="Bonjour,\n.\nÀ bientôt",
            html="<p>Bonjour <b>Ana</b></p>",
        )
    )
    notifier.close()
    # Then exactly one message arrived, from an authenticated session
    [received] = smtp_server.messages
    assert received.login == USERNAME
    assert received.mail_from == "shop@example.com"
    assert received.rcpt_tos == ("ana@example.com",)
    email = received.message
    assert email["From"].addresses[0].display_name == "Shop"
    assert email["From"].addresses[0].addr_spec == "shop@example.com"
    assert [(a.display_name, a.addr_spec) for a in email["To"].addresses] == [
        ("Ana Núñez", "ana@example.com")
    ]
    assert email["Reply-To"].addresses[0].addr_spec == "help@example.com"
    assert email["Subject"] == "Commande A1 expédiée"
    assert email["Date"] is not None
    assert email["Message-ID"] == delivery.provider_id
    assert email.get_content_type() == "multipart/alternative"
    text, html = (part for part in email.iter_parts())
    assert text.get_content_type() == "text/plain"
    assert text.get_content().replace("\r\n", "\n") == "Bonjour,\n.\nÀ bientôt\n"
    assert html.get_content_type() == "text/html"
    assert "<p>Bonjour <b>Ana</b></p>" in html.get_content()
    assert delivery.accepted == ("ana@example.com",)
    assert delivery.refused == {}


def test_a_text_only_message_is_not_multipart(
    smtp_server: SmtpServer, notifier: EmailNotifier
) -> None:
    notifier.send(mail(body="plain"))
    [received] = smtp_server.messages
    assert received.message.get_content_type() == "text/plain"
    assert received.message.get_content().strip() == "plain"
    assert "Reply-To" not in received.message


def test_the_message_id_is_derived_from_the_key(
    smtp_server: SmtpServer, notifier: EmailNotifier
) -> None:
    # Given the same notification sent twice (a retry) and another one
    first = notifier.send(mail(key="k-1"))
    again = notifier.send(mail(key="k-1"))
    other = notifier.send(mail(key="k-2"))
    # Then the retry carries the same Message-ID, downstream can recognise it
    assert first.provider_id == again.provider_id != other.provider_id
    assert first.provider_id.startswith("<") and first.provider_id.endswith("@example.com>")
    assert [m.message["Message-ID"] for m in smtp_server.messages] == [
        first.provider_id,
        first.provider_id,
        other.provider_id,
    ]


def test_implicit_tls() -> None:
    with SmtpServer(tls="tls") as server:
        delivery = send_once(server.env, mail())
        [received] = server.messages
        assert received.login == USERNAME
        assert received.message["Message-ID"] == delivery.provider_id


def test_a_password_from_a_file(tmp_path: Path, smtp_server: SmtpServer) -> None:
    secret_file = tmp_path / "smtp-password"
    secret_file.write_text(PASSWORD + "\n")
    env = {k: v for k, v in smtp_server.env.items() if k != "SMTP_PASSWORD"}
    send_once({**env, "SMTP_PASSWORD_FILE": str(secret_file)}, mail())
    assert [m.login for m in smtp_server.messages] == [USERNAME]


def test_plain_smtp_without_tls_or_auth() -> None:
    with SmtpServer(tls="none") as server:
        send_once(server.env, mail())
        assert [m.rcpt_tos for m in server.messages] == [("buyer@example.com",)]


# -- the connection ------------------------------------------------------------------


def test_one_connection_serves_several_sends(
    smtp_server: SmtpServer, notifier: EmailNotifier
) -> None:
    notifier.send(mail(key="a"))
    notifier.send(mail(key="b"))
    assert (len(smtp_server.messages), smtp_server.connections) == (2, 1)
    # close() ends it; the next send opens a new one
    notifier.close()
    notifier.send(mail(key="c"))
    assert (len(smtp_server.messages), smtp_server.connections) == (3, 2)


@pytest.mark.parametrize("goodbye", [True, False], ids=["421-then-close", "silent-close"])
def test_a_connection_the_server_dropped_is_reopened_once(goodbye: bool) -> None:
    # Given a server that drops clients silent for 0.3 s, and a notifier that sent once
    with SmtpServer(idle_timeout=0.3, idle_goodbye=goodbye) as server:
        notifier = EmailNotifier.from_env(server.env)
        try:
            notifier.send(mail(key="a"))
            time.sleep(0.8)
            # When it sends again on the connection the server has closed
            delivery = notifier.send(mail(key="b"))
        finally:
            notifier.close()
        # Then the send went through on a new connection
        assert delivery.accepted == ("buyer@example.com",)
        assert (len(server.messages), server.connections) == (2, 2)


def test_a_server_that_is_down_is_a_transient_error(smtp_server: SmtpServer) -> None:
    env = {**smtp_server.env, "SMTP_PORT": str(free_port())}  # nothing listens there
    with pytest.raises(TransientError, match="cannot talk to the SMTP server"):
        send_once(env, mail())


def test_a_server_gone_between_sends_is_a_transient_error() -> None:
    server = SmtpServer()
    with server:
        notifier = EmailNotifier.from_env(server.env)
        notifier.send(mail(key="a"))
    try:
        with pytest.raises(TransientError):
            notifier.send(mail(key="b"))
    finally:
        notifier.close()


def test_a_server_too_slow_to_answer_is_a_transient_error() -> None:
    with SmtpServer(delay=3.0) as server:
        env = {**server.env, "SMTP_TIMEOUT": "0.5"}
        with pytest.raises(TransientError, match="timed out"):
            send_once(env, mail())


# -- refusals ----------------------------------------------------------------------


def test_a_wrong_password_is_permanent_and_never_shown(smtp_server: SmtpServer) -> None:
    wrong = "n0t-the-Right-one-9431"
    env = {**smtp_server.env, "SMTP_PASSWORD": wrong}
    with pytest.raises(PermanentError) as caught:
        send_once(env, mail())
    error = caught.value
    assert error.code == "535"
    assert "credentials" in str(error) and USERNAME in str(error)
    plain = base64.b64encode(f"\0{USERNAME}\0{wrong}".encode()).decode()
    shown = [
        str(error),
        repr(error),
        repr(error.args),
        str(error.__cause__),
        str(error.__context__),
    ]
    for text in shown:
        assert wrong not in text and plain not in text
    assert smtp_server.messages == []


def test_a_451_recipient_is_a_transient_error() -> None:
    with SmtpServer(transient=["busy@example.com"]) as server:
        with pytest.raises(TransientError) as caught:
            send_once(server.env, mail(to="busy@example.com"))
        assert caught.value.code == "451"
        assert "busy@example.com" in str(caught.value)
        assert server.messages == []


def test_a_550_recipient_is_a_permanent_error() -> None:
    with SmtpServer(permanent=["nobody@example.com"]) as server:
        with pytest.raises(PermanentError) as caught:
            send_once(server.env, mail(to="nobody@example.com"))
        assert caught.value.code == "550"
        assert server.messages == []


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        ("554 5.7.1 Message rejected as spam", PermanentError),
        ("452 4.3.1 Insufficient system storage", TransientError),
    ],
)
def test_a_refused_message_body_is_classified_by_its_code(
    reply: str, error: type[Exception]
) -> None:
    with SmtpServer(data_reply=reply) as server:
        with pytest.raises(error) as caught:
            send_once(server.env, mail())
        assert getattr(caught.value, "code", None) == reply[:3]
        assert reply[4:] in str(caught.value)


def test_a_partial_refusal_is_reported_per_recipient() -> None:
    # Given one good recipient, one refused for good, one refused for now
    with SmtpServer(permanent=["gone@example.com"], transient=["busy@example.com"]) as server:
        to = "ok@example.com, Gone <gone@example.com>, busy@example.com"
        delivery = send_once(server.env, mail(to=to))
        # Then the message reached the good one, and each refusal is kept with its reason
        assert delivery.accepted == ("ok@example.com",)
        assert delivery.refused == {
            "gone@example.com": "550 5.1.1 No such user here",
            "busy@example.com": "451 4.3.0 Mailbox busy, try again later",
        }
        [received] = server.messages
        assert received.rcpt_tos == ("ok@example.com",)
        assert [a.addr_spec for a in received.message["To"].addresses] == [
            "ok@example.com",
            "gone@example.com",
            "busy@example.com",
        ]


@pytest.mark.parametrize(
    ("to", "error", "code"),
    [
        ("busy@example.com, gone@example.com", TransientError, "451"),
        ("gone@example.com, busy@example.com", PermanentError, "550"),
    ],
)
def test_when_every_recipient_is_refused_the_first_decides(
    to: str, error: type[Exception], code: str
) -> None:
    with SmtpServer(permanent=["gone@example.com"], transient=["busy@example.com"]) as server:
        notifier = EmailNotifier.from_env(server.env)
        try:
            with pytest.raises(error) as caught:
                notifier.send(mail(to=to))
            assert getattr(caught.value, "code", None) == code
            assert "and 1 more" in str(caught.value)
            # and the connection is still good for the next message
            notifier.send(mail(to="ok@example.com"))
        finally:
            notifier.close()
        assert [m.rcpt_tos for m in server.messages] == [("ok@example.com",)]


# -- header injection ------------------------------------------------------------------

EVIL = "evil@x.com"
INJECTIONS = [
    pytest.param({"subject": "Hi\r\nBcc: evil@x.com"}, id="subject-crlf"),
    pytest.param({"subject": "Hi\nBcc: evil@x.com"}, id="subject-lf"),
    pytest.param({"subject": "Hi\rBcc: evil@x.com"}, id="subject-cr"),
    pytest.param({"subject": "=?utf-8?q?a=0D=0ABcc:_evil@x.com?="}, id="subject-encoded"),
    pytest.param({"subject": "=?utf-8?b?YQ0KQmNjOiBldmlsQHguY29t?="}, id="subject-base64"),
    pytest.param({"subject": "=?utf-8?q?a=3D=3Futf-8=3Fq=3Fb=3D0A=3F=3D?="}, id="subject-twice"),
    pytest.param({"to": "a@example.com\nBcc: evil@x.com"}, id="to-lf"),
    pytest.param({"to": "a@example.com\r\nBcc: evil@x.com"}, id="to-crlf"),
    pytest.param({"to": "a@example.com\rBcc: evil@x.com"}, id="to-cr"),
    pytest.param({"to": "<a@example.com> Bcc: evil@x.com"}, id="to-trailing"),
    pytest.param({"to": "a@example.com, Bcc: evil@x.com"}, id="to-group"),
    pytest.param({"to": "Ana\r\nBcc: evil@x.com <a@example.com>"}, id="name-crlf"),
    pytest.param({"to": "=?utf-8?q?Ana=0D=0ABcc:_evil@x.com?= <a@example.com>"}, id="name-encoded"),
    pytest.param({"to": '"=?utf-8?q?Ana=0ABcc:_evil@x.com?=" <a@example.com>'}, id="name-quoted"),
]


@pytest.mark.parametrize("fields", INJECTIONS)
def test_header_injection_is_refused_and_nothing_reaches_the_server(
    smtp_server: SmtpServer, notifier: EmailNotifier, fields: dict[str, str]
) -> None:
    with pytest.raises(PermanentError, match=r"line break|not a valid|encoded|cannot be written"):
        notifier.send(mail(**fields))
    assert smtp_server.rcpts == []
    assert smtp_server.messages == []
    # the same notifier still sends a clean message, and only to its recipient
    notifier.send(mail())
    [received] = smtp_server.messages
    assert smtp_server.rcpts == ["buyer@example.com"]
    assert EVIL not in received.raw.decode()
    assert "Bcc" not in received.message


@pytest.mark.parametrize(
    "name",
    ["Ana\nBcc: evil@x.com", "=?utf-8?q?Shop=0D=0ABcc:_evil@x.com?="],
)
def test_a_sender_name_with_a_line_break_is_a_configuration_error(
    smtp_server: SmtpServer, name: str
) -> None:
    with pytest.raises(ChannelConfigError, match="SMTP_FROM"):
        EmailNotifier.from_env({**smtp_server.env, "SMTP_FROM": f"{name} <shop@example.com>"})


def test_an_invalid_recipient_address_is_permanent(
    smtp_server: SmtpServer, notifier: EmailNotifier
) -> None:
    for to in ["", "not-an-address", "a@b@c", "a b@example.com", "δ@example.com"]:
        with pytest.raises(PermanentError):
            notifier.send(mail(to=to))
    assert smtp_server.rcpts == []


# -- TLS is verified ----------------------------------------------------------------


@pytest.mark.parametrize("tls", ["starttls", "tls"])
def test_without_the_ca_the_self_signed_server_is_refused(tls: str) -> None:
    with SmtpServer(tls=tls) as server:
        env = {k: v for k, v in server.env.items() if k != "SMTP_CA_FILE"}
        with pytest.raises(PermanentError, match=r"certificate .* could not be verified"):
            send_once(env, mail())
        assert server.messages == []


def test_a_certificate_for_another_host_is_refused() -> None:
    with SmtpServer(names=("mail.example.com",)) as server:
        with pytest.raises(PermanentError, match="could not be verified"):
            send_once(server.env, mail())
        assert server.messages == []


def test_starttls_never_falls_back_to_plain_text() -> None:
    # Given a server that offers no STARTTLS, and a notifier that asks for it
    with SmtpServer(tls="none") as server:
        env = {**server.env, "SMTP_SECURITY": "starttls"}
        with pytest.raises(PermanentError, match="does not offer STARTTLS"):
            send_once(env, mail())
        assert server.rcpts == []


# -- configuration ---------------------------------------------------------------------


def test_the_password_is_never_in_a_repr(smtp_server: SmtpServer, notifier: EmailNotifier) -> None:
    notifier.send(mail())  # smtplib keeps the password it logged in with on its connection
    connection = notifier._smtp
    assert connection is not None and smtp_server.messages[0].login == USERNAME
    for shown in (notifier, notifier.config, vars(notifier), vars(connection)):
        assert PASSWORD not in repr(shown)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"SMTP_HOST": ""}, "SMTP_HOST"),
        ({"SMTP_FROM": ""}, "SMTP_FROM"),
        ({"SMTP_FROM": "not an address"}, "SMTP_FROM"),
        ({"SMTP_FROM": "a@example.com, b@example.com"}, "SMTP_FROM"),
        ({"SMTP_REPLY_TO": "nope"}, "SMTP_REPLY_TO"),
        ({"SMTP_SECURITY": "ssl"}, "SMTP_SECURITY"),
        ({"SMTP_PORT": "smtp"}, "SMTP_PORT"),
        ({"SMTP_PORT": "0"}, "SMTP_PORT"),
        ({"SMTP_PORT": "70000"}, "SMTP_PORT"),
        ({"SMTP_TIMEOUT": "-1"}, "SMTP_TIMEOUT"),
        ({"SMTP_TIMEOUT": "soon"}, "SMTP_TIMEOUT"),
        ({"SMTP_PASSWORD": ""}, "SMTP_PASSWORD"),
        ({"SMTP_USERNAME": ""}, "SMTP_USERNAME"),
        ({"SMTP_SECURITY": "none"}, "SMTP_SECURITY=none"),
        ({"SMTP_CA_FILE": "/nonexistent/ca.pem"}, "SMTP_CA_FILE"),
        ({"SMTP_PASSWORD": "", "SMTP_PASSWORD_FILE": "/nonexistent/pw"}, "SMTP_PASSWORD_FILE"),
    ],
)
def test_configuration_errors_name_the_variable(
    smtp_server: SmtpServer, change: dict[str, str], named: str
) -> None:
    env = {k: v for k, v in {**smtp_server.env, **change}.items() if v}
    with pytest.raises(ChannelConfigError, match=named) as caught:
        EmailNotifier.from_env(env)
    assert PASSWORD not in str(caught.value)


def test_default_ports_follow_the_security() -> None:
    base = {"SMTP_HOST": "127.0.0.1", "SMTP_FROM": "shop@example.com"}
    ports = {
        security: EmailNotifier.from_env({**base, "SMTP_SECURITY": security}).config.port
        for security in ("starttls", "tls", "none")
    }
    assert ports == {"starttls": 587, "tls": 465, "none": 25}
    assert EmailNotifier.from_env(base).config.security == "starttls"


# -- through the job flow ---------------------------------------------------------------


def test_a_shipped_order_is_emailed_once_through_the_worker(
    app: App, smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the SMTP server's settings in the worker's environment
    for name, value in smtp_server.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr("orchestrator.runtime.context._installed", None)
    # When an order runs to the end
    iid = app.client.start(
        "order", {"order_id": "E1", "email": "ana@example.com", "work_seconds": 0}
    )
    run_burst(app)
    # Then the shipping email reached the server once, over an authenticated session
    assert app.client.status(iid).state == "shipped"
    [received] = smtp_server.messages
    assert received.rcpt_tos == ("ana@example.com",)
    assert received.login == USERNAME
    assert received.message["Subject"] == "Your order E1 is on its way"
    assert received.message.get_content_type() == "multipart/alternative"
    # and the workflow heard notification.sent with the Message-ID
    sent = [
        h["event"]["data"]
        for h in app.client.history(iid)
        if h["event"]["type"] == "notification.sent" and h["event"]["data"]["channel"] == "email"
    ]
    assert [s["provider_id"] for s in sent] == [received.message["Message-ID"]]
