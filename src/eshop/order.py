"""order (GraphQL): ``createOrder(input)`` and ``order(id)``, on strawberry + FastAPI.

``createOrder`` validates the input, prices every line with inventory (``GET /stock/{sku}``),
charges billing (``POST /charges``), stores the order and publishes ``OrderCreated`` to
``orders`` keyed by the order id.  Invalid input is a GraphQL error and publishes nothing.
The single tracing-related line in eshop's business code is here: ``order.id`` goes into
baggage, which tracebridge copies onto every span of the order, in every service.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import httpx
import strawberry
from email_validator import EmailNotValidError, validate_email
from fastapi import FastAPI
from opentelemetry import baggage, context
from sqlalchemy import Connection, select
from strawberry.types import Info

from eshop import db, events
from eshop.config import Config
from eshop.kafka import AIOProducerPublisher
from eshop.service import http_app, serve_http

logger = logging.getLogger("eshop.order")


class OrderRejected(Exception):
    """Shown to the GraphQL client as the error message; nothing was charged or published."""


@strawberry.type
class StatusChange:
    status: str
    at_ms: float


@strawberry.type
class OrderLine:
    sku: str
    quantity: int
    price_cents: int


@strawberry.type
class Order:
    id: strawberry.ID
    status: str
    total_cents: int
    lines: list[OrderLine]
    history: list[StatusChange]


@strawberry.input
class OrderLineInput:
    sku: str
    quantity: int


@strawberry.input
class CreateOrderInput:
    email: str
    card_number: str
    lines: list[OrderLineInput]


def _validate(data: CreateOrderInput) -> str:
    """The normalised e-mail address, or :class:`OrderRejected` saying what is wrong."""
    if not data.lines:
        raise OrderRejected("an order needs at least one line")
    for line in data.lines:
        if line.quantity <= 0:
            raise OrderRejected(f"quantity of {line.sku} must be positive, got {line.quantity}")
    if len({line.sku for line in data.lines}) != len(data.lines):
        raise OrderRejected("each SKU may appear in one line only")
    digits = data.card_number.replace(" ", "")
    if not digits.isdigit() or not 12 <= len(digits) <= 19:
        raise OrderRejected("card number must be 12 to 19 digits")
    try:
        return validate_email(data.email, check_deliverability=False).normalized
    except EmailNotValidError as error:
        raise OrderRejected(f"invalid e-mail address: {error}") from None


def _load(connection: Connection, order_id: str) -> Order | None:
    row = connection.execute(select(db.orders).where(db.orders.c.id == order_id)).mappings().first()
    if row is None:
        return None
    lines = connection.execute(select(db.order_lines).where(db.order_lines.c.order_id == order_id)).mappings()
    history = connection.execute(
        select(db.order_history)
        .where(db.order_history.c.order_id == order_id)
        .order_by(db.order_history.c.at_ms)
    ).mappings()
    return Order(
        id=strawberry.ID(order_id),
        status=row["status"],
        total_cents=row["total_cents"],
        lines=[OrderLine(sku=r["sku"], quantity=r["quantity"], price_cents=r["price_cents"]) for r in lines],
        history=[StatusChange(status=r["status"], at_ms=r["at_ms"]) for r in history],
    )


def _store(connection: Connection, order_id: str, email: str, priced: list[tuple[str, int, int]]) -> None:
    now = int(time.time() * 1000)
    total = sum(quantity * price for _, quantity, price in priced)
    connection.execute(
        db.orders.insert().values(
            id=order_id, customer_email=email, total_cents=total, status="CREATED", created_at_ms=now
        )
    )
    connection.execute(
        db.order_lines.insert(),
        [{"order_id": order_id, "sku": s, "quantity": q, "price_cents": p} for s, q, p in priced],
    )
    connection.execute(db.order_history.insert().values(order_id=order_id, status="CREATED", at_ms=now))


class OrderService:
    def __init__(self, config: Config) -> None:
        self.database = db.Database(config.database_url)
        self.database.create_tables()
        self.inventory = httpx.AsyncClient(base_url=config.inventory_url, timeout=10)
        self.billing = httpx.AsyncClient(base_url=config.billing_url, timeout=10)
        self.publisher = AIOProducerPublisher(config)

    async def create(self, data: CreateOrderInput) -> Order:
        email = _validate(data)
        order_id = f"o-{uuid.uuid4().hex[:12]}"
        context.attach(baggage.set_baggage("order.id", order_id))  # the one tracing line: find me by order.id
        priced: list[tuple[str, int, int]] = []
        for line in data.lines:
            response = await self.inventory.get(f"/stock/{line.sku}")
            if response.status_code == 404:
                raise OrderRejected(f"unknown SKU {line.sku!r}")
            response.raise_for_status()
            priced.append((line.sku, line.quantity, int(response.json()["price_cents"])))
        total = sum(quantity * price for _, quantity, price in priced)
        charge = await self.billing.post(
            "/charges",
            json={
                "order_id": order_id,
                "amount_cents": total,
                "card_number": data.card_number.replace(" ", ""),
            },
        )
        if charge.status_code == 422:
            raise OrderRejected("payment declined")
        charge.raise_for_status()
        await self.database.transaction(lambda c: _store(c, order_id, email, priced))
        lines = [events.Line(sku=s, quantity=q) for s, q, _ in priced]
        created = events.OrderCreated.for_order(order_id, email, lines, total)
        await self.publisher.publish(events.ORDERS, created)
        logger.info("order %s created: %d line(s), %d cents", order_id, len(lines), total)
        order = await self.get(order_id)
        assert order is not None
        return order

    async def get(self, order_id: str) -> Order | None:
        return await self.database.transaction(lambda c: _load(c, order_id))


def create_app(config: Config) -> FastAPI:
    from strawberry.fastapi import GraphQLRouter

    service = OrderService(config)

    @strawberry.type
    class Query:
        @strawberry.field
        async def order(self, id: strawberry.ID, info: Info) -> Order | None:
            return await service.get(str(id))

    @strawberry.type
    class Mutation:
        @strawberry.mutation
        async def create_order(self, input: CreateOrderInput, info: Info) -> Order:
            return await service.create(input)

    schema = strawberry.Schema(query=Query, mutation=Mutation)

    async def startup(app: Any) -> None:
        await service.publisher.start()

    async def shutdown(app: Any) -> None:
        await service.publisher.stop()
        service.database.close()

    app = http_app("order", config, startup=startup, shutdown=shutdown)
    app.include_router(GraphQLRouter(schema, graphql_ide=None), prefix="/graphql")
    return app


def main() -> None:
    serve_http(create_app)


if __name__ == "__main__":
    main()
