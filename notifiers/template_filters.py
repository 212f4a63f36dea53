"""Jinja's built-in filters, each wrapped so that its arguments are weighed, the ones
that set a size (a width, a count, an indent) are bounded before it runs, and its
result is checked: `|center(999999999)` is refused, not attempted.

Filters run on every render, so a filter's arguments are bound to its parameter
names by a binder built once per filter (`Signature.bind` per call costs too much).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from jinja2.utils import generate_lorem_ipsum

from notifiers.template_limits import (
    MAX_INDENT,
    MAX_OUTPUT,
    MAX_WEIGHT,
    check_estimate,
    check_printf,
    check_size,
    check_weight,
    checked,
    replaced_size,
    weight,
)


def _lines(text: str) -> int:
    return text.count("\n") + 1


def _limit_center(a: dict[str, Any]) -> None:
    check_size(a.get("width"), "center width")


def _limit_indent(a: dict[str, Any]) -> None:
    width = a.get("width", 4)
    size = len(width) if isinstance(width, str) else width
    check_size(size, "indent width")
    if isinstance(size, int):
        text = str(a.get("s", ""))
        check_estimate(len(text) + _lines(text) * size, "indent")


def _limit_wordwrap(a: dict[str, Any]) -> None:
    text, width = str(a.get("s", "")), a.get("width", 79)
    wrap = a.get("wrapstring") or "\n"
    if isinstance(width, int) and width > 0 and isinstance(wrap, str):
        lines = 2 * len(text) // width + _lines(text)
        check_estimate(len(text) + lines * len(wrap), "wordwrap")


def _limit_format(a: dict[str, Any]) -> None:
    values = a.get("kwargs") or a.get("args") or ()
    check_printf(str(a.get("value", "")), values, "format")


def _limit_replace(a: dict[str, Any]) -> None:
    size = replaced_size(a.get("s"), a.get("old"), a.get("new"), a.get("count"))
    check_estimate(size, "replace")


def _limit_join(a: dict[str, Any]) -> None:
    items, sep = a.get("value"), a.get("d", "")
    if isinstance(items, list) and isinstance(sep, str):
        check_estimate(weight(items) + len(sep) * max(len(items) - 1, 0), "join")


def _limit_batch(a: dict[str, Any]) -> None:
    check_size(a.get("linecount"), "batch size")


def _limit_slice(a: dict[str, Any]) -> None:
    check_size(a.get("slices"), "slice count")


def _limit_tojson(a: dict[str, Any]) -> None:
    indent = a.get("indent")
    check_size(len(indent) if isinstance(indent, str) else indent, "tojson indent", MAX_INDENT)


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
    return weight(value) > MAX_WEIGHT


def limited_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
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
                check_weight(value, f"an argument of |{name}")
        if limit is not None and bind is not None:
            limit(bind(args, kwargs))
        result = func(*args, **kwargs)
        if isinstance(result, str | list) and len(result) > MAX_OUTPUT:
            checked(result, f"|{name}")
        return result

    return limited


def lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
    """The `lipsum()` global, its paragraphs and words bounded."""
    check_size(n, "lipsum paragraphs", 100)
    check_size(max, "lipsum words", 1000)
    check_size(min, "lipsum words", 1000)
    return generate_lorem_ipsum(n, html, min, max)
