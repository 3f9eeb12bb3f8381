"""The SQL layer: SQLAlchemy Core tables and a small async facade, SQLite or PostgreSQL alike.

Only portable SQL is used (no ``INSERT OR IGNORE`` / ``ON CONFLICT``): idempotency comes from
primary keys, and a duplicate insert is recognised by :class:`sqlalchemy.exc.IntegrityError`,
which both dialects raise.  Blocking driver calls run in a worker thread so an event loop
serving HTTP or Kafka never stalls on the disk.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    event,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

T = TypeVar("T")
metadata = MetaData()

orders = Table(
    "orders",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("customer_email", String(320), nullable=False),
    Column("total_cents", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at_ms", BigInteger, nullable=False),
)
order_lines = Table(
    "order_lines",
    metadata,
    Column("order_id", String(40), primary_key=True),
    Column("sku", String(64), primary_key=True),
    Column("quantity", Integer, nullable=False),
    Column("price_cents", BigInteger, nullable=False),
)
order_history = Table(
    "order_history",
    metadata,
    Column("order_id", String(40), primary_key=True),
    Column("status", String(16), primary_key=True),
    Column("at_ms", BigInteger, nullable=False),
)
stock = Table(
    "stock",
    metadata,
    Column("sku", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("price_cents", BigInteger, nullable=False),
    Column("available", Integer, nullable=False),
)
reservations = Table(
    "reservations",
    metadata,
    Column("order_id", String(40), primary_key=True),
    Column("outcome", String(16), nullable=False),  # RESERVED | REJECTED
    Column("reason", String(200), nullable=False, default=""),
)
charges = Table(
    "charges",
    metadata,
    Column("order_id", String(40), primary_key=True),
    Column("charge_id", String(40), nullable=False),
    Column("amount_cents", BigInteger, nullable=False),
    Column("card_last4", String(4), nullable=False),
    Column("status", String(16), nullable=False),  # CHARGED | REFUNDED
)
shipments = Table(
    "shipments",
    metadata,
    Column("order_id", String(40), primary_key=True),
    Column("shipment_id", String(40), nullable=False),
    Column("carrier", String(40), nullable=False),
)
recipients = Table(
    "recipients",
    metadata,
    Column("order_id", String(40), primary_key=True),
    Column("email", String(320), nullable=False),
)
mails = Table(
    "mails",
    metadata,
    Column("idempotency_key", String(120), primary_key=True),
    Column("order_id", String(40), nullable=False, index=True),
    Column("recipient", String(320), nullable=False),
    Column("subject", String(200), nullable=False),
    Column("sent_at_ms", BigInteger, nullable=False),
)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Several processes share one file (order + order-status-worker): WAL lets readers run
    # beside the writer, and the busy timeout makes writers queue instead of failing.
    # busy_timeout first: switching to WAL takes a lock another process may be holding.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


class Database:
    """One engine per service; :meth:`transaction` runs a function in one transaction, off-loop."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: Engine = create_engine(url, pool_pre_ping=True)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)

    def create_tables(self) -> None:
        # Processes of one domain (replicas, a service and its worker) may start together on
        # one database; the loser of a check-then-create race sees "already exists" (or, on
        # PostgreSQL, a duplicate catalogue row) and checks again.  Every retry finds more
        # tables in place, so this ends.
        for attempt in range(50):
            try:
                metadata.create_all(self.engine)
                return
            except (OperationalError, ProgrammingError, IntegrityError):
                if attempt == 49:
                    raise
                time.sleep(0.02 + random.random() * 0.05)

    async def transaction(self, work: Callable[[Connection], T]) -> T:
        return await asyncio.to_thread(self.run_sync, work)

    def run_sync(self, work: Callable[[Connection], T]) -> T:
        with self.engine.begin() as connection:
            return work(connection)

    def close(self) -> None:
        self.engine.dispose()
