"""A workflow that publishes business events, for the published-events tests."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from typing_extensions import TypedDict

from orchestrator import ANY, On, Publish, State, Workflow


class SaleOpened(BaseModel):
    sale_id: str
    amount: float


class SalePaid(TypedDict):
    sale_id: str
    method: str


class SaleShipped(BaseModel):
    sale_id: str
    tracking: str


def paid_data(context: dict[str, Any]) -> dict[str, Any]:
    return {"sale_id": context["sale_id"], "method": context.get("method", "card")}


class Sale(Workflow):
    name = "sale"
    correlate_by = "sale_id"
    publishes = [
        Publish("sale.opened", SaleOpened, description="a sale was opened"),
        Publish("sale.paid", SalePaid, data=paid_data),
        Publish("sale.shipped", SaleShipped, data=["sale_id", "tracking"], version=2),
    ]

    open = State(initial=True, publish=["sale.opened"])
    paid = State()
    shipped = State(final=True, publish=["sale.shipped"])
    voided = State(final=True, outcome="failed")

    transitions = [
        On("sale.paid", source=open, target=paid, save=True, publish=["sale.paid"]),
        On("sale.shipped", source=paid, target=shipped, save=True),
        On("sale.voided", source=ANY, target=voided),
    ]
