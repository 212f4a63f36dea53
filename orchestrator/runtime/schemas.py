"""Event payload schemas: a workflow may declare the shape of an event's data.

    class Order(Workflow):
        schemas = {"payment.received": Payment}   # a pydantic model or a TypedDict

A payload that does not fit is rejected at the door, naming the field, before
anything is written; the applier checks again and dead-letters what slipped
past (an event emitted by a process with an older definition).

The definition keeps the declared schemas as plain data; reading them takes
pydantic, which the pure core may not import, so they are built here, once,
when the workflow is loaded (orchestrator.runtime.registry). pydantic is
imported only by workflows that declare schemas.
"""

from __future__ import annotations

from typing import Any

from orchestrator.core.definition import Definition
from orchestrator.core.errors import DefinitionError, SchemaViolation


class PayloadSchemas:
    """The schemas one definition declares, ready to check payloads with."""

    def __init__(self, definition: Definition) -> None:
        self._adapters: dict[str, Any] = {}
        if definition.schemas:
            from pydantic import TypeAdapter

            try:
                self._adapters = {
                    event: TypeAdapter(schema) for event, schema in definition.schemas.items()
                }
            except Exception as exc:  # pydantic refuses what it cannot validate
                where = definition.source or definition.name
                raise DefinitionError(
                    f"workflow {where}: schemas: {str(exc).splitlines()[0]}"
                ) from None

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
