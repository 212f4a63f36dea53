"""SMS through Twilio's Messages API, with Twilio's official `twilio` library.

Why the SDK and not a hand-written POST: the SDK is what Twilio keeps in step
with its API (parameters, auth, error bodies), and the tests run it against
Prism serving Twilio's own OpenAPI description, so the wire format is
checked by Twilio's description rather than by us.

`twilio` is imported only when the channel is built or used, never at module
import, so a process that sends no SMS (or just prints `--help`) never pays
for it. One Client serves every send; its HTTP client (notifiers.sms_transport: on
aiohttp, run on the process's event loop, notifiers.loop) keeps a pool of kept-alive
connections that every sending thread's request shares.
An answer that never came (the read timed out after the request went out)
is ambiguous: Twilio may have queued the message (AmbiguousError).

Segments are computed here because an SMS longer than one segment is billed
as several: GSM-7 bodies hold 160 septets in one segment and 153 per part
once split (the extension characters take two), and a single character
outside GSM-7 turns the whole body into UCS-2: 70 UTF-16 units, 67 per part.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from notifiers import loop
from notifiers.base import Delivery, Message, Notifier, Secret, secret
from notifiers.errors import (
    AmbiguousError,
    ChannelConfigError,
    DeliveryError,
    PermanentError,
    TransientError,
)
from notifiers.http import verdict
from notifiers.sms_transport import DEFAULT_TIMEOUT, ProxyRefused, http_client_class

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")  # sent as ESC + character: two septets


@dataclass(frozen=True)
class Segments:
    """How a body travels: its encoding, its size in that encoding, its segment count."""

    encoding: str  # "GSM-7" or "UCS-2"
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2)
    count: int
    first_non_gsm: str | None = None  # the character that forced UCS-2


def segments(body: str) -> Segments:
    """Count segments as a carrier does: a character is never split across two parts."""
    odd = next((c for c in body if c not in GSM7_BASIC and c not in GSM7_EXTENSION), None)
    if odd is None:
        sizes = [2 if c in GSM7_EXTENSION else 1 for c in body]
        encoding, single, part = "GSM-7", 160, 153
    else:
        sizes = [len(c.encode("utf-16-le")) // 2 for c in body]
        encoding, single, part = "UCS-2", 70, 67
    total = sum(sizes)
    count = 1
    if total > single:
        used = 0
        for size in sizes:
            if used + size > part:
                count, used = count + 1, 0
            used += size
    return Segments(encoding, total, count, odd)


def segment_warning(body: str) -> str | None:
    """A warning when the body is billed as more than one SMS; None when it fits in one."""
    seg = segments(body)
    if seg.count == 1:
        return None
    unit = "septets" if seg.encoding == "GSM-7" else "UTF-16 units"
    why = f"; {seg.first_non_gsm!r} is not in GSM-7" if seg.first_non_gsm else ""
    return f"SMS needs {seg.count} segments ({seg.encoding}, {seg.units} {unit}{why})"


class SmsNotifier(Notifier):
    channel = "sms"
    rate_per_second = 10.0

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        *,
        from_: str | None = None,
        messaging_service_sid: str | None = None,
        status_callback: str | None = None,
        api_base: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        http_client: Any = None,
    ) -> None:
        """`http_client` replaces the default (a `http_client_class()` instance) in tests."""
        from twilio.rest import Client  # type: ignore[import-untyped]

        if not (from_ or messaging_service_sid):
            raise ChannelConfigError("an SMS needs a sender: from_ or messaging_service_sid")
        self.account_sid = account_sid
        self._token = Secret(auth_token)
        self.from_ = from_
        self.messaging_service_sid = messaging_service_sid
        self.status_callback = status_callback
        self.api_base = api_base
        self.http = (
            http_client if http_client is not None else http_client_class()(api_base, timeout)
        )
        self._client = Client(account_sid, self._token, http_client=self.http)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SmsNotifier:
        sid = env.get("TWILIO_ACCOUNT_SID", "").strip()
        if not sid:
            raise ChannelConfigError("TWILIO_ACCOUNT_SID is not set")
        if not sid.startswith("AC"):
            raise ChannelConfigError("TWILIO_ACCOUNT_SID must be an account SID (AC...)")
        try:
            token = secret(env, "TWILIO_AUTH_TOKEN")
        except OSError as exc:
            raise ChannelConfigError(
                f"TWILIO_AUTH_TOKEN_FILE cannot be read ({exc.strerror})"
            ) from None
        if not token:
            raise ChannelConfigError("TWILIO_AUTH_TOKEN (or TWILIO_AUTH_TOKEN_FILE) is not set")
        from_ = env.get("TWILIO_FROM", "").strip() or None
        service = env.get("TWILIO_MESSAGING_SERVICE_SID", "").strip() or None
        if not (from_ or service):
            raise ChannelConfigError(
                "set TWILIO_FROM (the sender's number) or TWILIO_MESSAGING_SERVICE_SID"
            )
        if service and not service.startswith("MG"):
            raise ChannelConfigError("TWILIO_MESSAGING_SERVICE_SID must be a service SID (MG...)")
        return cls(
            sid,
            token,
            from_=from_,
            messaging_service_sid=service,
            status_callback=_url(env, "TWILIO_STATUS_CALLBACK"),
            api_base=_url(env, "TWILIO_API_BASE"),
            timeout=_timeout(env),
        )

    def send(self, message: Message) -> Delivery:
        import aiohttp
        from twilio.base.exceptions import (  # type: ignore[import-untyped]
            TwilioException,
            TwilioRestException,
            TwilioServiceException,
        )

        if not message.to:
            raise PermanentError("no phone number to send the SMS to")
        params: dict[str, Any] = {"to": message.to, "body": message.body}
        if self.from_:
            params["from_"] = self.from_
        if self.messaging_service_sid:
            params["messaging_service_sid"] = self.messaging_service_sid
        if self.status_callback:
            params["status_callback"] = self.status_callback
        try:
            sent = loop.run(self._create(params))
        except TwilioRestException as exc:
            raise self._refusal(exc.status, exc.code, str(exc.msg), exc) from None
        except TwilioServiceException as exc:  # RFC 9457 problem details
            raise self._refusal(exc.status, exc.code, str(exc.detail or exc.title), exc) from None
        except aiohttp.SocketTimeoutError as exc:  # it went out; no answer came in time
            reason = self._scrub(f"Twilio did not answer in time: {exc}; it may have the SMS")
            raise AmbiguousError(reason) from None
        except (aiohttp.ClientError, OSError, ProxyRefused, TwilioException) as exc:
            reason = self._scrub(f"Twilio not reached: {type(exc).__name__}: {exc}")
            raise TransientError(reason) from None
        warning = segment_warning(message.body)
        return Delivery(
            provider_id=str(sent.sid),
            accepted=(message.to,),
            warnings=(warning,) if warning else (),
        )

    async def _create(self, params: dict[str, Any]) -> Any:
        """The SDK's request, on the process's loop; a refusal leaves with the Retry-After
        its answer gave (read in this task's context, where the request ran)."""
        try:
            return await self._client.messages.create_async(**params)
        except Exception as exc:
            last = getattr(self.http, "last_retry_after", None)
            exc.retry_after = last() if last is not None else None  # type: ignore[attr-defined]
            raise

    def _refusal(
        self, status: int, code: int | str | None, reason: str, exc: Exception
    ) -> DeliveryError:
        reason = self._scrub(reason or f"HTTP {status}")
        if verdict(status).retryable:
            wait = getattr(exc, "retry_after", None)
            return TransientError(reason, code=code, retry_after=wait)
        return PermanentError(reason, code=code)

    def _scrub(self, text: str) -> str:
        return text.replace(self._token, "***") if self._token else text

    def close(self) -> None:
        """Close the kept-alive connections (on the loop, if it ever ran in this process)."""
        aclose = getattr(self.http, "aclose", None)
        if aclose is not None and loop.running() is not None:
            loop.run(aclose(), timeout=5)

    def __repr__(self) -> str:
        sender = f"from_={self.from_!r}, messaging_service_sid={self.messaging_service_sid!r}"
        base = f", api_base={self.api_base!r}" if self.api_base else ""
        return f"SmsNotifier(account_sid={self.account_sid!r}, {sender}{base})"


def _url(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name, "").strip()
    if not value:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ChannelConfigError(f"{name} must be an http(s) URL with a host")
    return value


def _timeout(env: Mapping[str, str]) -> float:
    value = env.get("TWILIO_TIMEOUT", "").strip()
    if not value:
        return DEFAULT_TIMEOUT
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not seconds > 0 or seconds == float("inf"):
        raise ChannelConfigError(f"TWILIO_TIMEOUT must be a positive number of seconds: {value!r}")
    return seconds
