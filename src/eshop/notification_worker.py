"""notification-worker (group ``notification``): mails the customer when an order is created
and when it ships, through the notification service's ``POST /sendEmail``.

The recipient is remembered from ``OrderCreated`` (events after it carry no e-mail address);
each mail's idempotency key is the event id, so a redelivery never mails twice.
"""

from __future__ import annotations

import httpx
from sqlalchemy import Connection, select
from sqlalchemy.exc import IntegrityError

from eshop import db, events
from eshop.config import Config
from eshop.kafka import Publisher, Worker
from eshop.service import run_worker


class RecipientUnknown(LookupError):
    """A shipment mail for an order whose confirmation was not handled yet: retried."""


def remember(connection: Connection, order_id: str, email: str) -> None:
    try:
        with connection.begin_nested():
            connection.execute(db.recipients.insert().values(order_id=order_id, email=email))
    except IntegrityError:
        pass


def build(config: Config) -> Worker:
    database = db.Database(config.database_url)
    database.create_tables()
    client = httpx.AsyncClient(base_url=config.notification_url, timeout=10)

    async def send(event: events.Event, to: str, subject: str) -> None:
        response = await client.post(
            "/sendEmail",
            json={
                "idempotency_key": event.event_id,
                "order_id": event.order_id,
                "to": to,
                "subject": subject,
            },
        )
        response.raise_for_status()

    async def on_order_created(event: events.Event) -> None:
        assert isinstance(event, events.OrderCreated)
        await database.transaction(lambda c: remember(c, event.order_id, event.customer_email))
        await send(event, event.customer_email, f"Order {event.order_id} confirmed")

    async def on_shipment_scheduled(event: events.Event) -> None:
        assert isinstance(event, events.ShipmentScheduled)
        to = await database.transaction(
            lambda c: c.scalar(
                select(db.recipients.c.email).where(db.recipients.c.order_id == event.order_id)
            )
        )
        if to is None:
            raise RecipientUnknown(f"no recipient known for order {event.order_id}")
        await send(event, to, f"Order {event.order_id} shipped with {event.carrier}")

    return Worker(
        config,
        "notification",
        [events.ORDERS, events.SHIPMENTS],
        {events.OrderCreated: on_order_created, events.ShipmentScheduled: on_shipment_scheduled},
        Publisher(config),
    )


def main() -> None:
    run_worker(build)


if __name__ == "__main__":
    main()
