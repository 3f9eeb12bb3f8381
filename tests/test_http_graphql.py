"""HTTP, GraphQL and @traced through real sockets: one trace, no argument values leaked."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
import strawberry
import uvicorn
from opentelemetry.trace import SpanKind, StatusCode

from tests.conftest import one
from tracebridge import instrument, traced, uninstrument
from tracebridge.broker import free_port

CLIENT_TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@traced
def price_of(sku: str) -> int:
    if sku == "missing":
        raise LookupError(f"unknown sku {sku}")
    return 42


@traced(name="reserve stock", attributes={"inventory.kind": "demo"})
async def reserve(sku: str) -> str:
    await asyncio.sleep(0)
    return f"reserved {sku}"


@strawberry.type
class Order:
    id: str
    total: int


@strawberry.type
class Query:
    @strawberry.field
    def ping(self) -> str:
        return "pong"


@strawberry.type
class Mutation:
    @strawberry.mutation
    async def create_order(self, email: str, card_number: str, sku: str) -> Order:
        await reserve(sku)
        return Order(id="o-1", total=price_of(sku))


def build_app():
    """Built after instrument(), as an application module would be imported."""
    from fastapi import FastAPI
    from strawberry.fastapi import GraphQLRouter

    app = FastAPI()
    app.include_router(GraphQLRouter(strawberry.Schema(query=Query, mutation=Mutation)), prefix="/graphql")
    return app


@pytest.fixture
async def graphql_url(spans) -> AsyncIterator[str]:
    instrument(only=("fastapi", "strawberry"))  # the test client plays an external caller
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(build_app(), host="127.0.0.1", port=port, log_level="error"))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}/graphql"
    finally:
        server.should_exit = True
        await serving
        uninstrument()


MUTATION = (
    'mutation { createOrder(email: "buyer@example.com", cardNumber: "4111111111111111", sku: "book") '
    "{ id total } }"
)


async def test_graphql_mutation_is_one_trace_under_the_callers_context(graphql_url, spans) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.post(
            graphql_url, json={"query": MUTATION}, headers={"traceparent": CLIENT_TRACEPARENT}
        )
    assert response.json() == {"data": {"createOrder": {"id": "o-1", "total": 42}}}
    finished = spans.get_finished_spans()
    server = one(spans, "POST /graphql")
    assert server.kind is SpanKind.SERVER
    assert f"{server.context.trace_id:032x}" == CLIENT_TRACEPARENT.split("-")[1]
    assert f"{server.parent.span_id:016x}" == CLIENT_TRACEPARENT.split("-")[2]
    assert {s.context.trace_id for s in finished} == {server.context.trace_id}
    operation = one(spans, "GraphQL Query")  # strawberry's name for every operation
    assert operation.parent.span_id == server.context.span_id
    assert operation.attributes["query"] == (
        "mutation { createOrder(email: ?, cardNumber: ?, sku: ?) { id total } }"
    )
    resolver = one(spans, "GraphQL Resolving: createOrder")
    reserve_span = one(spans, "reserve stock")
    assert reserve_span.parent.span_id == resolver.context.span_id
    assert reserve_span.attributes["inventory.kind"] == "demo"
    assert one(spans, "price_of").parent.span_id == resolver.context.span_id


async def test_no_email_or_card_number_in_any_span(graphql_url, spans) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.post(graphql_url, json={"query": MUTATION})
    assert response.status_code == 200 and "errors" not in response.json()
    names = {span.name for span in spans.get_finished_spans()}
    # the request was traced through and through: there is something to leak into
    assert {"POST /graphql", "GraphQL Resolving: createOrder", "reserve stock"} <= names, names
    for span in spans.get_finished_spans():
        text = repr(dict(span.attributes)) + span.name
        assert "4111111111111111" not in text and "buyer@example.com" not in text, span.name
        assert not any(key.startswith("graphql.param.") for key in span.attributes), span.name


async def test_traced_records_exceptions_and_reraises(spans) -> None:
    with pytest.raises(LookupError):
        price_of("missing")
    failed = one(spans, "price_of")
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.attributes["error.type"] == "LookupError"
    assert failed.attributes["code.function.name"] == "tests.test_http_graphql.price_of"
    assert failed.events[0].attributes["exception.message"] == "unknown sku missing"
    assert await reserve("pen") == "reserved pen"
    assert one(spans, "reserve stock").kind is SpanKind.INTERNAL


@pytest.mark.parametrize(
    ("document", "redacted"),
    [
        ('{ order(id: "o-1") { id } }', "{ order(id: ?) { id } }"),
        ('{ a(n: -12, f: 1.5e3, s: """multi\nline""") }', "{ a(n: ?, f: ?, s: ?) }"),
        ('{ a(s: "with \\"escaped\\" quotes") }', "{ a(s: ?) }"),
        (
            "query Q($card: String, $n2: Int) { field2(x: $n2) }",
            "query Q($card: String, $n2: Int) { field2(x: $n2) }",
        ),
    ],
)
def test_document_literals_are_redacted(document: str, redacted: str) -> None:
    from tracebridge.instrument.strawberry import redact_document

    assert redact_document(document) == redacted
