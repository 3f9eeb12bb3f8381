"""Versioned event payloads on the wire, and the one decoder every worker uses.

Each event is JSON with ``type`` and ``version``; a consumer accepts the versions it knows and
rejects the rest with a reason (the worker routes them to ``{topic}.dlq``) rather than guessing.
``event_id`` is deterministic per (order, fact), so a re-published event is recognisably the
same event and handlers can be idempotent on it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

ORDERS = "orders"
INVENTORY = "inventory"
SHIPMENTS = "shipments"
TOPICS = (ORDERS, INVENTORY, SHIPMENTS)


def dead_letter_topic(topic: str) -> str:
    return f"{topic}.dlq"


def _now() -> datetime:
    return datetime.now(UTC)


class Event(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    event_id: str
    order_id: str
    version: int = 1
    occurred_at: datetime = Field(default_factory=_now)

    def encode(self) -> bytes:
        return self.model_dump_json().encode()


class Line(BaseModel):
    model_config = ConfigDict(frozen=True)

    sku: str
    quantity: int = Field(gt=0)


class OrderCreated(Event):
    type: Literal["OrderCreated"] = "OrderCreated"
    customer_email: str
    lines: list[Line]
    total_cents: int

    @classmethod
    def for_order(cls, order_id: str, email: str, lines: list[Line], total_cents: int) -> OrderCreated:
        return cls(
            event_id=f"{order_id}:created",
            order_id=order_id,
            customer_email=email,
            lines=lines,
            total_cents=total_cents,
        )


class InventoryReserved(Event):
    type: Literal["InventoryReserved"] = "InventoryReserved"


class InventoryRejected(Event):
    type: Literal["InventoryRejected"] = "InventoryRejected"
    reason: str


class ShipmentScheduled(Event):
    type: Literal["ShipmentScheduled"] = "ShipmentScheduled"
    shipment_id: str
    carrier: str


_KNOWN: dict[str, tuple[type[Event], frozenset[int]]] = {
    "OrderCreated": (OrderCreated, frozenset({1})),
    "InventoryReserved": (InventoryReserved, frozenset({1})),
    "InventoryRejected": (InventoryRejected, frozenset({1})),
    "ShipmentScheduled": (ShipmentScheduled, frozenset({1})),
}


class UndecodableEvent(ValueError):
    """A record no handler should see; ``reason`` says why, for the dead-letter record."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def decode(payload: bytes | None) -> Event:
    """The event in ``payload``, or :class:`UndecodableEvent` saying what is wrong with it."""
    if not payload:
        raise UndecodableEvent("empty payload")
    try:
        document = json.loads(payload)
    except (UnicodeDecodeError, ValueError) as error:
        raise UndecodableEvent(f"not JSON: {error}") from None
    except RecursionError:  # a poison pill of nested brackets must not stop the worker
        raise UndecodableEvent("not JSON: nested deeper than the parser allows") from None
    if not isinstance(document, dict):
        raise UndecodableEvent("not a JSON object")
    kind = document.get("type")
    known = _KNOWN.get(kind) if isinstance(kind, str) else None
    if known is None:
        raise UndecodableEvent(f"unknown event type {str(kind)[:64]!r}")
    model, versions = known
    version = document.get("version", 1)
    if version not in versions:
        raise UndecodableEvent(f"unsupported {kind} version {str(version)[:16]!r}")
    try:
        return model.model_validate(document)
    except ValidationError as error:
        raise UndecodableEvent(
            f"invalid {kind}: {error.error_count()} error(s): {error.errors()[0]['msg']}"
        ) from None
