"""notification (REST, Flask on a threaded WSGI server): ``POST /sendEmail`` "sends" a mail once
per idempotency key and records it; ``GET /mails?order_id=`` lists what was sent (the demo and
the tests count on it)."""

from __future__ import annotations

import logging
import time
from typing import Any

from flask import Flask
from pydantic import BaseModel, EmailStr, Field, ValidationError
from sqlalchemy import Connection, select
from sqlalchemy.exc import IntegrityError

from eshop import db
from eshop.config import Config
from eshop.service import flask_app, serve_wsgi

logger = logging.getLogger("eshop.notification")


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


def create_app(config: Config) -> Flask:
    from flask import request

    database = db.Database(config.database_url)
    database.create_tables()
    app = flask_app("notification", config)

    @app.post("/sendEmail")
    def send_email() -> Any:
        try:
            mail = Mail.model_validate(request.get_json(force=True, silent=True))
        except ValidationError as error:
            return {"detail": error.errors(include_input=False, include_url=False)}, 422
        sent = database.run_sync(lambda c: record(c, mail))
        # One line per delivery: the tests count "sent" (at most once per key) and "duplicate".
        logger.info(
            "mail %s for order %s %s", mail.idempotency_key, mail.order_id, "sent" if sent else "duplicate"
        )
        return {"sent": sent, "duplicate": not sent}

    @app.get("/mails")
    def list_mails() -> Any:
        order_id = request.args.get("order_id")
        if not order_id:
            return {"detail": "order_id is required"}, 422
        rows = database.run_sync(
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
    serve_wsgi(create_app)


if __name__ == "__main__":
    main()
