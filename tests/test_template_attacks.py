"""Templates under attack: server-side template injection and resource bombs.

Every payload either fails with a template error or renders something
harmless; every bomb is cut off within the size and time limits.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from jinja2 import FileSystemLoader, StrictUndefined, TemplateError

from notifiers.errors import PermanentError
from notifiers.sandbox import LimitedSandbox, TemplateLimit, render_limited
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
