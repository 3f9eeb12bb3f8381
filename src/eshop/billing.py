"""billing (REST): ``POST /charges`` charges an order once; ``POST /refunds`` refunds it once.

Only the last four digits of a card are stored, and no card number is ever logged.  Both calls
are idempotent per order, so a client that retries after a timeout never charges twice.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field
from sqlalchemy import Connection, select, update

from eshop import db
from eshop.config import Config
from eshop.service import http_app, serve_http


class ChargeRequest(BaseModel):
    order_id: str = Field(min_length=1, max_length=40)
    amount_cents: int = Field(ge=0)
    card_number: str = Field(pattern=r"^\d{12,19}$")


class RefundRequest(BaseModel):
    order_id: str = Field(min_length=1, max_length=40)


def charge(connection: Connection, request: ChargeRequest) -> dict[str, Any]:
    query = select(db.charges).where(db.charges.c.order_id == request.order_id)
    existing = connection.execute(query).mappings().first()
    if existing is not None:
        return dict(existing)
    row: dict[str, Any] = {
        "order_id": request.order_id,
        "charge_id": f"ch-{uuid.uuid4().hex[:12]}",
        "amount_cents": request.amount_cents,
        "card_last4": request.card_number[-4:],
        "status": "CHARGED",
    }
    connection.execute(db.charges.insert().values(**row))
    return row


def refund(connection: Connection, order_id: str) -> dict[str, Any] | None:
    connection.execute(update(db.charges).where(db.charges.c.order_id == order_id).values(status="REFUNDED"))
    row = connection.execute(select(db.charges).where(db.charges.c.order_id == order_id)).mappings().first()
    return dict(row) if row is not None else None


def create_app(config: Config) -> FastAPI:
    database = db.Database(config.database_url)
    database.create_tables()
    app = http_app("billing", config)

    @app.post("/charges", status_code=201)
    async def post_charge(request: ChargeRequest) -> dict[str, Any]:
        return await database.transaction(lambda c: charge(c, request))

    @app.post("/refunds")
    async def post_refund(request: RefundRequest) -> dict[str, Any]:
        row = await database.transaction(lambda c: refund(c, request.order_id))
        if row is None:
            raise HTTPException(404, f"no charge for order {request.order_id!r}")
        return row

    @app.get("/charges/{order_id}")
    async def get_charge(order_id: str) -> dict[str, Any]:
        row = await database.transaction(
            lambda c: (
                c.execute(select(db.charges).where(db.charges.c.order_id == order_id)).mappings().first()
            )
        )
        if row is None:
            raise HTTPException(404, f"no charge for order {order_id!r}")
        return dict(row)

    return app


def main() -> None:
    serve_http(create_app)


if __name__ == "__main__":
    main()
