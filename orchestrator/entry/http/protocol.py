"""uvicorn's h11 protocol, extended: a cap on open connections, a deadline on each request.

So ordinary load and slow or hostile clients cannot take the server down: at
most `max_connections` open connections (one more is answered 503 at once,
what it sends read and dropped, and closed after REFUSED_GRACE); each request
must arrive whole, headers and body, within `request_timeout` seconds of its
first byte (else 408 and the connection is closed); a body the app has
already refused is drained up to DRAIN_LIMIT, then the connection is cut.
Each server gets a subclass of its own (`LimitedProtocol.limited`) holding
its limits and its count of open connections.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from http import HTTPStatus
from typing import Any, ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("orchestrator.entry.http")

DRAIN_LIMIT = 4 * 1024 * 1024  # a refused body is read (and dropped) up to this, then cut
MAX_CONNECTIONS = 1000  # open connections served at once (default of --max-connections)
REQUEST_TIMEOUT = 10.0  # seconds for a request to arrive whole (default of --request-timeout)
REFUSED_GRACE = 1.0  # seconds a connection refused at the cap may take to read its 503


def _canned(status: int, message: str) -> bytes:
    """A whole HTTP answer, for a connection the app never sees (then closed)."""
    body = json.dumps({"error": message}).encode()
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        "cache-control: no-store\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode() + body


class LimitedProtocol(H11Protocol):
    """uvicorn's h11 protocol, with a connection cap and a deadline on each request.

    `limited()` makes one subclass per server, holding its limits and its count.
    """

    max_connections: ClassVar[int] = MAX_CONNECTIONS
    request_timeout: ClassVar[float] = REQUEST_TIMEOUT
    open: ClassVar[int] = 0  # connections served now (those refused at the cap not counted)
    warned: ClassVar[float] = 0.0  # when a refusal was last logged (one line a second at most)

    @classmethod
    def limited(cls, max_connections: int, request_timeout: float) -> type[LimitedProtocol]:
        limits = {"max_connections": max_connections, "request_timeout": request_timeout}
        return type("Protocol", (cls,), {**limits, "open": 0, "warned": 0.0})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.deadline: asyncio.TimerHandle | None = None
        self.refused = False
        self.counted = False
        self.drained = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        kind = type(self)
        if kind.open >= kind.max_connections:
            self._refuse(transport)
            return
        kind.open += 1
        self.counted = True
        self._arm()  # a client that connects and says nothing is cut too

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self.counted:
            type(self).open -= 1
            self.counted = False
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return  # read and dropped, so the close sends no reset over the 503
        if self.deadline is None:
            self._arm()  # the first bytes of a request: its deadline starts
        if self._draining():
            self.drained += len(data)
            if self.drained > DRAIN_LIMIT:
                self.transport.close()
                return
        super().data_received(data)
        if self._between_requests():
            self._disarm()

    def on_response_complete(self) -> None:
        if self._between_requests():
            self._disarm()
        super().on_response_complete()

    def _refuse(self, transport: asyncio.Transport) -> None:
        """Answer 503 at once, read and drop what the client sends, close after a grace."""
        kind = type(self)
        self.refused = True
        now = time.monotonic()
        if now - kind.warned >= 1:
            kind.warned = now
            log.warning("connections refused: %d open (--max-connections)", kind.open)
        limit = kind.max_connections
        transport.write(_canned(503, f"the server is at its limit of {limit} connections"))
        if transport.can_write_eof():
            transport.write_eof()
        self.deadline = self.loop.call_later(REFUSED_GRACE, transport.close)

    def _draining(self) -> bool:
        """Answered already (e.g. 413), while the client is still sending its body."""
        return (
            self.cycle is not None
            and self.cycle.response_complete
            and self.conn.their_state is h11.SEND_BODY
        )

    def _between_requests(self) -> bool:
        """The client's request is all in (or none has begun): its deadline is over."""
        state = self.conn.their_state
        if state is h11.IDLE:
            return not self.conn.trailing_data[0]
        return state is h11.DONE or state is h11.MUST_CLOSE or state is h11.CLOSED

    def _arm(self) -> None:
        self._disarm()
        self.deadline = self.loop.call_later(type(self).request_timeout, self._expire)

    def _disarm(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def _expire(self) -> None:
        self.deadline = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        answering = cycle is not None and cycle.response_started and not cycle.response_complete
        if not answering and not self._draining():
            seconds = type(self).request_timeout
            log.info("request cut at its %gs deadline (--request-timeout)", seconds)
            message = f"the request did not arrive whole within {seconds:g}s"
            self.transport.write(_canned(408, message))
        self.transport.close()
