"""notification (REST): ``POST /sendEmail`` "sends" a mail once per idempotency key and records
it; ``GET /mails?order_id=`` lists what was sent (the demo and the tests count on it)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, EmailStr, Field
from sqlalchemy import Connection, select
from sqlalchemy.exc import IntegrityError

from eshop import db
from eshop.config import Config
from eshop.service import http_app, serve_http


class Mail(BaseModel):
    idempotency_key: str = Field(min_length=1, max_length=120)
    order_id: str = Field(min_length=1, max_length=40)
    to: EmailStr
    subject: str = Field(max_length=200)


def record(connection: Connection, mail: Mail) -> bool:
    """True if this mail is new; a repeated key is acknowledged and not sent again."""
    try:
        with connection.begin_nested():
            connection.execute(
                db.mails.insert().values(
                    idempotency_key=mail.idempotency_key,
                    order_id=mail.order_id,
                    recipient=str(mail.to),
                    subject=mail.subject,
                    sent_at_ms=int(time.time() * 1000),
                )
            )
    except IntegrityError:
        return False
    return True


def create_app(config: Config) -> FastAPI:
    database = db.Database(config.database_url)
    database.create_tables()
    app = http_app("notification", config)

    @app.post("/sendEmail")
    async def send_email(mail: Mail) -> dict[str, Any]:
        sent = await database.transaction(lambda c: record(c, mail))
        return {"sent": sent, "duplicate": not sent}

    @app.get("/mails")
    async def list_mails(order_id: str) -> list[dict[str, Any]]:
        rows = await database.transaction(
            lambda c: (
                c.execute(
                    select(db.mails.c.idempotency_key, db.mails.c.subject, db.mails.c.sent_at_ms)
                    .where(db.mails.c.order_id == order_id)
                    .order_by(db.mails.c.sent_at_ms)
                )
                .mappings()
                .all()
            )
        )
        return [dict(row) for row in rows]

    return app


def main() -> None:
    serve_http(create_app)


if __name__ == "__main__":
    main()
