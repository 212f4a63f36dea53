"""SMS through Twilio's Messages API, with Twilio's official `twilio` library.

Why the SDK and not a hand-written POST: the SDK is what Twilio keeps in step
with its API (parameters, auth, error bodies), and the tests run it against
Prism serving Twilio's own OpenAPI description, so the wire format is
checked by Twilio's description rather than by us.

`twilio` is imported only when the channel is built or used, never at module
import, so a process that sends no SMS (or just prints `--help`) never pays
for it. One Client serves every send; its HTTP client (on aiohttp, run on the
process's event loop: see `http_client_class` and notifiers.loop) keeps a pool of
kept-alive connections that every sending thread's request shares.
An answer that never came (the read timed out after the request went out)
is ambiguous: Twilio may have queued the message (AmbiguousError).

Segments are computed here because an SMS longer than one segment is billed
as several: GSM-7 bodies hold 160 septets in one segment and 153 per part
once split (the extension characters take two), and a single character
outside GSM-7 turns the whole body into UCS-2: 70 UTF-16 units, 67 per part.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, urlencode, urlsplit, urlunsplit

from notifiers import loop
from notifiers.base import Delivery, Message, Notifier, Secret, secret
from notifiers.errors import (
    AmbiguousError,
    ChannelConfigError,
    DeliveryError,
    PermanentError,
    TransientError,
)
from notifiers.http import retry_after, verdict

DEFAULT_TIMEOUT = 15.0  # seconds for one request to Twilio
# connections at once, at most: one for each send of a notification worker at the same time
# (orchestrator.entry.settings.MAX_NOTIFY_THREADS)
POOL_SIZE = 1024
JSON_TYPES = ("application/json", "application/scim+json")  # bodies the SDK sends as JSON

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


@functools.cache
def http_client_class() -> type[Any]:
    """The HTTP client class for the Twilio SDK (built on first use: it imports twilio).

    The SDK's async client interface, on aiohttp, run on the process's event loop
    (notifiers.loop): a send thread hands its request to the loop and waits, instead of
    making each socket call itself among every other send thread (measured in
    notifiers.loop's docstring: 620-660 us of the process's CPU an SMS instead of
    740-950 with urllib3 on each thread; with requests' Session, as the SDK's own sync
    client, it was more still: 660 us of the sending thread's CPU against urllib3's 390).
    The SDK still builds every request (URL, form, headers, auth) and reads every
    answer: only the transport is ours.

    It sends to `base` (scheme, host, port and an optional path prefix) instead of
    https://api.twilio.com when given one, since the SDK has no base-URL option, and
    keeps the Retry-After of the last answer in the calling task's context, since the
    SDK's exceptions carry no headers (`SmsNotifier._create` puts it on the SDK's
    error). One session per process, its connections kept alive and shared by every
    send; it runs only on the process's loop thread, so nothing here needs a lock. The
    environment is read as requests reads it (HTTP(S)_PROXY, ALL_PROXY, NO_PROXY,
    REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE), once per host rather than on every request;
    with no CA bundle named, certifi's, as requests. A proxy that is not http(s) (SOCKS)
    is refused with ProxyRefused.
    """
    import ssl
    from contextvars import ContextVar

    import aiohttp
    import certifi
    import requests
    from requests.utils import get_auth_from_url, prepend_scheme_if_needed, select_proxy
    from twilio.http import AsyncHttpClient  # type: ignore[import-untyped]
    from twilio.http.response import Response  # type: ignore[import-untyped]

    logger = logging.getLogger("twilio.http_client")  # the SDK's own client logs here
    retry_after_seen: ContextVar[float | None] = ContextVar("retry_after", default=None)

    @dataclass(frozen=True)
    class Route:
        proxy: str | None
        proxy_headers: dict[str, str] | None  # the proxy's credentials, for a CONNECT
        tls: ssl.SSLContext | bool  # False: certificates not checked (verify=False)

    class RoutedHttpClient(AsyncHttpClient):  # type: ignore[misc]  # twilio is untyped
        def __init__(self, base: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> None:
            super().__init__(logger, is_async=True, timeout=timeout)
            self.base: SplitResult | None = urlsplit(base) if base else None
            self._routes: dict[tuple[str, str], Route] = {}  # by scheme, host
            self._contexts: dict[str | bool, ssl.SSLContext | bool] = {}  # by `verify`
            self._session: tuple[int, aiohttp.ClientSession] | None = None  # by pid

        async def request(
            self,
            method: str,
            url: str,
            params: Mapping[str, Any] | None = None,
            data: Mapping[str, Any] | None = None,
            headers: Mapping[str, str] | None = None,
            auth: tuple[str, str] | None = None,
            timeout: float | None = None,
            allow_redirects: bool = False,
        ) -> Any:
            if self.base is not None:
                parts, base = urlsplit(url), self.base
                path = base.path.rstrip("/") + parts.path
                url = urlunsplit((base.scheme, base.netloc, path, parts.query, parts.fragment))
            if params:
                url += ("&" if urlsplit(url).query else "?") + urlencode(params, doseq=True)
            sent = dict(headers or {})
            if logger.isEnabledFor(logging.INFO):  # ten-odd lines: the worker shows them at DEBUG
                self.log_request({"method": method, "url": url, "params": None, "headers": sent})
            body = None
            if data and sent.get("Content-Type") in JSON_TYPES:  # as the SDK's own client
                body = json.dumps(data)
            elif data:
                body = urlencode(data, doseq=True)  # as requests encodes a form
                sent.setdefault("Content-Type", "application/x-www-form-urlencoded")
            if auth is not None:
                sent["Authorization"] = _basic(auth[0], auth[1])
            wait = timeout if timeout is not None else self.timeout
            route = self._route(url)
            if route.proxy_headers and not url.startswith("https:"):
                sent.update(route.proxy_headers)  # asked of the proxy itself: no CONNECT
            retry_after_seen.set(None)
            async with self._open().request(
                method,
                url,
                data=body,
                headers=sent,
                proxy=route.proxy,
                proxy_headers=route.proxy_headers,
                ssl=route.tls if url.startswith("https:") else True,
                timeout=aiohttp.ClientTimeout(sock_connect=wait, sock_read=wait),
                allow_redirects=allow_redirects,
            ) as answer:
                text = await answer.text(errors="replace")
            retry_after_seen.set(retry_after(answer.headers.get("Retry-After")))
            response = Response(answer.status, text, answer.headers)
            if logger.isEnabledFor(logging.INFO):
                self.log_response(answer.status, response)
            return response

        def _open(self) -> aiohttp.ClientSession:
            """This process's session (on its loop), made on first use."""
            pid = os.getpid()
            if self._session is None or self._session[0] != pid:
                if self._session is not None:  # inherited through fork: the parent's sockets
                    _inherited.append(self._session[1])  # never closed here, nor collected
                connector = aiohttp.TCPConnector(limit=POOL_SIZE, limit_per_host=0)
                # no cookies: each request stands alone, as with the SDK's own client
                session = aiohttp.ClientSession(
                    connector=connector, cookie_jar=aiohttp.DummyCookieJar()
                )
                self._session = (pid, session)
            return self._session[1]

        def _route(self, url: str) -> Route:
            """How to reach `url`'s host: direct, or through the proxy the environment names
            for it, with the CA bundle it names."""
            parts = urlsplit(url)
            host = (parts.scheme, parts.netloc)
            found = self._routes.get(host)
            if found is not None:
                return found
            with requests.Session() as probe:  # trusts the environment, as requests would
                settings = probe.merge_environment_settings(url, {}, None, None, None)
            proxy = select_proxy(url, settings["proxies"])
            verify: str | bool = settings["verify"]
            credentials = None
            if proxy is not None:
                proxy = prepend_scheme_if_needed(proxy, "http")  # as requests reads "host:port"
                scheme = urlsplit(proxy).scheme
                if scheme not in ("http", "https"):
                    raise ProxyRefused(f"unsupported scheme {scheme}")  # never its netloc
                user, password = get_auth_from_url(proxy)
                if user:
                    credentials = {"Proxy-Authorization": _basic(user, password)}
                    proxy = _without_userinfo(proxy)
            tls = self._contexts.get(verify)
            if tls is None:
                tls = self._contexts[verify] = _context(verify)
            route = self._routes[host] = Route(proxy, credentials, tls)
            return route

        def last_retry_after(self) -> float | None:
            """The Retry-After of the last answer in the calling task (in seconds)."""
            return retry_after_seen.get()

        async def aclose(self) -> None:
            session, self._session = self._session, None
            if session is not None and session[0] == os.getpid():
                await session[1].close()

    def _context(verify: str | bool) -> ssl.SSLContext | bool:
        """Certificates checked against the CA bundle or folder `verify` names (True:
        certifi's; False: not at all), as requests' own adapter checks them."""
        if verify is False:
            return False
        if verify is True:
            return ssl.create_default_context(cafile=certifi.where())
        if os.path.isdir(verify):
            return ssl.create_default_context(capath=verify)
        return ssl.create_default_context(cafile=verify)

    return RoutedHttpClient


# sessions a forked child inherited: kept, so that collecting one never closes (nor warns
# about) connections that are its parent's
_inherited: list[Any] = []


class ProxyRefused(Exception):
    """The environment names a proxy this channel cannot use (SOCKS)."""


def _basic(user: str, password: str) -> str:
    """HTTP Basic credentials, encoded as requests and urllib3 encode them (latin-1)."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode("latin-1")).decode()


def _without_userinfo(url: str) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


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
