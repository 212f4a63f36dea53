"""Secrets out of what is shown: a URL's password, before it reaches a message or a log."""

from __future__ import annotations

import re


def redact(url: str) -> str:
    """The URL with any password replaced by ***, fit for an error message.

    Works on the text, not a parse: it must never fail, even on a malformed URL. A
    password may hold any character, even one a URL should have escaped (`@`, `:`, `/`,
    `?`, `#`, `&`). The user information runs from `//` to the last `@` of the authority,
    as urllib and redis-py read it; or, when what follows that `@` is no plausible host
    (empty, or with a port that is no number: a `/`, `?` or `#` in the password cut the
    authority short), to the last `@` of the URL. Only the user name before its first
    `:` is shown; a user name alone (`redis://secret@host`) may be a misplaced password,
    so it is hidden too. A query parameter naming a password hides everything up to the
    next `&name=`.
    """
    url = re.sub(r"(?is)([?&;][\w.-]*password=).*?(?=[&;][\w.-]+=|\Z)", r"\1***", url)
    head, sep, rest = url.partition("//")
    if not sep or "@" not in rest:
        return url
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if not authority:  # unix:///path: no user information
        return url
    at = authority.rfind("@")
    name, colon, port = re.sub(r"\[[^\]]*\]", "h", authority[at + 1 :]).partition(":")
    if not name or (colon and not port.isdigit()):
        at = rest.rfind("@")
    if at < 0:
        return url
    user, colon, _ = rest[:at].partition(":")
    return f"{head}//{user + ':***' if colon else '***'}@{rest[at + 1 :]}"
