"""Our light HTTP spans (``TRACEBRIDGE_HTTP_SPANS=light``, the default) on every stack they
cover — FastAPI/Starlette under uvicorn, Flask under werkzeug, httpx (sync and async),
requests, aiohttp — over real sockets on 127.0.0.1: exact names, kinds, parents, the stable
HTTP semantic-convention attributes, errors, the upstream environment variables (excluded
URLs, captured and sanitized headers), suppression, hostile context headers, the upstream
fallback, and OTLP encoding checked against the standard schema."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry import trace
from opentelemetry.instrumentation.utils import suppress_http_instrumentation
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from tests.conftest import one
from tests.served import Served, Uvicorn
from tests.test_otlp_wire import assert_same_as_sdk
from tracebridge.instrument import instrument, uninstrument
from tracebridge.propagation.w3c import format_traceparent

fastapi = pytest.importorskip("fastapi")
flask = pytest.importorskip("flask")
httpx = pytest.importorskip("httpx")
requests = pytest.importorskip("requests")
aiohttp = pytest.importorskip("aiohttp")

tracer = trace.get_tracer("tests")
# A trace of this module's own: business keys learned in other tests' traces stay there.
CALLER_TRACE = f"{random.getrandbits(128) | 1:032x}"
CALLER_SPAN = "f" * 16
CALLER = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
SCOPE = "tracebridge.http"


@pytest.fixture(autouse=True)
def light(monkeypatch, spans) -> Iterator[None]:
    monkeypatch.setenv("TRACEBRIDGE_HTTP_SPANS", "light")
    yield
    uninstrument()


def servers(exporter) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]


def clients(exporter) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.kind is SpanKind.CLIENT]


# -- servers: FastAPI / Starlette (ASGI) ----------------------------------------------------


def stock_app():
    """A FastAPI app made *before* instrument(): the class is traced, so existing apps are."""
    app = fastapi.FastAPI()

    @app.get("/stock/{sku}")
    async def stock(sku: str) -> dict[str, str]:
        with tracer.start_as_current_span("look up stock"):
            pass
        return {"sku": sku}

    @app.get("/sync/{sku}")
    def stock_sync(sku: str) -> dict[str, str]:  # runs in a worker thread
        with tracer.start_as_current_span("look up stock (sync)"):
            pass
        return {"sku": sku}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("stock db down")

    @app.get("/missing")
    async def missing() -> None:
        raise fastapi.HTTPException(404, "no such sku")

    @app.get("/healthz")
    async def healthz() -> str:
        return "ok"

    v1 = fastapi.APIRouter()

    @v1.get("/items/{item_id}")
    async def item(item_id: str) -> dict[str, str]:
        return {"item": item_id}

    app.include_router(v1, prefix="/v1")
    admin = fastapi.FastAPI()

    @admin.get("/users/{user_id}")
    async def user(user_id: str) -> dict[str, str]:
        return {"user": user_id}

    app.mount("/admin", admin)
    return app


def test_fastapi_server_span_has_the_route_the_caller_and_every_attribute(spans) -> None:
    app = stock_app()
    assert "starlette" in instrument(only=("fastapi",))
    with Uvicorn(app) as url:
        response = requests.get(f"{url}/stock/MUG-7?colour=blue", headers={"traceparent": CALLER}, timeout=5)
        port = int(url.rpartition(":")[2])
    assert response.json() == {"sku": "MUG-7"}
    (server,) = servers(spans)
    assert server.name == "GET /stock/{sku}"
    assert server.instrumentation_scope.name == SCOPE
    assert server.parent.span_id == int(CALLER_SPAN, 16) and server.parent.is_remote
    assert server.context.trace_id == int(CALLER_TRACE, 16)
    assert server.status.status_code is StatusCode.UNSET
    attributes = dict(server.attributes)
    assert attributes.pop("client.port") > 0
    assert attributes.pop("user_agent.original").startswith("python-requests/")
    assert attributes == {
        "http.request.method": "GET",
        "http.route": "/stock/{sku}",
        "http.response.status_code": 200,
        "url.scheme": "http",
        "url.path": "/stock/MUG-7",
        "url.query": "colour=blue",
        "server.address": "127.0.0.1",
        "server.port": port,
        "client.address": "127.0.0.1",
        "network.protocol.version": "1.1",
    }
    inner = one(spans, "look up stock")
    assert inner.parent.span_id == server.context.span_id
    assert [s.name for s in spans.get_finished_spans()] == ["look up stock", "GET /stock/{sku}"]


def test_routes_of_included_routers_and_mounted_apps_are_whole_templates(spans) -> None:
    instrument(only=("fastapi",))
    with Uvicorn(stock_app()) as url:
        assert requests.get(f"{url}/v1/items/7", timeout=5).json() == {"item": "7"}
        assert requests.get(f"{url}/admin/users/9", timeout=5).json() == {"user": "9"}
    # One span each (the mounted app is not traced again), named by the full template.
    assert [(s.name, s.attributes["http.route"]) for s in servers(spans)] == [
        ("GET /v1/items/{item_id}", "/v1/items/{item_id}"),
        ("GET /admin/users/{user_id}", "/admin/users/{user_id}"),
    ]


@pytest.mark.parametrize("library", ["httpx", "requests", "aiohttp"])
def test_baggage_goes_out_with_every_client_call(echo, spans, library) -> None:
    import asyncio

    from opentelemetry import baggage, context

    instrument(only=(library if library != "aiohttp" else "aiohttp-client",))

    async def with_aiohttp() -> str:
        async with aiohttp.ClientSession() as session, session.get(f"{echo}/stock") as response:
            return response.headers["x-baggage"]

    token = context.attach(baggage.set_baggage("order.id", "o-5"))
    try:
        if library == "httpx":
            received = httpx.get(f"{echo}/stock").headers["x-baggage"]
        elif library == "requests":
            received = requests.get(f"{echo}/stock", timeout=5).headers["x-baggage"]
        else:
            received = asyncio.run(with_aiohttp())
    finally:
        context.detach(token)
    assert received == "order.id=o-5"
    assert len(clients(spans)) == 1


def test_fastapi_sync_handlers_run_inside_the_server_span(spans) -> None:
    instrument(only=("fastapi",))
    with Uvicorn(stock_app()) as url:
        assert requests.get(f"{url}/sync/CUP-1", timeout=5).status_code == 200
    (server,) = servers(spans)
    assert server.name == "GET /sync/{sku}" and server.parent is None
    assert one(spans, "look up stock (sync)").parent.span_id == server.context.span_id


def test_fastapi_errors_statuses_and_unmatched_paths(spans) -> None:
    instrument(only=("fastapi",))
    with Uvicorn(stock_app()) as url:
        assert requests.get(f"{url}/boom", timeout=5).status_code == 500
        assert requests.get(f"{url}/missing", timeout=5).status_code == 404
        assert requests.get(f"{url}/nowhere", timeout=5).status_code == 404
    boom, missing, nowhere = servers(spans)
    assert boom.name == "GET /boom"
    assert boom.status.status_code is StatusCode.ERROR
    assert boom.status.description == "RuntimeError: stock db down"
    assert boom.attributes["error.type"] == "RuntimeError"
    assert boom.attributes["http.response.status_code"] == 500
    (event,) = boom.events
    assert event.name == "exception" and event.attributes["exception.type"] == "RuntimeError"
    assert event.attributes["exception.message"] == "stock db down"
    # A 4xx is the client's problem, not the server's: not an error on a server span.
    assert missing.name == "GET /missing" and missing.status.status_code is StatusCode.UNSET
    assert missing.attributes["http.response.status_code"] == 404 and "error.type" not in missing.attributes
    # No route matched: the name is the method alone (no unbounded path in span names).
    assert nowhere.name == "GET" and "http.route" not in nowhere.attributes
    assert nowhere.attributes["url.path"] == "/nowhere"


def test_fastapi_excluded_urls_and_captured_headers_follow_the_upstream_variables(monkeypatch, spans) -> None:
    monkeypatch.setenv("OTEL_PYTHON_FASTAPI_EXCLUDED_URLS", "healthz")
    capture = "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_"
    monkeypatch.setenv(capture + "SERVER_REQUEST", "x-request-id,authorization")
    monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE", "content-type")
    monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS", "authorization")
    instrument(only=("fastapi",))
    with Uvicorn(stock_app()) as url:
        assert requests.get(f"{url}/healthz", timeout=5).status_code == 200
        requests.get(
            f"{url}/stock/A", headers={"x-request-id": "r-1", "authorization": "Bearer s3cret"}, timeout=5
        )
    (server,) = servers(spans)  # /healthz made none
    assert server.name == "GET /stock/{sku}"
    assert server.attributes["http.request.header.x_request_id"] == ("r-1",)
    assert server.attributes["http.request.header.authorization"] == ("[REDACTED]",)
    assert server.attributes["http.response.header.content_type"] == ("application/json",)
    assert "http.request.header.user_agent" not in server.attributes


@pytest.mark.parametrize(
    "traceparent",
    [
        "00-zzzz",
        "00-" + "0" * 32 + "-" + "f" * 16 + "-01",  # all-zero trace id
        "ff-" + "e" * 32 + "-" + "f" * 16 + "-01",  # version ff
        "x" * 9000,
    ],
)
def test_a_hostile_traceparent_starts_a_new_trace_and_the_request_succeeds(spans, traceparent) -> None:
    instrument(only=("fastapi",))
    with Uvicorn(stock_app()) as url:
        response = requests.get(f"{url}/stock/A", headers={"traceparent": traceparent}, timeout=5)
    assert response.status_code == 200
    (server,) = servers(spans)
    assert server.parent is None and server.context.trace_id != int(CALLER_TRACE, 16)


def test_a_non_standard_method_is_named_by_the_conventions(spans) -> None:
    instrument(only=("fastapi",))
    with Uvicorn(stock_app()) as url:
        requests.request("PURGE", f"{url}/stock/A", timeout=5)
    (server,) = servers(spans)
    assert server.name == "HTTP /stock/{sku}"  # the conventions' "{method} {route}", method unknown
    assert server.attributes["http.request.method"] == "_OTHER"
    assert server.attributes["http.request.method_original"] == "PURGE"


def test_a_plain_asgi_app_under_uvicorn_gets_one_light_span(spans) -> None:
    from tests.test_http_stacks import plain_asgi_app

    assert "uvicorn" in instrument(only=("uvicorn", "fastapi"))
    with Uvicorn(plain_asgi_app) as url:
        assert requests.get(f"{url}/hello", timeout=5).text == "hi"
    (server,) = servers(spans)
    assert server.name == "GET" and server.instrumentation_scope.name == SCOPE
    assert server.attributes["url.path"] == "/hello" and server.attributes["http.response.status_code"] == 200


# -- servers: Flask (WSGI) ------------------------------------------------------------------


def orders_app():
    app = flask.Flask("orders")

    @app.get("/orders/<order_id>")
    def order(order_id: str) -> dict[str, str]:
        with tracer.start_as_current_span("load order"):
            pass
        return {"id": order_id}

    @app.post("/orders")
    def create() -> None:
        raise ValueError("card declined")

    @app.get("/busy")
    def busy() -> None:
        flask.abort(503)

    return app


def test_flask_server_span_has_the_rule_the_caller_and_every_attribute(spans) -> None:
    assert "flask" in instrument(only=("flask",))
    with Served(orders_app()) as served:
        response = requests.get(f"{served.url}/orders/o-1?full=1", headers={"traceparent": CALLER}, timeout=5)
    assert response.json() == {"id": "o-1"}
    (server,) = servers(spans)
    assert server.name == "GET /orders/<order_id>"
    assert server.instrumentation_scope.name == SCOPE
    assert server.parent.span_id == int(CALLER_SPAN, 16)
    attributes = dict(server.attributes)
    attributes.pop("user_agent.original")
    assert attributes == {
        "http.request.method": "GET",
        "http.route": "/orders/<order_id>",
        "http.response.status_code": 200,
        "url.scheme": "http",
        "url.path": "/orders/o-1",
        "url.query": "full=1",
        "server.address": "127.0.0.1",
        "server.port": int(served.url.rpartition(":")[2]),
        "client.address": "127.0.0.1",
        "network.protocol.version": "1.1",
    }
    assert one(spans, "load order").parent.span_id == server.context.span_id


def test_flask_errors_are_the_exception_or_the_5xx(monkeypatch, spans) -> None:
    monkeypatch.setenv("OTEL_PYTHON_FLASK_EXCLUDED_URLS", "orders/o-9")
    instrument(only=("flask",))
    with Served(orders_app()) as served:
        assert requests.post(f"{served.url}/orders", timeout=5).status_code == 500
        assert requests.get(f"{served.url}/busy", timeout=5).status_code == 503
        assert requests.get(f"{served.url}/orders/o-9", timeout=5).status_code == 200  # excluded
    failed, busy = servers(spans)
    assert failed.name == "POST /orders" and failed.status.status_code is StatusCode.ERROR
    assert failed.attributes["error.type"] == "ValueError"
    assert failed.attributes["http.response.status_code"] == 500
    assert [e.attributes["exception.message"] for e in failed.events] == ["card declined"]  # once
    assert busy.name == "GET /busy" and busy.status.status_code is StatusCode.ERROR
    assert busy.attributes["error.type"] == "503" and not busy.events


# -- clients ---------------------------------------------------------------------------------


class Echo(BaseHTTPRequestHandler):
    """Answers ``/status/N`` with N, anything else with 200; echoes the context it received."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        status = int(self.path.rsplit("/", 1)[1]) if self.path.startswith("/status/") else 200
        body = " | ".join(self.headers.get_all("traceparent") or ()).encode()  # every one sent
        self.send_response(status)
        self.send_header("content-length", str(len(body)))
        self.send_header("x-served-by", "echo")
        self.send_header("x-baggage", self.headers.get("baggage") or "")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def echo() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def closed_port() -> int:
    from tracebridge.broker import free_port

    return free_port()


def assert_client_span(span: ReadableSpan, parent: ReadableSpan, url: str, status: int) -> None:
    assert span.name == "GET" and span.kind is SpanKind.CLIENT
    assert span.instrumentation_scope.name == SCOPE
    assert span.parent.span_id == parent.context.span_id
    assert span.context.trace_id == parent.context.trace_id
    attributes = dict(span.attributes)
    assert attributes == {
        "http.request.method": "GET",
        "url.full": url,
        "server.address": "127.0.0.1",
        "server.port": int(url.split("/")[2].rpartition(":")[2]),
        "http.response.status_code": status,
        "network.protocol.version": "1.1",
        **({"error.type": str(status)} if status >= 400 else {}),
    }
    assert span.status.status_code is (StatusCode.ERROR if status >= 400 else StatusCode.UNSET)


def test_httpx_sync_and_async_client_spans(echo, spans) -> None:
    import asyncio

    assert "httpx" in instrument(only=("httpx",))
    with tracer.start_as_current_span("handler") as handler:
        ok = httpx.get(f"{echo}/stock?sku=A")
        failed = httpx.get(f"{echo}/status/503")

        async def call() -> httpx.Response:
            async with httpx.AsyncClient() as client:
                return await client.get(f"{echo}/async")

        async_ok = asyncio.run(call())
    parent = one(spans, "handler")
    first, second, third = clients(spans)
    assert_client_span(first, parent, f"{echo}/stock?sku=A", 200)
    assert_client_span(second, parent, f"{echo}/status/503", 503)
    assert_client_span(third, parent, f"{echo}/async", 200)
    # The server received the client span's own context: the next hop is its child.
    assert ok.text == format_traceparent(first.context)
    assert async_ok.text == format_traceparent(third.context)
    assert failed.status_code == 503 and handler.is_recording() is False


def test_httpx_url_shapes_and_a_callers_own_traceparent(echo, spans) -> None:
    # url.full is rendered from httpx's parsed URL, not str(url): every shape must come out as
    # upstream renders it (credentials replaced), and the context header httpx sends must be
    # ours alone even when the caller set one.
    from opentelemetry.util.http import remove_url_credentials

    instrument(only=("httpx",))
    port = echo.rpartition(":")[2]
    shapes = [
        f"http://127.0.0.1:{port}/a%20b?q=%C3%A9&x=1#part",
        f"http://user:secret@127.0.0.1:{port}/private",
        f"http://localhost:{port}/p?",
        f"http://LOCALHOST:{port}",
        f"http://127.0.0.1:{port}/パス?クエリ=値",
    ]
    with tracer.start_as_current_span("handler"):
        answers = [httpx.get(url) for url in shapes]
        stale = "00-" + "1" * 32 + "-" + "2" * 16 + "-01"
        replaced = httpx.get(f"{echo}/stock", headers={"Traceparent": stale, "x-other": "kept"})
    spans_sent = clients(spans)
    assert len(spans_sent) == len(shapes) + 1
    for url, span, answer in zip(shapes, spans_sent, answers, strict=False):
        expected = remove_url_credentials(str(httpx.URL(url)))
        assert span.attributes["url.full"] == expected, url
        assert span.attributes["server.address"] == httpx.URL(url).host
        assert span.attributes["server.port"] == int(port)
        assert answer.text == format_traceparent(span.context)
    assert "secret" not in spans_sent[1].attributes["url.full"]
    assert spans_sent[1].attributes["url.full"].startswith("http://REDACTED:REDACTED@127.0.0.1")
    assert replaced.text == format_traceparent(spans_sent[-1].context)  # one header: ours


def test_requests_client_spans_and_connection_errors(echo, spans) -> None:
    assert "requests" in instrument(only=("requests",))
    port = closed_port()
    with tracer.start_as_current_span("handler"):
        ok = requests.get(f"{echo}/stock", timeout=5)
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{port}/down", timeout=5)
    parent = one(spans, "handler")
    first, refused = clients(spans)
    assert_client_span(first, parent, f"{echo}/stock", 200)
    assert ok.text == format_traceparent(first.context)
    assert refused.status.status_code is StatusCode.ERROR
    assert refused.attributes["error.type"] == "ConnectionError"
    assert refused.attributes["server.port"] == port and "http.response.status_code" not in refused.attributes
    assert [e.name for e in refused.events] == ["exception"]


async def test_aiohttp_client_spans(echo, spans) -> None:
    assert "aiohttp-client" in instrument(only=("aiohttp-client",))
    with tracer.start_as_current_span("handler"):
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{echo}/stock") as response:
                body = await response.text()
            async with session.get(f"{echo}/status/500") as response:
                assert response.status == 500
    parent = one(spans, "handler")
    first, failed = clients(spans)
    assert_client_span(first, parent, f"{echo}/stock", 200)
    assert_client_span(failed, parent, f"{echo}/status/500", 500)
    assert body == format_traceparent(first.context)


def test_client_excluded_urls_captured_headers_and_suppression(monkeypatch, echo, spans) -> None:
    monkeypatch.setenv("OTEL_PYTHON_REQUESTS_EXCLUDED_URLS", "/health")
    monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_REQUEST", "x-tenant")
    monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_RESPONSE", "x-served-by")
    instrument(only=("requests",))
    assert requests.get(f"{echo}/health", timeout=5).text == ""  # no span, no context sent
    with suppress_http_instrumentation():
        assert requests.get(f"{echo}/quiet", timeout=5).text == ""
    requests.get(f"{echo}/stock", headers={"x-tenant": "t-4"}, timeout=5)
    (client,) = clients(spans)
    assert client.attributes["url.full"] == f"{echo}/stock" and client.parent is None
    assert client.attributes["http.request.header.x_tenant"] == ("t-4",)
    assert client.attributes["http.response.header.x_served_by"] == ("echo",)


def test_credentials_never_reach_url_full(echo, spans) -> None:
    instrument(only=("httpx",))
    httpx.get(echo.replace("http://", "http://user:pw@") + "/stock")
    (client,) = clients(spans)
    assert "pw" not in client.attributes["url.full"]


# -- a whole hop, the fallback, the wire -----------------------------------------------------


async def test_a_client_and_server_hop_is_one_trace_and_encodes_as_the_sdk_does(spans) -> None:
    import asyncio

    instrument(only=("fastapi", "httpx"))
    with Uvicorn(stock_app()) as url:
        with tracer.start_as_current_span("checkout"):
            async with httpx.AsyncClient() as client:
                assert (await client.get(f"{url}/stock/B")).status_code == 200
        await asyncio.sleep(0)
    checkout = one(spans, "checkout")
    (client_span,) = clients(spans)
    (server,) = servers(spans)
    assert client_span.parent.span_id == checkout.context.span_id
    assert server.parent.span_id == client_span.context.span_id
    assert {s.context.trace_id for s in spans.get_finished_spans()} == {checkout.context.trace_id}
    assert_same_as_sdk(spans.get_finished_spans())


def test_upstream_fallback_brings_the_upstream_instrumentations_back(monkeypatch, echo, spans) -> None:
    monkeypatch.setenv("TRACEBRIDGE_HTTP_SPANS", "upstream")
    done = instrument(only=("fastapi", "requests"))
    assert {"fastapi", "requests"} <= set(done) and "starlette" not in done
    app = fastapi.FastAPI()  # upstream instruments apps made after instrument()

    @app.get("/stock/{sku}")
    async def stock(sku: str) -> dict[str, str]:
        return {"sku": sku}

    with Uvicorn(app) as url:
        requests.get(f"{url}/stock/C", timeout=5)
    (server,) = servers(spans)
    assert server.name == "GET /stock/{sku}"
    assert server.instrumentation_scope.name.startswith("opentelemetry.instrumentation.")
    (client,) = clients(spans)
    assert client.instrumentation_scope.name == "opentelemetry.instrumentation.requests"


def test_disabling_the_upstream_name_disables_our_light_spans(monkeypatch, echo, spans) -> None:
    monkeypatch.setenv("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "requests,fastapi")
    done = instrument(only=("fastapi", "requests", "httpx"))
    assert "requests" not in done and "starlette" not in done and "httpx" in done
    requests.get(f"{echo}/stock", timeout=5)
    assert clients(spans) == []
