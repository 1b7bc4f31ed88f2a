"""Payloads of the order-processing example: what the shop publishes to the ``orders`` topic."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Item(BaseModel):
    sku: str
    quantity: int = Field(gt=0)
    unit_price: float = Field(ge=0)


class OrderPlaced(BaseModel):
    order_id: str
    customer_id: str
    items: list[Item] = Field(min_length=1)
    payment_method: str = "card"

    @property
    def total(self) -> float:
        return round(sum(i.quantity * i.unit_price for i in self.items), 2)


class OrderShipped(BaseModel):
    order_id: str
    carrier: str
    tracking_number: str


class OrderCancelled(BaseModel):
    order_id: str
    reason: str = ""
