"""The notification benchmark's providers: an SMTP server and Twilio's Messages API,
both answering each message after a delay, both counting what they accept and when.

The SMTP server is support/smtp_server.py (aiosmtpd, plain SMTP here) keeping only
the envelope: parsing every message, as the test server does, would make the
server the bottleneck of the benchmark. Twilio's API is support/twilio_server.py
(a thread per connection, kept alive). Both run in threads of the benchmark's
own process, so its CPU time includes theirs.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from typing import Any, Self

from support.smtp_server import SmtpServer
from support.twilio_server import TwilioServer


class SlowSmtp(SmtpServer):
    """Plain SMTP answering each message `delay` seconds after its DATA."""

    def __init__(self, delay: float) -> None:
        super().__init__(tls="none", auth=False, delay=delay)
        self.accepted: list[tuple[float, str]] = []  # (when, recipient)

    def __enter__(self) -> Self:
        self.start()
        return self

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await asyncio.sleep(self.delay)
        at = time.time()
        with self.lock:
            self.accepted.extend((at, str(rcpt)) for rcpt in envelope.rcpt_tos)
        return "250 2.0.0 Message accepted"


class Providers:
    def __init__(self, smtp: SlowSmtp, sms: TwilioServer) -> None:
        self.smtp, self.sms = smtp, sms

    @property
    def env(self) -> dict[str, str]:
        """SMTP_* and TWILIO_* for the workers."""
        return {**self.smtp.env, **self.sms.env}

    def accepted(self, channel: str, prefix: str) -> list[tuple[float, str]]:
        """(when, address) of every message accepted for an address starting with `prefix`."""
        if channel == "email":
            with self.smtp.lock:
                found = list(self.smtp.accepted)
        else:
            with self.sms.lock:
                pairs = zip(self.sms.accepted_at, self.sms.messages, strict=True)
                found = [(at, message.get("To", "")) for at, message in pairs]
        return [(at, to) for at, to in found if to.startswith(prefix)]

    def taken(self, channel: str) -> int:
        """How many messages the provider has accepted so far, for every address.

        Cheap enough to poll: waiting on accepted() would copy and filter the whole
        list every poll, CPU taken from the engine on the same two cores."""
        return len(self.smtp.accepted) if channel == "email" else len(self.sms.accepted_at)

    def connections(self, channel: str) -> int:
        return self.smtp.connections if channel == "email" else self.sms.connections


@contextlib.contextmanager
def providers(delay: float) -> Iterator[Providers]:
    with SlowSmtp(delay) as smtp, TwilioServer(delay) as sms:
        yield Providers(smtp, sms)
