"""Each webhook host's share of one process's sends, and its circuit breaker (issue #11).

A receiver that is slow, or never answers, must slow only its own
notifications: a host may hold only so many send threads at once, and a host
that keeps timing out is left alone for a while rather than tried by every
send. The state is one process's: each worker process keeps its own.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from notifiers.errors import DeferredError, DeliveryError, TransientError

BUSY_RETRY = 1.0  # seconds (jittered) before a send deferred for a busy host runs again


@dataclass
class _Host:
    busy: int = 0  # sends in flight
    timeouts: int = 0  # in a row
    open_until: float = 0.0  # monotonic; the circuit is open before it
    trial: bool = False  # the circuit is half open and a send is trying the host


class Hosts:
    """Each host's share of one process's sends, and its circuit breaker (a host being an
    origin: scheme, name and port).

    At most `per_host` sends to one host at once: a host that hangs holds that many send
    threads, never all of them; one more is deferred (DeferredError) to run again in
    about BUSY_RETRY seconds. After `trip` timeouts in a row (an answer of any status
    resets the count) the circuit opens for `cooldown` seconds: sends fail at once with
    code "circuit-open" and the time left as retry_after. Then one send is let through
    (half open): an answer closes the circuit, a timeout opens it again.
    """

    def __init__(
        self,
        per_host: int = 4,
        trip: int = 3,
        cooldown: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_host, self.trip, self.cooldown, self.clock = per_host, trip, cooldown, clock
        self._lock = threading.Lock()
        self._hosts: dict[str, _Host] = {}

    def state(self, host: str) -> str:
        """closed, open or half-open (for tests and logs)."""
        with self._lock:
            found = self._hosts.get(host)
            if found is None or found.timeouts < self.trip:
                return "closed"
            return "open" if self.clock() < found.open_until or found.trial else "half-open"

    @contextlib.contextmanager
    def sending(self, host: str) -> Iterator[None]:
        """Held around one send to `host`; its outcome, a DeliveryError's code, is counted:
        "timeout" against the host, an HTTP status (or none) for it."""
        trial = self._enter(host)
        answered: bool | None = None
        try:
            yield
            answered = True
        except DeliveryError as exc:
            if exc.code == "timeout":
                answered = False
            elif exc.code is not None and exc.code.isdigit():
                answered = True
            raise
        finally:
            self._leave(host, trial, answered)

    def _enter(self, host: str) -> bool:
        with self._lock:
            now, state = self.clock(), self._hosts.setdefault(host, _Host())
            trial = state.timeouts >= self.trip
            if trial and (now < state.open_until or state.trial):
                wait = state.open_until - now if now < state.open_until else self.cooldown
                raise TransientError(
                    f"webhook {host}: circuit open after {state.timeouts} timeouts in a row; "
                    "not sent",
                    code="circuit-open",
                    retry_after=max(wait, 1.0) * random.uniform(1.0, 1.2),
                )
            if state.busy >= self.per_host:
                raise DeferredError(
                    f"webhook {host} has {state.busy} sends in flight, as many as it may",
                    code="host-busy",
                    retry_after=BUSY_RETRY * random.uniform(0.5, 1.5),
                )
            state.busy += 1
            state.trial = state.trial or trial
            return trial

    def _leave(self, host: str, trial: bool, answered: bool | None) -> None:
        with self._lock:
            state = self._hosts[host]
            state.busy -= 1
            if trial:
                state.trial = False
            if answered is False:
                state.timeouts += 1
                if state.timeouts >= self.trip:
                    state.open_until = self.clock() + self.cooldown
            elif answered:
                state.timeouts = 0
            if state.busy == 0 and state.timeouts == 0:
                del self._hosts[host]
