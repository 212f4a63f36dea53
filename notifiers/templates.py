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

from jinja2 import FileSystemLoader, StrictUndefined, TemplateError, TemplateNotFound
from jinja2.sandbox import SandboxedEnvironment

from notifiers.errors import PermanentError
from notifiers.sandbox import LimitedSandbox, render_limited

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
    return LimitedSandbox(
        loader=FileSystemLoader(folder),
        undefined=StrictUndefined,
        autoescape=lambda name: bool(name and name.endswith(".html")),
        keep_trailing_newline=False,
    )


def _pick(env: SandboxedEnvironment, name: str, part: str, locale: str | None) -> str | None:
    """The template file for a part: the locale's, then the language's, then the default."""
    candidates = []
    if locale:
        candidates.append(f"{name}/{locale}/{part}")
        if "-" in locale:
            candidates.append(f"{name}/{locale.split('-')[0]}/{part}")
    candidates.append(f"{name}/{part}")
    for candidate in candidates:
        try:
            env.get_template(candidate)
        except TemplateNotFound:
            continue
        return candidate
    return None


def folder_of(module: str | None) -> str | None:
    """The templates folder beside a workflow's module (found without importing it)."""
    if not module:
        return None
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin:
        return None
    folder = Path(spec.origin).parent / "templates"
    return str(folder) if folder.is_dir() else None


def render(
    module: str | None, name: str, channel: str, context: dict[str, Any], locale: str | None = None
) -> Rendered:
    """Render a workflow's template for a channel; PermanentError names the file and the fault."""
    folder = folder_of(module)
    if not folder or not Path(folder, name).is_dir():
        raise PermanentError(f"no template {name!r} for {module or 'this workflow'}")
    env = environment(folder)

    def part(*names: str, required: bool = False) -> str | None:
        for file in names:
            chosen = _pick(env, name, file, locale)
            if chosen is not None:
                try:
                    text = render_limited(env.get_template(chosen), context).strip()
                except TemplateError as exc:
                    raise PermanentError(f"template {chosen}: {_describe(exc, chosen)}") from None
                except Exception as exc:  # a template's own arithmetic or filters failing
                    line = _template_line(exc, chosen)
                    where = f" (line {line})" if line else ""
                    raise PermanentError(
                        f"template {chosen}: {type(exc).__name__}: {exc}{where}"
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
