"""The order workflow's tasks, simulated deterministically from the order itself.

No real warehouse, payment provider or carrier is called; instead the input
decides what happens, so both the happy path and the undo path can be shown:
  items > stock           -> reserve_stock fails (OutOfStock)
  card == "declined"      -> charge_payment fails (PaymentDeclined)
  card == "slow"          -> charge_payment takes longer than the payment timeout
  address == "nowhere"    -> ship_order fails (Undeliverable)
"""

from __future__ import annotations

import time
from typing import Any


class OutOfStock(Exception):
    pass


class PaymentDeclined(Exception):
    pass


class Undeliverable(Exception):
    pass


def _pause(ctx: dict[str, Any]) -> None:
    time.sleep(float(ctx.get("work_seconds", 0.05)))


def reserve_stock(ctx: dict[str, Any]) -> dict[str, Any]:
    _pause(ctx)
    items, stock = int(ctx.get("items", 1)), int(ctx.get("stock", 10))
    if items > stock:
        raise OutOfStock(f"{items} items ordered, {stock} in stock")
    return {"reservation": f"R-{ctx['order_id']}"}


def release_stock(ctx: dict[str, Any]) -> dict[str, Any]:
    _pause(ctx)
    return {"released": ctx.get("reservation")}


def charge_payment(ctx: dict[str, Any]) -> dict[str, Any]:
    if ctx.get("card") == "slow":
        time.sleep(float(ctx.get("slow_seconds", 5)))
    _pause(ctx)
    if ctx.get("card") == "declined":
        raise PaymentDeclined(f"card declined for order {ctx['order_id']}")
    return {"charge": f"CH-{ctx['order_id']}", "charged": float(ctx.get("amount", 10.0))}


def refund_payment(ctx: dict[str, Any]) -> dict[str, Any]:
    _pause(ctx)
    return {"refunded": ctx.get("charged", 0.0)}


def ship_order(ctx: dict[str, Any]) -> dict[str, Any]:
    _pause(ctx)
    if ctx.get("address") == "nowhere":
        raise Undeliverable(f"no carrier delivers to {ctx['address']!r}")
    return {"tracking": f"TRK-{ctx['order_id']}"}
