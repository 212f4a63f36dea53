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
  * output is produced piece by piece and cut off past MAX_OUTPUT characters,
    and a render that uses more than MAX_SECONDS of its thread's CPU is
    interrupted (notifiers.render_limit).

This module is the environment and its hooks (operators, calls, `~`,
`str.format`); the limits and the size estimates are in
notifiers.template_limits, the bounded filters in notifiers.template_filters.

Every refusal is a TemplateLimit (a SecurityError, so a TemplateError) naming
the operation and the limit, raised before the memory is taken.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any

from jinja2.compiler import CodeGenerator, Frame
from jinja2.nodes import Concat
from jinja2.sandbox import (
    ImmutableSandboxedEnvironment,
    SandboxedEscapeFormatter,
    SandboxedFormatter,
)
from markupsafe import Markup

from notifiers.template_filters import limited_filter, lipsum
from notifiers.template_limits import (
    MAX_BITS,
    MAX_EXPONENT,
    MAX_OUTPUT,
    MAX_WEIGHT,
    TemplateLimit,
    check_method,
    check_printf,
    check_spec,
    check_total,
    check_weight,
    checked,
    weight,
)


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
        self.filters = {name: limited_filter(name, f) for name, f in self.filters.items()}
        self.globals["lipsum"] = lipsum

    @staticmethod
    def concat(pieces: Iterable[str]) -> str:
        """What a captured block (`{% set %}`, a macro, `{% filter %}`) or a whole render
        joins: refused past MAX_OUTPUT characters before the join."""
        parts = pieces if isinstance(pieces, list) else list(pieces)
        check_total(parts, "a captured block")
        return "".join(parts)

    @staticmethod
    def checked_concat(join: Callable[[Iterable[Any]], str], parts: tuple[Any, ...]) -> str:
        """`a ~ b ~ c`: each part's weight counted before they are turned into text."""
        total = 0
        for part in parts:
            total += weight(part, MAX_OUTPUT - total)
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
                if repeated and weight(seq, MAX_WEIGHT) * times > MAX_WEIGHT:
                    raise TemplateLimit(f"repetition would pass {MAX_WEIGHT:,} characters")
        if (
            operator == "+"
            and isinstance(left, str | bytes | list | tuple)
            and isinstance(right, str | bytes | list | tuple)
        ):
            if len(left) + len(right) > MAX_OUTPUT:
                raise TemplateLimit(f"concatenation would pass {MAX_OUTPUT} items")
            if weight(left, MAX_WEIGHT) + weight(right, MAX_WEIGHT) > MAX_WEIGHT:
                raise TemplateLimit(f"concatenation would pass {MAX_WEIGHT:,} characters")
        if operator == "%" and isinstance(left, str | bytes):
            check_printf(left, right, "%")
            return checked(super().call_binop(context, operator, left, right), "%")
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
            check_weight(argument, f"an argument of {name}()")
        if isinstance(owner, str | bytes):
            check_method(owner, name, args, kwargs)
        return checked(super().call(__context, __obj, *args, **kwargs), f"{name}()")

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
            made: str = checked(str_type(formatter.vformat(f_self, args, kwargs)), value.__name__)
            return made

        return functools.update_wrapper(limited, value)


class _FieldLimits(SandboxedFormatter):
    def format_field(self, value: Any, format_spec: str) -> Any:
        check_spec(str(format_spec), "a format field")
        check_weight(value, "a format field's value")
        return super().format_field(value, format_spec)


class _LimitedFormatter(_FieldLimits):
    pass


class _LimitedEscapeFormatter(_FieldLimits, SandboxedEscapeFormatter):
    pass


def _finalize(value: Any) -> Any:
    """What `{{ ... }}` prints: refused before it is turned into text, when too much."""
    if not isinstance(value, str) and weight(value, MAX_OUTPUT) > MAX_OUTPUT:
        raise TemplateLimit(f"output passed {MAX_OUTPUT} characters")
    return value
