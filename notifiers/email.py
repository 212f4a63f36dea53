"""The email channel: SMTP with the standard library's smtplib.

Certificates and host names are always verified (SMTP_CA_FILE adds a CA;
STARTTLS never falls back to plain text), and a password never travels
unencrypted. One connection is kept open between sends and reopened once
when the server dropped it. Recipients the server refused are reported one
by one in the Delivery; only when every one was refused does send raise.

Header injection: Python's email package decodes encoded words while it
parses a header and writes the decoded CR/LF out raw (3.11 before 3.11.10),
so a subject like "=?utf-8?q?a=0D=0ABcc:_x@y?=" would add a header. Every
subject, name and address is checked before and after decoding, and the
serialized message is parsed again and must hold exactly the headers and
recipients that were built.

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
import re
import smtplib
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.headerregistry import Address, AddressHeader, HeaderRegistry
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import SMTP, default
from email.utils import formatdate, make_msgid
from typing import cast

from notifiers.base import Delivery, Message, Notifier, Secret, secret
from notifiers.errors import ChannelConfigError, DeliveryError, PermanentError, TransientError

PORTS = {"starttls": 587, "tls": 465, "none": 25}
CONTROL = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
ADDR_SPEC = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@{_LABEL}(?:\.{_LABEL})*")
_HEADERS = HeaderRegistry()
STALE = (smtplib.SMTPServerDisconnected, ConnectionError, smtplib.SMTPSenderRefused)


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
        self._smtp: smtplib.SMTP | None = None
        self._pid = 0  # the process that opened _smtp: a forked child never shares it
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
            sender = _addresses("SMTP_FROM", env["SMTP_FROM"], single=True)[0]
            reply = env.get("SMTP_REPLY_TO")
            reply_to = _addresses("SMTP_REPLY_TO", reply, single=True)[0] if reply else None
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
        recipients = _addresses("the recipient address", message.to)
        envelope = list(dict.fromkeys(a.addr_spec for a in recipients))
        message_id = self._message_id(message.key)
        raw = self._build(message, recipients, message_id)
        with self._lock:
            refused = self._transmit(envelope, raw)
        reasons = {rcpt: f"{code} {_text(text)}" for rcpt, (code, text) in refused.items()}
        return Delivery(
            provider_id=message_id,
            accepted=tuple(r for r in envelope if r not in refused),
            refused=reasons,
        )

    def close(self) -> None:
        with self._lock:
            self._drop(quit=True)

    # -- the connection ---------------------------------------------------------

    def _transmit(self, envelope: list[str], raw: bytes) -> dict[str, tuple[int, bytes]]:
        reused = self._smtp is not None and self._pid == os.getpid()
        if self._smtp is not None and not reused:
            self._drop(quit=False)  # inherited through fork: the parent's conversation
        try:
            try:
                return self._connection().sendmail(self.config.sender.addr_spec, envelope, raw)
            except STALE as exc:
                # An idle connection the server closed, silently or with "421 timeout"
                # (which smtplib reads as the answer to MAIL FROM): open a new one, once.
                if not reused or getattr(exc, "smtp_code", 421) != 421:
                    raise
                self._drop(quit=False)
                return self._connection().sendmail(self.config.sender.addr_spec, envelope, raw)
        except smtplib.SMTPRecipientsRefused as exc:  # every recipient; connection still good
            first = next(r for r in envelope if r in exc.recipients)
            code, text = exc.recipients[first]
            others = len(exc.recipients) - 1
            tail = f" (and {others} more)" if others else ""
            raise _by_code(f"{first} refused{tail}: {code} {_text(text)}", code) from None
        except Exception as exc:
            self._drop(quit=False)
            raise self._classify(exc) from None

    def _connection(self) -> smtplib.SMTP:
        if self._smtp is not None:
            return self._smtp
        c = self.config
        # Connecting in the constructor is what sets the name TLS verifies the certificate for.
        smtp = (
            smtplib.SMTP_SSL(c.host, c.port, timeout=c.timeout, context=self._tls)
            if c.security == "tls"
            else smtplib.SMTP(c.host, c.port, timeout=c.timeout)
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
        self._smtp, self._pid = smtp, os.getpid()
        return smtp

    def _drop(self, *, quit: bool) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is None:
            return
        if quit and self._pid == os.getpid():
            with contextlib.suppress(smtplib.SMTPException, OSError):
                smtp.quit()
        smtp.close()

    def _classify(self, exc: Exception) -> DeliveryError:
        """A typed error for what smtplib raised; never with a credential in it."""
        where = f"{self.config.host}:{self.config.port}"
        if isinstance(exc, DeliveryError):
            return exc
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
        subject = _checked("the subject", message.subject)
        email = EmailMessage(policy=SMTP)
        try:
            email["From"] = self.config.sender
            email["To"] = recipients
            email["Subject"] = subject
            if self.config.reply_to is not None:
                email["Reply-To"] = self.config.reply_to
            email["Date"] = formatdate(usegmt=True)
            email["Message-ID"] = message_id
            email.set_content(message.body)
            if message.html is not None:
                email.add_alternative(message.html, subtype="html")
            raw = email.as_bytes()
        except (ValueError, TypeError) as exc:  # the email package refused a header or a part
            raise PermanentError(f"the message cannot be written: {exc}") from None
        _verify(raw, email)
        return raw


def _verify(raw: bytes, built: EmailMessage) -> None:
    """Parse what will be sent: the same headers, the same recipients, no line break smuggled in."""
    parsed = BytesParser(policy=default).parsebytes(raw, headersonly=True)
    expected = sorted(name.lower() for name in built)
    if sorted(name.lower() for name in parsed) != expected:
        raise PermanentError("a header would have been injected (a line break in a header value)")
    for name in ("From", "To", "Reply-To"):
        if name in built:
            sent = [a.addr_spec for a in parsed[name].addresses]
            if sent != [a.addr_spec for a in built[name].addresses]:
                raise PermanentError(f"the {name} header would not hold the addresses given")
            if any(CONTROL.search(a.display_name) for a in parsed[name].addresses):
                raise PermanentError(f"a name in {name} would hold a line break")
    if CONTROL.search(str(parsed["Subject"])):
        raise PermanentError("the subject would hold a line break once decoded")


def _checked(what: str, value: str) -> str:
    """Refuse a line break or control character, given as is or in an encoded word."""
    try:
        decoded = str(_HEADERS("Subject", value))
    except ValueError:
        decoded = "\n"
    if CONTROL.search(value) or CONTROL.search(decoded):
        raise PermanentError(f"{what} holds a line break or control character; refused")
    return value


def _addresses(what: str, value: str, single: bool = False) -> list[Address]:
    """Strictly parsed addresses: plain ASCII addr-specs, no groups, no defects, no line breaks."""
    refused = PermanentError(f"{what} is not a valid list of email addresses: {value!r:.120}")
    if CONTROL.search(value):
        raise PermanentError(f"{what} holds a line break or control character; refused")
    try:
        header = _HEADERS("To", value)
    except ValueError:  # the email package refuses CR/LF it decoded from an encoded word
        raise PermanentError(f"{what} holds an encoded line break; refused") from None
    found, groups = cast(AddressHeader, header).addresses, cast(AddressHeader, header).groups
    if header.defects or not found or any(g.display_name is not None for g in groups):
        raise refused
    if single and len(found) != 1:
        raise PermanentError(f"{what} must be one address, not {value!r:.120}")
    for address in found:
        if not ADDR_SPEC.fullmatch(address.addr_spec):
            raise refused
        if CONTROL.search(address.display_name) or "=?" in address.display_name:
            raise PermanentError(f"{what} has a name with a line break or an encoded word")
    return list(found)


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
