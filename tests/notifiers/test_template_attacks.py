"""Templates under attack: server-side template injection and resource bombs.

Every payload either fails with a template error or renders something
harmless; every bomb is cut off within the size and time limits.
"""

from __future__ import annotations

import sys
import time
import tracemalloc
from pathlib import Path

import pytest
from jinja2 import FileSystemLoader, StrictUndefined, TemplateError

from notifiers.errors import PermanentError
from notifiers.render_limit import render_limited
from notifiers.sandbox import LimitedSandbox
from notifiers.template_limits import TemplateLimit
from notifiers.templates import render

SSTI = [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ ''.__class__.__base__.__subclasses__() }}",
    "{{ [].__class__.__base__.__subclasses__() }}",
    "{{ ().__class__.__bases__[0].__subclasses__() }}",
    "{{ self.__init__.__globals__ }}",
    "{{ self._TemplateReference__context }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ joiner.__init__.__globals__.os.popen('id').read() }}",
    "{{ namespace.__init__.__globals__.os.popen('id').read() }}",
    "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "{{ lipsum.__globals__.__builtins__.open('/etc/passwd').read() }}",
    "{{ range.__globals__ }}",
    "{{ config }}",
    "{{ config.items() }}",
    "{{ request.application.__globals__ }}",
    "{{ self.__dict__ }}",
    "{{ ''.__class__ }}",
    "{{ ''['__class__'] }}",
    "{{ ''|attr('__class__') }}",
    "{{ ''|attr('\\x5f\\x5fclass\\x5f\\x5f') }}",
    "{{ (''|attr('__class__')|attr('__mro__'))[1] }}",
    "{{ x.__class__ }}",
    "{{ x.__init__ }}",
    "{{ x.upper.__self__ }}",
    "{{ x.format.__globals__ }}",
    "{{ '{0.__class__}'.format(x) }}",
    "{{ '%s'|format(x.__class__) }}",
    "{{ x|map(attribute='__class__')|list }}",
    "{% for c in [].__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}",
    "{% set s = ''.__class__ %}{{ s }}",
    "{{ dict.__class__ }}",
    "{{ __import__('os').system('id') }}",
    "{{ import os }}",
    "{% import 'os' as os %}{{ os }}",
    "{% include '/etc/passwd' %}",
    "{% extends '/etc/passwd' %}",
    "{{ items.pop() }}",
    "{{ items.append(1) }}",
    "{{ x.__len__() }}",
    "{{ getattr(x, '__class__') }}",
]

BOMBS = [
    "{{ 'x' * 1000000000 }}",
    "{{ ['x'] * 1000000000 }}",
    "{{ 9 ** 999999999 }}",
    "{{ (9 ** 99) ** 99 ** 99 }}",
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "{% for i in range(100000) %}{{ 'xxxxxxxxxx' }}{% endfor %}",
    "{% for i in range(1000000000) %}{% endfor %}",
    "{{ x * 100000 }}",
    "{% set s = 'x' * 60000 %}{{ s + s }}",
    "{% for i in range(100000) %}{% for j in range(100000) %}{{ i }}{% endfor %}{% endfor %}",
]
# Size arguments: each would take about a gigabyte (the first ran 15 s and took 3.96 GB
# before the sandbox bounded them), and must be refused before the memory is taken.
SIZE_BOMBS = {
    "printf width": "{{ '%0999999999d'|format(1) }}",
    "printf left-aligned width": "{{ '%-999999999s'|format('a') }}",
    "printf precision": "{{ '%.999999999f'|format(1.0) }}",
    "printf * width": "{{ '%*d'|format(999999999, 1) }}",
    "% operator": "{{ '%999999999s' % 'a' }}",
    "% operator * width": "{{ '%*s' % (999999999, 'a') }}",
    "str.format width": "{{ '{:>999999999}'.format('a') }}",
    "str.format nested width": "{{ '{:{}}'.format('a', 999999999) }}",
    "str.format_map width": "{{ '{x:^999999999}'.format_map({'x': 1}) }}",
    "center filter": "{{ 'x'|center(999999999) }}",
    "center method": "{{ 'x'.center(999999999) }}",
    "ljust method": "{{ 'x'.ljust(999999999) }}",
    "zfill method": "{{ '1'.zfill(999999999) }}",
    "expandtabs method": "{{ 'a\tb'.expandtabs(999999999) }}",
    "string repetition": "{{ 'a' * 999999999 }}",
    "bytes repetition": "{{ 'a'.encode() * 999999999 }}",
    "range to list": "{{ range(10**9)|list }}",
    "indent width": "{{ 'x'|indent(999999999) }}",
    "indent width on every line": "{{ ('x\n' * 50000)|indent(1000, true) }}",
    "wordwrap wrapstring": "{{ ('a ' * 50000)|wordwrap(1, wrapstring='y' * 100000) }}",
    "replace": "{{ ('x' * 100000)|replace('x', 'y' * 100000) }}",
    "replace method": "{{ ('x' * 100000).replace('x', 'y' * 100000) }}",
    "join separator": "{{ range(100000)|join('y' * 100000) }}",
    "join method": "{{ ('y' * 100000).join(['a'] * 100000) }}",
    "translate method": "{{ ('x' * 1000).translate({120: 'y' * 100000}) }}",
    "batch fill": "{{ [1]|batch(999999999, 'x')|list }}",
    "slice count": "{{ [1]|slice(999999999)|list }}",
    "tojson indent": "{{ [[[1]]]|tojson(indent=999999999) }}",
    "lipsum": "{{ lipsum(999999999) }}",
    "aliased list printed": (
        "{% set a = ['x' * 100000] %}{% set b = [a, a, a, a, a, a, a, a, a, a] %}"
        "{% set c = [b, b, b, b, b, b, b, b, b, b] %}{% set d = [c, c, c, c, c, c, c, c, c, c] %}"
        "{{ d }}"
    ),
    "aliased list joined": (
        "{% set a = ['x' * 100000] %}{% set b = [a, a, a, a, a, a, a, a, a, a] %}"
        "{% set c = [b, b, b, b, b, b, b, b, b, b] %}{{ c|join }}"
    ),
    "aliased list in ~": (
        "{% set a = ['x' * 100000] %}{% set b = [a, a, a, a, a, a, a, a, a, a] %}"
        "{% set c = [b, b, b, b, b, b, b, b, b, b] %}{{ c ~ '' }}"
    ),
    "doubling with ~": (
        "{% set ns = namespace(s='x' * 60000) %}"
        "{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}"
    ),
    "doubling with format": (
        "{% set ns = namespace(s='x' * 60000) %}"
        "{% for i in range(40) %}{% set ns.s = '%s%s'|format(ns.s, ns.s) %}{% endfor %}"
    ),
    "captured block": (
        "{% set s = 'x' * 100000 %}{% set b %}{% for i in range(100000) %}{{ s }}"
        "{% endfor %}{% endset %}{{ b|length }}"
    ),
    "macro output": (
        "{% macro m(s) %}{% for i in range(100000) %}{{ s }}{% endfor %}{% endmacro %}"
        "{{ m('x' * 100000)|length }}"
    ),
    "integer products": (
        "{% set ns = namespace(n=9 ** 99) %}"
        "{% for i in range(40) %}{% set ns.n = ns.n * ns.n %}{% endfor %}"
    ),
}
ORDINARY = {
    "{{ '%5.2f|%-4s|%03d'|format(3.14159, 'ab', 7) }}": " 3.14|ab  |007",
    "{{ '%(a)s-%(b)s'|format(a=1, b=2) }}": "1-2",
    "{{ '%*d' % (4, 7) }}": "   7",
    "{{ '{:>6}|{:.3}|{x:^5}'.format('a', 'abcdef', x='m') }}": "     a|abc|  m  ",
    "{{ 'ab'|center(6) }}|{{ 'ab'.rjust(4, '*') }}|{{ '7'.zfill(3) }}": "  ab  |**ab|007",
    "{{ 'a\nb'|indent(2, true) }}": "  a\n  b",
    "{{ 'one two three'|wordwrap(7) }}": "one two\nthree",
    "{{ 'a-b'|replace('-', '--') }}|{{ [1, 2]|join(', ') }}|{{ ', '.join(['x', 'y']) }}": (
        "a--b|1, 2|x, y"
    ),
    "{{ [1, 2, 3]|batch(2, 0)|list }}|{{ {'a': [1]}|tojson(indent=2) }}": (
        '[[1, 2], [3, 0]]|{\n  "a": [\n    1\n  ]\n}'
    ),
    "{% set b %}x{{ 1 }}{% endset %}{{ b ~ '!' ~ 2 }}{{ 'ab' * 2 }}{{ range(3)|list }}": (
        "x1!2abab[0, 1, 2]"
    ),
    "{% macro m(n) %}<{{ n }}>{% endmacro %}{{ m(1) }}{{ lipsum(1, false, 3, 4)|wordcount }}": (
        "<1>3"
    ),
}
LEAKS = ("<class", "__builtins__", "os.popen", "root:", "uid=", "function ", "module ")


def sandbox(folder: Path | None = None) -> LimitedSandbox:
    loader = FileSystemLoader(str(folder)) if folder else None
    return LimitedSandbox(undefined=StrictUndefined, loader=loader)


@pytest.mark.parametrize("payload", SSTI)
def test_injection_renders_nothing_dangerous(payload: str, tmp_path: Path) -> None:
    context = {"x": "value", "items": [1, 2]}
    try:
        output = render_limited(sandbox(tmp_path).from_string(payload), context)
    except TemplateError:
        return  # refused: the sandbox's SecurityError, an undefined name, bad syntax
    assert not any(leak in output for leak in LEAKS), output[:200]
    assert context["items"] == [1, 2]  # no mutation of the context


@pytest.mark.parametrize("bomb", BOMBS)
def test_bombs_are_cut_off_within_the_limits(bomb: str) -> None:
    started = time.process_time()
    with pytest.raises(TemplateLimit):
        render_limited(sandbox().from_string(bomb), {"x": "y" * 10})
    assert time.process_time() - started < 10  # cut off, not run to the end


@pytest.mark.parametrize("bomb", SIZE_BOMBS.values(), ids=list(SIZE_BOMBS))
def test_size_arguments_are_refused_before_the_memory_is_taken(bomb: str) -> None:
    started = time.monotonic()
    tracemalloc.start()
    try:
        with pytest.raises(TemplateLimit) as refused:
            render_limited(sandbox().from_string(bomb), {})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    reason = str(refused.value)
    assert "MemoryError" not in reason, reason  # a named limit, not memory run out
    assert any(word in reason for word in ("over", "pass", "would", "more than", "too big"))
    assert peak < 32 * 1024 * 1024, f"{peak:,} bytes at the peak"
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(("source", "expected"), ORDINARY.items(), ids=range(len(ORDINARY)))
def test_ordinary_sizes_still_render(source: str, expected: str) -> None:
    assert render_limited(sandbox().from_string(source), {}) == expected


def test_a_bomb_in_a_workflow_template_fails_the_notification(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "bombed"
    (package / "templates" / "boom").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "templates" / "boom" / "body.txt").write_text("{{ 'x' * 10**9 }}")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PermanentError, match=r"template boom/body\.txt: .*repetition"):
        render("bombed", "boom", "sms", {})
    sys.modules.pop("bombed", None)
