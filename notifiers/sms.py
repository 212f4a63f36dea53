"""SMS through Twilio's Messages API, with Twilio's official `twilio` library.

Why the SDK and not a hand-written POST: the SDK is what Twilio keeps in step
with its API (parameters, auth, error bodies), and the tests run it against
Prism serving Twilio's own OpenAPI description, so the wire format is
checked by Twilio's description rather than by us.

`twilio` is imported only when the channel is built or used, never at module
import, so a process that sends no SMS (or just prints `--help`) never pays
for it. One Client serves every send; its HTTP client (on urllib3, see
`http_client_class`) keeps a pool of kept-alive connections that every
sending thread shares.
An answer that never came (the read timed out after the request went out)
is ambiguous: Twilio may have queued the message (AmbiguousError).

Segments are computed here because an SMS longer than one segment is billed
as several: GSM-7 bodies hold 160 septets in one segment and 153 per part
once split (the extension characters take two), and a single character
outside GSM-7 turns the whole body into UCS-2: 70 UTF-16 units, 67 per part.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, urlencode, urlsplit, urlunsplit

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
# connections kept per host: every sending thread of a notification worker has one
# (orchestrator.entry.settings.MAX_NOTIFY_THREADS); urllib3 makes more if asked, and drops them
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

    It speaks HTTP through urllib3 (the library under requests) rather than the SDK's
    own client on a requests Session, measured much faster: 390 us of the sending
    thread's CPU a send instead of 660 (3,000 sends in a row to support.twilio_server),
    and in `python -m bench --only notify` 1.1 ms of the notification worker's CPU an
    SMS instead of 1.4, 720-760 SMS a second instead of 620 (the worker's one process
    bounds the rate). requests' preparation of each request, its merge of the
    environment, its hooks and its cookies are most of the difference. The SDK still
    builds every request (URL, form, headers, auth) and reads every answer: only the
    transport is ours.

    It sends to `base` (scheme, host, port and an optional path prefix) instead of
    https://api.twilio.com when given one, since the SDK has no base-URL option, and
    remembers the Retry-After of the last answer in this thread, since the SDK's
    exceptions carry no headers. One connection pool per proxy serves every thread
    (urllib3's pools are thread-safe). The environment is read as requests reads it
    (HTTP(S)_PROXY, ALL_PROXY, NO_PROXY, REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE), once per
    host rather than on every request; with no CA bundle named, certifi's, as requests.
    """
    import certifi
    import requests
    import urllib3
    from requests.utils import get_auth_from_url, prepend_scheme_if_needed, select_proxy
    from twilio.http import HttpClient  # type: ignore[import-untyped]
    from twilio.http.response import Response  # type: ignore[import-untyped]

    logger = logging.getLogger("twilio.http_client")  # the SDK's own client logs here

    class RoutedHttpClient(HttpClient):  # type: ignore[misc]  # twilio is untyped
        def __init__(self, base: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> None:
            super().__init__(logger, is_async=False, timeout=timeout)
            self.base: SplitResult | None = urlsplit(base) if base else None
            self._last = threading.local()
            self._lock = threading.Lock()
            self._routes: dict[tuple[str, str], urllib3.PoolManager] = {}  # by scheme, host
            self._managers: dict[tuple[str | None, str | bool], urllib3.PoolManager] = {}

        def request(
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
                sent.update(urllib3.make_headers(basic_auth=f"{auth[0]}:{auth[1]}"))
            wait = timeout if timeout is not None else self.timeout
            self._last.retry_after = None
            answer = self._route(url).request(
                method,
                url,
                body=body,
                headers=sent,
                timeout=urllib3.Timeout(connect=wait, read=wait),
                redirect=allow_redirects,
                retries=False,  # a resend is the ledger's to decide, as with requests' 0
            )
            self._last.retry_after = retry_after(answer.headers.get("Retry-After"))
            text = answer.data.decode("utf-8", "replace")
            response = Response(answer.status, text, answer.headers)
            if logger.isEnabledFor(logging.INFO):
                self.log_response(answer.status, response)
            return response

        def _route(self, url: str) -> urllib3.PoolManager:
            """The pool for `url`'s host: direct, or through the proxy the environment
            names for it, with the CA bundle it names."""
            parts = urlsplit(url)
            host = (parts.scheme, parts.netloc)
            found = self._routes.get(host)
            if found is not None:
                return found
            with requests.Session() as probe:  # trusts the environment, as requests would
                settings = probe.merge_environment_settings(url, {}, None, None, None)
            proxy = select_proxy(url, settings["proxies"])
            verify: str | bool = settings["verify"]
            with self._lock:
                manager = self._managers.get((proxy, verify))
                if manager is None:
                    manager = self._managers[(proxy, verify)] = _manager(proxy, verify)
                self._routes[host] = manager
            return manager

        def last_retry_after(self) -> float | None:
            return getattr(self._last, "retry_after", None)

        def close(self) -> None:
            with self._lock:
                managers, self._managers, self._routes = list(self._managers.values()), {}, {}
            for manager in managers:
                manager.clear()

    def _manager(proxy: str | None, verify: str | bool) -> urllib3.PoolManager:
        """Connections through `proxy` (None: direct), checking certificates against the
        CA bundle or folder `verify` names (True: certifi's; False: not at all), as
        requests' own adapter makes them."""
        tls: dict[str, Any] = {"cert_reqs": "CERT_REQUIRED" if verify else "CERT_NONE"}
        if verify is True:
            tls["ca_certs"] = certifi.where()
        elif isinstance(verify, str):
            tls["ca_cert_dir" if os.path.isdir(verify) else "ca_certs"] = verify
        pools = {"num_pools": 4, "maxsize": POOL_SIZE, **tls}
        if proxy is None:
            return urllib3.PoolManager(**pools)
        proxy = prepend_scheme_if_needed(proxy, "http")  # as requests reads "host:port"
        user, password = get_auth_from_url(proxy)  # SOCKS: urllib3 raises ProxySchemeUnknown
        credentials = urllib3.make_headers(proxy_basic_auth=f"{user}:{password}") if user else {}
        return urllib3.ProxyManager(proxy, proxy_headers=credentials, **pools)

    return RoutedHttpClient


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
        import urllib3
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
            sent = self._client.messages.create(**params)
        except TwilioRestException as exc:
            raise self._refusal(exc.status, exc.code, str(exc.msg)) from None
        except TwilioServiceException as exc:  # RFC 9457 problem details
            raise self._refusal(exc.status, exc.code, str(exc.detail or exc.title)) from None
        except urllib3.exceptions.ReadTimeoutError as exc:  # it went out; no answer came
            reason = self._scrub(f"Twilio did not answer in time: {exc}; it may have the SMS")
            raise AmbiguousError(reason) from None
        except (urllib3.exceptions.HTTPError, TwilioException) as exc:
            reason = self._scrub(f"Twilio not reached: {type(exc).__name__}: {exc}")
            raise TransientError(reason) from None
        warning = segment_warning(message.body)
        return Delivery(
            provider_id=str(sent.sid),
            accepted=(message.to,),
            warnings=(warning,) if warning else (),
        )

    def _refusal(self, status: int, code: int | str | None, reason: str) -> DeliveryError:
        reason = self._scrub(reason or f"HTTP {status}")
        if verdict(status).retryable:
            wait = getattr(self.http, "last_retry_after", lambda: None)()
            return TransientError(reason, code=code, retry_after=wait)
        return PermanentError(reason, code=code)

    def _scrub(self, text: str) -> str:
        return text.replace(self._token, "***") if self._token else text

    def close(self) -> None:
        close = getattr(self.http, "close", None)
        if close is not None:
            close()

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
