"""inventory (REST): what is in stock and at what price.  ``GET /stock/{sku}``."""

from __future__ import annotations

import contextlib
from typing import Any

from fastapi import FastAPI, HTTPException
from sqlalchemy import Connection, select
from sqlalchemy.exc import IntegrityError

from eshop import db
from eshop.config import Config
from eshop.service import http_app, serve_http

CATALOGUE: dict[str, tuple[str, int]] = {
    "BOOK-42": ("Designing Data-Intensive Applications", 4500),
    "MUG-7": ("Tracing mug", 1200),
    "LAMP-3": ("Desk lamp", 3900),
    "PEN-9": ("Fountain pen", 2500),
}


def seed(database: db.Database, units: int) -> None:
    """Create the tables and the catalogue once; a restart keeps the stock it had."""
    database.create_tables()

    def fill(connection: Connection) -> None:
        present = set(connection.scalars(select(db.stock.c.sku)))
        missing = [
            {"sku": sku, "name": name, "price_cents": price, "available": units}
            for sku, (name, price) in CATALOGUE.items()
            if sku not in present
        ]
        if missing:
            connection.execute(db.stock.insert(), missing)

    # inventory and inventory-worker seed the same database; the loser of a race is fine.
    with contextlib.suppress(IntegrityError):
        database.run_sync(fill)


def create_app(config: Config) -> FastAPI:
    database = db.Database(config.database_url)
    seed(database, config.initial_stock)
    app = http_app("inventory", config, shutdown=lambda app: _close(database))

    @app.get("/stock/{sku}")
    async def stock(sku: str) -> dict[str, Any]:
        def read(connection: Connection) -> Any:
            return connection.execute(select(db.stock).where(db.stock.c.sku == sku)).mappings().first()

        row = await database.transaction(read)
        if row is None:
            raise HTTPException(404, f"unknown SKU {sku!r}")
        return dict(row)

    return app


async def _close(database: db.Database) -> None:
    database.close()


def main() -> None:
    serve_http(create_app)


if __name__ == "__main__":
    main()
