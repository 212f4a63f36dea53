"""Order fulfilment: reserve stock, charge the card, ship; undo what was done on failure."""

from __future__ import annotations

from orchestrator import Notify, On, Publish, State, Task, Workflow
from workflows.order import tasks
from workflows.order.events import OrderFailed, OrderPaid, OrderPlaced, OrderShipped


class OrderFulfilment(Workflow):
    """Reserve stock, charge payment, ship; release stock and refund when a later step fails."""

    name = "order"
    version = 1
    starts_on = ["order.placed"]
    correlate_by = "order_id"
    publishes = [
        Publish("order.placed", OrderPlaced, data=["order_id", "items", "amount"]),
        Publish("order.paid", OrderPaid, data=["order_id", "charge", "charged"]),
        Publish("order.shipped", OrderShipped, data=["order_id", "tracking"]),
        Publish("order.failed", OrderFailed, data=["order_id"]),
    ]

    reserving = State(
        initial=True,
        publish=["order.placed"],
        task=Task(tasks.reserve_stock, retries=2, timeout=30, backoff=0.2),
        compensation=Task(tasks.release_stock, retries=3, backoff=0.2),
    )
    charging = State(
        task=Task(tasks.charge_payment, retries=1, timeout=60, backoff=0.2),
        compensation=Task(tasks.refund_payment, retries=3, backoff=0.2),
        timeout=3.0,
        timeout_event="payment.timeout",
    )
    shipping = State(task=Task(tasks.ship_order, retries=1, timeout=30, backoff=0.2))
    shipped = State(
        final=True,
        publish=["order.shipped"],
        notify=[
            Notify("email", "order_shipped", to="email"),
            Notify("sms", "order_shipped", to="phone"),
        ],
    )
    failed = State(
        final=True,
        outcome="failed",
        publish=["order.failed"],
        notify=[
            Notify("email", "order_failed", to="email"),
            Notify("sms", "order_failed", to="phone"),
        ],
    )

    transitions = [
        On("task.completed", source=reserving, target=charging),
        On("task.failed", source=reserving, target=failed),
        On("task.completed", source=charging, target=shipping, publish=["order.paid"]),
        On("task.failed", source=charging, target=failed, compensate=True),
        On("payment.timeout", source=charging, target=failed, compensate=True),
        On("task.completed", source=shipping, target=shipped),
        On("task.failed", source=shipping, target=failed, compensate=True),
    ]
