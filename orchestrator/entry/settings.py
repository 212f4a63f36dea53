"""Settings, read from the environment once at start-up and passed down.

Every process is composed from one `Settings` (orchestrator.entry.bootstrap):
the CLI builds it in its root callback, the worker supervisor hands it to the
processes it starts, `Orchestrator.connect()` builds it when a script connects.
Nothing below reads the environment again.

REDIS_URL                  redis:// or rediss:// or unix:// URL; unset: the embedded Redis
ORCHESTRATOR_WORKFLOWS     comma-separated modules holding workflow classes (default: workflows)
ORCHESTRATOR_NAMESPACE     key prefix (default: orch)
ORCHESTRATOR_PARTITIONS    inbox partitions, fixed when a deployment is first used (default: 8)
ORCHESTRATOR_LEASE_TTL     seconds an applier's partition lease lives unrenewed (default: 10)
ORCHESTRATOR_RETENTION     how long finished instances and their history are kept (default: 7d)
ORCHESTRATOR_HOME          data folder of the embedded Redis (default: ~/.local/share/orchestrator)
ORCHESTRATOR_JOB_KEY       a secret of 16+ characters: every RQ job is sealed with it and
                           workers refuse a job without the seal (default: unset, no seal)
ORCHESTRATOR_JOB_KEY_FILE  the same, read from a file (a Docker or Kubernetes secret)
ORCHESTRATOR_CRASH_AT      test only: named points where a process kills itself with SIGKILL
ORCHESTRATOR_TRACING       off (default), otlp (OTLP/HTTP to OTEL_EXPORTER_OTLP_ENDPOINT or
                           OTEL_EXPORTER_OTLP_TRACES_ENDPOINT; the `otlp` extra) or console
OTEL_SERVICE_NAME          the service name traces carry (default: orchestrator)
ORCHESTRATOR_METRICS       1 (default): every worker process counts for `/metrics` and writes
                           its counts to Redis every few seconds; 0: nothing counted or written

`channels`: the variables the notification channels and the pipeline read
(SMTP_*, TWILIO_*, VAPID_*, PUSH_*, WEBHOOK_* such as WEBHOOK_ALLOW_PRIVATE,
ORCHESTRATOR_RATE_*, ORCHESTRATOR_REQUIRE_CHANNELS). `http`: those of `orchestrator serve`
(ORCHESTRATOR_PUBLIC_URL, TWILIO_AUTH_TOKEN, ORCHESTRATOR_EVENTS_SECRET). Both
are kept as text and judged by the part that uses them, as before: a channel
that is never used is never refused, and only `serve` checks the server's.

Secrets (SECRETS) may be given as NAME or as NAME_FILE, the path of a file
holding it (a Docker or Kubernetes secret); NAME wins when both are set. The
file is read here, at start-up, its content stripped of surrounding white
space, and NAME_FILE is replaced by NAME. A file that cannot be read is left
as NAME_FILE, so the part that needs the secret refuses it with its own
message when it is used. Every secret is a `Secret`, whose repr is masked,
and neither mapping is part of the settings' repr. Other `_FILE` variables
(SMTP_CA_FILE, a certificate bundle) are paths, and stay paths.

pydantic-settings was weighed and left out: its `secrets_dir` reads one folder
of files named after the fields, not a NAME_FILE per variable; the channel
variables are an open set of prefixed names rather than fields; and the
messages the engine gives for a bad value are its own.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from notifiers.base import Secret
from orchestrator.core.durations import duration
from orchestrator.core.errors import ConfigurationError

# Sends at the same time in one notification worker process: against a provider that
# answers in 100 ms, N send threads send at most 10*N a second. In python -m
# bench.notify_rate (2 cores, 2026-12-07, two rounds) the email rate was 506-531/s at 64,
# 747-824/s at 128 and 756-770/s at 256 (CPU-bound by then); SMS, CPU-bound throughout,
# 484-520, 439-564 and 500-531. Each thread keeps its own SMTP or HTTP connection.
DEFAULT_NOTIFY_THREADS = 128
MAX_NOTIFY_THREADS = 1024

CHANNEL_PREFIXES = ("SMTP_", "TWILIO_", "VAPID_", "PUSH_", "WEBHOOK_", "ORCHESTRATOR_RATE_")
CHANNEL_NAMES = frozenset({"ORCHESTRATOR_REQUIRE_CHANNELS"})
HTTP_NAMES = frozenset(
    {"ORCHESTRATOR_PUBLIC_URL", "TWILIO_AUTH_TOKEN", "ORCHESTRATOR_EVENTS_SECRET"}
)
SECRETS = frozenset(
    {
        "SMTP_PASSWORD",
        "TWILIO_AUTH_TOKEN",
        "VAPID_PRIVATE_KEY",
        "WEBHOOK_SECRET",
        "ORCHESTRATOR_EVENTS_SECRET",
    }
)


def default_data_dir(env: Mapping[str, str]) -> Path:
    if env.get("ORCHESTRATOR_HOME"):
        return Path(env["ORCHESTRATOR_HOME"]).expanduser()
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "orchestrator"


@dataclass(frozen=True)
class Settings:
    redis_url: str | None = None
    workflows: tuple[str, ...] = ("workflows",)
    namespace: str = "orch"
    partitions: int | None = None  # None: what the deployment has, or 8 for a new one
    data_dir: Path = field(default_factory=lambda: default_data_dir(os.environ))
    lease_ttl: float = 10.0
    retention: float = 7 * 86400.0
    publish_lifecycle: bool = False  # the engine's orchestrator.* events published too
    events_max_len: int = 100_000  # published stream entries kept per partition (about)
    events_retention: float = 7 * 86400.0  # ...and for how long
    crash_at: frozenset[str] = frozenset()
    notify_threads: int = DEFAULT_NOTIFY_THREADS  # sends at once in a notification worker
    metrics: bool = True  # processes count for /metrics (orchestrator.runtime.metrics)
    tracing: str = "off"  # off, otlp or console (orchestrator.entry.telemetry)
    service_name: str = "orchestrator"  # OTEL_SERVICE_NAME
    job_key: bytes | None = field(default=None, repr=False)  # a secret: never shown
    # the channels' variables, secrets resolved (channel_settings); never shown
    channels: Mapping[str, str] = field(default_factory=dict, repr=False, hash=False)
    # `orchestrator serve`'s variables, secrets resolved (http_settings); never shown
    http: Mapping[str, str] = field(default_factory=dict, repr=False, hash=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if env is None else env
        partitions = env.get("ORCHESTRATOR_PARTITIONS", "")
        if partitions and (not partitions.isdigit() or not 1 <= int(partitions) <= 1024):
            raise ConfigurationError(
                f"ORCHESTRATOR_PARTITIONS must be a whole number from 1 to 1024, not {partitions!r}"
            )
        settings = cls(
            redis_url=env.get("REDIS_URL") or None,
            workflows=_modules(env.get("ORCHESTRATOR_WORKFLOWS", "workflows")),
            namespace=env.get("ORCHESTRATOR_NAMESPACE", "orch"),
            partitions=int(partitions) if partitions else None,
            data_dir=default_data_dir(env),
            lease_ttl=duration(env.get("ORCHESTRATOR_LEASE_TTL", "10"), "ORCHESTRATOR_LEASE_TTL"),
            retention=duration(env.get("ORCHESTRATOR_RETENTION", "7d"), "ORCHESTRATOR_RETENTION"),
            publish_lifecycle=_flag(env, "ORCHESTRATOR_PUBLISH_LIFECYCLE"),
            events_max_len=_count(env, "ORCHESTRATOR_EVENTS_MAX_LEN", 100_000),
            events_retention=duration(
                env.get("ORCHESTRATOR_EVENTS_RETENTION", "7d"), "ORCHESTRATOR_EVENTS_RETENTION"
            ),
            crash_at=frozenset(filter(None, env.get("ORCHESTRATOR_CRASH_AT", "").split(","))),
            notify_threads=_count(
                env, "ORCHESTRATOR_NOTIFY_THREADS", DEFAULT_NOTIFY_THREADS, MAX_NOTIFY_THREADS
            ),
            tracing=_choice(env, "ORCHESTRATOR_TRACING", TRACING_MODES),
            service_name=env.get("OTEL_SERVICE_NAME", "").strip() or "orchestrator",
            metrics=_flag(env, "ORCHESTRATOR_METRICS", default=True),
            job_key=job_key(env),
            channels=channel_settings(env),
            http=http_settings(env),
        )
        given = {key: value for key, value in overrides.items() if value is not None}
        if isinstance(given.get("workflows"), str):
            given["workflows"] = _modules(given["workflows"])
        return replace(settings, **given)


MIN_JOB_KEY = 16


def _flag(env: Mapping[str, str], name: str, default: bool = False) -> bool:
    value = env.get(name, "").strip().lower()
    if not value:
        return default
    if value in ("0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise ConfigurationError(f"{name} must be 1 or 0 (true or false), not {value!r}")


TRACING_MODES = ("off", "otlp", "console")  # the first is the default


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    value = env.get(name, "").strip().lower() or choices[0]
    if value not in choices:
        raise ConfigurationError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
    return value


def _count(env: Mapping[str, str], name: str, default: int, most: int = 10**9) -> int:
    """A whole number from 1 to `most` (checked as text first: never a huge conversion)."""
    value = env.get(name, "").strip()
    if not value:
        return default
    digits = value.isascii() and value.isdigit() and len(value) <= len(str(most))
    if not digits or not 1 <= int(value) <= most:
        raise ConfigurationError(
            f"{name} must be a whole number from 1 to {most}, not {value[:24]!r}"
        )
    return int(value)


def job_key(env: Mapping[str, str]) -> bytes | None:
    """ORCHESTRATOR_JOB_KEY, or the content of ORCHESTRATOR_JOB_KEY_FILE (trailing
    newline dropped); None when neither is set."""
    text = env.get("ORCHESTRATOR_JOB_KEY") or None
    path = env.get("ORCHESTRATOR_JOB_KEY_FILE") or None
    if text is not None and path is not None:
        raise ConfigurationError("set ORCHESTRATOR_JOB_KEY or ORCHESTRATOR_JOB_KEY_FILE, not both")
    if path is not None:
        try:
            with open(path, "rb") as file:
                raw = file.read(4097)
        except OSError as exc:
            raise ConfigurationError(
                f"ORCHESTRATOR_JOB_KEY_FILE: cannot read {path!r}: {exc.strerror}"
            ) from None
        text = raw.decode("utf-8", "replace").rstrip("\r\n")
    if text is None:
        return None
    if not MIN_JOB_KEY <= len(text) <= 4096:
        where = "ORCHESTRATOR_JOB_KEY_FILE" if path else "ORCHESTRATOR_JOB_KEY"
        raise ConfigurationError(f"{where} must be {MIN_JOB_KEY} to 4096 characters long")
    return text.encode("utf-8", "surrogateescape")


def channel_settings(env: Mapping[str, str]) -> dict[str, str]:
    """The channels' and the notification pipeline's variables, secrets resolved."""
    return _resolved(
        {
            name: value
            for name, value in env.items()
            if name.startswith(CHANNEL_PREFIXES) or name in CHANNEL_NAMES
        }
    )


def http_settings(env: Mapping[str, str]) -> dict[str, str]:
    """`orchestrator serve`'s variables, secrets resolved."""
    wanted = HTTP_NAMES | {f"{name}_FILE" for name in HTTP_NAMES & SECRETS}
    return _resolved({name: value for name, value in env.items() if name in wanted})


def _resolved(found: dict[str, str]) -> dict[str, str]:
    """`found` with each secret's NAME_FILE read into NAME (see the module's docstring)."""
    for name in SECRETS:
        path = found.get(f"{name}_FILE")
        if found.get(name):
            found[name] = Secret(found[name])
            found.pop(f"{name}_FILE", None)
        elif path:
            try:
                text = Path(path).read_text().strip()
            except (OSError, UnicodeDecodeError):
                continue  # the part that uses it says what is wrong, in its own words
            found[name] = Secret(text)
            del found[f"{name}_FILE"]
    return found


def _modules(text: str) -> tuple[str, ...]:
    modules = tuple(part.strip() for part in text.split(",") if part.strip())
    if not modules:
        raise ConfigurationError("no workflow modules given")
    return modules
