"""The server's configuration: the public URL and the two secrets it checks with.

Read from `settings.http` (orchestrator.entry.settings: taken from the
environment once, at start-up, secrets' `_FILE`s already read) when
`orchestrator serve` builds its server, and judged then: a worker that shares
the environment is never refused for the server's settings.

    ORCHESTRATOR_PUBLIC_URL                     e.g. https://hooks.example.com
    TWILIO_AUTH_TOKEN / _FILE                   checks X-Twilio-Signature
    ORCHESTRATOR_EVENTS_SECRET / _FILE          the HMAC key of /events

An endpoint whose secret is not set answers 503.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from notifiers.base import Secret, secret
from notifiers.errors import ChannelConfigError
from orchestrator.core.errors import ConfigurationError
from orchestrator.entry.settings import Settings


@dataclass(frozen=True)
class ServerConfig:
    """`from_env` judges a mapping of the variables above (the tests give their own)."""

    public_url: str | None = None
    twilio_token: Secret | None = None
    events_secret: Secret | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ServerConfig:
        public_url = (env.get("ORCHESTRATOR_PUBLIC_URL") or "").rstrip("/") or None
        if public_url is not None:
            parts = urlsplit(public_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConfigurationError(
                    "ORCHESTRATOR_PUBLIC_URL must be an http(s) URL such as https://example.com"
                )
        token = _secret(env, "TWILIO_AUTH_TOKEN")
        if token and public_url is None:
            raise ConfigurationError(
                "TWILIO_AUTH_TOKEN is set but ORCHESTRATOR_PUBLIC_URL is not: Twilio signs the "
                "URL it calls, so the server must know it"
            )
        events = _secret(env, "ORCHESTRATOR_EVENTS_SECRET")
        return cls(
            public_url=public_url,
            twilio_token=Secret(token) if token else None,
            events_secret=Secret(events) if events else None,
        )

    @classmethod
    def of(cls, settings: Settings) -> ServerConfig:
        """The configuration the process started with (`settings.http`)."""
        return cls.from_env(settings.http)


def _secret(env: Mapping[str, str], name: str) -> str | None:
    """The secret, or a ConfigurationError: the server's settings are the engine's, and
    a file that cannot be read stops `serve` as any bad setting does."""
    try:
        return secret(env, name)
    except ChannelConfigError as exc:  # notifiers' own words for a file it cannot read
        raise ConfigurationError(str(exc)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"cannot read {name}_FILE: {type(exc).__name__}") from None
