"""inventory-worker (group ``inventory``): reserves stock for each ``OrderCreated`` and
publishes ``InventoryReserved`` or ``InventoryRejected`` to ``inventory``.

Idempotent: the reservation row (keyed by order) and the stock change commit together, so a
redelivered event finds its reservation and only re-publishes the same outcome (same event id).
"""

from __future__ import annotations

from sqlalchemy import Connection, select, update

from eshop import db, events
from eshop.config import Config
from eshop.inventory import seed
from eshop.kafka import Publisher, Worker
from eshop.service import run_worker


def reserve(connection: Connection, order: events.OrderCreated) -> tuple[str, str]:
    """(outcome, reason) for the order; reserves every line or none."""
    existing = connection.execute(
        select(db.reservations.c.outcome, db.reservations.c.reason).where(
            db.reservations.c.order_id == order.order_id
        )
    ).first()
    if existing is not None:
        return existing.outcome, existing.reason
    outcome, reason = "RESERVED", ""
    for line in order.lines:
        available = connection.scalar(select(db.stock.c.available).where(db.stock.c.sku == line.sku))
        if available is None or available < line.quantity:
            outcome, reason = "REJECTED", f"{line.sku}: {available or 0} available, {line.quantity} ordered"
            break
    if outcome == "RESERVED":
        for line in order.lines:
            connection.execute(
                update(db.stock)
                .where(db.stock.c.sku == line.sku)
                .values(available=db.stock.c.available - line.quantity)
            )
    connection.execute(
        db.reservations.insert().values(order_id=order.order_id, outcome=outcome, reason=reason)
    )
    return outcome, reason


def build(config: Config) -> Worker:
    database = db.Database(config.database_url)
    seed(database, config.initial_stock)
    publisher = Publisher(config)

    async def on_order_created(event: events.Event) -> None:
        assert isinstance(event, events.OrderCreated)
        outcome, reason = await database.transaction(lambda c: reserve(c, event))
        result: events.Event
        if outcome == "RESERVED":
            result = events.InventoryReserved(event_id=f"{event.order_id}:reserved", order_id=event.order_id)
        else:
            result = events.InventoryRejected(
                event_id=f"{event.order_id}:rejected", order_id=event.order_id, reason=reason
            )
        await publisher.publish(events.INVENTORY, result)

    return Worker(config, "inventory", [events.ORDERS], {events.OrderCreated: on_order_created}, publisher)


def main() -> None:
    run_worker(build)


if __name__ == "__main__":
    main()
