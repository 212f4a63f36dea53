"""The webhook channel: a signed JSON POST to the URL the notification is addressed to.

The receiver checks the request came from us, and is recent, by recomputing

    X-Orchestrator-Signature: sha256=HEX(HMAC-SHA256(secret, TIMESTAMP + "." + BODY))

with TIMESTAMP from X-Orchestrator-Timestamp (unix seconds; refuse it when
stale) and BODY the raw bytes received. `Idempotency-Key` is the
notification's key: a retried delivery carries the same one, so a receiver
can drop the repeat. `orchestrator serve` checks its /events requests the
same way (`verify`), so one system can both receive our webhooks and answer
with events.

Only the standard library: the channel needs no extra package. Redirects are
not followed (a POST turned into a GET to another host is not a delivery),
and errors name the host only, never the path or query (they may carry
tokens) and never the secret. The receiver's status is read as every HTTP
channel reads one (notifiers.http), with 425 Too Early also worth a retry.

A receiver that is slow, or never answers, slows only its own notifications
(issue #11). Each request has a deadline for the whole of it (a receiver that
drips its answer a byte at a time does not restart it), and a shorter one to
connect (notifiers.webhook_transport). Each host gets at most
WEBHOOK_HOST_CONCURRENCY sends at once in a process; a send beyond them is
deferred (DeferredError), not queued on a thread. After WEBHOOK_CIRCUIT_TIMEOUTS
timeouts in a row a host's circuit opens: for WEBHOOK_CIRCUIT_COOLDOWN seconds
its sends fail at once, to be retried after it (they still count as tries), then
one send tries the host again and its answer closes the circuit, or its timeout
opens it again (notifiers.webhook_hosts). A timeout after the whole request went
out is ambiguous (AmbiguousError): the receiver may have it, so the retry counts
as a resend in the ledger. The job that sends does not wait it out either:
orchestrator.runtime.notify.batch hands a slow send over and the worker goes on.

    WEBHOOK_SECRET / WEBHOOK_SECRET_FILE   the HMAC key (required)
    WEBHOOK_TIMEOUT                        seconds for a whole request (default 10)
    WEBHOOK_CONNECT_TIMEOUT                seconds to connect, TLS included (default 3)
    WEBHOOK_HOST_CONCURRENCY               sends at once to one host, per process (default 4)
    WEBHOOK_CIRCUIT_TIMEOUTS               timeouts in a row that open a host's circuit (3)
    WEBHOOK_CIRCUIT_COOLDOWN               seconds it stays open (default 30)
    WEBHOOK_ALLOW_PRIVATE                  1: allow loopback, private, link-local and
                                           metadata addresses (default: refused)

A webhook is sent to public addresses only (notifiers.webhook_guard): the name
is resolved once, every address checked, and the connection made to a checked
address, so that a recipient's URL cannot reach the inside of the network
(server-side request forgery), DNS rebinding included. A refused address is a
permanent failure with code "private-address".
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import http.client
import json
import re
import ssl
import string
import time
import urllib.error
from collections.abc import Mapping
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit

from notifiers.base import Delivery, Message, Notifier, Secret, secret
from notifiers.errors import (
    AmbiguousError,
    ChannelConfigError,
    PermanentError,
    TransientError,
)
from notifiers.http import Verdict, retry_after, verdict
from notifiers.webhook_guard import ALLOW_VARIABLE
from notifiers.webhook_hosts import Hosts
from notifiers.webhook_transport import Deadline, DeadlineRequest, build_opener

MAX_BODY = 256 * 1024
MAX_PROVIDER_ID = 200
USER_AGENT = "orchestrator-webhook/1"
TIMESTAMP_HEADER = "X-Orchestrator-Timestamp"
SIGNATURE_HEADER = "X-Orchestrator-Signature"
UNSAFE = re.compile(r"[\x00-\x20\x7f]")
TOO_EARLY = 425  # RFC 8470: the receiver will not risk a replay yet; it asks for another try


def sign(key: str, timestamp: str, body: bytes) -> str:
    """The signature header's value for a body sent at `timestamp` (unix seconds, as text)."""
    mac = hmac.new(key.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def verify(key: str, timestamp: str, body: bytes, signature: str) -> bool:
    """Whether `signature` is ours for this timestamp and body (compared in constant time)."""
    return hmac.compare_digest(sign(key, timestamp, body).encode(), signature.encode())


class WebhookNotifier(Notifier):
    channel = "webhook"

    def __init__(
        self,
        key: str,
        timeout: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
        *,
        connect_timeout: float = 3.0,
        hosts: Hosts | None = None,
        allow_private: bool = False,
    ) -> None:
        self._key = Secret(key)
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.hosts = hosts or Hosts()
        self.allow_private = allow_private
        # built once, used for every send
        self._opener = build_opener(ssl_context, allow_private=allow_private)

    def __repr__(self) -> str:
        return (
            f"WebhookNotifier(timeout={self.timeout:g}, connect_timeout={self.connect_timeout:g}, "
            f"allow_private={self.allow_private})"
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> WebhookNotifier:
        try:
            key = secret(env, "WEBHOOK_SECRET")
        except (OSError, UnicodeDecodeError) as exc:
            raise ChannelConfigError(
                f"cannot read WEBHOOK_SECRET_FILE: {type(exc).__name__}"
            ) from None
        if not key:
            raise ChannelConfigError("webhook needs WEBHOOK_SECRET or WEBHOOK_SECRET_FILE")
        timeout = _setting(env, "WEBHOOK_TIMEOUT", 10.0, 300.0)
        hosts = Hosts(
            int(_setting(env, "WEBHOOK_HOST_CONCURRENCY", 4, 1000, whole=True)),
            int(_setting(env, "WEBHOOK_CIRCUIT_TIMEOUTS", 3, 1000, whole=True)),
            _setting(env, "WEBHOOK_CIRCUIT_COOLDOWN", 30.0, 86400.0),
        )
        connect = _setting(env, "WEBHOOK_CONNECT_TIMEOUT", 3.0, 300.0)
        return cls(
            key,
            timeout,
            connect_timeout=min(connect, timeout),
            hosts=hosts,
            allow_private=_flag(env, ALLOW_VARIABLE),
        )

    def send(self, message: Message) -> Delivery:
        host = check_url(message.to)
        body = json.dumps(
            {
                "key": message.key,
                "to": message.to,
                "subject": message.subject,
                "body": message.body,
                "html": message.html,
                "data": message.data,
                "sent_at": datetime.now(UTC).isoformat(timespec="seconds"),
            },
            separators=(",", ":"),
            default=str,
        ).encode()
        if len(body) > MAX_BODY:
            raise PermanentError(
                f"webhook body is {len(body)} bytes, over the limit of {MAX_BODY}", code="too-large"
            )
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(self._key, timestamp, body),
        }
        if message.key:
            headers["Idempotency-Key"] = _header_safe(message.key)
        with self.hosts.sending(_origin(message.to)):
            request_id = self._post(host, message.to, body, headers)
        provider_id = request_id.strip()[:MAX_PROVIDER_ID] or message.key
        if not provider_id:
            provider_id = "webhook-" + hashlib.sha256(body).hexdigest()[:16]
        return Delivery(provider_id=provider_id, accepted=(message.to,))

    def _post(self, host: str, url: str, body: bytes, headers: dict[str, str]) -> str:
        """POST within the deadline; the answer's X-Request-Id, or a typed error."""
        deadline = Deadline(self.timeout, self.connect_timeout)
        request = DeadlineRequest(url, deadline, data=body, headers=headers, method="POST")
        try:
            response = self._opener.open(request, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            with exc:
                raise _refused(host, exc) from None
        except urllib.error.URLError as exc:  # connecting, or sending: not all of it went out
            raise _unreachable(host, exc.reason, deadline.expired) from None
        except (OSError, http.client.HTTPException) as exc:  # sent; no answer, or a garbled one
            raise _lost(host, exc, deadline.expired) from None
        finally:
            deadline.disarm()
        with response, contextlib.suppress(OSError, http.client.HTTPException):
            response.read(64 * 1024)  # drain a little; the status is the answer
        return str(response.headers.get("X-Request-Id") or "")


def _setting(
    env: Mapping[str, str], name: str, default: float, most: float, whole: bool = False
) -> float:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value <= most or (whole and not value.is_integer()):
        what = "a whole number" if whole else "a number of seconds"
        raise ChannelConfigError(f"{name} must be {what} above 0, at most {most:g}, not {text!r}")
    return value


def _flag(env: Mapping[str, str], name: str) -> bool:
    text = env.get(name, "").strip().lower()
    if text in ("", "0", "false", "no", "off"):
        return False
    if text in ("1", "true", "yes", "on"):
        return True
    raise ChannelConfigError(f"{name} must be 1 or 0, not {text!r}")


def _origin(url: str) -> str:
    """What shares a circuit and a concurrency bound: scheme, host and port."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port or ''}"


def check_url(url: str) -> str:
    """The URL's host, or PermanentError for anything but a plain http(s) URL."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018  (raises ValueError on a malformed port)
    except ValueError:
        raise PermanentError("webhook address is not a valid URL", code="bad-url") from None
    if UNSAFE.search(url) or not url.isascii():
        raise PermanentError(
            "webhook URL must be ASCII without spaces (percent-encode the rest)", code="bad-url"
        )
    if parts.scheme not in ("http", "https"):
        raise PermanentError(
            f"webhook address must be an http or https URL, not {parts.scheme or 'no'} scheme",
            code="bad-url",
        )
    if not host:
        raise PermanentError("webhook URL has no host", code="bad-url")
    if parts.username is not None or parts.password is not None:
        raise PermanentError("webhook URL must not carry credentials", code="bad-url")
    return host


def _header_safe(value: str) -> str:
    """The value as is when it is printable ASCII, else percent-encoded (never a bad header)."""
    if value.isascii() and not UNSAFE.search(value.replace(" ", "")):
        return value
    return quote(value, safe=string.punctuation)


def _refused(host: str, exc: urllib.error.HTTPError) -> PermanentError | TransientError:
    """The receiver's answer, read as every HTTP channel reads one (notifiers.http)."""
    status = exc.code
    found = verdict(status, transient=(TOO_EARLY,))
    if found is Verdict.TRANSIENT:
        return TransientError(
            f"webhook {host} answered {status}",
            code=status,
            retry_after=retry_after(exc.headers.get("Retry-After")),
        )
    if found is Verdict.REDIRECTED:
        return PermanentError(f"webhook {host} redirected ({status}); not followed", code=status)
    return PermanentError(f"webhook {host} refused the notification ({status})", code=status)


def _unreachable(host: str, reason: object, expired: bool) -> PermanentError | TransientError:
    """Failed before the whole request went out: the receiver cannot have it."""
    if isinstance(reason, ssl.SSLCertVerificationError):
        return PermanentError(
            f"webhook {host}: TLS certificate not trusted ({reason.verify_message})", code="tls"
        )
    if isinstance(reason, TimeoutError) or expired:
        return TransientError(f"webhook {host} was not reached in time", code="timeout")
    what = reason if isinstance(reason, str) else getattr(reason, "strerror", None)
    return TransientError(
        f"webhook {host} unreachable ({what or type(reason).__name__})", code="connection"
    )


def _lost(host: str, reason: Exception, expired: bool) -> AmbiguousError:
    """The whole request went out and no answer came: the receiver may have it."""
    if isinstance(reason, TimeoutError) or expired:
        return AmbiguousError(
            f"webhook {host} did not answer in time; it may have the notification", code="timeout"
        )
    what = getattr(reason, "strerror", None) or type(reason).__name__
    return AmbiguousError(
        f"webhook {host} gave no answer ({what}); it may have the notification", code="connection"
    )
