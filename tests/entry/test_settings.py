"""Settings are read once, at start-up: the engine's, the channels' and the server's,
with each secret's `*_FILE` read then, and no secret in the settings' repr."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from notifiers.errors import ChannelConfigError
from notifiers.webhook import WebhookNotifier
from orchestrator.core.errors import ConfigurationError
from orchestrator.entry.http.config import ServerConfig
from orchestrator.entry.settings import Settings

SMTP_PASSWORD = "smtp-settings-canary-81"
EVENTS_KEY = "events-settings-canary-27"


def test_the_channels_variables_are_kept_and_their_secret_files_read(tmp_path: Path) -> None:
    # Given an environment with channel variables, a password in a file, and others
    password = tmp_path / "smtp-password"
    password.write_text(f"  {SMTP_PASSWORD}\n")
    env = {
        "SMTP_HOST": "mail.example.com",
        "SMTP_PASSWORD_FILE": str(password),
        "SMTP_CA_FILE": "/etc/ssl/ca.pem",
        "WEBHOOK_SECRET": "hook-key",
        "ORCHESTRATOR_RATE_SMS": "3",
        "ORCHESTRATOR_REQUIRE_CHANNELS": "1",
        "ORCHESTRATOR_NAMESPACE": "other",
        "HOME": "/root",
    }

    # When the settings are read
    settings = Settings.from_env(env)

    # Then the channels get theirs, the password read from its file (stripped) ...
    assert dict(settings.channels) == {
        "SMTP_HOST": "mail.example.com",
        "SMTP_PASSWORD": SMTP_PASSWORD,
        "SMTP_CA_FILE": "/etc/ssl/ca.pem",  # a path, not a secret: kept as it is
        "WEBHOOK_SECRET": "hook-key",
        "ORCHESTRATOR_RATE_SMS": "3",
        "ORCHESTRATOR_REQUIRE_CHANNELS": "1",
    }
    # ... and no secret shows in a repr, of the settings or of the mapping
    assert SMTP_PASSWORD not in repr(settings)
    assert "hook-key" not in repr(settings)
    assert SMTP_PASSWORD not in repr(settings.channels)
    # and the settings cross to another process whole
    assert pickle.loads(pickle.dumps(settings)).channels == settings.channels


def test_a_secret_given_directly_wins_over_its_file(tmp_path: Path) -> None:
    password = tmp_path / "smtp-password"
    password.write_text("from-the-file")
    env = {"SMTP_PASSWORD": "given", "SMTP_PASSWORD_FILE": str(password)}
    assert dict(Settings.from_env(env).channels) == {"SMTP_PASSWORD": "given"}


def test_an_unreadable_secret_file_is_refused_by_the_channel_in_its_own_words(
    tmp_path: Path,
) -> None:
    # Given a webhook secret file that is not there
    settings = Settings.from_env({"WEBHOOK_SECRET_FILE": str(tmp_path / "missing")})

    # Then reading the settings succeeds (a channel never used is never refused), and the
    # channel, when built, says what is wrong as it always did
    with pytest.raises(ChannelConfigError, match="WEBHOOK_SECRET_FILE"):
        WebhookNotifier.from_env(settings.channels)


def test_the_servers_variables_are_read_once_and_judged_by_serve(tmp_path: Path) -> None:
    # Given the events secret in a file and a public URL
    key = tmp_path / "events"
    key.write_text(EVENTS_KEY + "\n")
    env = {
        "ORCHESTRATOR_PUBLIC_URL": "https://hooks.example.com/",
        "ORCHESTRATOR_EVENTS_SECRET_FILE": str(key),
        "SMTP_HOST": "mail.example.com",
    }

    # When the settings are read, the server's are apart from the channels'
    settings = Settings.from_env(env)
    assert set(settings.http) == {"ORCHESTRATOR_PUBLIC_URL", "ORCHESTRATOR_EVENTS_SECRET"}
    assert EVENTS_KEY not in repr(settings.http)

    # Then the server's configuration is built from them
    config = ServerConfig.of(settings)
    assert config.public_url == "https://hooks.example.com"
    assert config.events_secret == EVENTS_KEY
    assert EVENTS_KEY not in repr(config)

    # and a bad one is refused when the server is built, not before
    bad = Settings.from_env({"ORCHESTRATOR_PUBLIC_URL": "hooks.example.com"})
    with pytest.raises(ConfigurationError, match="ORCHESTRATOR_PUBLIC_URL must be an http"):
        ServerConfig.of(bad)


def test_settings_made_in_code_read_no_channels() -> None:
    assert Settings(redis_url="redis://localhost:6379/0").channels == {}
    assert Settings().http == {}


def test_the_send_threads_of_a_notification_worker_default_and_are_checked() -> None:
    from cli.run import NOTIFY_THREADS_SHOWN
    from orchestrator.entry.settings import DEFAULT_NOTIFY_THREADS

    assert Settings.from_env({}).notify_threads == DEFAULT_NOTIFY_THREADS == NOTIFY_THREADS_SHOWN
    assert Settings.from_env({"ORCHESTRATOR_NOTIFY_THREADS": " 1024 "}).notify_threads == 1024
    for wrong in ("0", "1025", "-3", "2.5", "many", "\u0663", "9" * 5000):
        with pytest.raises(ConfigurationError, match="ORCHESTRATOR_NOTIFY_THREADS must be"):
            Settings.from_env({"ORCHESTRATOR_NOTIFY_THREADS": wrong})
