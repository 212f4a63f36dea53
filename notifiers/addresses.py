"""Email addresses and phone numbers checked with well-kept libraries, before they are kept
or sent to.

`email` checks each address of an email `to` (one address, or a list with names, as the
email channel takes it) with email-validator, without a DNS look-up (no deliverability
check: a domain's mail servers are the SMTP server's business, and a look-up per send would
be slow); `phone` checks an SMS number with phonenumbers (Google's libphonenumber): it must
be written in E.164 (+ and the country code) and be a valid number for its country. Both
raise AddressError (a PermanentError, code "bad-address") with one line naming the field.

Both are pure (no look-up) and cost some 40-50 us an address (timeit, this 2-core machine):
`check`, which every send calls on its address, remembers the last CHECKED addresses it
accepted, so that a recipient's next notification is not checked again. A refused one is
checked each time (an error is not remembered).
"""

from __future__ import annotations

from functools import lru_cache

import email_validator
import phonenumbers

from notifiers.errors import PermanentError
from notifiers.mime import addresses

CODE = "bad-address"
CHECKED = 4096  # accepted addresses `check` remembers, the least recently used dropped


class AddressError(PermanentError):
    """An address that is not one: never worth a retry."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, code=CODE)


def email(value: str, what: str = "email address") -> str:
    """`value` when every address in it is valid, else AddressError naming `what`."""
    try:
        found = addresses(what, value)
    except PermanentError as exc:
        raise AddressError(exc.reason) from None
    except (IndexError, ValueError, AttributeError):  # the email package trips on some (`a@`)
        raise AddressError(f"{what} {value!r:.120} is not a valid email address") from None
    for address in found:
        try:
            email_validator.validate_email(
                address.addr_spec, check_deliverability=False, allow_display_name=False
            )
        except email_validator.EmailNotValidError as exc:
            raise AddressError(f"{what} {address.addr_spec!r} is not valid: {exc}") from None
    return value


def phone(value: str, what: str = "phone number") -> str:
    """`value` in E.164 (+CC...) when it is a valid number, else AddressError naming `what`."""
    text = value.strip()
    if not text.startswith("+"):
        raise AddressError(f"{what} {value!r} must be in E.164 form, + and the country code")
    try:
        number = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException as exc:
        raise AddressError(f"{what} {value!r} is not a phone number: {exc._msg}") from None
    if not phonenumbers.is_valid_number(number):
        raise AddressError(
            f"{what} {value!r} is not a valid number for any country "
            "(E.164: + and the country code, e.g. +33612345678)"
        )
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


CHECKS = {"email": email, "sms": phone}


@lru_cache(maxsize=CHECKED)
def check(channel: str, value: str, what: str | None = None) -> str:
    """The address checked (a phone number in E.164) for channels that have a check
    (email, sms); any other channel's address as it is."""
    found = CHECKS.get(channel)
    if found is None:
        return value
    return found(value, what) if what else found(value)
