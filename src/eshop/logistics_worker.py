"""logistics-worker (group ``logistics``): schedules a shipment for every reserved order and
publishes ``ShipmentScheduled`` to ``shipments``; one shipment per order, however often the
event arrives."""

from __future__ import annotations

import uuid

from sqlalchemy import Connection, select

from eshop import db, events
from eshop.config import Config
from eshop.kafka import Publisher, Worker
from eshop.service import run_worker

CARRIERS = ("parcelfast", "roadrunner", "owlpost")


def schedule(connection: Connection, order_id: str) -> tuple[str, str]:
    row = connection.execute(
        select(db.shipments.c.shipment_id, db.shipments.c.carrier).where(db.shipments.c.order_id == order_id)
    ).first()
    if row is not None:
        return row.shipment_id, row.carrier
    shipment_id = f"sh-{uuid.uuid4().hex[:12]}"
    carrier = CARRIERS[sum(order_id.encode()) % len(CARRIERS)]
    connection.execute(
        db.shipments.insert().values(order_id=order_id, shipment_id=shipment_id, carrier=carrier)
    )
    return shipment_id, carrier


def build(config: Config) -> Worker:
    database = db.Database(config.database_url)
    database.create_tables()
    publisher = Publisher(config)

    async def on_reserved(event: events.Event) -> None:
        shipment_id, carrier = await database.transaction(lambda c: schedule(c, event.order_id))
        await publisher.publish(
            events.SHIPMENTS,
            events.ShipmentScheduled(
                event_id=f"{event.order_id}:shipped",
                order_id=event.order_id,
                shipment_id=shipment_id,
                carrier=carrier,
            ),
        )

    return Worker(config, "logistics", [events.INVENTORY], {events.InventoryReserved: on_reserved}, publisher)


def main() -> None:
    run_worker(build)


if __name__ == "__main__":
    main()
