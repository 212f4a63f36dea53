"""The registration workflow's tasks, simulated deterministically from the input.

No user database or identity provider is called; the input decides:
  a name with no letter, or with a character other than letters, spaces,
  hyphens, apostrophes and dots (say "R2-D2")  -> create_profile fails (InvalidProfile)
  legal_hold is true                            -> expire_account fails (AccountOnHold)
Everything else succeeds. `work_seconds` (default 0.05) is how long each task
pretends to work.
"""

from __future__ import annotations

import time
from typing import Any

_NAME_PUNCTUATION = frozenset(" -'.")


class InvalidProfile(Exception):
    pass


class AccountOnHold(Exception):
    pass


def _pause(ctx: dict[str, Any]) -> None:
    time.sleep(float(ctx.get("work_seconds", 0.05)))


def valid_name(name: str) -> bool:
    """Letters (any script), spaces, hyphens, apostrophes and dots; at least one letter."""
    return any(c.isalpha() for c in name) and all(
        c.isalpha() or c in _NAME_PUNCTUATION for c in name
    )


def create_profile(ctx: dict[str, Any]) -> dict[str, Any]:
    _pause(ctx)
    name = str(ctx.get("name", "")).strip()
    if not valid_name(name):
        raise InvalidProfile(f"user {ctx['user_id']}: {name!r} cannot be a profile name")
    return {"profile_id": f"P-{ctx['user_id']}", "display_name": name}


def expire_account(ctx: dict[str, Any]) -> dict[str, Any]:
    """Release the unverified account: the user id and the address become free again."""
    _pause(ctx)
    if ctx.get("legal_hold"):
        raise AccountOnHold(f"account {ctx['user_id']} is on legal hold and cannot be released")
    return {"expired_account": ctx["user_id"], "released_email": ctx["email"]}
