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
tokens) and never the secret.

    WEBHOOK_SECRET / WEBHOOK_SECRET_FILE   the HMAC key (required)
    WEBHOOK_TIMEOUT                        seconds per request (default 10)
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import math
import re
import ssl
import string
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, urlsplit

from notifiers.base import Delivery, Message, Notifier, Secret, secret
from notifiers.errors import ChannelConfigError, PermanentError, TransientError

MAX_BODY = 256 * 1024
MAX_PROVIDER_ID = 200
MAX_RETRY_AFTER = 86400.0  # a receiver asking for more is capped at a day
USER_AGENT = "orchestrator-webhook/1"
TIMESTAMP_HEADER = "X-Orchestrator-Timestamp"
SIGNATURE_HEADER = "X-Orchestrator-Signature"
UNSAFE = re.compile(r"[\x00-\x20\x7f]")
TRANSIENT_4XX = frozenset({408, 425, 429})  # "try again": timeout, too early, too many


def sign(key: str, timestamp: str, body: bytes) -> str:
    """The signature header's value for a body sent at `timestamp` (unix seconds, as text)."""
    mac = hmac.new(key.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def verify(key: str, timestamp: str, body: bytes, signature: str) -> bool:
    """Whether `signature` is ours for this timestamp and body (compared in constant time)."""
    return hmac.compare_digest(sign(key, timestamp, body).encode(), signature.encode())


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # urllib then raises the 3xx as an HTTPError


class WebhookNotifier(Notifier):
    channel = "webhook"

    def __init__(
        self, key: str, timeout: float = 10.0, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self._key = Secret(key)
        self.timeout = timeout
        handlers: list[urllib.request.BaseHandler] = [_NoRedirect()]
        if ssl_context is not None:
            handlers.append(urllib.request.HTTPSHandler(context=ssl_context))
        self._opener = urllib.request.build_opener(*handlers)  # built once, used for every send

    def __repr__(self) -> str:
        return f"WebhookNotifier(timeout={self.timeout:g})"

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
        text = env.get("WEBHOOK_TIMEOUT", "10")
        try:
            timeout = float(text)
        except ValueError:
            timeout = 0.0
        if not 0 < timeout <= 300:
            raise ChannelConfigError(
                f"WEBHOOK_TIMEOUT must be a number of seconds from 0 to 300, not {text!r}"
            )
        return cls(key, timeout)

    def send(self, message: Message) -> Delivery:
        host = _check_url(message.to)
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
        request = urllib.request.Request(message.to, data=body, headers=headers, method="POST")
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                response.read(64 * 1024)  # drain a little; the answer's body is not used
                request_id = response.headers.get("X-Request-Id") or ""
        except urllib.error.HTTPError as exc:
            with exc:
                raise _refused(host, exc) from None
        except urllib.error.URLError as exc:
            raise _unreachable(host, exc.reason) from None
        except (OSError, http.client.HTTPException) as exc:  # timeouts, resets, garbled answers
            raise _unreachable(host, exc) from None
        provider_id = request_id.strip()[:MAX_PROVIDER_ID] or message.key
        if not provider_id:
            provider_id = "webhook-" + hashlib.sha256(body).hexdigest()[:16]
        return Delivery(provider_id=provider_id, accepted=(message.to,))


def _check_url(url: str) -> str:
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
    status = exc.code
    if status == 429 or status >= 500 or status in TRANSIENT_4XX:
        return TransientError(
            f"webhook {host} answered {status}",
            code=status,
            retry_after=_retry_after(exc.headers.get("Retry-After")),
        )
    if 300 <= status < 400:
        return PermanentError(f"webhook {host} redirected ({status}); not followed", code=status)
    return PermanentError(f"webhook {host} refused the notification ({status})", code=status)


def _unreachable(host: str, reason: object) -> PermanentError | TransientError:
    if isinstance(reason, ssl.SSLCertVerificationError):
        return PermanentError(
            f"webhook {host}: TLS certificate not trusted ({reason.verify_message})", code="tls"
        )
    if isinstance(reason, TimeoutError):
        return TransientError(f"webhook {host} did not answer in time", code="timeout")
    what = reason if isinstance(reason, str) else getattr(reason, "strerror", None)
    return TransientError(
        f"webhook {host} unreachable ({what or type(reason).__name__})", code="connection"
    )


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: a number of seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return min(max(0.0, seconds), MAX_RETRY_AFTER) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(max(0.0, (when - datetime.now(UTC)).total_seconds()), MAX_RETRY_AFTER)
