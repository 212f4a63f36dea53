"""What the registration workflow publishes: its business events' payloads (recorded
versions in schemas/)."""

from __future__ import annotations

from pydantic import BaseModel


class UserVerified(BaseModel):
    """The user proved they own their email address; their profile is being created."""

    user_id: str | int


class UserExpired(BaseModel):
    """The user never verified their address: the account was expired."""

    user_id: str | int
