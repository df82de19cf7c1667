"""Wire shapes of ingested messages (Segment-style) and orders."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, model_validator

IdValue = StrictStr | StrictInt


class Identities(BaseModel):
    """Identities a message carries besides ``userId`` / ``anonymousId``."""

    model_config = ConfigDict(extra="forbid")

    wecom_external_userid: IdValue | None = None
    unionid: IdValue | None = None
    openid: IdValue | None = None
    phone: IdValue | None = None
    member_id: IdValue | None = None
    email: IdValue | None = None


class Message(BaseModel):
    """One ``track`` / ``identify`` / ``alias`` message of ``POST /v1/batch``."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["track", "identify", "alias"]
    messageId: StrictStr = Field(min_length=1, max_length=128, description="Idempotency key.")
    event: StrictStr | None = Field(default=None, min_length=1, max_length=128)
    userId: IdValue | None = None
    anonymousId: IdValue | None = None
    previousId: IdValue | None = Field(default=None, description="alias: the id being merged in.")
    identities: Identities | None = None
    timestamp: datetime | None = Field(
        default=None, description="ISO 8601; without an offset it is read in the brand time zone."
    )
    properties: dict[str, Any] | None = None
    traits: dict[str, Any] | None = None
    # Segment fields accepted and ignored.
    context: dict[str, Any] | None = None
    integrations: dict[str, Any] | None = None
    sentAt: StrictStr | None = None
    originalTimestamp: StrictStr | None = None
    channel: StrictStr | None = None
    version: StrictStr | StrictInt | None = None

    @model_validator(mode="after")
    def _shape(self) -> Message:
        if self.type == "track" and not self.event:
            raise ValueError("a track message needs `event`")
        if self.type != "track" and self.event is not None:
            raise ValueError(f"`event` is only for track messages, not {self.type}")
        if self.type == "alias" and self.previousId is None:
            raise ValueError("an alias message needs `previousId`")
        if self.type == "track" and self.traits is not None:
            raise ValueError("`traits` belong in identify messages; use `properties` for track")
        return self


class OrderItem(BaseModel):
    """A line of an order."""

    model_config = ConfigDict(extra="forbid")

    sku: StrictStr = Field(min_length=1, max_length=64)
    category: StrictStr | None = Field(default=None, max_length=64)
    quantity: StrictInt = Field(ge=1, le=100_000)
    price_fen: StrictInt = Field(ge=0, le=10**10, description="Unit price in fen.")


class Order(BaseModel):
    """One order (or a new state of it) for ``POST /v1/orders``. Money in integer fen."""

    model_config = ConfigDict(extra="forbid")

    order_id: StrictStr = Field(min_length=1, max_length=64)
    status: Literal["created", "paid", "shipped", "completed", "refunded", "partially_refunded", "cancelled"]
    userId: IdValue | None = None
    anonymousId: IdValue | None = None
    identities: Identities | None = None
    paid_at: datetime | None = None
    updated_at: datetime | None = Field(
        default=None, description="When the mall last changed the order; older updates are ignored."
    )
    amount_fen: StrictInt = Field(ge=0, le=10**12, description="Amount paid, after discounts.")
    discount_fen: StrictInt = Field(default=0, ge=0, le=10**12)
    refund_fen: StrictInt = Field(default=0, ge=0, le=10**12)
    items: list[OrderItem] = Field(default_factory=list, max_length=500)
    channel: StrictStr | None = Field(default=None, max_length=64)

    @model_validator(mode="after")
    def _consistent(self) -> Order:
        if self.refund_fen > self.amount_fen:
            raise ValueError("refund_fen is larger than amount_fen")
        if self.status in {"paid", "shipped", "completed", "refunded", "partially_refunded"} and not self.paid_at:
            raise ValueError(f"an order with status {self.status} needs paid_at")
        if self.status == "refunded" and self.refund_fen == 0:
            raise ValueError("a refunded order needs refund_fen")
        return self
