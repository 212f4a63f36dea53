"""The HTTP client the Twilio SDK sends through for the SMS channel (notifiers.sms): the
SDK's async client interface on aiohttp, run on the process's event loop (notifiers.loop).

Why its own client: the SDK's own clients are a requests Session (sync) and aiohttp with
aiohttp-retry (async), neither with a base URL to send to instead of api.twilio.com, and
the retrying one would resend on its own what the ledger must decide to resend. This one
sends where it is told, reads the environment's proxy and CA settings as requests does,
and retries nothing. `twilio` and aiohttp are imported when the class is first built,
never at module import.
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

from notifiers.http import retry_after

DEFAULT_TIMEOUT = 15.0  # seconds for one request to Twilio
# connections at once, at most: one for each send of a notification worker at the same time
# (orchestrator.entry.settings.MAX_NOTIFY_THREADS)
POOL_SIZE = 1024
JSON_TYPES = ("application/json", "application/scim+json")  # bodies the SDK sends as JSON


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
        tls: ssl.SSLContext  # the CAs an https server's certificate is checked against

    class RoutedHttpClient(AsyncHttpClient):  # type: ignore[misc]  # twilio is untyped
        def __init__(self, base: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> None:
            super().__init__(logger, is_async=True, timeout=timeout)
            self.base: SplitResult | None = urlsplit(base) if base else None
            self._routes: dict[tuple[str, str], Route] = {}  # by scheme, host
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
            https = url.startswith("https:")  # TLS; through a proxy, a CONNECT first
            if route.proxy_headers and not https:
                sent.update(route.proxy_headers)  # asked of the proxy itself: no CONNECT
            retry_after_seen.set(None)
            async with self._open().request(
                method,
                url,
                data=body,
                headers=sent,
                proxy=route.proxy,
                proxy_headers=route.proxy_headers if https else None,
                ssl=route.tls if https else True,
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
            route = self._routes[host] = Route(proxy, credentials, _context(verify))
            return route

        def last_retry_after(self) -> float | None:
            """The Retry-After of the last answer in the calling task (in seconds)."""
            return retry_after_seen.get()

        async def aclose(self) -> None:
            session, self._session = self._session, None
            if session is not None and session[0] == os.getpid():
                await session[1].close()

    def _context(verify: str | bool) -> ssl.SSLContext:
        """Certificates checked against the CA bundle or folder `verify` names (True:
        certifi's), as requests' own adapter checks them. The environment cannot turn
        checking off (requests' `verify=False` is a Session's setting, never read here)."""
        if isinstance(verify, bool):
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
