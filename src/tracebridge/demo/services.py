"""The demo's services: plain FastAPI, httpx and aiokafka code with no tracing code at all.

Each runs as its own process under ``tracebridge run`` (``python -m tracebridge.demo.services
NAME``) and reads only its own settings from the environment; the trace that joins them is
entirely tracebridge's doing.

    web      POST /orders      → topic "orders"
    worker   "orders"          → POST mailer /sendEmail, then topic "shipments"
    mailer   POST /sendEmail
    shipper  "shipments"       → logs the shipment
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

BOOTSTRAP = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
CONSUMER_TIMINGS = {
    "session_timeout_ms": int(os.environ.get("KAFKA_SESSION_TIMEOUT_MS", "6000")),
    "heartbeat_interval_ms": int(os.environ.get("KAFKA_HEARTBEAT_INTERVAL_MS", "1000")),
}


def web_app() -> Any:
    from aiokafka import AIOKafkaProducer
    from fastapi import FastAPI

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP)
        await app.state.producer.start()
        yield
        await app.state.producer.stop()

    app = FastAPI(lifespan=lifespan)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/orders", status_code=202)
    async def place_order(order: dict[str, Any]) -> dict[str, str]:
        order_id = str(order.get("id") or uuid.uuid4())
        event = {"type": "OrderCreated", "order_id": order_id, "email": order.get("email", "")}
        await app.state.producer.send_and_wait("orders", json.dumps(event).encode(), key=order_id.encode())
        return {"order_id": order_id}

    return app


def mailer_app() -> Any:
    from fastapi import FastAPI

    app = FastAPI()
    sent: list[str] = []

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/sendEmail")
    async def send_email(mail: dict[str, Any]) -> dict[str, int]:
        sent.append(str(mail.get("order_id")))
        return {"sent": len(sent)}

    return app


async def worker() -> None:
    import httpx
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    mailer = os.environ["MAILER_URL"]
    consumer = AIOKafkaConsumer(
        "orders",
        bootstrap_servers=BOOTSTRAP,
        group_id="worker",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **CONSUMER_TIMINGS,
    )
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP)
    await producer.start()
    await consumer.start()
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            async for record in consumer:
                event = json.loads(record.value)
                response = await client.post(f"{mailer}/sendEmail", json={"order_id": event["order_id"]})
                response.raise_for_status()
                shipment = {"type": "ShipmentScheduled", "order_id": event["order_id"]}
                await producer.send_and_wait("shipments", json.dumps(shipment).encode(), key=record.key)
                await consumer.commit()
    finally:
        await consumer.stop()
        await producer.stop()


async def shipper() -> None:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        "shipments",
        bootstrap_servers=BOOTSTRAP,
        group_id="shipper",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **CONSUMER_TIMINGS,
    )
    await consumer.start()
    try:
        async for record in consumer:
            print(f"shipped {json.loads(record.value)['order_id']}", flush=True)
            await consumer.commit()
    finally:
        await consumer.stop()


def main(argv: list[str]) -> None:
    name = argv[1] if len(argv) > 1 else ""
    if name in ("web", "mailer"):
        import uvicorn

        app = web_app() if name == "web" else mailer_app()
        uvicorn.run(app, host="127.0.0.1", port=int(os.environ["PORT"]), log_level="warning")
    elif name == "worker":
        asyncio.run(worker())
    elif name == "shipper":
        asyncio.run(shipper())
    else:
        raise SystemExit("usage: python -m tracebridge.demo.services web|mailer|worker|shipper")


if __name__ == "__main__":
    main(sys.argv)
