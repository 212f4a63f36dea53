"""The one reading of an HTTP answer that push, SMS and webhook share (notifiers.http):
what a status means, and how long a Retry-After asks to wait.

The channels' own tests send to real servers and check the errors that come out;
these pin the rules themselves, with the edge cases a server rarely scripts:
malformed headers, dates in the past, values that would park a notification for
years.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from notifiers.http import MAX_RETRY_AFTER, Verdict, retry_after, verdict

NOW = datetime(2024, 3, 1, 12, 0, 0, tzinfo=UTC)


def at(delta: timedelta) -> str:
    """An IMF-fixdate `delta` from NOW."""
    return format_datetime(NOW + delta, usegmt=True)


# -- status ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (200, Verdict.ACCEPTED),
        (201, Verdict.ACCEPTED),
        (204, Verdict.ACCEPTED),
        (301, Verdict.REDIRECTED),
        (302, Verdict.REDIRECTED),
        (307, Verdict.REDIRECTED),
        (408, Verdict.TRANSIENT),
        (429, Verdict.TRANSIENT),
        (500, Verdict.TRANSIENT),
        (501, Verdict.TRANSIENT),
        (502, Verdict.TRANSIENT),
        (503, Verdict.TRANSIENT),
        (599, Verdict.TRANSIENT),
        (400, Verdict.PERMANENT),
        (401, Verdict.PERMANENT),
        (403, Verdict.PERMANENT),
        (404, Verdict.PERMANENT),
        (410, Verdict.PERMANENT),
        (413, Verdict.PERMANENT),
        (422, Verdict.PERMANENT),
        (425, Verdict.PERMANENT),
        (100, Verdict.PERMANENT),
        (0, Verdict.PERMANENT),
        (600, Verdict.PERMANENT),
        (999, Verdict.PERMANENT),
    ],
)
def test_a_status_means_the_same_on_every_channel(status: int, expected: Verdict) -> None:
    assert verdict(status) is expected
    assert verdict(status).retryable is (expected is Verdict.TRANSIENT)


@pytest.mark.parametrize(("status", "expected"), [(404, Verdict.GONE), (410, Verdict.GONE)])
def test_a_channel_names_the_statuses_that_mean_the_address_is_gone(
    status: int, expected: Verdict
) -> None:
    # Given push's own case: 404 and 410 mean the subscription no longer exists
    gone = frozenset({404, 410})
    # Then those are gone, not merely refused, and gone is not retried
    assert verdict(status, gone=gone) is expected
    assert not verdict(status, gone=gone).retryable
    # And every other status keeps its common meaning
    assert verdict(403, gone=gone) is Verdict.PERMANENT
    assert verdict(429, gone=gone) is Verdict.TRANSIENT
    assert verdict(201, gone=gone) is Verdict.ACCEPTED


def test_a_channel_adds_its_own_transient_statuses() -> None:
    # Given the webhook's own case: 425 Too Early is worth another try
    assert verdict(425, transient=(425,)) is Verdict.TRANSIENT
    # And the common transient ones stay transient beside it
    assert verdict(408, transient=(425,)) is Verdict.TRANSIENT
    assert verdict(422, transient=(425,)) is Verdict.PERMANENT


# -- Retry-After -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", 0.0),
        ("7", 7.0),
        ("120", 120.0),
        ("  30 ", 30.0),  # whitespace around a field value is not part of it
        ("0007", 7.0),
        ("86400", MAX_RETRY_AFTER),
    ],
)
def test_delay_seconds(value: str, expected: float) -> None:
    assert retry_after(value, now=NOW.timestamp()) == expected


@pytest.mark.parametrize(
    "value",
    [
        "86401",
        "999999999",
        "1" + "0" * 5000,  # more digits than int() takes from text: capped, not an error
        "0" * 5000 + "99999",
    ],
)
def test_a_huge_delay_is_capped_at_a_day(value: str) -> None:
    assert retry_after(value, now=NOW.timestamp()) == MAX_RETRY_AFTER


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (at(timedelta(seconds=120)), 120.0),
        (at(timedelta(hours=1)), 3600.0),
        # the obsolete forms RFC 9110 still asks a recipient to accept, both UTC
        ("Friday, 01-Mar-24 12:02:00 GMT", 120.0),
        ("Fri Mar  1 12:02:00 2024", 120.0),
        # a zone that is not GMT is still a time, read as what it says
        ("Fri, 01 Mar 2024 14:02:00 +0200", 120.0),
    ],
)
def test_an_http_date_is_the_seconds_until_it(value: str, expected: float) -> None:
    assert retry_after(value, now=NOW.timestamp()) == pytest.approx(expected)


@pytest.mark.parametrize(
    "value", [at(timedelta(seconds=-1)), at(timedelta(days=-400)), "Sun, 06 Nov 1994 08:49:37 GMT"]
)
def test_a_date_in_the_past_means_now(value: str) -> None:
    assert retry_after(value, now=NOW.timestamp()) == 0.0


@pytest.mark.parametrize("value", [at(timedelta(days=2)), "Fri, 31 Dec 9999 23:59:59 GMT"])
def test_a_date_far_ahead_is_capped_at_a_day(value: str) -> None:
    assert retry_after(value, now=NOW.timestamp()) == MAX_RETRY_AFTER


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "   ",
        "soon",
        "-5",  # not delay-seconds: digits only
        "+5",
        "7.5",
        "1e3",
        "1e309",
        "inf",
        "nan",
        "0x10",
        "٣",  # an Arabic-Indic digit: a digit to Python, not to HTTP
        "²",
        "5 seconds",
        "Fri, 32 Mar 2024 12:00:00 GMT",  # no such day
        "Fri, 01 Mar 99999 12:00:00 GMT",  # no such year for datetime
        "Fri, 01 Mar 2024 25:00:00 GMT",
        "1 2 3 4 5",
        "Fri, 01 Mar 2024 12:00:00 GMT" + " " * 40 + "x" * 100,  # too long to be a date
        "x" * 100_000,
    ],
)
def test_a_malformed_retry_after_is_ignored(value: str | None) -> None:
    assert retry_after(value, now=NOW.timestamp()) is None


def test_the_clock_is_the_default_now() -> None:
    # Given a date two minutes from the real clock's now
    ahead = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    # Then it is about two minutes away (a second of the date's precision, and of the test)
    seconds = retry_after(ahead)
    assert seconds is not None
    assert 100 < seconds <= 120
