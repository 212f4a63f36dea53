"""What the order workflow publishes (see `Publish`): its business events' payloads.

Fields beyond the order's id are optional, so an order started with less (a test,
an old client) still publishes; their recorded versions are in schemas/."""

from __future__ import annotations

from pydantic import BaseModel


class OrderPlaced(BaseModel):
    """An order was taken: its stock is being reserved."""

    order_id: str | int
    items: int | None = None
    amount: float | None = None


class OrderPaid(BaseModel):
    """The card was charged."""

    order_id: str | int
    charge: str | None = None
    charged: float | None = None


class OrderShipped(BaseModel):
    """The order left with a carrier."""

    order_id: str | int
    tracking: str | None = None


class OrderFailed(BaseModel):
    """The order could not be fulfilled; what was done is undone (stock, payment)."""

    order_id: str | int
