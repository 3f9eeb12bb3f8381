"""logistics-worker (group ``logistics``): schedules a shipment for every reserved order and
publishes ``ShipmentScheduled`` to ``shipments``; one shipment per order, however often the
event arrives.  A blocking kafka-python worker: ``for record in consumer`` and
``KafkaProducer.send``."""

from __future__ import annotations

import uuid

from sqlalchemy import Connection, select

from eshop import db, events
from eshop.config import Config
from eshop.service import run_blocking_worker
from eshop.sync_kafka import KafkaPythonClient, SyncWorker

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


def build(config: Config) -> SyncWorker:
    database = db.Database(config.database_url)
    database.create_tables()
    worker: SyncWorker

    def on_reserved(event: events.Event) -> None:
        shipment_id, carrier = database.run_sync(lambda c: schedule(c, event.order_id))
        worker.publish(
            events.SHIPMENTS,
            events.ShipmentScheduled(
                event_id=f"{event.order_id}:shipped",
                order_id=event.order_id,
                shipment_id=shipment_id,
                carrier=carrier,
            ),
        )

    worker = SyncWorker(
        config,
        "logistics",
        {events.InventoryReserved: on_reserved},
        KafkaPythonClient(config, "logistics", [events.INVENTORY]),
    )
    return worker


def main() -> None:
    run_blocking_worker(build)


if __name__ == "__main__":
    main()
