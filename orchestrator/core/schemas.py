"""Event payload schemas: a workflow may declare the shape of an event's data.

    class Order(Workflow):
        schemas = {"payment.received": Payment}   # a pydantic model or a TypedDict

A payload that does not fit is rejected at the door, naming the field, before
anything is written; the applier checks again and dead-letters what slipped
past (an event emitted by a process with an older definition). pydantic is
imported only by workflows that declare schemas.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from orchestrator.core.errors import InputError


class SchemaViolation(InputError):
    pass


class PayloadSchemas:
    def __init__(self, schemas: Mapping[str, Any]) -> None:
        self._adapters: dict[str, Any] = {}
        if schemas:
            from pydantic import TypeAdapter

            self._adapters = {event: TypeAdapter(schema) for event, schema in schemas.items()}

    def __contains__(self, event_type: str) -> bool:
        return event_type in self._adapters

    def check(self, event_type: str, data: dict[str, Any]) -> dict[str, Any]:
        """The data as the schema reads it (JSON-ready), or SchemaViolation naming the field."""
        adapter = self._adapters.get(event_type)
        if adapter is None:
            return data
        from pydantic import ValidationError

        try:
            value = adapter.validate_python(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"field {'.'.join(str(p) for p in error['loc']) or '(data)'!r}: {error['msg']}"
                for error in exc.errors()
            )
            raise SchemaViolation(
                f"{event_type} data does not fit its schema: {problems}"
            ) from None
        dumped = adapter.dump_python(value, mode="json")
        return dict(dumped) if isinstance(dumped, dict) else data
