"""The limits a template renders within, how big a value would be as text, and the
checks that refuse an operation before it takes the memory (notifiers.sandbox uses
them in the environment's hooks, notifiers.template_filters in the filters).

    MAX_OUTPUT     characters a rendered part, a filter's or a call's result may have
    MAX_WEIGHT     characters a value may take once turned into text
    MAX_SECONDS    CPU seconds a render may take (notifiers.render_limit)
    MAX_EXPONENT   of `**`; MAX_BITS of an integer product or power
    MAX_INDENT     of |tojson

A size is estimated from the arguments (a width, a count, the number of
matches a `replace` would make), never by doing the work and measuring it.
"""

from __future__ import annotations

import re
from typing import Any

from jinja2.exceptions import SecurityError

MAX_OUTPUT = 100_000  # characters a rendered part may have
MAX_SECONDS = 2.0  # CPU seconds a render may take
MAX_EXPONENT = 100
MAX_BITS = 100_000  # of an integer power
MAX_WEIGHT = 10 * MAX_OUTPUT  # characters a value may take once turned into text
MAX_INDENT = 64  # of |tojson


class TemplateLimit(SecurityError):
    """A template went past a size or time limit."""


def weight(value: Any, budget: int = MAX_WEIGHT) -> int:
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


def check_weight(value: Any, what: str) -> None:
    if weight(value) > MAX_WEIGHT:
        raise TemplateLimit(f"{what} would be more than {MAX_WEIGHT:,} characters of text")


def check_size(number: Any, what: str, limit: int = MAX_OUTPUT) -> None:
    """An argument that sets a size (a width, a count) must be at most `limit`."""
    if isinstance(number, int) and not isinstance(number, bool) and number > limit:
        raise TemplateLimit(f"{what} {number:,} is over the limit of {limit:,}")


def check_estimate(size: int, what: str) -> None:
    if size > MAX_OUTPUT:
        raise TemplateLimit(
            f"{what} would make about {size:,} characters; the limit is {MAX_OUTPUT:,}"
        )


def check_total(parts: list[Any], what: str) -> None:
    size = 0
    for part in parts:
        size += len(part) if isinstance(part, str) else weight(part, MAX_OUTPUT)
        if size > MAX_OUTPUT:
            raise TemplateLimit(f"{what} would pass {MAX_OUTPUT:,} characters")


def checked(result: Any, what: str) -> Any:
    """`result`, unless it is text (or a list) longer than MAX_OUTPUT."""
    if isinstance(result, str | bytes | list | tuple) and len(result) > MAX_OUTPUT:
        raise TemplateLimit(f"{what} made more than {MAX_OUTPUT:,} characters or items")
    return result


_DIGITS = re.compile(r"\d+")
# a printf conversion: %, an optional (key), then flags, width, precision, type
_PRINTF = re.compile(r"%(?:\([^)]*\))?([-#0 +]*(?:\*|\d*)(?:\.(?:\*|\d*))?)[hlL]?.", re.S)


def check_spec(spec: str, what: str) -> None:
    """Every number in a format spec (width, precision) at most MAX_OUTPUT."""
    for digits in _DIGITS.findall(spec):
        if len(digits) > len(str(MAX_OUTPUT)) or int(digits) > MAX_OUTPUT:
            shown = digits if len(digits) <= 20 else f"{digits[:12]}... ({len(digits)} digits)"
            raise TemplateLimit(f"{what}: width or precision {shown} is over {MAX_OUTPUT:,}")


def check_printf(template: str | bytes, values: Any, what: str) -> None:
    """`'%0999999999d' % 1`, `'%*d' % (999999999, 1)`: widths, precisions and `*` values."""
    text = template.decode("latin-1") if isinstance(template, bytes) else template
    stars = False
    for spec in _PRINTF.findall(text):
        check_spec(spec, what)
        stars = stars or "*" in spec
    if stars:
        for value in values if isinstance(values, tuple) else (values,):
            check_size(value, f"{what}: a * width or precision")
    check_weight(values, f"the values of {what}")


def check_method(
    owner: str | bytes, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    """The size a string method would make, before it makes it."""
    first = args[0] if args else next(iter(kwargs.values()), None)
    if name in ("center", "ljust", "rjust", "zfill"):
        check_size(first, f"{name}() width")
    elif name == "expandtabs":
        tab = 8 if first is None else first
        check_size(tab, "expandtabs() tab size")
        if isinstance(tab, int):
            tabs = owner.count("\t") if isinstance(owner, str) else owner.count(b"\t")
            check_estimate(len(owner) + tabs * tab, name)
    elif name == "replace" and len(args) >= 2:
        check_estimate(
            replaced_size(owner, args[0], args[1], args[2] if len(args) > 2 else None), name
        )
    elif name == "join" and args:
        items = args[0]
        check_estimate(weight(items) + len(owner) * max(len(items) - 1, 0), name)
    elif name == "translate" and isinstance(first, dict):
        longest = max((weight(v, MAX_OUTPUT) for v in first.values()), default=1)
        check_estimate(len(owner) * max(longest, 1), name)


def replaced_size(text: Any, old: Any, new: Any, count: Any) -> int:
    same = isinstance(text, str) and isinstance(old, str)
    if not (same or (isinstance(text, bytes) and isinstance(old, bytes))):
        return 0
    found: int = text.count(old) if old else len(text) + 1
    if not isinstance(new, str | bytes):
        return len(text)
    if isinstance(count, int) and count >= 0:
        found = min(found, count)
    return len(text) + found * max(len(new) - len(old), 0)
