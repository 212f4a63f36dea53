"""Message templates: rendering per channel, locales, errors, the sandbox, and
`orchestrator templates check` on broken and on the bundled templates.

Rendering runs in-process on the bundled workflows' templates or on a
workflow package written under tmp_path; the checks run the CLI in
subprocesses, loading that package with --workflows.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from notifiers.errors import PermanentError
from notifiers.templates import check, render
from tests.conftest import ROOT, cli_env, run_cli
from workflows.sensor_alert import SensorAlert

VERIFY = {"user_id": "U1", "email": "ann@example.com", "name": "Ann Lee"}
READING = {"sensor_id": "T-1", "value": 95.0, "threshold": 80.0, "oncall_phone": "+15550101"}


def write_workflow(
    root: Path,
    package: str,
    files: dict[str, str],
    samples: dict[str, Any] | None = None,
    notify: tuple[tuple[str, str], ...] = (),
) -> Path:
    """A workflow package on disk: `package/__init__.py` and its templates/ folder.

    `files` maps paths inside templates/ to their text; `notify` lists the
    (channel, template) pairs its final state sends.
    """
    folder = root / package
    (folder / "templates").mkdir(parents=True)
    notifies = ", ".join(f"Notify({c!r}, {t!r}, to='email')" for c, t in notify)
    (folder / "__init__.py").write_text(
        "from orchestrator import Notify, On, State, Workflow\n\n\n"
        f"class Flow(Workflow):\n"
        f"    name = {package!r}\n"
        "    start = State(initial=True)\n"
        f"    done = State(final=True, notify=[{notifies}])\n"
        "    transitions = [On('go', source=start, target=done)]\n"
    )
    for relative, text in files.items():
        path = folder / "templates" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    if samples is not None:
        (folder / "templates" / "sample.json").write_text(json.dumps(samples))
    return folder / "templates"


@pytest.fixture
def on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tmp_path importable, for workflow packages written there."""
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def checked(tmp_path: Path, redis_url: str, workflows: str, *options: str) -> Any:
    """`templates check` with tmp_path importable, loading the given workflow modules."""
    env = cli_env(redis_url, tmp_path, PYTHONPATH=f"{ROOT}:{tmp_path}")
    return run_cli("--workflows", workflows, "templates", "check", *options, env=env)


# -- rendering per channel ---------------------------------------------------------


def test_email_has_subject_text_and_an_autoescaped_html_part() -> None:
    # Given a context value that is markup
    context = {**VERIFY, "name": "<b>Ann</b>"}
    # When the verification email is rendered
    email = render("workflows.registration", "verify_email", "email", context)
    # Then the subject and text carry it as written, and the HTML part escaped
    assert email.subject == "Confirm your email address"
    assert email.body.startswith("Hello <b>Ann</b>, please confirm that ann@example.com")
    assert email.html is not None
    assert "Hello &lt;b&gt;Ann&lt;/b&gt;," in email.html
    assert "<b>Ann</b>" not in email.html
    assert "<strong>ann@example.com</strong>" in email.html  # the template's own markup stays


def test_sms_uses_its_own_file_and_has_no_subject_or_html() -> None:
    sms = render("workflows.order", "order_shipped", "sms", {"order_id": "A1", "tracking": "T9"})
    assert (sms.subject, sms.body, sms.html) == ("", "Order A1 shipped, tracking T9.", None)


def test_sms_falls_back_to_the_text_body(on_path: Path) -> None:
    write_workflow(on_path, "tpl_sms", {"hello/body.txt": "Hi {{ who }}"})
    assert render("tpl_sms", "hello", "sms", {"who": "Bo"}).body == "Hi Bo"


def test_push_takes_title_and_push_body_or_falls_back_to_subject_and_text() -> None:
    # A template with title.txt and push.txt uses them
    push = render("workflows.sensor_alert", "alert_escalated", "push", READING)
    assert push.subject == "Escalated: sensor T-1"
    assert push.body.startswith("Reading 95.0 over 80.0 was not acknowledged by +15550101")
    assert push.html is None
    # One without them uses the subject and the text body
    plain = render("workflows.order", "order_shipped", "push", {"order_id": "A1", "tracking": "T"})
    assert plain.subject == "Your order A1 is on its way"
    assert plain.body == "Good news: order A1 has shipped. Tracking number: T."


def test_console_has_no_html_and_webhook_has_it() -> None:
    context = {"order_id": "A1", "tracking": "T"}
    assert render("workflows.order", "order_shipped", "console", context).html is None
    webhook = render("workflows.order", "order_shipped", "webhook", context)
    assert webhook.html is not None
    assert "<strong>A1</strong>" in webhook.html


def test_email_without_a_subject_file_is_refused(on_path: Path) -> None:
    write_workflow(on_path, "tpl_nosubject", {"hello/body.txt": "Hi"})
    with pytest.raises(PermanentError, match=r"'hello' has none of subject\.txt"):
        render("tpl_nosubject", "hello", "email", {})
    # the console does without one
    assert render("tpl_nosubject", "hello", "console", {}).subject == ""


def test_unknown_template_and_unknown_module_are_permanent_errors() -> None:
    with pytest.raises(PermanentError, match=r"no template 'nope' for workflows\.order"):
        render("workflows.order", "nope", "email", {})
    with pytest.raises(PermanentError, match="no template 'x'"):
        render(None, "x", "email", {})


# -- locales ------------------------------------------------------------------------


def test_locale_variant_then_language_then_default() -> None:
    french = render("workflows.registration", "verify_email", "email", VERIFY, locale="fr")
    assert french.subject == "Confirmez votre adresse e-mail"
    assert french.body.startswith("Bonjour Ann Lee,")
    assert french.html is not None and "Bonjour Ann Lee" in french.html
    # fr-CA has no folder of its own: the language's (fr) is used
    canadian = render("workflows.registration", "verify_email", "email", VERIFY, locale="fr-CA")
    assert canadian == french
    # a locale with no variant gets the default
    german = render("workflows.registration", "verify_email", "email", VERIFY, locale="de")
    assert german == render("workflows.registration", "verify_email", "email", VERIFY)
    assert german.subject == "Confirm your email address"


def test_a_locale_variant_falls_back_file_by_file() -> None:
    # alert_page/fr/ has only sms.txt
    sms = render("workflows.sensor_alert", "alert_page", "sms", READING, locale="fr-FR")
    assert sms.body.startswith("Alerte capteur T-1 : la mesure 95.0 dépasse le seuil 80.0.")
    email = render("workflows.sensor_alert", "alert_page", "email", READING, locale="fr-FR")
    assert email.subject == "Sensor T-1 alert"
    assert email.body.startswith("Sensor T-1 read 95.0, over the threshold 80.0.")


def test_an_exact_locale_folder_wins_over_the_language(on_path: Path) -> None:
    write_workflow(
        on_path,
        "tpl_locales",
        {
            "hi/body.txt": "Hello",
            "hi/pt/body.txt": "Olá",
            "hi/pt-BR/body.txt": "Oi",
        },
    )
    assert render("tpl_locales", "hi", "console", {}, locale="pt-BR").body == "Oi"
    assert render("tpl_locales", "hi", "console", {}, locale="pt-PT").body == "Olá"
    assert render("tpl_locales", "hi", "console", {}, locale=None).body == "Hello"


# -- errors and the sandbox -----------------------------------------------------------


def test_undefined_variable_names_the_file_and_the_line(on_path: Path) -> None:
    write_workflow(
        on_path,
        "tpl_undefined",
        {"note/body.txt": "Hello {{ name }},\n\nyour code is {{ code }}.\n"},
    )
    with pytest.raises(PermanentError) as err:
        render("tpl_undefined", "note", "console", {"name": "Ann"})
    assert str(err.value) == "template note/body.txt: 'code' is undefined (line 3)"


def test_undefined_variable_in_a_locale_variant_names_that_file(on_path: Path) -> None:
    write_workflow(
        on_path, "tpl_undefined_fr", {"note/body.txt": "Hi", "note/fr/body.txt": "Salut {{ x }}"}
    )
    with pytest.raises(PermanentError, match=r"template note/fr/body\.txt: 'x' is undefined"):
        render("tpl_undefined_fr", "note", "console", {}, locale="fr")


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ ctx.__class__ }}",
        "{{ (1).__class__.__base__.__subclasses__() }}",
    ],
)
def test_sandbox_refuses_unsafe_attributes(on_path: Path, source: str) -> None:
    package = f"tpl_sandbox_{abs(hash(source))}"
    write_workflow(on_path, package, {"evil/body.txt": source})
    # Then the render is refused as a permanent failure, never evaluated
    with pytest.raises(PermanentError) as err:
        render(package, "evil", "console", {"ctx": {"a": 0}})
    assert "template evil/body.txt:" in str(err.value)
    assert re.search(r"unsafe|undefined|not safely callable", str(err.value)), str(err.value)


def test_the_sensor_templates_say_the_acknowledgement_delay_the_workflow_uses() -> None:
    minutes = f"within {SensorAlert.ACK_SECONDS / 60:g} minutes"
    assert minutes in render("workflows.sensor_alert", "alert_page", "sms", READING).body
    escalated = render("workflows.sensor_alert", "alert_escalated", "email", READING)
    assert minutes in escalated.body
    assert escalated.html is not None and minutes in escalated.html


# -- templates check ------------------------------------------------------------------


BROKEN = {
    "greet/subject.txt": "Hello {{ name }}",
    "greet/body.txt": "Hello {{ name }},\n{% if %}\n",  # syntax error on line 2
    "greet/fr/body.txt": "Bonjour {{ name }},\n\n{{ missing }}\n",  # undefined on line 3
    "quiet/body.txt": "Nothing to say",
}


def test_check_reports_each_problem_with_its_file_and_line(tmp_path: Path) -> None:
    folder = write_workflow(tmp_path, "tpl_broken", BROKEN, samples={"greet": {"name": "Ann"}})
    problems = [str(p) for p in check(folder)]
    assert any(p.startswith(f"{folder / 'greet' / 'body.txt'}:2: ") for p in problems), problems
    assert f"{folder / 'greet' / 'fr' / 'body.txt'}:3: 'missing' is undefined (line 3)" in problems
    assert f"{folder / 'sample.json'}: no sample context for 'quiet'" in problems
    assert len(problems) == 3


def test_check_reports_a_sample_file_that_is_not_json(tmp_path: Path) -> None:
    folder = write_workflow(tmp_path, "tpl_badsample", {"a/body.txt": "x"})
    (folder / "sample.json").write_text('{"a": {}')
    [problem] = check(folder)
    assert problem.file == str(folder / "sample.json")
    assert "not valid JSON" in problem.message


def test_templates_check_command_fails_on_a_broken_folder(tmp_path: Path, redis_url: str) -> None:
    # Given a workflow whose templates are broken and whose Notify names a missing template
    folder = write_workflow(
        tmp_path,
        "tpl_cli_broken",
        BROKEN,
        samples={"greet": {"name": "Ann"}},
        notify=(("email", "greet"), ("sms", "gone"), ("email", "quiet")),
    )
    # When the templates are checked
    result = checked(tmp_path, redis_url, "workflows,tpl_cli_broken")
    # Then each problem is one FILE:LINE line, the command exits 1
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith(f"{folder / 'greet' / 'body.txt'}:2: ") for line in lines), lines
    assert f"{folder / 'greet' / 'fr' / 'body.txt'}:3: 'missing' is undefined (line 3)" in lines
    # And Notify rows naming a missing template, or one the channel cannot use, are named
    assert any(
        line.startswith("workflow tpl_cli_broken v1, state done: notify sms with 'gone': ")
        and "no such template" in line
        for line in lines
    ), lines
    assert any(
        line.startswith("workflow tpl_cli_broken v1, state done: notify email with 'quiet': ")
        and "subject.txt" in line
        for line in lines
    ), lines
    assert lines[-1].startswith("5 problem(s) in ")
    assert "Traceback" not in result.stderr


def test_templates_check_json_lists_problems(tmp_path: Path, redis_url: str) -> None:
    write_workflow(tmp_path, "tpl_cli_json", BROKEN, samples={"greet": {"name": "Ann"}})
    result = checked(tmp_path, redis_url, "tpl_cli_json", "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert report["templates"] == 2
    assert {(Path(p["file"]).name, p["line"]) for p in report["problems"]} == {
        ("body.txt", 2),
        ("body.txt", 3),
        ("sample.json", None),
    }


def test_templates_check_reports_a_template_that_raises_a_python_error(
    tmp_path: Path, redis_url: str
) -> None:
    # Given a template whose sample makes it raise a TypeError, not a Jinja error
    write_workflow(
        tmp_path, "tpl_typeerror", {"sum/body.txt": "{{ value + 1 }}"}, {"sum": {"value": "x"}}
    )
    result = checked(tmp_path, redis_url, "tpl_typeerror")
    # Then it is reported as a problem (exit 1), not a crash of the command (exit 70)
    assert result.returncode == 1, result.stderr
    assert "can only concatenate str" in result.stdout


def test_templates_check_names_a_workflow_without_a_templates_folder(
    tmp_path: Path, redis_url: str
) -> None:
    package = tmp_path / "tpl_nofolder"
    write_workflow(tmp_path, "tpl_nofolder", {}, notify=(("email", "hello"),))
    (package / "templates").rmdir()
    result = checked(tmp_path, redis_url, "tpl_nofolder")
    assert result.returncode == 1
    assert "state done: notify email with 'hello': the workflow has no templates/ folder" in (
        result.stdout
    )


def test_templates_check_passes_on_the_bundled_workflows(tmp_path: Path, redis_url: str) -> None:
    result = checked(tmp_path, redis_url, "workflows")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("checked ")
    assert result.stdout.rstrip().endswith("all good")
    report = json.loads(checked(tmp_path, redis_url, "workflows", "--json").stdout)
    assert report["ok"] is True
    assert {Path(f).parent.name for f in report["folders"]} == {
        "order",
        "registration",
        "sensor_alert",
    }
    assert report["templates"] >= 9
