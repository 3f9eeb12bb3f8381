"""Our HTTP policies on every web stack ``instrument()`` loads — Flask (WSGI), uvicorn and
FastAPI (ASGI), requests, aiohttp — over real sockets on 127.0.0.1: the edge's
inbound-context policy, and business keys carried back in the ``baggage`` response header."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry import baggage, context, trace
from opentelemetry.instrumentation.propagators import (
    get_global_response_propagator,
    set_global_response_propagator,
)

from tests.conftest import PROVIDER, one
from tests.served import Served, Uvicorn, served_aiohttp
from tracebridge import business_keys
from tracebridge.business_keys import BusinessKeysProcessor, BusinessKeysResponsePropagator
from tracebridge.instrument import instrument, uninstrument

flask = pytest.importorskip("flask")
requests = pytest.importorskip("requests")

tracer = trace.get_tracer("tests")


@pytest.fixture(autouse=True, params=["light", "upstream"])
def http_spans(request, monkeypatch) -> Iterator[str]:
    """Every policy holds with our light HTTP spans and with the upstream instrumentations
    (``TRACEBRIDGE_HTTP_SPANS``); each test instruments what it needs, and nothing stays
    instrumented for the next."""
    monkeypatch.setenv("TRACEBRIDGE_HTTP_SPANS", request.param)
    yield request.param
    uninstrument()


CALLER = "00-" + "e" * 32 + "-" + "f" * 16 + "-01"


def keys_processor() -> BusinessKeysProcessor:
    processor = next(
        p for p in PROVIDER._active_span_processor._span_processors if isinstance(p, BusinessKeysProcessor)
    )
    return processor


@pytest.fixture
def business_keys_on() -> Iterator[BusinessKeysProcessor]:
    processor = keys_processor()
    business_keys.set_active(processor)
    previous = get_global_response_propagator()
    set_global_response_propagator(BusinessKeysResponsePropagator())
    yield processor
    set_global_response_propagator(previous)
    business_keys.set_active(None)


@pytest.fixture
def flask_traced(monkeypatch, spans) -> Iterator[None]:

    yield


def order_app():
    """A Flask app that learns an order id mid-request, as eshop's order service does."""
    app = flask.Flask("orders")

    @app.post("/orders")
    def create() -> dict[str, str]:
        context.attach(baggage.set_baggage("order.id", "o-77"))
        with tracer.start_as_current_span("store order"):
            pass
        return {"id": "o-77"}

    return app


@pytest.mark.parametrize("policy", ["trust", "drop"])
def test_flask_server_applies_the_inbound_context_policy(monkeypatch, flask_traced, spans, policy) -> None:
    monkeypatch.setenv("TRACEBRIDGE_INBOUND_CONTEXT", policy)
    assert "flask" in instrument(only=("flask",))
    with Served(order_app()) as served:
        response = requests.post(
            f"{served.url}/orders", headers={"traceparent": CALLER, "baggage": "x=1"}, timeout=5
        )
    assert response.status_code == 200
    server = one(spans, "POST /orders")
    assert server.kind is trace.SpanKind.SERVER
    if policy == "trust":
        assert server.parent.span_id == int("f" * 16, 16) and server.context.trace_id == int("e" * 32, 16)
    else:
        assert server.parent is None and server.context.trace_id != int("e" * 32, 16)


def test_flask_server_sends_learned_business_keys_back(flask_traced, business_keys_on, spans) -> None:
    instrument(only=("flask",))
    with Served(order_app()) as served:
        response = requests.post(f"{served.url}/orders", headers={"traceparent": CALLER}, timeout=5)
    assert response.headers["baggage"] == "order.id=o-77"
    assert one(spans, "POST /orders").attributes["order.id"] == "o-77"


class BaggageAnswer(BaseHTTPRequestHandler):
    """A server (in another service, say) that learned ``order.id`` and says so."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("baggage", "order.id=o-88,secret=never")
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def baggage_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaggageAnswer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_requests_client_adopts_business_keys_from_the_response(
    baggage_server, business_keys_on, spans
) -> None:
    assert "requests" in instrument(only=("requests",))
    with tracer.start_as_current_span("handler") as handler:
        requests.get(f"{baggage_server}/stock", timeout=5)
    assert business_keys_on.keys_for(handler.get_span_context().trace_id) == {"order.id": "o-88"}
    client = one(spans, "GET")
    assert client.kind is trace.SpanKind.CLIENT
    assert client.attributes["order.id"] == "o-88" and "secret" not in client.attributes
    assert one(spans, "handler").attributes["order.id"] == "o-88"


async def test_aiohttp_client_adopts_business_keys_from_the_response(
    baggage_server, business_keys_on, spans
) -> None:
    aiohttp = pytest.importorskip("aiohttp")

    assert "aiohttp-client" in instrument(only=("aiohttp-client",))
    with tracer.start_as_current_span("handler") as handler:
        async with aiohttp.ClientSession() as session, session.get(f"{baggage_server}/stock") as response:
            assert response.status == 200
    assert business_keys_on.keys_for(handler.get_span_context().trace_id) == {"order.id": "o-88"}
    client = one(spans, "GET")
    assert client.kind is trace.SpanKind.CLIENT and client.attributes["order.id"] == "o-88"


async def test_aiohttp_server_applies_the_drop_policy(monkeypatch, spans) -> None:
    aiohttp = pytest.importorskip("aiohttp")
    from aiohttp import web

    monkeypatch.setenv("TRACEBRIDGE_INBOUND_CONTEXT", "drop")
    assert "aiohttp-server" in instrument(only=("aiohttp-server",))

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hi")

    app = web.Application()
    app.router.add_get("/hello", hello)
    async with (
        served_aiohttp(app) as url,
        aiohttp.ClientSession() as session,
        session.get(f"{url}/hello", headers={"traceparent": CALLER}) as r,
    ):
        assert r.status == 200
    (server,) = [s for s in spans.get_finished_spans() if s.kind is trace.SpanKind.SERVER]
    assert server.parent is None and server.context.trace_id != int("e" * 32, 16)


async def plain_asgi_app(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"hi"})


@pytest.fixture
def uvicorn_traced(monkeypatch, spans) -> Iterator[None]:
    yield


@pytest.mark.parametrize("policy", ["trust", "drop"])
def test_a_plain_asgi_app_gets_server_spans_and_the_policy(
    monkeypatch, uvicorn_traced, spans, policy
) -> None:
    monkeypatch.setenv("TRACEBRIDGE_INBOUND_CONTEXT", policy)
    assert "uvicorn" in instrument(only=("uvicorn",))
    with Uvicorn(plain_asgi_app) as url:
        assert requests.get(f"{url}/hello", headers={"traceparent": CALLER}, timeout=5).text == "hi"
    (server,) = [s for s in spans.get_finished_spans() if s.kind is trace.SpanKind.SERVER]
    assert server.attributes.get("http.target", server.attributes.get("url.path")) == "/hello"
    assert [s.name for s in spans.get_finished_spans()] == [server.name]  # no per-message spans
    if policy == "trust":
        assert server.parent.span_id == int("f" * 16, 16)
    else:
        assert server.parent is None


def test_an_instrumented_fastapi_app_is_not_traced_twice(uvicorn_traced, spans, http_spans) -> None:
    import fastapi

    done = set(instrument(only=("uvicorn", "fastapi")))
    assert {"uvicorn", "starlette" if http_spans == "light" else "fastapi"} <= done
    app = fastapi.FastAPI()  # made after instrument(), as under tracebridge run

    @app.get("/stock/{sku}")
    async def stock(sku: str) -> dict[str, str]:
        return {"sku": sku}

    with Uvicorn(app) as url:
        assert requests.get(f"{url}/stock/MUG-7", timeout=5).json() == {"sku": "MUG-7"}
    servers = [s for s in spans.get_finished_spans() if s.kind is trace.SpanKind.SERVER]
    assert [s.name for s in servers] == ["GET /stock/{sku}"]


async def test_aiohttp_server_sends_learned_business_keys_back(business_keys_on, spans) -> None:
    aiohttp = pytest.importorskip("aiohttp")
    from aiohttp import web

    assert "aiohttp-server" in instrument(only=("aiohttp-server",))

    async def create(request: web.Request) -> web.Response:
        context.attach(baggage.set_baggage("order.id", "o-99"))
        with tracer.start_as_current_span("store order"):
            pass
        return web.json_response({"id": "o-99"})

    app = web.Application()
    app.router.add_post("/orders", create)
    async with (
        served_aiohttp(app) as url,
        aiohttp.ClientSession() as session,
        session.post(
            f"{url}/orders",
            headers={"traceparent": "00-" + "9" * 32 + "-" + "8" * 16 + "-01"},
        ) as response,
    ):
        assert response.status == 200
        assert response.headers["baggage"] == "order.id=o-99"
    (server,) = [s for s in spans.get_finished_spans() if s.kind is trace.SpanKind.SERVER]
    assert server.attributes["order.id"] == "o-99"
