"""The email channel: SMTP with the standard library's smtplib.

Certificates and host names are always verified (SMTP_CA_FILE adds a CA;
STARTTLS never falls back to plain text), and a password never travels
unencrypted. Connections are kept open between sends, one per send running
at the same moment (threads of a batch share the notifier), and one the
server dropped while idle is replaced once. Recipients the server refused
are reported one by one in the Delivery; only when every one was refused
does send raise.

An answer lost after the whole message went out (the connection dropped
after the final dot, or the 250 came after SMTP_TIMEOUT) is ambiguous: the
server may have kept the message. It is never resent on the spot; it is an
AmbiguousError, retried later with the resend counted in the ledger.

The message itself is written, and checked against header injection, by
notifiers.mime.

    SMTP_HOST                     server (unset: the channel is not configured)
    SMTP_PORT                     default 587 (starttls), 465 (tls), 25 (none)
    SMTP_SECURITY                 starttls (default) | tls (implicit TLS) | none
    SMTP_USERNAME, SMTP_PASSWORD  AUTH (or SMTP_PASSWORD_FILE); needs TLS
    SMTP_FROM, SMTP_REPLY_TO      sender (required), Reply-To (optional)
    SMTP_TIMEOUT                  seconds per connection and command (default 10)
    SMTP_CA_FILE                  a CA bundle the server's certificate is verified with
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import smtplib
import ssl
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.headerregistry import Address
from email.utils import make_msgid
from typing import TYPE_CHECKING

from notifiers.base import Delivery, Message, Notifier, Secret, secret
from notifiers.errors import (
    AmbiguousError,
    ChannelConfigError,
    DeliveryError,
    PermanentError,
    TransientError,
)
from notifiers.mime import Writer, addresses

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

PORTS = {"starttls": 587, "tls": 465, "none": 25}
STALE = (smtplib.SMTPServerDisconnected, ConnectionError, smtplib.SMTPSenderRefused)


class _Smtp(smtplib.SMTP):
    """smtplib's client, knowing whether the message's final dot went out: once it has,
    a connection lost before the answer may have delivered the message."""

    in_data = False
    body_sent = False

    def mail(self, sender: str, options: Sequence[str] = ()) -> tuple[int, bytes]:
        self.body_sent = False  # a new message begins
        return super().mail(sender, options)

    def data(self, msg: ReadableBuffer | str) -> tuple[int, bytes]:
        self.in_data = True
        try:
            return super().data(msg)
        finally:
            self.in_data = False

    def send(self, s: ReadableBuffer | str) -> None:
        super().send(s)
        if self.in_data and isinstance(s, bytes) and s.endswith(b"\r\n.\r\n"):
            self.body_sent = True


class _SmtpSsl(_Smtp, smtplib.SMTP_SSL):
    pass


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    security: str
    sender: Address
    reply_to: Address | None = None
    username: str | None = None
    password: Secret | None = field(default=None, repr=False)
    timeout: float = 10.0
    ca_file: str | None = None


class EmailNotifier(Notifier):
    channel = "email"

    def __init__(self, config: SmtpConfig) -> None:
        self.config = config
        self._tls = ssl.create_default_context(cafile=config.ca_file)  # verifies host names
        try:
            self._writer = Writer(config.sender, config.reply_to)
        except PermanentError as exc:
            raise ChannelConfigError(f"SMTP_FROM or SMTP_REPLY_TO: {exc.reason}") from None
        self._idle: list[_Smtp] = []  # open connections no send is using
        self._pid = os.getpid()  # the process that opened them: a forked child never shares
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        c = self.config
        return f"EmailNotifier({c.security}://{c.username or ''}@{c.host}:{c.port})"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> EmailNotifier:
        host = env.get("SMTP_HOST", "").strip()
        if not host:
            raise ChannelConfigError("SMTP_HOST is not set")
        security = env.get("SMTP_SECURITY", "").strip().lower() or "starttls"
        if security not in PORTS:
            raise ChannelConfigError(
                f"SMTP_SECURITY must be starttls, tls or none, not {env['SMTP_SECURITY']!r}"
            )
        port = _number(env, "SMTP_PORT", PORTS[security], integer=True)
        if not 0 < port < 65536:
            raise ChannelConfigError(f"SMTP_PORT must be between 1 and 65535, not {port:g}")
        if not env.get("SMTP_FROM"):
            raise ChannelConfigError("SMTP_FROM is not set (the sender's address)")
        try:
            sender = addresses("SMTP_FROM", env["SMTP_FROM"], single=True)[0]
            reply = env.get("SMTP_REPLY_TO")
            reply_to = addresses("SMTP_REPLY_TO", reply, single=True)[0] if reply else None
        except PermanentError as exc:
            raise ChannelConfigError(exc.reason) from None
        username = env.get("SMTP_USERNAME") or None
        try:
            password = secret(env, "SMTP_PASSWORD")
        except OSError as exc:
            raise ChannelConfigError(f"SMTP_PASSWORD_FILE cannot be read: {exc.strerror}") from None
        if username and not password:
            raise ChannelConfigError("SMTP_USERNAME is set but SMTP_PASSWORD(_FILE) is not")
        if password and not username:
            raise ChannelConfigError("SMTP_PASSWORD is set but SMTP_USERNAME is not")
        if username and security == "none":
            raise ChannelConfigError(
                "SMTP_USERNAME with SMTP_SECURITY=none would send the password unencrypted"
            )
        timeout = _number(env, "SMTP_TIMEOUT", 10.0)
        ca_file = env.get("SMTP_CA_FILE") or None
        config = SmtpConfig(
            host, int(port), security, sender, reply_to, username,
            Secret(password) if password else None, timeout, ca_file,
        )  # fmt: skip
        try:
            return cls(config)
        except (OSError, ssl.SSLError) as exc:
            raise ChannelConfigError(f"SMTP_CA_FILE {ca_file!r} cannot be used: {exc}") from None

    def send(self, message: Message) -> Delivery:
        recipients = addresses("the recipient address", message.to)
        envelope = list(dict.fromkeys(a.addr_spec for a in recipients))
        message_id = self._message_id(message.key)
        raw = self._build(message, recipients, message_id)
        refused = self._transmit(envelope, raw)
        reasons = {rcpt: f"{code} {_text(text)}" for rcpt, (code, text) in refused.items()}
        return Delivery(
            provider_id=message_id,
            accepted=tuple(r for r in envelope if r not in refused),
            refused=reasons,
        )

    def close(self) -> None:
        """QUIT the idle connections (one a send is using right now stays to that send)."""
        with self._lock:
            idle, self._idle = self._idle, []
            ours = self._pid == os.getpid()
        for smtp in idle:
            _hang_up(smtp, quit=ours)

    @property
    def _smtp(self) -> smtplib.SMTP | None:
        """The connection the next send takes, if one is open."""
        with self._lock:
            return self._idle[-1] if self._idle and self._pid == os.getpid() else None

    # -- the connections --------------------------------------------------------

    def _transmit(self, envelope: list[str], raw: bytes) -> dict[str, tuple[int, bytes]]:
        smtp = self._take()
        reused = smtp is not None
        sender = self.config.sender.addr_spec
        try:
            try:
                smtp = smtp or self._open()
                refused = smtp.sendmail(sender, envelope, raw)
            except STALE as exc:
                # An idle connection the server closed, silently or with "421 timeout"
                # (which smtplib reads as the answer to MAIL FROM): open a new one, once.
                # Never once the message went out: the server may have it (ambiguous).
                if not reused or smtp is None or smtp.body_sent:
                    raise
                if getattr(exc, "smtp_code", 421) != 421:
                    raise
                _hang_up(smtp, quit=False)
                smtp = None
                smtp = self._open()
                refused = smtp.sendmail(sender, envelope, raw)
        except smtplib.SMTPRecipientsRefused as exc:  # every recipient; connection still good
            self._give_back(smtp)
            first = next(r for r in envelope if r in exc.recipients)
            code, text = exc.recipients[first]
            others = len(exc.recipients) - 1
            tail = f" (and {others} more)" if others else ""
            raise _by_code(f"{first} refused{tail}: {code} {_text(text)}", code) from None
        except Exception as exc:
            ambiguous = smtp is not None and smtp.body_sent
            if smtp is not None:
                _hang_up(smtp, quit=False)
            raise self._classify(exc, ambiguous=ambiguous) from None
        self._give_back(smtp)
        return refused

    def _take(self) -> _Smtp | None:
        """An idle connection of this process, or None (the caller opens one)."""
        with self._lock:
            if self._pid != os.getpid():  # inherited through fork: the parent's conversations
                inherited, self._idle, self._pid = self._idle, [], os.getpid()
            else:
                inherited = []
            smtp = self._idle.pop() if self._idle else None
        for other in inherited:
            _hang_up(other, quit=False)
        return smtp

    def _give_back(self, smtp: _Smtp | None) -> None:
        if smtp is None or smtp.sock is None:  # closed by smtplib (a 421 answer)
            return
        with self._lock:
            if self._pid == os.getpid():
                self._idle.append(smtp)
                return
        _hang_up(smtp, quit=False)

    def _open(self) -> _Smtp:
        c = self.config
        # Connecting in the constructor is what sets the name TLS verifies the certificate for.
        smtp = (
            _SmtpSsl(c.host, c.port, timeout=c.timeout, context=self._tls)
            if c.security == "tls"
            else _Smtp(c.host, c.port, timeout=c.timeout)
        )
        try:
            smtp.ehlo()
            if c.security == "starttls":
                if not smtp.has_extn("starttls"):
                    raise PermanentError(
                        f"{c.host}:{c.port} does not offer STARTTLS; not sending in plain text"
                    )
                smtp.starttls(context=self._tls)
                smtp.ehlo()
            if c.username and c.password:
                smtp.login(c.username, c.password)
        except BaseException:
            smtp.close()
            raise
        return smtp

    def _classify(self, exc: Exception, ambiguous: bool = False) -> DeliveryError:
        """A typed error for what smtplib raised; never with a credential in it."""
        where = f"{self.config.host}:{self.config.port}"
        if isinstance(exc, DeliveryError):
            return exc
        lost = isinstance(exc, smtplib.SMTPServerDisconnected) or (
            isinstance(exc, OSError) and not isinstance(exc, smtplib.SMTPException)
        )
        if ambiguous and lost:  # after the final dot, no answer: not one refusal
            return AmbiguousError(
                f"the SMTP server {where} did not answer after the message was sent "
                f"({self._scrub(str(exc))}); it may have kept it"
            )
        if isinstance(exc, smtplib.SMTPAuthenticationError) and exc.smtp_code >= 500:
            return PermanentError(
                f"{where} refused the credentials of SMTP_USERNAME {self.config.username!r}: "
                f"{self._scrub(_text(exc.smtp_error))}",
                code=exc.smtp_code,
            )
        if isinstance(exc, smtplib.SMTPResponseException):
            text = self._scrub(_text(exc.smtp_error))
            return _by_code(f"{where} answered {exc.smtp_code} {text}", exc.smtp_code)
        if isinstance(exc, smtplib.SMTPServerDisconnected):
            return TransientError(f"the SMTP server {where} closed the connection: {exc}")
        if isinstance(exc, smtplib.SMTPException):  # e.g. AUTH not offered: no retry helps
            return PermanentError(f"SMTP with {where} failed: {self._scrub(str(exc))}")
        if isinstance(exc, ssl.SSLCertVerificationError):
            return PermanentError(
                f"the TLS certificate of {where} could not be verified ({exc.verify_message}); "
                "SMTP_CA_FILE names the CA to trust"
            )
        if isinstance(exc, OSError):  # refused, unreachable, timed out, TLS handshake
            return TransientError(f"cannot talk to the SMTP server {where}: {exc}")
        return PermanentError(f"SMTP with {where} failed: {type(exc).__name__}")

    def _scrub(self, text: str) -> str:
        password = self.config.password
        return text.replace(password, "***") if password else text

    # -- the message ------------------------------------------------------------

    def _message_id(self, key: str) -> str:
        """The same key gives the same Message-ID, so a resend is recognisable downstream."""
        domain = self.config.sender.domain
        if not key:
            return make_msgid(domain=domain)
        return f"<{hashlib.sha256(key.encode()).hexdigest()[:32]}@{domain}>"

    def _build(self, message: Message, recipients: list[Address], message_id: str) -> bytes:
        return self._writer.write(message, recipients, message_id)


def _hang_up(smtp: smtplib.SMTP, *, quit: bool) -> None:
    """Close a connection; QUIT first only in the process that opened it."""
    if quit:
        with contextlib.suppress(smtplib.SMTPException, OSError):
            smtp.quit()
    smtp.close()


def _by_code(reason: str, code: int) -> DeliveryError:
    """SMTP's own rule: 4xx is "try again later", 5xx (and anything odd) is final."""
    if 400 <= code < 500:
        return TransientError(reason, code=code)
    return PermanentError(reason, code=code)


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)


def _number(env: Mapping[str, str], name: str, fallback: float, integer: bool = False) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return fallback
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        kind = "a whole number" if integer else "a number of seconds"
        raise ChannelConfigError(f"{name} must be {kind}, not {raw!r}") from None
    if not value > 0 or value == float("inf"):
        raise ChannelConfigError(f"{name} must be above zero, not {raw!r}")
    return value
