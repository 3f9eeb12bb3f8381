"""Chain step 3: an aiohttp server that publishes with confluent-kafka's AIOProducer."""

import os

from aiohttp import web
from confluent_kafka.aio import AIOProducer


async def ship(request: web.Request) -> web.Response:
    producer: AIOProducer = request.app["producer"]
    delivered = await producer.produce(os.environ["TOPIC"], await request.read())
    await producer.flush()
    await delivered
    return web.json_response({"shipped": True})


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def producer_context(app: web.Application):
    app["producer"] = AIOProducer({"bootstrap.servers": os.environ["KAFKA_BOOTSTRAP_SERVERS"]}, batch_size=1)
    yield
    await app["producer"].close()


app = web.Application()
app.router.add_post("/ship", ship)
app.router.add_get("/health", health)
app.cleanup_ctx.append(producer_context)
web.run_app(app, host="127.0.0.1", port=int(os.environ["PORT"]), print=None)
