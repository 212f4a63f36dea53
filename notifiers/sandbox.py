"""Rendering templates with limits: Jinja2's sandbox plus bounds on size and time.

The sandbox refuses unsafe attribute access (`__class__`, `__globals__`, ...),
changes to the context's lists and dicts (`items.pop()`), and caps
`range()`; it does not stop a template from asking for
`'x' * 10**9` or looping for an hour. So:

  * repetition and concatenation (`*`, `+`) that would make a string or list
    longer than MAX_OUTPUT, and `**` with a large exponent, are refused;
  * output is produced piece by piece and cut off past MAX_OUTPUT characters;
  * a render that uses more than MAX_SECONDS of CPU is interrupted (a
    profiling timer, SIGPROF: it does not disturb RQ's own SIGALRM job timeout;
    armed only on the main thread, where Python delivers signals).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from jinja2 import Template
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

MAX_OUTPUT = 100_000  # characters a rendered part may have
MAX_SECONDS = 2.0  # CPU seconds a render may take
MAX_EXPONENT = 100
MAX_BITS = 100_000  # of an integer power


class TemplateLimit(SecurityError):
    """A template went past a size or time limit."""


class LimitedSandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "+", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int | float):
            if abs(right) > MAX_EXPONENT:
                raise TemplateLimit(f"exponent {right} is over the limit of {MAX_EXPONENT}")
            if isinstance(left, int) and left.bit_length() * abs(right) > MAX_BITS:
                raise TemplateLimit(f"a power of more than {MAX_BITS} bits")
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                repeated = isinstance(seq, str | list | tuple) and isinstance(times, int)
                if repeated and len(seq) * times > MAX_OUTPUT:
                    raise TemplateLimit(f"repetition would pass {MAX_OUTPUT} items")
        if (
            operator == "+"
            and isinstance(left, str | list | tuple)
            and isinstance(right, str | list | tuple)
            and len(left) + len(right) > MAX_OUTPUT
        ):
            raise TemplateLimit(f"concatenation would pass {MAX_OUTPUT} items")
        return super().call_binop(context, operator, left, right)


def render_limited(template: Template, context: dict[str, Any]) -> str:
    """Render within MAX_OUTPUT characters and MAX_SECONDS of CPU, or raise TemplateLimit."""
    pieces: list[str] = []
    size = 0
    with _cpu_limit(MAX_SECONDS):
        try:
            for piece in template.generate(context):
                size += len(piece)
                if size > MAX_OUTPUT:
                    raise TemplateLimit(f"output passed {MAX_OUTPUT} characters")
                pieces.append(piece)
        except (OverflowError, MemoryError, RecursionError) as exc:
            raise TemplateLimit(f"{type(exc).__name__}: {exc}") from None
    return "".join(pieces)


@contextmanager
def _cpu_limit(seconds: float) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield  # signals reach only the main thread; the job's own timeout still applies
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise TemplateLimit(f"rendering took more than {seconds:g} s of CPU")

    previous = signal.signal(signal.SIGPROF, interrupt)
    signal.setitimer(signal.ITIMER_PROF, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)
