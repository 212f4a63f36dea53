"""The provider side: what the SMTP server and Prism (Twilio) actually accepted, and when.

The checker counts a notification as delivered, and as duplicated, only from
these records, never from the engine's own. Each receipt is a plain dict:
{"channel", "ref", "message_id", "to", "at", "resolution"}; `resolution` is
how precise `at` is (seconds): the SMTP server stamps each message as it
answers 250; Prism's log stamps to the second (local time, 12-hour clock).
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from support.smtp_server import SmtpServer

REF = re.compile(r"\bref (\S+)")
_STAMP = re.compile(r"^\[(\d{1,2}:\d{2}:\d{2} [AP]M)\]")
_BODY = re.compile(r"\[NEGOTIATOR\] .*debug\s+< Body: (.*)$")


class TimedSmtpServer(SmtpServer):
    """The test SMTP server, plus the time each message was accepted."""

    def __init__(self) -> None:
        super().__init__(tls="none", auth=False)
        self.accepted_at: list[float] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        reply = await super().handle_DATA(server, session, envelope)
        if reply.startswith("250"):  # appended to messages just now, in this same loop
            with self.lock:
                self.accepted_at.append(time.time())
        return reply

    def receipts(self) -> list[dict[str, Any]]:
        with self.lock:
            pairs = list(zip(self.messages, self.accepted_at, strict=False))
        out: list[dict[str, Any]] = []
        for received, at in pairs:
            found = REF.search(str(received.message["Subject"] or ""))
            out.append(
                {
                    "channel": "email",
                    "ref": found[1] if found else None,
                    "message_id": str(received.message["Message-ID"] or ""),
                    "to": ",".join(received.rcpt_tos),
                    "at": at,
                    "resolution": 0.05,
                }
            )
        return out


def _clock(stamp: str, day: datetime) -> float:
    parsed = datetime.strptime(stamp, "%I:%M:%S %p")
    moment = day.replace(hour=parsed.hour, minute=parsed.minute, second=parsed.second)
    if moment - datetime.now() > timedelta(hours=1):  # logged before midnight
        moment -= timedelta(days=1)
    return moment.timestamp()


def prism_receipts(log: Path) -> list[dict[str, Any]]:
    """Every Messages.json request Prism logged, with its body's ref and To.

    Keyed on the request's own `Body:` debug line (one per request) rather than
    on the lines around it, which two concurrent requests may interleave.
    """
    day = datetime.now().replace(microsecond=0)
    out: list[dict[str, Any]] = []
    for line in log.read_text(errors="replace").splitlines():
        body = _BODY.search(line)
        if not body:
            continue
        form = {k: v[-1] for k, v in parse_qs(body[1]).items()}
        if "To" not in form or "Body" not in form:
            continue
        stamp = _STAMP.search(line)
        found = REF.search(form["Body"])
        out.append(
            {
                "channel": "sms",
                "ref": found[1] if found else None,
                "message_id": "",
                "to": form["To"],
                "at": _clock(stamp[1], day) if stamp else time.time(),
                "resolution": 1.0,
            }
        )
    return out
