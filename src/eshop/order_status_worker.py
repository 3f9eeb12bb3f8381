"""order-status-worker (group ``order-status``): moves orders along CREATED → RESERVED →
SHIPPED, or to CANCELLED (refunding the charge through billing) when inventory rejects them.

Statuses only move forward, so events arriving twice or out of order (``shipments`` can
overtake ``inventory``) leave the order where the furthest event put it.
"""

from __future__ import annotations

import time

import httpx
from sqlalchemy import Connection, select, update
from sqlalchemy.exc import IntegrityError

from eshop import db, events
from eshop.config import Config
from eshop.kafka import Publisher, Worker
from eshop.service import run_worker

RANK = {"CREATED": 0, "RESERVED": 1, "SHIPPED": 2, "CANCELLED": 2}
FINAL = frozenset({"SHIPPED", "CANCELLED"})


def advance(connection: Connection, order_id: str, status: str) -> bool:
    """Move the order to ``status`` if that is forward; record it in the history either way."""
    current = connection.scalar(select(db.orders.c.status).where(db.orders.c.id == order_id))
    if current is None:
        raise LookupError(f"unknown order {order_id}")
    try:
        with connection.begin_nested():
            connection.execute(
                db.order_history.insert().values(
                    order_id=order_id, status=status, at_ms=int(time.time() * 1000)
                )
            )
    except IntegrityError:
        pass
    if RANK[status] <= RANK[current]:
        return False
    connection.execute(update(db.orders).where(db.orders.c.id == order_id).values(status=status))
    return True


def build(config: Config) -> Worker:
    database = db.Database(config.database_url)
    database.create_tables()
    billing = httpx.AsyncClient(base_url=config.billing_url, timeout=10)

    async def on_reserved(event: events.Event) -> None:
        await database.transaction(lambda c: advance(c, event.order_id, "RESERVED"))

    async def on_rejected(event: events.Event) -> None:
        response = await billing.post("/refunds", json={"order_id": event.order_id})
        response.raise_for_status()
        await database.transaction(lambda c: advance(c, event.order_id, "CANCELLED"))

    async def on_shipped(event: events.Event) -> None:
        await database.transaction(lambda c: advance(c, event.order_id, "SHIPPED"))

    return Worker(
        config,
        "order-status",
        [events.INVENTORY, events.SHIPMENTS],
        {
            events.InventoryReserved: on_reserved,
            events.InventoryRejected: on_rejected,
            events.ShipmentScheduled: on_shipped,
        },
        Publisher(config),
    )


def main() -> None:
    run_worker(build)


if __name__ == "__main__":
    main()
