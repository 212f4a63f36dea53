"""Recipients and their preferences: quiet hours in time zones (fixed datetimes,
never the clock), and the `orchestrator recipients` commands end to end.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from orchestrator.core.errors import InputError
from orchestrator.entry.bootstrap import App
from orchestrator.entry.notifications import RecipientChange, update_recipient
from orchestrator.runtime.notify.recipients import Recipient, Recipients
from tests.conftest import cli_env, run_cli

PARIS = ZoneInfo("Europe/Paris")
NIGHT = Recipient("ann", quiet_hours="22:00-07:00", timezone="Europe/Paris")
AUTH = "aUtHsEcReT-1234"  # a push subscription's auth secret: never printed
SUBSCRIPTION = {
    "endpoint": "https://push.example.test/send/abc",
    "keys": {"p256dh": "BPUBLICKEY", "auth": AUTH},
}
Env = dict[str, str]


def paris(year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=PARIS)


# -- quiet hours ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "until"),
    [
        (paris(2024, 1, 15, 23, 30), paris(2024, 1, 16, 7, 0)),  # before midnight: tomorrow
        (paris(2024, 1, 16, 3, 0), paris(2024, 1, 16, 7, 0)),  # after midnight: today
        (paris(2024, 1, 15, 22, 0), paris(2024, 1, 16, 7, 0)),  # the start is inside
        (paris(2024, 1, 16, 6, 59), paris(2024, 1, 16, 7, 0)),
        (paris(2024, 1, 16, 7, 0), None),  # the end is outside
        (paris(2024, 1, 15, 21, 59), None),
        (paris(2024, 1, 15, 12, 0), None),
    ],
)
def test_quiet_hours_across_midnight(now: datetime, until: datetime | None) -> None:
    assert NIGHT.quiet_until(now) == until


def test_quiet_hours_are_read_in_the_recipients_time_zone() -> None:
    # Given one instant: 23:30 in Paris, 17:30 in New York, 07:30 next day in Tokyo
    instant = datetime(2024, 1, 15, 22, 30, tzinfo=UTC)
    tokyo = Recipient("t", quiet_hours="22:00-07:00", timezone="Asia/Tokyo")
    new_york = Recipient("n", quiet_hours="22:00-07:00", timezone="America/New_York")
    # Then only the Paris recipient is in their quiet hours, until 07:00 Paris (06:00 UTC)
    until = NIGHT.quiet_until(instant)
    assert until is not None
    assert until.astimezone(UTC) == datetime(2024, 1, 16, 6, 0, tzinfo=UTC)
    assert tokyo.quiet_until(instant) is None
    assert new_york.quiet_until(instant) is None
    # And 01:00 UTC is 20:00 in New York (awake) but 02:00 in Paris (asleep)
    late = datetime(2024, 1, 16, 1, 0, tzinfo=UTC)
    assert new_york.quiet_until(late) is None
    assert NIGHT.quiet_until(late) == paris(2024, 1, 16, 7, 0)


def test_quiet_hours_ending_after_a_daylight_saving_change() -> None:
    # 30 March 2024, 23:00 in Paris (UTC+1); clocks go forward that night
    now = paris(2024, 3, 30, 23, 0)
    until = NIGHT.quiet_until(now)
    assert until is not None
    # Then it ends at 07:00 local time, now UTC+2: 05:00 UTC
    assert until.astimezone(UTC) == datetime(2024, 3, 31, 5, 0, tzinfo=UTC)


def test_quiet_hours_within_one_day() -> None:
    lunch = Recipient("l", quiet_hours="12:00-14:00", timezone="UTC")
    noon = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert lunch.quiet_until(noon) == datetime(2024, 5, 1, 14, 0, tzinfo=UTC)
    assert lunch.quiet_until(datetime(2024, 5, 1, 14, 0, tzinfo=UTC)) is None
    assert lunch.quiet_until(datetime(2024, 5, 1, 23, 0, tzinfo=UTC)) is None


def test_no_quiet_hours_means_never_quiet() -> None:
    assert Recipient("x", timezone="Europe/Paris").quiet_until(paris(2024, 1, 1, 3, 0)) is None


@pytest.mark.parametrize(
    ("recipient", "message"),
    [
        (Recipient("x", quiet_hours="10pm-7am"), "quiet hours must look like 22:00-07:00"),
        (Recipient("x", quiet_hours="24:00-07:00"), "quiet hours must look like"),
        (Recipient("x", timezone="Mars/Olympus"), "unknown time zone 'Mars/Olympus'"),
        (Recipient("x", opted_out=["fax"]), "unknown channel 'fax'"),
        (Recipient("x", addresses={"pager": "1"}), "unknown channel 'pager'"),
    ],
)
def test_recipient_check_refuses_bad_preferences(recipient: Recipient, message: str) -> None:
    with pytest.raises(InputError, match=message):
        recipient.check()


# -- the recipients commands --------------------------------------------------------------


@pytest.fixture
def env(redis_url: str, tmp_path: Path) -> Env:
    return cli_env(redis_url, tmp_path)


def ok(*args: str, env: Env) -> str:
    result = run_cli(*args, env=env)
    assert result.returncode == 0, result.stderr
    assert AUTH not in result.stdout + result.stderr
    return result.stdout


def fails(*args: str, env: Env) -> str:
    """Run a command that must fail as a user's error: one line on stderr, exit 1."""
    result = run_cli(*args, env=env)
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def shown(*args: str, env: Env) -> Any:
    return json.loads(ok(*args, "--json", env=env))


def test_recipients_round_trip(env: Env, app: App, tmp_path: Path) -> None:
    subscription = tmp_path / "subscription.json"
    subscription.write_text(json.dumps(SUBSCRIPTION))
    # When a recipient is added with every option
    added = shown(
        "recipients",
        "add",
        "ann",
        "--email",
        "ann@example.com",
        "--phone",
        "+15005550006",
        "--webhook",
        "https://hooks.example.test/ann",
        "--push",
        f"@{subscription}",
        "--opt-out",
        "sms",
        "--opt-out",
        "webhook",
        "--quiet-hours",
        "22:00-07:00",
        "--timezone",
        "Europe/Paris",
        "--locale",
        "fr",
        env=env,
    )
    # Then it is shown as given, with the push subscription's endpoint only
    expected = {
        "id": "ann",
        "addresses": {
            "email": "ann@example.com",
            "sms": "+15005550006",
            "webhook": "https://hooks.example.test/ann",
        },
        "push": ["https://push.example.test/send/abc"],
        "opted_out": ["sms", "webhook"],
        "quiet_hours": "22:00-07:00",
        "timezone": "Europe/Paris",
        "locale": "fr",
    }
    assert added == expected
    assert shown("recipients", "show", "ann", env=env) == expected
    # And the stored subscription keeps its keys, which the push channel needs
    stored = Recipients(app.redis, app.keys).require("ann")
    assert stored.push == [SUBSCRIPTION]
    text = ok("recipients", "show", "ann", env=env)
    assert "quiet hours: 22:00-07:00 (Europe/Paris)" in text
    assert "opted out:   sms, webhook" in text
    # When some preferences change
    changed = shown(
        "recipients",
        "set",
        "ann",
        "--opt-in",
        "sms",
        "--opt-out",
        "email",
        "--clear-quiet-hours",
        "--locale",
        "",
        "--webhook",
        "",
        env=env,
    )
    # Then only those changed
    assert changed == {
        **expected,
        "addresses": {"email": "ann@example.com", "sms": "+15005550006"},
        "opted_out": ["webhook", "email"],
        "quiet_hours": None,
        "locale": None,
    }
    ok("recipients", "add", "bob", "--email", "bob@example.com", env=env)
    listed = shown("recipients", "list", env=env)
    assert [r["id"] for r in listed] == ["ann", "bob"]
    assert re.search(r"^bob\s+email\s", ok("recipients", "list", env=env), re.M)
    # When one is removed, it is gone
    assert ok("recipients", "remove", "ann", env=env).strip() == "removed ann"
    assert [r["id"] for r in shown("recipients", "list", env=env)] == ["bob"]
    assert fails("recipients", "show", "ann", env=env) == "error: no recipient with id 'ann'"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("add", "bob"), "error: recipient 'bob' exists already; change it with set"),
        (("add", "new", "--timezone", "Mars/Olympus"), "unknown time zone 'Mars/Olympus'"),
        (("add", "new", "--quiet-hours", "22-7"), "quiet hours must look like 22:00-07:00"),
        (("add", "new", "--opt-out", "fax"), "unknown channel 'fax'"),
        (("add", "new", "--push", "{oops"), "--push"),
        (("set", "nobody", "--email", "x@example.com"), "error: no recipient with id 'nobody'"),
        (("remove", "nobody"), "error: no recipient with id 'nobody'"),
    ],
)
def test_recipients_errors_are_one_line(
    env: Env, app: App, args: tuple[str, ...], message: str
) -> None:
    store = Recipients(app.redis, app.keys)
    store.save(Recipient("bob", addresses={"email": "b@example.com"}))
    line = fails("recipients", *args, env=env)
    assert message in line
    # And the failed command wrote nothing
    assert store.ids() == ["bob"]
    assert store.require("bob") == Recipient("bob", addresses={"email": "b@example.com"})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (RecipientChange(opt_in=["pager"]), "unknown channel 'pager'"),
        (RecipientChange(opt_in=["sms"], opt_out=["sms"]), "cannot opt both out of and in"),
        (RecipientChange(quiet_hours="22:00-07:00", clear_quiet_hours=True), "not both"),
        (RecipientChange(quiet_hours="07:00-07:00"), "start and end at the same time"),
        (RecipientChange(phone="555-0101"), "--phone must be an E.164 number"),
        (RecipientChange(email="not an address"), "--email must be an email address"),
        (RecipientChange(webhook="ftp://x"), "--webhook must be an http(s) URL"),
        (RecipientChange(webhook="ftp://u:hunter2@x"), "ftp://u:***@x"),
        (RecipientChange(locale="../../etc"), "a locale looks like fr or pt-BR"),
        (RecipientChange(push=[{"endpoint": "https://x"}]), "keys p256dh and auth"),
        (RecipientChange(push=[{**SUBSCRIPTION, "endpoint": "http://x"}]), "an https endpoint"),
    ],
)
def test_changes_that_make_no_sense_are_refused(
    app: App, change: RecipientChange, message: str
) -> None:
    store = Recipients(app.redis, app.keys)
    store.save(Recipient("bob"))
    with pytest.raises(InputError, match=re.escape(message)):
        update_recipient(store, "bob", change)
    assert store.require("bob") == Recipient("bob")


def test_an_empty_list_says_so(env: Env) -> None:
    assert ok("recipients", "list", env=env).strip() == "no recipients"
    assert json.loads(ok("recipients", "list", "--json", env=env)) == []
