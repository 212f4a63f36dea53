"""One asyncio event loop a process, on a thread of its own, for the channels' provider
exchanges; a sending thread hands its exchange to it and waits for the answer.

Why: a notification worker sends many notifications at once, each on a send thread of its
own (orchestrator.runtime.notify.batch), and a send thread that talks HTTP itself gives the
GIL up and takes it back at every socket call, among 128 threads. Measured on 2,000 SMS
through the Twilio SDK, 128 threads, a local Twilio answering after 100 ms (the process's
CPU a send): 740-950 us with each thread's own urllib3 request, 620-660 us with the
exchange on this loop (the SDK's async API, on aiohttp) and the threads waiting for it,
440-480 us with no threads at all. The send threads still render, commit and are handed
over as before; only the exchange moves, so nothing of the sends' crash-safety changes.

The loop is made on first use in each process: a forked child (an RQ work-horse, a
notification worker forked by its supervisor) makes its own, since a thread does not
survive fork. Its thread is a daemon: a process may end without closing it.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_current: tuple[int, asyncio.AbstractEventLoop, threading.Thread] | None = None


def _forget() -> None:
    """In a forked child: the parent's loop thread is not here, nor may its lock be free."""
    global _lock, _current
    _lock, _current = threading.Lock(), None


os.register_at_fork(after_in_child=_forget)


def loop() -> asyncio.AbstractEventLoop:
    """This process's loop, started on first use."""
    global _current
    found = _current
    if found is not None:
        return found[1]
    with _lock:
        if _current is None:
            made = asyncio.new_event_loop()
            thread = threading.Thread(target=made.run_forever, name="notifiers-loop", daemon=True)
            thread.start()
            _current = (os.getpid(), made, thread)
        return _current[1]


def running() -> asyncio.AbstractEventLoop | None:
    """This process's loop if it was started, else None (nothing to close on it)."""
    found = _current
    return None if found is None else found[1]


def run(coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
    """Run `coroutine` on this process's loop and wait for its result (or its exception)
    at most `timeout` seconds (None: until it ends; a channel's exchange has timeouts of
    its own). Past `timeout` it is cancelled and TimeoutError raised."""
    target = loop()
    found = _current
    if found is not None and found[2] is threading.current_thread():
        coroutine.close()
        raise RuntimeError("notifiers.loop.run() called on the loop's own thread")
    future = asyncio.run_coroutine_threadsafe(coroutine, target)
    try:
        return future.result(timeout)
    except TimeoutError:
        future.cancel()
        raise
