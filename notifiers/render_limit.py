"""Rendering a template within MAX_OUTPUT characters and MAX_SECONDS of CPU.

Output is produced piece by piece and cut off past MAX_OUTPUT characters. A
render that uses more than MAX_SECONDS of its thread's CPU is interrupted, on
whichever thread it runs: a watcher thread reads each rendering thread's own
CPU clock and raises TemplateLimit in it (PyThreadState_SetAsyncExc). No
signal and no timer to set up per render (a few microseconds, not two system
calls per part), RQ's SIGALRM job timeout undisturbed, and other threads' CPU
never counted against a render, as a process-wide CPU timer would.

The watcher is one per process (a forked child starts its own): the renders it
watches are the process's threads, so it is kept in this module, not passed around.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from typing import Any

from jinja2 import Template

from notifiers.template_limits import MAX_OUTPUT, MAX_SECONDS, TemplateLimit


def render_limited(template: Template, context: dict[str, Any]) -> str:
    """Render within MAX_OUTPUT characters and MAX_SECONDS of CPU, or raise TemplateLimit."""
    pieces: list[str] = []
    size = 0
    try:
        watched = _renders.start(MAX_SECONDS)
        try:
            for piece in template.generate(context):
                size += len(piece)
                if size > MAX_OUTPUT:
                    raise TemplateLimit(f"output passed {MAX_OUTPUT} characters")
                pieces.append(piece)
        except (OverflowError, MemoryError, RecursionError) as exc:
            raise TemplateLimit(f"{type(exc).__name__}: {exc}") from None
        finally:
            _renders.stop(watched)
    except _Overtime:
        raise TemplateLimit(f"rendering took more than {MAX_SECONDS:g} s of CPU") from None
    return "".join(pieces)


class _Overtime(TemplateLimit):
    """Raised in a rendering thread by the watcher (with no arguments: the C API makes it)."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or f"rendering took more than {MAX_SECONDS:g} s of CPU")


_raise_in = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.py_object)(
    ("PyThreadState_SetAsyncExc", ctypes.pythonapi)
)
_clear_in = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)(
    ("PyThreadState_SetAsyncExc", ctypes.pythonapi)
)


def _cpu_clock(ident: int) -> int | None:
    """The CPU clock of a thread (Linux and most Unixes); None where there is none."""
    try:
        return time.pthread_getcpuclockid(ident)
    except (AttributeError, OSError):
        return None


class _Render:
    __slots__ = ("clock", "fired", "ident", "until")

    def __init__(self, ident: int, clock: int | None, seconds: float) -> None:
        self.ident, self.clock = ident, clock
        self.until = self.used() + seconds
        self.fired = False

    def used(self) -> float:
        """CPU seconds of the rendering thread (wall-clock seconds without a CPU clock)."""
        return time.monotonic() if self.clock is None else time.clock_gettime(self.clock)


class _Renders:
    """The renders running now, one a thread, and the thread that watches their CPU.

    The watcher looks every CHECK_EVERY seconds, and sleeps once no render
    started for IDLE_AFTER seconds, until the next one starts. An interruption
    is raised once, as the CPU timer did, and the rendering thread clears one
    that had not landed yet when its render ends (`stop`): it never lands in
    the code that runs after the render.
    """

    CHECK_EVERY = 0.05
    IDLE_AFTER = 10.0

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active: dict[int, _Render] = {}
        self.pid = 0  # the process the watcher runs in (a forked child starts its own)
        self.starts = 0
        self.sleeping = False
        self.wake = threading.Event()

    def start(self, seconds: float) -> _Render | None:
        """Watch this thread's render; None when an outer render of the thread is watched."""
        ident = threading.get_ident()
        render = _Render(ident, _cpu_clock(ident), seconds)
        with self.lock:
            if ident in self.active:
                return None
            self.active[ident] = render
            self.starts += 1
            if self.pid != os.getpid():
                self.pid = os.getpid()
                threading.Thread(target=self._watch, name="render-limit", daemon=True).start()
            elif self.sleeping:
                self.sleeping = False
                self.wake.set()
        return render

    def stop(self, render: _Render | None) -> None:
        if render is None:
            return
        with self.lock:
            if self.active.get(render.ident) is render:
                del self.active[render.ident]
            fired = render.fired
        if fired:
            _clear_in(render.ident, None)

    def _watch(self) -> None:
        seen, quiet_since = -1, time.monotonic()
        while True:
            time.sleep(self.CHECK_EVERY)
            with self.lock:
                for render in self.active.values():
                    if not render.fired and render.used() >= render.until:
                        render.fired = True
                        _raise_in(render.ident, _Overtime)
                now = time.monotonic()
                if self.starts != seen or self.active:
                    seen, quiet_since = self.starts, now
                    continue
                if now - quiet_since < self.IDLE_AFTER:
                    continue
                self.sleeping = True
                self.wake.clear()
            self.wake.wait()


_renders = _Renders()


def _forked() -> None:
    global _renders
    _renders = _Renders()  # the parent's lock may have been held, its watcher is not here


os.register_at_fork(after_in_child=_forked)
