"""SMTP servers for the cases support/smtp_server.py does not cover: an answer that is
lost after the message was kept, and clients held until several are inside at once.

AmbiguousSmtpServer keeps the first `times` messages and then either drops the
connection before the 250 (`how="drop"`) or answers only after `late` seconds,
longer than the client waits (`how="late"`): the client cannot tell whether
the message arrived. CrowdedSmtpServer holds the first DATA commands until
`together` of them are waiting at once (or HOLD_LIMIT passed): a client that
sends concurrently gets through at once, one that sends one at a time waits,
and `most_at_once` tells which it was, without timing anything.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Self

from support.smtp_server import SmtpServer

HOLD_LIMIT = 10.0


class AmbiguousSmtpServer(SmtpServer):
    def __init__(self, how: str = "drop", *, times: int = 1, late: float = 2.0, **kwargs: Any):
        if how not in ("drop", "late"):
            raise ValueError(f"how is drop or late, not {how!r}")
        super().__init__(**kwargs)
        self.how = how
        self.faults_left = times
        self.late = late

    def __enter__(self) -> Self:
        self.start()
        return self

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        reply = await super().handle_DATA(server, session, envelope)  # kept now
        if not reply.startswith("250") or self.faults_left <= 0:
            return reply
        self.faults_left -= 1
        if self.how == "drop":
            server.transport.abort()  # the reply written next goes nowhere
        else:
            await asyncio.sleep(self.late)
        return reply


class CrowdedSmtpServer(SmtpServer):
    def __init__(self, together: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.together = together
        self.inside = 0
        self.most_at_once = 0

    def __enter__(self) -> Self:
        self.start()
        return self

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.inside += 1  # the server's own event loop: no other thread counts
        self.most_at_once = max(self.most_at_once, self.inside)
        if self.inside >= self.together:
            self.together = 0  # met once: nobody waits any more
        deadline = time.monotonic() + HOLD_LIMIT
        try:
            while self.inside < self.together and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            return await super().handle_DATA(server, session, envelope)
        finally:
            self.inside -= 1
