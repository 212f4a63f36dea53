"""Workflows that publish business events, for tests/cli/test_schemas_cli.py
(`orchestrator schemas list|show|check`).

`parcel` is loaded in two versions: v1 publishes parcel.shipped at schema version 1,
v2 at schema version 2 (an optional field added: compatible) and parcel.returned at
version 2. `parcel_billing` publishes parcel.shipped too, as parcel v2 does (same
version, same schema).
"""

from __future__ import annotations

from pydantic import BaseModel

from orchestrator import On, Publish, State, Workflow


class Address(BaseModel):
    city: str
    postcode: str | None = None


class ShippedV1(BaseModel):
    """A parcel left the warehouse."""

    parcel_id: str
    tracking: str | None = None
    address: Address


class ShippedV2(BaseModel):
    """A parcel left the warehouse."""

    parcel_id: str
    tracking: str | None = None
    address: Address
    carrier: str | None = None  # new in version 2, optional


class Item(BaseModel):
    sku: str
    quantity: int = 1


class Returned(BaseModel):
    """A parcel came back."""

    parcel_id: str
    reason: str
    items: list[Item] = []
    note: str | None = None


class ParcelV1(Workflow):
    """A parcel, as first written."""

    name = "parcel"
    version = 1
    publishes = [Publish("parcel.shipped", ShippedV1, version=1)]

    packing = State(initial=True)
    shipped = State(final=True, publish=["parcel.shipped"])

    transitions = [On("parcel.ship", source=packing, target=shipped, save=True)]


class ParcelV2(Workflow):
    """A parcel, which may come back."""

    name = "parcel"
    version = 2
    publishes = [
        Publish("parcel.shipped", ShippedV2, version=2, description="a parcel was shipped"),
        Publish("parcel.returned", Returned, version=2),
    ]

    packing = State(initial=True)
    shipped = State(publish=["parcel.shipped"])
    returned = State(final=True, publish=["parcel.returned"])
    delivered = State(final=True)

    transitions = [
        On("parcel.ship", source=packing, target=shipped, save=True),
        On("parcel.return", source=shipped, target=returned, save=True),
        On("parcel.delivered", source=shipped, target=delivered),
    ]


class ParcelBilling(Workflow):
    """Bills a parcel; publishes parcel.shipped as parcel v2 does."""

    name = "parcel_billing"
    publishes = [Publish("parcel.shipped", ShippedV2, version=2)]

    billing = State(initial=True)
    billed = State(final=True, publish=["parcel.shipped"])

    transitions = [On("parcel.billed", source=billing, target=billed, save=True)]
