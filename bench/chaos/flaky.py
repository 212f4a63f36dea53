"""A misbehaving SMTP server, chosen per recipient, and Twilio's status callbacks, signed.

The receipt email of order n goes to `pv-NNNN@example.com`; what the server
does with it depends on n (and, for a first-time fault, on whether it has
already faulted that recipient):

  n % 20 == 1   RCPT answered 451 the first time, accepted after (transient)
  n % 20 == 3   DATA answered 451 the first time, accepted after (transient)
  n % 20 == 7   RCPT answered 550, every time (permanent: recorded failed, never retried)
  n % 20 == 9   DATA answered 554, every time (permanent)
  n in DROP     DATA taken (the server keeps the message), then the socket is closed
                without the 250, the first time: the client cannot know (ambiguous)
  n in SLOW     DATA answered only after SLOW_SECONDS, more than the client's
                SMTP_TIMEOUT, the first time: kept, and the client gave up (ambiguous)

Each ambiguous fault is stamped; a second copy of that message is explained
only by one (the at-least-once window), and the copies count against the
duplicate budget. The callbacks are posted to `orchestrator serve` with
X-Twilio-Signature computed by twilio's own RequestValidator.
"""

from __future__ import annotations

import asyncio
import random
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests
from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]

from bench.chaos.providers import TimedSmtpServer

SLOW_SECONDS = 3.0
CLIENT_TIMEOUT = "1.5"  # SMTP_TIMEOUT the workers get
NUMBER = re.compile(r"-(\d+)@")


class FlakySmtpServer(TimedSmtpServer):
    def __init__(self, drop: set[int], slow: set[int]) -> None:
        super().__init__()
        self.drop, self.slow = drop, slow
        self.faulted: set[str] = set()  # recipients already given their one-time fault
        self.ambiguous: list[dict[str, Any]] = []  # {"at", "message_id", "how"}
        self.refusals: dict[str, int] = {}  # recipient -> permanent refusals answered

    @staticmethod
    def number(address: str) -> int:
        found = NUMBER.search(address)
        return int(found[1]) if found else -1

    def _once(self, address: str) -> bool:
        with self.lock:
            if address in self.faulted:
                return False
            self.faulted.add(address)
            return True

    def refused_for_good(self, address: str) -> bool:
        return self.number(address) % 20 in (7, 9)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        n = self.number(address)
        if n % 20 == 7:
            with self.lock:
                self.rcpts.append(address)
                self.refusals[address] = self.refusals.get(address, 0) + 1
            return "550 5.1.1 No such user here"
        if n % 20 == 1 and self._once(address):
            with self.lock:
                self.rcpts.append(address)
            return "451 4.3.0 Mailbox busy, try again later"
        return await super().handle_RCPT(server, session, envelope, address, options)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        address = str(envelope.rcpt_tos[0]) if envelope.rcpt_tos else ""
        n = self.number(address)
        if n % 20 == 9:
            with self.lock:
                self.refusals[address] = self.refusals.get(address, 0) + 1
            return "554 5.7.1 Message refused"
        if n % 20 == 3 and self._once(address):
            return "451 4.3.0 Try again later"
        if n in self.slow and self._once(address):
            reply = await super().handle_DATA(server, session, envelope)  # kept now
            self._ambiguous("kept, answered after the client's timeout")
            await asyncio.sleep(SLOW_SECONDS)
            return reply
        reply = await super().handle_DATA(server, session, envelope)
        if n in self.drop and self._once(address):
            self._ambiguous("kept, connection closed before the 250")
            server.transport.abort()  # the reply written next goes nowhere
        return reply

    def _ambiguous(self, how: str) -> None:
        with self.lock:
            message_id = str(self.messages[-1].message["Message-ID"] or "")
            self.ambiguous.append({"at": time.time(), "message_id": message_id, "how": how})

    @property
    def env(self) -> dict[str, str]:
        return {**super().env, "SMTP_TIMEOUT": CLIENT_TIMEOUT}


class Callbacks:
    """Twilio's status callbacks for a set of messages: duplicated, shuffled, late."""

    def __init__(self, url: str, public: str, token: str, seed: int) -> None:
        self.url, self.public = url, public
        self.validator = RequestValidator(token)
        self.rng = random.Random(seed)
        self.posted = 0
        self.refused: list[str] = []  # answers other than 200
        self.regressions: list[str] = []  # a ledger status seen moving back
        self._local = threading.local()

    def post(self, sid: str, status: str) -> None:
        form = {"MessageSid": sid, "MessageStatus": status, "AccountSid": "AC" + "0" * 32}
        signature = self.validator.compute_signature(self.public + "/twilio/status", form)
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            session.trust_env = False  # loopback only, never a proxy
        answer = session.post(
            self.url + "/twilio/status",
            data=form,
            headers={"X-Twilio-Signature": signature},
            timeout=10,
        )
        self.posted += 1
        if answer.status_code != 200:
            self.refused.append(f"{sid} {status}: {answer.status_code} {answer.text[:80]}")

    def sequence(self) -> list[str]:
        """queued..delivered, shuffled, with a delivered twice and a "sent" after it."""
        statuses = ["queued", "sending", "sent", "delivered", "delivered"]
        self.rng.shuffle(statuses)
        return [*statuses, "sent"]

    def run(self, sids: dict[str, str], status_of: Any) -> None:
        """Post every message's sequence, messages interleaved on eight threads; after the
        late "sent" of each, its ledger record (status_of(key)) must still say delivered."""

        def one(sid: str, key: str) -> None:
            for status in self.sequence():
                self.post(sid, status)
            self.post(sid, "delivered")  # and one more duplicate, concurrent with others
            now = status_of(key)
            if now != "delivered":
                self.regressions.append(f"{key}: {now} after a late sent")

        with ThreadPoolExecutor(8) as pool:
            for result in [pool.submit(one, sid, key) for sid, key in sids.items()]:
                result.result()
