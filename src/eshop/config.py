"""The only reader of the environment in eshop: ports, peers, database, Kafka, faults.

Names follow the usual twelve-factor spelling (``PORT``, ``DATABASE_URL``,
``KAFKA_BOOTSTRAP_SERVERS``, ``<PEER>_URL``); ``ESHOP_FAULT_*`` inject faults for
demonstrations and tests.  A malformed value stops the service at start with a message that
names the variable — a service that silently ran with the wrong database would be worse.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

# Every variable eshop reads, with what it means; deploy/k8s is checked against this list.
ENVIRONMENT: dict[str, str] = {
    "PORT": "HTTP port of the service (workers: their health port)",
    "DATABASE_URL": "SQLAlchemy URL of the service's database (sqlite:///... or postgresql+psycopg://...)",
    "KAFKA_BOOTSTRAP_SERVERS": "Kafka bootstrap servers, comma separated",
    "KAFKA_SESSION_TIMEOUT_MS": "consumer group session timeout",
    "KAFKA_HEARTBEAT_INTERVAL_MS": "consumer group heartbeat interval",
    "KAFKA_FETCH_MAX_WAIT_MS": "longest a fetch waits for new records",
    "ORDER_URL": "base URL of the order service (gateway's upstream)",
    "INVENTORY_URL": "base URL of the inventory service",
    "BILLING_URL": "base URL of the billing service",
    "NOTIFICATION_URL": "base URL of the notification service",
    "ESHOP_INITIAL_STOCK": "units of every catalogue SKU a new inventory database starts with",
    "ESHOP_MAX_ATTEMPTS": "deliveries of one event before it goes to the dead-letter topic",
    "ESHOP_RETRY_BACKOFF_MS": "first retry delay; doubles per attempt",
    "ESHOP_RETRY_BACKOFF_MAX_MS": "upper bound of the retry delay",
    "ESHOP_FAULT_LATENCY_MS": "fault: added to every request or event this service handles",
    "ESHOP_FAULT_ERROR_RATE": "fault: share (0..1) of requests/events that fail",
    "ESHOP_FAULT_DROP_CONTEXT": "fault: this service publishes events without trace context",
}


class ConfigError(ValueError):
    """A variable holds a value the service cannot run with."""


@dataclass(frozen=True)
class Faults:
    """Injected faults: added latency, a failure rate, and a producer that drops trace context."""

    latency_ms: float = 0.0
    error_rate: float = 0.0
    drop_context: bool = False

    @property
    def any(self) -> bool:
        return self.latency_ms > 0 or self.error_rate > 0 or self.drop_context


@dataclass(frozen=True)
class Config:
    port: int = 8080
    database_url: str = "sqlite:///eshop.db"
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    session_timeout_ms: int = 6000
    heartbeat_interval_ms: int = 1000
    fetch_max_wait_ms: int = 100
    order_url: str = "http://127.0.0.1:8081"
    inventory_url: str = "http://127.0.0.1:8082"
    billing_url: str = "http://127.0.0.1:8083"
    notification_url: str = "http://127.0.0.1:8084"
    initial_stock: int = 1000
    max_attempts: int = 4
    retry_backoff_ms: float = 100.0
    retry_backoff_max_ms: float = 2000.0
    faults: Faults = field(default_factory=Faults)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        env = os.environ if environ is None else environ
        default = cls()

        def text(name: str, fallback: str) -> str:
            return env.get(name, "").strip() or fallback

        def number(name: str, fallback: float, low: float = 0.0, high: float = float("inf")) -> float:
            raw = env.get(name, "").strip()
            if not raw:
                return fallback
            try:
                value = float(raw)
            except ValueError:
                raise ConfigError(f"{name}={raw!r} is not a number") from None
            if not low <= value <= high:
                raise ConfigError(f"{name}={raw!r} must be between {low:g} and {high:g}")
            return value

        def url(name: str, fallback: str) -> str:
            value = text(name, fallback).rstrip("/")
            if not value.startswith(("http://", "https://")):
                raise ConfigError(f"{name}={value!r} is not an http(s) URL")
            return value

        drop = text("ESHOP_FAULT_DROP_CONTEXT", "false").lower()
        if drop not in ("1", "true", "yes", "0", "false", "no"):
            raise ConfigError(f"ESHOP_FAULT_DROP_CONTEXT={drop!r} must be true or false")
        return cls(
            port=int(number("PORT", default.port, 1, 65535)),
            database_url=text("DATABASE_URL", default.database_url),
            kafka_bootstrap_servers=text("KAFKA_BOOTSTRAP_SERVERS", default.kafka_bootstrap_servers),
            session_timeout_ms=int(number("KAFKA_SESSION_TIMEOUT_MS", default.session_timeout_ms, 1000)),
            heartbeat_interval_ms=int(
                number("KAFKA_HEARTBEAT_INTERVAL_MS", default.heartbeat_interval_ms, 100)
            ),
            fetch_max_wait_ms=int(number("KAFKA_FETCH_MAX_WAIT_MS", default.fetch_max_wait_ms, 0)),
            order_url=url("ORDER_URL", default.order_url),
            inventory_url=url("INVENTORY_URL", default.inventory_url),
            billing_url=url("BILLING_URL", default.billing_url),
            notification_url=url("NOTIFICATION_URL", default.notification_url),
            initial_stock=int(number("ESHOP_INITIAL_STOCK", default.initial_stock, 0)),
            max_attempts=int(number("ESHOP_MAX_ATTEMPTS", default.max_attempts, 1, 100)),
            retry_backoff_ms=number("ESHOP_RETRY_BACKOFF_MS", default.retry_backoff_ms),
            retry_backoff_max_ms=number("ESHOP_RETRY_BACKOFF_MAX_MS", default.retry_backoff_max_ms),
            faults=Faults(
                latency_ms=number("ESHOP_FAULT_LATENCY_MS", 0.0),
                error_rate=number("ESHOP_FAULT_ERROR_RATE", 0.0, 0.0, 1.0),
                drop_context=drop in ("1", "true", "yes"),
            ),
        )
