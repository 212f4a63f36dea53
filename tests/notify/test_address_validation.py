"""Addresses checked with phonenumbers and email-validator: when a recipient is saved
(the library function and the real `orchestrator recipients` commands) and before a send."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from notifiers import addresses
from notifiers.errors import PermanentError
from notifiers.registry import Notifiers
from orchestrator.core import events as ev
from orchestrator.core.errors import InputError
from orchestrator.entry.bootstrap import App
from orchestrator.runtime.notify.delivery import Deliverer
from orchestrator.runtime.notify.recipients import Recipient, Recipients, check_address
from tests.conftest import cli_env, run_cli

Env = dict[str, str]


@pytest.fixture
def env(redis_url: str, tmp_path: Path) -> Env:
    return cli_env(redis_url, tmp_path)


def one_error(result: Any) -> str:
    assert result.returncode != 0, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return str(lines[0])


# -- the library ------------------------------------------------------------------------


@pytest.mark.parametrize("number", ["+10000000", "+1555", "0612345678", "+33 1", "not a number"])
def test_a_phone_number_that_is_not_one_is_refused(number: str) -> None:
    with pytest.raises(PermanentError) as caught:
        addresses.phone(number)
    assert caught.value.code == "bad-address"
    assert "phone number" in caught.value.reason and "\n" not in caught.value.reason


@pytest.mark.parametrize(
    ("number", "e164"),
    [("+15005550006", "+15005550006"), ("+33 6 12 34 56 78", "+33612345678")],
)
def test_a_valid_phone_number_is_kept_in_e164(number: str, e164: str) -> None:
    assert addresses.phone(number) == e164


@pytest.mark.parametrize("address", ["a@b", "a@", "@example.com", "a b@example.com", "x@host.test"])
def test_an_email_address_that_is_not_one_is_refused(address: str) -> None:
    with pytest.raises(PermanentError) as caught:
        addresses.email(address)
    assert caught.value.code == "bad-address"


@pytest.mark.parametrize(
    "address", ["ann@example.com", "REF+orders@example.com", "Ann Lee <ann@example.com>"]
)
def test_a_valid_email_address_is_accepted_without_dns(address: str) -> None:
    assert addresses.email(address) == address


def test_an_accepted_address_is_not_checked_again_and_a_refused_one_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    checked: list[str] = []
    real = addresses.email

    def counted(value: str, what: str = "email address") -> str:
        checked.append(value)
        return real(value, what)

    monkeypatch.setitem(addresses.CHECKS, "email", counted)
    unique = uuid.uuid4().hex[:8]  # not remembered from another test
    good, bad = f"ann-{unique}@example.com", f"ann-{unique}@host.test"
    assert addresses.check("email", good) == good
    assert addresses.check("email", good) == good
    for _ in range(2):
        with pytest.raises(PermanentError):
            addresses.check("email", bad)
    assert checked == [good, bad, bad]


def test_saving_a_recipient_checks_each_address_naming_the_field(app: App) -> None:
    store = Recipients(app.redis, app.keys)
    with pytest.raises(InputError, match=r"^--phone number '\+10000000' is not a valid"):
        store.save(Recipient("ann", addresses={"sms": "+10000000"}))
    with pytest.raises(InputError, match=r"^--email address 'a@b' is not valid"):
        store.save(Recipient("ann", addresses={"email": "a@b"}))
    with pytest.raises(InputError, match=r"^--webhook URL"):
        check_address("webhook", "ftp://example.com/x")
    assert store.get("ann") is None  # nothing was kept
    store.save(Recipient("ann", addresses={"sms": "+1 500-555-0006", "email": "a@example.com"}))
    found = store.get("ann")
    assert found is not None and found.addresses["sms"] == "+15005550006"


# -- the CLI ------------------------------------------------------------------------------


def test_recipients_add_refuses_a_bad_phone_and_a_bad_email(env: Env) -> None:
    line = one_error(run_cli("recipients", "add", "ann", "--phone", "+10000000", env=env))
    assert line.startswith("error: ") and "--phone number '+10000000'" in line
    line = one_error(run_cli("recipients", "add", "ann", "--email", "a@b", env=env))
    assert "--email address 'a@b' is not valid" in line
    assert "no recipient" in one_error(run_cli("recipients", "show", "ann", env=env))


def test_recipients_set_refuses_a_bad_address_and_keeps_the_old_one(env: Env) -> None:
    added = run_cli(
        "recipients", "add", "ann", "--phone", "+15005550006", "--email", "a@example.com",
        "--json", env=env,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    line = one_error(run_cli("recipients", "set", "ann", "--phone", "+10000000", env=env))
    assert "--phone number '+10000000'" in line
    line = one_error(run_cli("recipients", "set", "ann", "--email", "a@b", env=env))
    assert "--email address 'a@b'" in line
    shown = json.loads(run_cli("recipients", "show", "ann", "--json", env=env).stdout)
    assert shown["addresses"] == {"email": "a@example.com", "sms": "+15005550006"}


# -- before a send ------------------------------------------------------------------------


@pytest.fixture
def deliverer(app: App) -> Iterator[Deliverer]:
    notifiers = Notifiers({})  # no channel configured: the console stands in
    yield Deliverer(app.redis, app.keys, {}, notifiers)
    notifiers.close()


def payload(channel: str, to: str, key: str) -> dict[str, Any]:
    return {
        "instance": None,
        "channel": channel,
        "to": to,
        "template": "order_shipped",
        "templates": "workflows.order",
        "urgent": True,
        "context": {"order_id": "A1", "tracking": "T1", "email": "a@example.com"},
        "key": key,
    }


@pytest.mark.parametrize(("channel", "to"), [("sms", "+10000000"), ("email", "a@b")])
def test_a_bad_bare_address_fails_the_send_permanently(
    deliverer: Deliverer, capsys: pytest.CaptureFixture[str], channel: str, to: str
) -> None:
    outcome = deliverer.deliver(payload(channel, to, f"bad-{channel}"), "job-1")  # type: ignore[arg-type]
    assert (outcome.status, outcome.event) == ("failed", ev.NOTIFICATION_FAILED)
    assert outcome.data["code"] == "bad-address" and outcome.data["permanent"] is True
    assert to in outcome.data["reason"]
    assert capsys.readouterr().out == ""  # the console channel printed nothing: not sent


def test_a_recipient_saved_before_the_check_fails_the_send_permanently(
    app: App, deliverer: Deliverer
) -> None:
    # Given a recipient stored before addresses were checked (written as it was)
    bad = Recipient("old", addresses={"sms": "+10000000"})
    Recipients(app.redis, app.keys)._write(bad)
    outcome = deliverer.deliver(payload("sms", "old", "old-1"), "job-1")  # type: ignore[arg-type]
    assert outcome.status == "failed" and outcome.data["code"] == "bad-address"
