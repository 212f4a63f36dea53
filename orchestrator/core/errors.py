"""Every error the engine raises on purpose, drawn once.

    OrchestratorError              base: a message fit to show a user as one line
    ├── DefinitionError            a workflow class is malformed (raised at import; a
    │                              payload schema pydantic cannot read: when loaded)
    ├── ConfigurationError         settings, Redis URL or data folder unusable
    │   └── RedisUnavailable       the server cannot be reached (URL shown, password hidden)
    ├── InputError                 bad input at the door: JSON, payload, arguments
    │   └── SchemaViolation        an event's data does not fit its declared schema
    ├── UnknownWorkflow            no workflow of that name (the known names are listed)
    ├── UnknownEventType           no workflow reacts to that event type
    ├── UnknownInstance            no instance with that id or key
    ├── InstanceExists             an instance with that id exists already
    ├── InvalidOperation           the instance is in no state for that operation
    └── LeaseLost                  an applier was fenced out of a partition

Anything else escaping the engine is a bug, and the CLI shows it as such.

One more, raised by users rather than by the engine:

    NonRetryable                   a task's error that no retry can fix (never retried)
"""

from __future__ import annotations


class OrchestratorError(Exception):
    """Base of every error meant for a user; `str()` is the one-line message."""


class DefinitionError(OrchestratorError):
    pass


class ConfigurationError(OrchestratorError):
    pass


class RedisUnavailable(ConfigurationError):
    pass


class InputError(OrchestratorError):
    pass


class SchemaViolation(InputError):
    """An event's data does not fit the schema its workflow declares for it; names the
    field (orchestrator.runtime.schemas)."""


class UnknownWorkflow(OrchestratorError):
    pass


class UnknownEventType(OrchestratorError):
    pass


class UnknownInstance(OrchestratorError):
    pass


class InstanceExists(OrchestratorError):
    pass


class InvalidOperation(OrchestratorError):
    pass


class LeaseLost(OrchestratorError):
    pass


class NonRetryable(Exception):
    """Raised (or subclassed) by a task whose failure no retry can fix: a declined card,
    an invalid input. The try that raises it is the last; `task.failed` reaches the
    workflow at once, and a row `On("task.failed", ..., error="PaymentDeclined")` can
    route it by its type (its class or any of its bases)."""
