"""notification-worker (group ``notification``): mails the customer when an order is created
and when it ships, through the notification service's ``POST /sendEmail``.

A blocking worker, as many teams write one: confluent-kafka's ``Consumer.poll()`` loop, and
``requests`` for the HTTP call.

The recipient is remembered from ``OrderCreated`` (events after it carry no e-mail address);
each mail's idempotency key is the event id, so a redelivery never mails twice.
"""

from __future__ import annotations

import requests
from sqlalchemy import Connection, select
from sqlalchemy.exc import IntegrityError

from eshop import db, events
from eshop.config import Config
from eshop.service import run_blocking_worker
from eshop.sync_kafka import ConfluentClient, SyncWorker


class RecipientUnknown(LookupError):
    """A shipment mail for an order whose confirmation was not handled yet: retried."""


def remember(connection: Connection, order_id: str, email: str) -> None:
    try:
        with connection.begin_nested():
            connection.execute(db.recipients.insert().values(order_id=order_id, email=email))
    except IntegrityError:
        pass


def build(config: Config) -> SyncWorker:
    database = db.Database(config.database_url)
    database.create_tables()
    session = requests.Session()
    topics = [events.ORDERS, events.SHIPMENTS]

    def send(event: events.Event, to: str, subject: str) -> None:
        response = session.post(
            f"{config.notification_url}/sendEmail",
            json={
                "idempotency_key": event.event_id,
                "order_id": event.order_id,
                "to": to,
                "subject": subject,
            },
            timeout=10,
        )
        response.raise_for_status()

    def on_order_created(event: events.Event) -> None:
        assert isinstance(event, events.OrderCreated)
        database.run_sync(lambda c: remember(c, event.order_id, event.customer_email))
        send(event, event.customer_email, f"Order {event.order_id} confirmed")

    def on_shipment_scheduled(event: events.Event) -> None:
        assert isinstance(event, events.ShipmentScheduled)
        to = database.run_sync(
            lambda c: c.scalar(
                select(db.recipients.c.email).where(db.recipients.c.order_id == event.order_id)
            )
        )
        if to is None:
            raise RecipientUnknown(f"no recipient known for order {event.order_id}")
        send(event, to, f"Order {event.order_id} shipped with {event.carrier}")

    return SyncWorker(
        config,
        "notification",
        {events.OrderCreated: on_order_created, events.ShipmentScheduled: on_shipment_scheduled},
        ConfluentClient(config, "notification", topics),
    )


def main() -> None:
    run_blocking_worker(build)


if __name__ == "__main__":
    main()
