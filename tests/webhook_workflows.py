"""A small workflow that publishes, for the webhook subscription tests
(tests/runtime/test_relay.py, tests/cli/test_subscriptions_cli.py).

Starting an order publishes `order.placed` and `invoice.created` (in that order);
`ship` publishes `order.shipped`.
"""

from __future__ import annotations

from pydantic import BaseModel

from orchestrator import On, Publish, State, Workflow


class OrderEvent(BaseModel):
    order_id: str


class InvoiceEvent(BaseModel):
    order_id: str
    amount: float = 0.0


class WebhookOrder(Workflow):
    """An order that publishes what happens to it."""

    name = "webhook_order"
    publishes = [
        Publish("order.placed", OrderEvent, data=["order_id"]),
        Publish("order.shipped", OrderEvent, data=["order_id"]),
        Publish("invoice.created", InvoiceEvent, data=["order_id", "amount"]),
    ]

    placed = State(initial=True, publish=["order.placed", "invoice.created"])
    shipped = State(final=True, publish=["order.shipped"])

    transitions = [On("ship", source=placed, target=shipped)]
