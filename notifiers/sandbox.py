"""Rendering templates with limits: Jinja2's sandbox plus bounds on size and time.

The sandbox refuses unsafe attribute access (`__class__`, `__globals__`, ...),
changes to the context's lists and dicts (`items.pop()`), and caps
`range()`; it does not stop a template from asking for
`'x' * 10**9`, `'%0999999999d'|format(1)` or looping for an hour. So:

  * repetition and concatenation (`*`, `+`) that would make a string or list
    longer than MAX_OUTPUT, and `**` with a large exponent, are refused;
  * every operation whose output size an argument drives is bounded before it
    runs: widths and precisions of `%` and `|format` and of `str.format`
    fields, `center`, `indent`, `wordwrap`, `replace`, `join`, `batch`,
    `slice`, `tojson`, `lipsum`, and the string methods `center`, `ljust`,
    `rjust`, `zfill`, `expandtabs`, `replace`, `join` and `translate`: what
    they would make must fit in MAX_OUTPUT characters;
  * a value about to be turned into text (`{{ x }}`, `~`, any filter, any
    call) may not weigh more than MAX_WEIGHT characters (a list holding one
    long string 100,000 times weighs what its text would), and no filter,
    call, `~` or captured block (`{% set %}`, macros, `{% filter %}`) may
    return more than MAX_OUTPUT characters, so no chain of them doubles text
    past the limit;
  * output is produced piece by piece and cut off past MAX_OUTPUT characters;
  * a render that uses more than MAX_SECONDS of its thread's CPU is
    interrupted, on whichever thread it runs: a watcher thread reads each
    rendering thread's own CPU clock and raises TemplateLimit in it
    (PyThreadState_SetAsyncExc). No signal and no timer to set up per render
    (a few microseconds, not two system calls per part), RQ's SIGALRM job
    timeout undisturbed, and other threads' CPU never counted against a
    render, as a process-wide CPU timer would.

Every refusal is a TemplateLimit (a SecurityError, so a TemplateError) naming
the operation and the limit, raised before the memory is taken.
"""

from __future__ import annotations

import ctypes
import functools
import inspect
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any

from jinja2 import Template
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.nodes import Concat
from jinja2.sandbox import (
    ImmutableSandboxedEnvironment,
    SandboxedEscapeFormatter,
    SandboxedFormatter,
)
from jinja2.utils import generate_lorem_ipsum
from markupsafe import Markup

MAX_OUTPUT = 100_000  # characters a rendered part may have
MAX_SECONDS = 2.0  # CPU seconds a render may take
MAX_EXPONENT = 100
MAX_BITS = 100_000  # of an integer power
MAX_WEIGHT = 10 * MAX_OUTPUT  # characters a value may take once turned into text
MAX_INDENT = 64  # of |tojson


class TemplateLimit(SecurityError):
    """A template went past a size or time limit."""


class _LimitedCodeGenerator(CodeGenerator):
    """Jinja's code generator, but `a ~ b` goes through the environment's bounded join."""

    def visit_Concat(self, node: Concat, frame: Frame) -> None:
        if frame.eval_ctx.volatile:
            join = "(markup_join if context.eval_ctx.volatile else str_join)"
        elif frame.eval_ctx.autoescape:
            join = "markup_join"
        else:
            join = "str_join"
        self.write(f"environment.checked_concat({join}, (")
        for part in node.nodes:
            self.visit(part, frame)
            self.write(", ")
        self.write("))")


class LimitedSandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "+", "**", "%"})
    code_generator_class = _LimitedCodeGenerator

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("finalize", _finalize)
        super().__init__(*args, **kwargs)
        self.filters = {name: _limited_filter(name, f) for name, f in self.filters.items()}
        self.globals["lipsum"] = _lipsum

    @staticmethod
    def concat(pieces: Iterable[str]) -> str:
        """What a captured block (`{% set %}`, a macro, `{% filter %}`) or a whole render
        joins: refused past MAX_OUTPUT characters before the join."""
        parts = pieces if isinstance(pieces, list) else list(pieces)
        _check_total(parts, "a captured block")
        return "".join(parts)

    @staticmethod
    def checked_concat(join: Callable[[Iterable[Any]], str], parts: tuple[Any, ...]) -> str:
        """`a ~ b ~ c`: each part's weight counted before they are turned into text."""
        total = 0
        for part in parts:
            total += _weight(part, MAX_OUTPUT - total)
            if total > MAX_OUTPUT:
                raise TemplateLimit(f"~ would make more than {MAX_OUTPUT:,} characters")
        return join(parts)

    def make_globals(self, d: MutableMapping[str, Any] | None) -> MutableMapping[str, Any]:
        """A template's globals as one dict, not Jinja's ChainMap over the environment's:
        each render copies them into its context, and a ChainMap is slow to copy (a
        third of a small template's render). Jinja asks that globals not change once
        templates are loaded; ours never do."""
        return {**self.globals, **(d or {})}

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int | float):
            if abs(right) > MAX_EXPONENT:
                raise TemplateLimit(f"exponent {right} is over the limit of {MAX_EXPONENT}")
            if isinstance(left, int) and left.bit_length() * abs(right) > MAX_BITS:
                raise TemplateLimit(f"a power of more than {MAX_BITS} bits")
        if operator == "*":
            both_int = isinstance(left, int) and isinstance(right, int)
            if both_int and left.bit_length() + right.bit_length() > MAX_BITS:
                raise TemplateLimit(f"a product of more than {MAX_BITS} bits")
            for seq, times in ((left, right), (right, left)):
                repeated = isinstance(seq, str | bytes | list | tuple) and isinstance(times, int)
                if repeated and len(seq) * times > MAX_OUTPUT:
                    raise TemplateLimit(f"repetition would pass {MAX_OUTPUT} items")
                if repeated and _weight(seq, MAX_WEIGHT) * times > MAX_WEIGHT:
                    raise TemplateLimit(f"repetition would pass {MAX_WEIGHT:,} characters")
        if (
            operator == "+"
            and isinstance(left, str | bytes | list | tuple)
            and isinstance(right, str | bytes | list | tuple)
        ):
            if len(left) + len(right) > MAX_OUTPUT:
                raise TemplateLimit(f"concatenation would pass {MAX_OUTPUT} items")
            if _weight(left, MAX_WEIGHT) + _weight(right, MAX_WEIGHT) > MAX_WEIGHT:
                raise TemplateLimit(f"concatenation would pass {MAX_WEIGHT:,} characters")
        if operator == "%" and isinstance(left, str | bytes):
            _check_printf(left, right, "%")
            return _checked(super().call_binop(context, operator, left, right), "%")
        return super().call_binop(context, operator, left, right)

    def call(
        __self,  # Jinja's spelling: no keyword argument of the call can clash
        __context: Any,
        __obj: Any,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        name = getattr(__obj, "__name__", type(__obj).__name__)
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str | bytes) and name == "join" and args:
            args = (list(args[0]), *args[1:])  # counted below, then joined: not consumed twice
        for argument in (*args, *kwargs.values()):
            _check_weight(argument, f"an argument of {name}()")
        if isinstance(owner, str | bytes):
            _check_method(owner, name, args, kwargs)
        return _checked(super().call(__context, __obj, *args, **kwargs), f"{name}()")

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """`'{:>999999999}'.format(x)` and `.format_map`: Jinja's sandboxed formatter, with
        each field's width and precision and each value's weight checked first."""
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        f_self: str = value.__self__
        formatter: SandboxedFormatter
        if isinstance(f_self, Markup):
            formatter = _LimitedEscapeFormatter(self, escape=f_self.escape)
        else:
            formatter = _LimitedFormatter(self)
        is_format_map = value.__name__ == "format_map"
        str_type = type(f_self)

        def limited(*args: Any, **kwargs: Any) -> str:
            if is_format_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one positional argument")
                kwargs, args = args[0], ()
            made: str = _checked(str_type(formatter.vformat(f_self, args, kwargs)), value.__name__)
            return made

        return functools.update_wrapper(limited, value)


class _FieldLimits(SandboxedFormatter):
    def format_field(self, value: Any, format_spec: str) -> Any:
        _check_spec(str(format_spec), "a format field")
        _check_weight(value, "a format field's value")
        return super().format_field(value, format_spec)


class _LimitedFormatter(_FieldLimits):
    pass


class _LimitedEscapeFormatter(_FieldLimits, SandboxedEscapeFormatter):
    pass


def _weight(value: Any, budget: int = MAX_WEIGHT) -> int:
    """About how many characters `value` takes as text, counted up to just past `budget`
    (a list holding one list ten times counts it ten times: aliasing is no way around)."""
    if isinstance(value, str | bytes | bytearray):
        return len(value)
    if isinstance(value, int):
        return value.bit_length() // 3 + 2
    if value is None or isinstance(value, float):
        return 24
    total = 0
    stack = [value]
    while stack and total <= budget:
        item = stack.pop()
        if isinstance(item, str | bytes | bytearray):
            total += len(item) + 2
        elif isinstance(item, bool) or item is None:
            total += 5
        elif isinstance(item, int):
            total += item.bit_length() // 3 + 2
        elif isinstance(item, dict):
            total += 2 + 4 * len(item)
            if total <= budget:
                for key, child in item.items():
                    stack += (key, child)
        elif isinstance(item, list | tuple | set | frozenset):
            total += 2 + 2 * len(item)
            if total <= budget:
                stack.extend(item)
        else:  # numbers, ranges, Undefined, objects the context passed in
            total += 24
    return total


def _check_weight(value: Any, what: str) -> None:
    if _weight(value) > MAX_WEIGHT:
        raise TemplateLimit(f"{what} would be more than {MAX_WEIGHT:,} characters of text")


def _check_size(number: Any, what: str, limit: int = MAX_OUTPUT) -> None:
    """An argument that sets a size (a width, a count) must be at most `limit`."""
    if isinstance(number, int) and not isinstance(number, bool) and number > limit:
        raise TemplateLimit(f"{what} {number:,} is over the limit of {limit:,}")


def _check_estimate(size: int, what: str) -> None:
    if size > MAX_OUTPUT:
        raise TemplateLimit(
            f"{what} would make about {size:,} characters; the limit is {MAX_OUTPUT:,}"
        )


def _check_total(parts: list[Any], what: str) -> None:
    size = 0
    for part in parts:
        size += len(part) if isinstance(part, str) else _weight(part, MAX_OUTPUT)
        if size > MAX_OUTPUT:
            raise TemplateLimit(f"{what} would pass {MAX_OUTPUT:,} characters")


def _checked(result: Any, what: str) -> Any:
    """`result`, unless it is text (or a list) longer than MAX_OUTPUT."""
    if isinstance(result, str | bytes | list | tuple) and len(result) > MAX_OUTPUT:
        raise TemplateLimit(f"{what} made more than {MAX_OUTPUT:,} characters or items")
    return result


_DIGITS = re.compile(r"\d+")
# a printf conversion: %, an optional (key), then flags, width, precision, type
_PRINTF = re.compile(r"%(?:\([^)]*\))?([-#0 +]*(?:\*|\d*)(?:\.(?:\*|\d*))?)[hlL]?.", re.S)


def _check_spec(spec: str, what: str) -> None:
    """Every number in a format spec (width, precision) at most MAX_OUTPUT."""
    for digits in _DIGITS.findall(spec):
        if len(digits) > len(str(MAX_OUTPUT)) or int(digits) > MAX_OUTPUT:
            shown = digits if len(digits) <= 20 else f"{digits[:12]}... ({len(digits)} digits)"
            raise TemplateLimit(f"{what}: width or precision {shown} is over {MAX_OUTPUT:,}")


def _check_printf(template: str | bytes, values: Any, what: str) -> None:
    """`'%0999999999d' % 1`, `'%*d' % (999999999, 1)`: widths, precisions and `*` values."""
    text = template.decode("latin-1") if isinstance(template, bytes) else template
    stars = False
    for spec in _PRINTF.findall(text):
        _check_spec(spec, what)
        stars = stars or "*" in spec
    if stars:
        for value in values if isinstance(values, tuple) else (values,):
            _check_size(value, f"{what}: a * width or precision")
    _check_weight(values, f"the values of {what}")


def _check_method(
    owner: str | bytes, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    """The size a string method would make, before it makes it."""
    first = args[0] if args else next(iter(kwargs.values()), None)
    if name in ("center", "ljust", "rjust", "zfill"):
        _check_size(first, f"{name}() width")
    elif name == "expandtabs":
        tab = 8 if first is None else first
        _check_size(tab, "expandtabs() tab size")
        if isinstance(tab, int):
            tabs = owner.count("\t") if isinstance(owner, str) else owner.count(b"\t")
            _check_estimate(len(owner) + tabs * tab, name)
    elif name == "replace" and len(args) >= 2:
        _check_estimate(
            _replaced_size(owner, args[0], args[1], args[2] if len(args) > 2 else None), name
        )
    elif name == "join" and args:
        items = args[0]
        _check_estimate(_weight(items) + len(owner) * max(len(items) - 1, 0), name)
    elif name == "translate" and isinstance(first, dict):
        longest = max((_weight(v, MAX_OUTPUT) for v in first.values()), default=1)
        _check_estimate(len(owner) * max(longest, 1), name)


def _replaced_size(text: Any, old: Any, new: Any, count: Any) -> int:
    same = isinstance(text, str) and isinstance(old, str)
    if not (same or (isinstance(text, bytes) and isinstance(old, bytes))):
        return 0
    found: int = text.count(old) if old else len(text) + 1
    if not isinstance(new, str | bytes):
        return len(text)
    if isinstance(count, int) and count >= 0:
        found = min(found, count)
    return len(text) + found * max(len(new) - len(old), 0)


# -- filters -----------------------------------------------------------------------


def _lines(text: str) -> int:
    return text.count("\n") + 1


def _limit_center(a: dict[str, Any]) -> None:
    _check_size(a.get("width"), "center width")


def _limit_indent(a: dict[str, Any]) -> None:
    width = a.get("width", 4)
    size = len(width) if isinstance(width, str) else width
    _check_size(size, "indent width")
    if isinstance(size, int):
        text = str(a.get("s", ""))
        _check_estimate(len(text) + _lines(text) * size, "indent")


def _limit_wordwrap(a: dict[str, Any]) -> None:
    text, width = str(a.get("s", "")), a.get("width", 79)
    wrap = a.get("wrapstring") or "\n"
    if isinstance(width, int) and width > 0 and isinstance(wrap, str):
        lines = 2 * len(text) // width + _lines(text)
        _check_estimate(len(text) + lines * len(wrap), "wordwrap")


def _limit_format(a: dict[str, Any]) -> None:
    values = a.get("kwargs") or a.get("args") or ()
    _check_printf(str(a.get("value", "")), values, "format")


def _limit_replace(a: dict[str, Any]) -> None:
    size = _replaced_size(a.get("s"), a.get("old"), a.get("new"), a.get("count"))
    _check_estimate(size, "replace")


def _limit_join(a: dict[str, Any]) -> None:
    items, sep = a.get("value"), a.get("d", "")
    if isinstance(items, list) and isinstance(sep, str):
        _check_estimate(_weight(items) + len(sep) * max(len(items) - 1, 0), "join")


def _limit_batch(a: dict[str, Any]) -> None:
    _check_size(a.get("linecount"), "batch size")


def _limit_slice(a: dict[str, Any]) -> None:
    _check_size(a.get("slices"), "slice count")


def _limit_tojson(a: dict[str, Any]) -> None:
    indent = a.get("indent")
    _check_size(len(indent) if isinstance(indent, str) else indent, "tojson indent", MAX_INDENT)


_ARGUMENT_LIMITS: dict[str, Callable[[dict[str, Any]], None]] = {
    "center": _limit_center,
    "indent": _limit_indent,
    "wordwrap": _limit_wordwrap,
    "format": _limit_format,
    "replace": _limit_replace,
    "join": _limit_join,
    "batch": _limit_batch,
    "slice": _limit_slice,
    "tojson": _limit_tojson,
}
_ITERATED = frozenset({"join", "batch", "slice"})  # read whole here: not consumed twice


def _binder(
    func: Callable[..., Any],
) -> Callable[[tuple[Any, ...], dict[str, Any]], dict[str, Any]]:
    """Arguments by parameter name, as `Signature.bind` would give them, at a fraction of
    its cost (filters run on every render)."""
    try:
        parameters = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):
        parameters = []
    # an async_variant filter's wrapper takes the eval context its sync function does not
    wrapper_takes = getattr(func, "jinja_pass_arg", None) is not None
    inner_takes = getattr(inspect.unwrap(func), "jinja_pass_arg", None) is not None
    skip = 1 if wrapper_takes and not inner_takes else 0
    positional = [
        p.name for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    rest = next((p.name for p in parameters if p.kind is p.VAR_POSITIONAL), None)
    named = next((p.name for p in parameters if p.kind is p.VAR_KEYWORD), None)
    defaults = {p.name: p.default for p in parameters if p.default is not p.empty}

    def bind(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        args = args[skip:]
        found = {**defaults, **dict(zip(positional, args, strict=False))}
        if rest is not None:
            found[rest] = args[len(positional) :]
        if named is not None:
            found[named] = {k: v for k, v in kwargs.items() if k not in positional}
        found.update((k, v) for k, v in kwargs.items() if k in positional)
        return found

    return bind


def _heavy(value: Any) -> bool:
    """More than MAX_WEIGHT characters once turned into text (scalars: at once)."""
    if isinstance(value, str):
        return len(value) > MAX_WEIGHT
    if value is None or isinstance(value, int | float):
        return False
    return _weight(value) > MAX_WEIGHT


def _limited_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """`func` with its arguments weighed, its size arguments bounded, its result checked."""
    passed = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0
    limit = _ARGUMENT_LIMITS.get(name)
    bind = _binder(func) if limit is not None else None
    iterated = name in _ITERATED

    @functools.wraps(func)
    def limited(*args: Any, **kwargs: Any) -> Any:
        if iterated and len(args) > passed and not isinstance(args[passed], str):
            args = (*args[:passed], list(args[passed]), *args[passed + 1 :])
        for value in args[passed:] if not kwargs else (*args[passed:], *kwargs.values()):
            if type(value) is not str and _heavy(value):
                _check_weight(value, f"an argument of |{name}")
        if limit is not None and bind is not None:
            limit(bind(args, kwargs))
        result = func(*args, **kwargs)
        if isinstance(result, str | list) and len(result) > MAX_OUTPUT:
            _checked(result, f"|{name}")
        return result

    return limited


def _finalize(value: Any) -> Any:
    """What `{{ ... }}` prints: refused before it is turned into text, when too much."""
    if not isinstance(value, str) and _weight(value, MAX_OUTPUT) > MAX_OUTPUT:
        raise TemplateLimit(f"output passed {MAX_OUTPUT} characters")
    return value


def _lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
    _check_size(n, "lipsum paragraphs", 100)
    _check_size(max, "lipsum words", 1000)
    _check_size(min, "lipsum words", 1000)
    return generate_lorem_ipsum(n, html, min, max)


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
