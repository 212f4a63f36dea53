"""Message templates: Jinja2 in its sandbox, undefined variables are errors,
HTML autoescaped.

Templates live beside their workflow, in `templates/NAME/`:

    subject.txt   email subject, push title (unless title.txt)
    body.txt      text: the email's text part, the SMS and push body (unless sms.txt/push.txt)
    body.html     optional HTML part of the email (autoescaped)
    sms.txt       optional SMS body
    title.txt     optional push title
    push.txt      optional push body
    LOCALE/...    the same files for a locale (e.g. fr/, pt-BR/): used when the
                  recipient's locale matches, file by file, falling back to the default

`sample.json` in the templates folder maps template names to a sample
context, which `orchestrator templates check` renders each template with.
"""

from __future__ import annotations

import importlib.util
import json
import traceback
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import FileSystemLoader, StrictUndefined, Template, TemplateError, TemplateNotFound
from jinja2.sandbox import SandboxedEnvironment

from notifiers.errors import PermanentError
from notifiers.render_limit import render_limited
from notifiers.sandbox import LimitedSandbox

PARTS = ("subject.txt", "body.txt", "body.html", "sms.txt", "title.txt", "push.txt")


@dataclass(frozen=True)
class Rendered:
    subject: str
    body: str
    html: str | None


@dataclass(frozen=True)
class TemplateProblem:
    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.message}"


@lru_cache(maxsize=64)
def environment(folder: str) -> SandboxedEnvironment:
    """One environment a folder. Templates are deployed with the code, so a loaded one is
    never looked at on disk again (auto_reload off: no stat per render)."""
    return LimitedSandbox(
        loader=FileSystemLoader(folder),
        undefined=StrictUndefined,
        autoescape=lambda name: bool(name and name.endswith(".html")),
        keep_trailing_newline=False,
        auto_reload=False,
    )


Chosen = tuple[str, Template]  # the file a part renders, and its compiled template

# (folder, name, part, locale) -> the file picked and its template, or None: none exists.
# Templates are deployed with the code: what a folder holds stays, as Jinja's cache assumes
# with auto_reload off. Cleared when full (locales come from recipients: any number).
_picked: dict[tuple[str, str, str, str | None], Chosen | None] = {}
_PICKED_MOST = 4096


def _pick(folder: str, name: str, part: str, locale: str | None) -> Chosen | None:
    """The template file for a part: the locale's, then the language's, then the default."""
    key = (folder, name, part, locale)
    try:
        return _picked[key]
    except KeyError:
        pass
    env = environment(folder)
    candidates = []
    if locale:
        candidates.append(f"{name}/{locale}/{part}")
        if "-" in locale:
            candidates.append(f"{name}/{locale.split('-')[0]}/{part}")
    candidates.append(f"{name}/{part}")
    chosen: Chosen | None = None
    for candidate in candidates:
        try:
            chosen = (candidate, env.get_template(candidate))
        except TemplateNotFound:
            continue
        break
    if len(_picked) >= _PICKED_MOST:
        _picked.clear()
    _picked[key] = chosen
    return chosen


# module -> its templates folder, once found (a module does not move while it runs)
_folders: dict[str, str] = {}


def folder_of(module: str | None) -> str | None:
    """The templates folder beside a workflow's module (found without importing it)."""
    if not module:
        return None
    found = _folders.get(module)
    if found is not None:
        return found
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin:
        return None
    folder = Path(spec.origin).parent / "templates"
    if not folder.is_dir():
        return None
    _folders[module] = str(folder)
    return str(folder)


# (folder, template name) that exist: only these are remembered, as a missing one may come
_named: set[tuple[str, str]] = set()


def render(
    module: str | None, name: str, channel: str, context: dict[str, Any], locale: str | None = None
) -> Rendered:
    """Render a workflow's template for a channel; PermanentError names the file and the fault."""
    folder = folder_of(module)
    if not folder or ((folder, name) not in _named and not _exists(folder, name)):
        raise PermanentError(f"no template {name!r} for {module or 'this workflow'}")

    def part(*names: str, required: bool = False) -> str | None:
        for file in names:
            chosen = _pick(folder, name, file, locale)
            if chosen is not None:
                path, template = chosen
                try:
                    text = render_limited(template, context).strip()
                except TemplateError as exc:
                    raise PermanentError(f"template {path}: {_describe(exc, path)}") from None
                except Exception as exc:  # a template's own arithmetic or filters failing
                    line = _template_line(exc, path)
                    where = f" (line {line})" if line else ""
                    raise PermanentError(
                        f"template {path}: {type(exc).__name__}: {exc}{where}"
                    ) from None
                return text
        if required:
            raise PermanentError(f"template {name!r} has none of {', '.join(names)}")
        return None

    if channel == "sms":
        return Rendered("", part("sms.txt", "body.txt", required=True) or "", None)
    if channel == "push":
        title = part("title.txt", "subject.txt") or ""
        return Rendered(title, part("push.txt", "body.txt", required=True) or "", None)
    subject = part("subject.txt", required=channel == "email") or ""
    body = part("body.txt", required=True) or ""
    html = part("body.html") if channel in ("email", "webhook") else None
    return Rendered(subject, body, html)


def _exists(folder: str, name: str) -> bool:
    if not Path(folder, name).is_dir():
        return False
    _named.add((folder, name))
    return True


def check(folder: Path) -> list[TemplateProblem]:
    """Compile every template file and render each template with its sample context."""
    problems: list[TemplateProblem] = []
    samples_file = folder / "sample.json"
    samples: dict[str, Any] = {}
    if samples_file.exists():
        try:
            samples = json.loads(samples_file.read_text())
        except ValueError as exc:
            return [TemplateProblem(str(samples_file), None, f"not valid JSON: {exc}")]
    env = environment(str(folder))
    for template_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        name = template_dir.name
        context = samples.get(name)
        if context is None:
            problems.append(
                TemplateProblem(str(samples_file), None, f"no sample context for {name!r}")
            )
        for path in sorted(template_dir.rglob("*")):
            if not path.is_file() or path.name not in PARTS:
                continue
            relative = path.relative_to(folder).as_posix()
            try:
                template = env.get_template(relative)
                if context is not None:
                    render_limited(template, context)
            except TemplateError as exc:
                line = getattr(exc, "lineno", None) or _template_line(exc, relative)
                problems.append(TemplateProblem(str(path), line, _describe(exc, relative)))
    return problems


def _describe(exc: TemplateError, file: str) -> str:
    message = exc.message or type(exc).__name__
    line = getattr(exc, "lineno", None) or _template_line(exc, file)
    return f"{message} (line {line})" if line else message


def _template_line(exc: BaseException, file: str) -> int | None:
    """The template line an error happened on, from the traceback Jinja rewrites."""
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if frame.filename.endswith(file):
            return frame.lineno
    return None
