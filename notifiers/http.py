"""How every HTTP channel reads an answer: its status, and its Retry-After.

Push, SMS and webhook each talk to a provider over HTTP, through different
clients (pywebpush, Twilio's SDK, urllib). What the answer means is the same
for all three, so it is decided here once:

    2xx              accepted
    3xx              redirected: not followed (an address is not a redirect), so permanent
    408, 429, 5xx    transient: try again, after the Retry-After the provider asked for
    the channel's    gone: the address no longer exists (push: 404 and 410), permanent
    other 4xx        permanent

A channel passes its own special cases as arguments (`gone=`, `transient=`),
never as a copy of these rules.

Retry-After (RFC 9110 section 10.2.3) is delay-seconds (digits only) or an
HTTP-date (IMF-fixdate, or the obsolete RFC 850 and asctime forms, all UTC).
A date in the past means now (0 seconds); any value is capped at
MAX_RETRY_AFTER, so a provider cannot park a notification for a year; a value
that is neither (a fraction, a negative number, "soon", a date that does not
exist) is ignored, as if the header were absent.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Collection
from datetime import UTC
from email.utils import parsedate_to_datetime

MAX_RETRY_AFTER = 86400.0  # seconds: a provider asking for more than a day gets a day
_LONGEST_DATE = 64  # characters: an HTTP-date has about 30; anything longer is not one
TRANSIENT = frozenset({408, 429})  # request timeout, too many requests (and every 5xx)


class Verdict(enum.Enum):
    """What an HTTP status means for a delivery."""

    ACCEPTED = "accepted"
    REDIRECTED = "redirected"  # permanent: redirects are never followed
    TRANSIENT = "transient"
    GONE = "gone"  # permanent, and the address should be forgotten
    PERMANENT = "permanent"

    @property
    def retryable(self) -> bool:
        return self is Verdict.TRANSIENT


def verdict(status: int, *, gone: Collection[int] = (), transient: Collection[int] = ()) -> Verdict:
    """The meaning of `status`, with a channel's own `gone` and `transient` statuses first."""
    if status in gone:
        return Verdict.GONE
    if status in transient or status in TRANSIENT or 500 <= status < 600:
        return Verdict.TRANSIENT
    if 200 <= status < 300:
        return Verdict.ACCEPTED
    if 300 <= status < 400:
        return Verdict.REDIRECTED
    return Verdict.PERMANENT  # 4xx, and anything that is not an HTTP status at all


def retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header's value, at most MAX_RETRY_AFTER;
    None when there is no header or it is not one. `now` is unix seconds (default: the
    clock), against which an HTTP-date is measured."""
    if value is None:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():  # delay-seconds = 1*DIGIT
        significant = text.lstrip("0") or "0"
        if len(significant) > len(str(int(MAX_RETRY_AFTER))):  # never int() of 5,000 digits
            return MAX_RETRY_AFTER
        return min(float(significant), MAX_RETRY_AFTER)
    if not text or len(text) > _LONGEST_DATE:
        return None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, OverflowError, IndexError):
        return None
    if when.tzinfo is None:  # asctime, or "-0000": an HTTP-date is always UTC
        when = when.replace(tzinfo=UTC)
    left = when.timestamp() - (time.time() if now is None else now)
    return min(max(0.0, left), MAX_RETRY_AFTER)
