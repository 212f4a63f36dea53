"""Writing an email message, and making sure nothing was injected into its headers.

Written directly rather than with the email package's modern API, which takes
milliseconds a message (more than the rest of a send, SMTP included): the
headers with the standard library's own encoders (formataddr, Header), the text
parts as 7bit or quoted-printable UTF-8.

Header injection: Python's email package decodes encoded words while it
parses a header and writes the decoded CR/LF out raw (3.11 before 3.11.10),
so a subject like "=?utf-8?q?a=0D=0ABcc:_x@y?=" would add a header. Every
subject, name and address is checked before and after decoding, and the
written message is parsed again and must hold exactly the headers and
recipients that were meant, read with the email package's modern parser, as
a receiver reads them.
"""

from __future__ import annotations

import binascii
import re
import secrets
from email.header import Header
from email.headerregistry import Address, AddressHeader, HeaderRegistry
from email.parser import BytesParser
from email.policy import compat32, default
from email.utils import formataddr, formatdate
from typing import cast

from notifiers.base import Message
from notifiers.errors import PermanentError

CONTROL = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
ADDR_SPEC = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@{_LABEL}(?:\.{_LABEL})*")
_HEADERS = HeaderRegistry()
_NOT_7BIT = re.compile(r"[^\t\n\x20-\x7e]")
_PRINTABLE = re.compile(r"[\x20-\x7e]*")
CRLF = "\r\n"


class Writer:
    """The messages of one sender: From and Reply-To, written and checked once."""

    def __init__(self, sender: Address, reply_to: Address | None) -> None:
        self._from = _mailbox(sender)
        self._reply_to = None if reply_to is None else _mailbox(reply_to)
        _same_addresses("From", _fold("From", self._from), [sender])
        if reply_to is not None and self._reply_to is not None:
            _same_addresses("Reply-To", _fold("Reply-To", self._reply_to), [reply_to])

    def write(self, message: Message, recipients: list[Address], message_id: str) -> bytes:
        """The message's bytes, with CRLF line ends, parsed back and checked (_verify)."""
        subject = checked("the subject", message.subject)
        headers = [
            ("From", self._from),
            ("To", ", ".join(_mailbox(a) for a in recipients)),
            ("Subject", subject),
            *([("Reply-To", self._reply_to)] if self._reply_to is not None else []),
            ("Date", formatdate(usegmt=True)),
            ("Message-ID", message_id),
            ("MIME-Version", "1.0"),
        ]
        try:
            written = [(name, _fold(name, value)) for name, value in headers]
            lines = [f"{name}: {value}" for name, value in written]
            if message.html is None:
                body = _part("plain", message.body)
            else:
                boundary = f"=_{secrets.token_hex(16)}"  # 128 random bits: in no part
                body = (
                    f'Content-Type: multipart/alternative;{CRLF} boundary="{boundary}"{CRLF}{CRLF}'
                    f"--{boundary}{CRLF}{_part('plain', message.body)}{CRLF}"
                    f"--{boundary}{CRLF}{_part('html', message.html)}{CRLF}"
                    f"--{boundary}--{CRLF}"
                )
            raw = (CRLF.join(lines) + CRLF + body).encode("ascii")
        except (ValueError, TypeError, UnicodeError) as exc:
            raise PermanentError(f"the message cannot be written: {exc}") from None
        if _plain(written, recipients):
            return raw  # what parsing it back would find, and pass (see _plain)
        content = ["Content-Type"] + (["Content-Transfer-Encoding"] if message.html is None else [])
        _verify(raw, [name for name, _ in headers] + content, recipients)
        return raw


def _plain(written: list[tuple[str, str]], recipients: list[Address]) -> bool:
    """Whether every header is one line of printable ASCII, To the bare addresses and the
    Subject without an encoded word. Then _verify's parse (a tenth of a millisecond) can
    only find what was written: each `Name: value` line is one header of that name and
    value (no line break to start another), To holds exactly the addresses, and the
    Subject decodes to itself, which `checked` found free of control characters."""
    if not all(_PRINTABLE.fullmatch(value) for _, value in written):
        return False
    values = dict(written)
    to = ", ".join(a.addr_spec for a in recipients)
    return values["To"] == to and "=?" not in values["Subject"]


def _verify(raw: bytes, names: list[str], recipients: list[Address]) -> None:
    """Parse what will be sent: the same headers, the same recipients, no line break
    smuggled in. Values are read with the email package's modern parser, the one that
    decodes encoded words as a receiver would. (From and Reply-To never change: they
    were checked once, when the notifier was built.)"""
    parsed = BytesParser(policy=compat32).parsebytes(raw, headersonly=True)
    if sorted(name.lower() for name in parsed) != sorted(name.lower() for name in names):
        raise PermanentError("a header would have been injected (a line break in a header value)")
    written = _unfold(str(parsed["To"]))
    if written != ", ".join(a.addr_spec for a in recipients):  # else: bare checked addresses
        _same_addresses("To", written, recipients)
    if CONTROL.search(_decoded(_unfold(str(parsed["Subject"])))):
        raise PermanentError("the subject would hold a line break once decoded")


def _unfold(value: str) -> str:
    """A header value unfolded, as the email package's modern policy reads it."""
    return value.replace("\r", "").replace("\n", "")


def _decoded(value: str) -> str:
    """An unstructured header value as a receiver reads it: its encoded words decoded
    (without one, the parser would return the text as it is: skip it)."""
    return str(_HEADERS("Subject", value)) if "=?" in value else value


def _same_addresses(name: str, written: str, expected: list[Address]) -> None:
    header = cast(AddressHeader, default.header_fetch_parse(name, written))  # unfolds first
    if [a.addr_spec for a in header.addresses] != [a.addr_spec for a in expected]:
        raise PermanentError(f"the {name} header would not hold the addresses given")
    if any(CONTROL.search(a.display_name) for a in header.addresses):
        raise PermanentError(f"a name in {name} would hold a line break")


def _mailbox(address: Address) -> str:
    """`Name <addr>`: the name quoted, or in an encoded word when it is not ASCII."""
    return formataddr((address.display_name, address.addr_spec), charset="utf-8")


def _fold(name: str, value: str) -> str:
    """A header's value as written: folded, in encoded words when it is not ASCII."""
    if value.isascii() and len(name) + 2 + len(value) <= 78:
        return value  # nothing to fold or encode (every value is checked for line breaks)
    charset = "us-ascii" if value.isascii() else "utf-8"
    return str(Header(value, charset, header_name=name).encode(linesep=CRLF))


def _part(subtype: str, text: str) -> str:
    """A text part's headers and body: 7bit when plain short ASCII lines, else
    quoted-printable UTF-8 (no line over 76 characters, no control character raw)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.endswith("\n"):
        text += "\n"
    if not _NOT_7BIT.search(text) and all(len(line) <= 78 for line in text.split("\n")):
        encoding, body = "7bit", text
    else:
        encoding = "quoted-printable"
        body = binascii.b2a_qp(text.encode("utf-8"), istext=True).decode("ascii")
    return (
        f'Content-Type: text/{subtype}; charset="utf-8"{CRLF}'
        f"Content-Transfer-Encoding: {encoding}{CRLF}{CRLF}" + body.replace("\n", CRLF)
    )


def checked(what: str, value: str) -> str:
    """Refuse a line break or control character, given as is or in an encoded word;
    returns the text decoded, as the email package reads a header value (what is
    written, and parsed back by _verify, so a doubly encoded break is caught there)."""
    try:
        decoded = _decoded(value)
    except ValueError:
        decoded = "\n"
    if CONTROL.search(value) or CONTROL.search(decoded):
        raise PermanentError(f"{what} holds a line break or control character; refused")
    return decoded


def addresses(what: str, value: str, single: bool = False) -> list[Address]:
    """Strictly parsed addresses: plain ASCII addr-specs, no groups, no defects, no line breaks."""
    if "=?" not in value and (plain := ADDR_SPEC.fullmatch(value)):
        # One bare address (dot-atoms, no name, no encoded word): what the parser below
        # returns for it, in a hundredth of its time.
        username, domain = plain[0].rsplit("@", 1)
        return [Address(username=username, domain=domain)]
    refused = PermanentError(f"{what} is not a valid list of email addresses: {value!r:.120}")
    if CONTROL.search(value):
        raise PermanentError(f"{what} holds a line break or control character; refused")
    try:
        header = _HEADERS("To", value)
    except ValueError:  # the email package refuses CR/LF it decoded from an encoded word
        raise PermanentError(f"{what} holds an encoded line break; refused") from None
    found, groups = cast(AddressHeader, header).addresses, cast(AddressHeader, header).groups
    if header.defects or not found or any(g.display_name is not None for g in groups):
        raise refused
    if single and len(found) != 1:
        raise PermanentError(f"{what} must be one address, not {value!r:.120}")
    for address in found:
        if not ADDR_SPEC.fullmatch(address.addr_spec):
            raise refused
        if CONTROL.search(address.display_name) or "=?" in address.display_name:
            raise PermanentError(f"{what} has a name with a line break or an encoded word")
    return list(found)
