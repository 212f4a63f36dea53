"""The webhook's transport: urllib with a deadline for the whole request, no redirects.

A socket timeout restarts with every byte, so a receiver that drips its
answer a byte at a time would never time out; here each request carries a
Deadline: connecting (TLS included) gets the shorter connect timeout, and
once connected the socket waits at most what is left, while a timer shuts
it down at the deadline whatever it is doing. Redirects are not followed (a
POST turned into a GET to another host is not a delivery): urllib raises the
3xx as an HTTPError, which the channel reads as any other answer.

Unless private addresses are allowed, every connection is made through
notifiers.webhook_guard: the name is resolved once, each address checked, and
the socket connected to a checked address (the Host header and TLS's SNI and
certificate check still use the name). Through a proxy (HTTP(S)_PROXY), the
target's addresses are checked before the request, but the proxy resolves the
name itself: let the proxy refuse private addresses too.

Only the standard library; the opener is built once per notifier.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import socket
import ssl
import threading
import time
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from notifiers import webhook_guard


def build_opener(
    context: ssl.SSLContext | None, *, allow_private: bool = False
) -> urllib.request.OpenerDirector:
    """An opener for DeadlineRequests: http and https with their deadlines, no redirects,
    and (unless `allow_private`) only to public addresses (notifiers.webhook_guard)."""
    guarded = not allow_private
    return urllib.request.build_opener(
        _NoRedirect(), _HttpHandler(guarded), _HttpsHandler(context, guarded)
    )


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # urllib then raises the 3xx as an HTTPError


class Deadline:
    """The end of one request. The socket waits at most what is left once connected, so
    a receiver that never answers is cut off then; a timer shuts the socket down at the
    deadline too, since one that drips its answer restarts a socket's timeout per byte."""

    def __init__(self, seconds: float, connect: float) -> None:
        self.at = time.monotonic() + seconds
        self.connect = min(connect, seconds)
        self.expired = False
        self._timer: threading.Timer | None = None

    def arm(self, sock: socket.socket) -> None:
        left = max(0.001, self.at - time.monotonic())
        sock.settimeout(left)
        self._timer = threading.Timer(left, self._expire, (sock,))
        self._timer.daemon = True
        self._timer.start()

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def _expire(self, sock: socket.socket) -> None:
        self.expired = True
        with contextlib.suppress(OSError):  # the plain socket's: a TLS one's would drop its state
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


class DeadlineRequest(urllib.request.Request):
    """A urllib request that carries its Deadline to the connection that sends it."""

    def __init__(self, url: str, deadline: Deadline, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self.deadline = deadline


class _Timed(http.client.HTTPConnection):
    """A connection that connects within its request's connect timeout, then arms its
    deadline."""

    def __init__(self, *args: Any, deadline: Deadline, guarded: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.deadline = deadline
        if guarded:  # resolve once, check every address, connect to a checked one
            self._create_connection = _guarded_connection

    def connect(self) -> None:
        self.timeout = self.deadline.connect  # the TCP connect, and a TLS handshake
        super().connect()
        self.deadline.arm(self.sock)


class _TimedTls(_Timed, http.client.HTTPSConnection):
    pass


def _guarded_connection(
    address: tuple[str, int],
    timeout: float | None = None,
    source_address: tuple[str, int] | None = None,
) -> socket.socket:
    host, port = address
    return webhook_guard.connect(host, port, timeout, source_address)


def _connection(
    kind: type[_Timed], req: urllib.request.Request, guarded: bool
) -> functools.partial[_Timed]:
    """The connection class for `req`. Through a proxy, the connection goes to the proxy:
    the target's own addresses are checked here (the proxy resolves the name again)."""
    assert isinstance(req, DeadlineRequest)
    if guarded and req.has_proxy():
        parts = urlsplit(req.full_url)
        if parts.hostname:
            port = parts.port or (443 if parts.scheme == "https" else 80)
            webhook_guard.resolve(parts.hostname, port)
        guarded = False
    return functools.partial(kind, deadline=req.deadline, guarded=guarded)


class _HttpHandler(urllib.request.HTTPHandler):
    def __init__(self, guarded: bool) -> None:
        super().__init__()
        self.guarded = guarded

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_connection(_Timed, req, self.guarded), req)


class _HttpsHandler(urllib.request.HTTPSHandler):
    def __init__(self, context: ssl.SSLContext | None, guarded: bool) -> None:
        super().__init__()
        self.tls = context or ssl.create_default_context()  # made once, not per request
        self.guarded = guarded

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        connection = _connection(_TimedTls, req, self.guarded)
        return self.do_open(connection, req, context=self.tls)
