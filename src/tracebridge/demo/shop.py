"""A GraphQL client of the eshop gateway: place orders, follow them to a final state."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import Any

import httpx

CREATE_ORDER = """
mutation CreateOrder($input: CreateOrderInput!) {
  createOrder(input: $input) { id status totalCents }
}"""
ORDER_STATUS = "query OrderStatus($id: ID!) { order(id: $id) { id status history { status atMs } } }"
FINAL_STATES = frozenset({"SHIPPED", "CANCELLED"})
SKUS = ("BOOK-42", "MUG-7", "LAMP-3", "PEN-9")


class ShopError(RuntimeError):
    """The gateway answered with an error, or an order never reached a final state."""


@dataclass(frozen=True)
class PlacedOrder:
    id: str
    status: str
    total_cents: int


def sample_order(rng: random.Random) -> dict[str, Any]:
    skus = rng.sample(SKUS, rng.randint(1, 2))
    return {
        "email": f"buyer{rng.randint(1, 999)}@example.com",
        "cardNumber": "4111111111111111",
        "lines": [{"sku": sku, "quantity": rng.randint(1, 3)} for sku in skus],
    }


async def graphql(client: httpx.AsyncClient, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    response = await client.post("/graphql", json={"query": query, "variables": variables})
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise ShopError(f"gateway answered {response.status_code}: {response.text[:200]}")
    if body.get("errors"):
        raise ShopError("; ".join(str(error.get("message")) for error in body["errors"]))
    if not isinstance(body.get("data"), dict):
        raise ShopError(f"gateway answered {response.status_code} without data: {response.text[:200]}")
    return dict(body["data"])


async def place_order(client: httpx.AsyncClient, order: dict[str, Any]) -> PlacedOrder:
    data = (await graphql(client, CREATE_ORDER, {"input": order}))["createOrder"]
    return PlacedOrder(id=data["id"], status=data["status"], total_cents=data["totalCents"])


async def order_status(client: httpx.AsyncClient, order_id: str) -> str | None:
    data = (await graphql(client, ORDER_STATUS, {"id": order_id}))["order"]
    return None if data is None else str(data["status"])


async def wait_final(
    client: httpx.AsyncClient, order_ids: list[str], timeout: float, poll: float = 0.25
) -> dict[str, str]:
    """Each order's final status; :class:`ShopError` naming the stuck ones after ``timeout``."""
    deadline = time.monotonic() + timeout
    final: dict[str, str] = {}
    while True:
        pending = [order_id for order_id in order_ids if order_id not in final]
        statuses = await asyncio.gather(*(order_status(client, order_id) for order_id in pending))
        for order_id, status in zip(pending, statuses, strict=True):
            if status in FINAL_STATES:
                final[order_id] = status
        if len(final) == len(order_ids):
            return final
        if time.monotonic() > deadline:
            stuck = {o: s for o, s in zip(pending, statuses, strict=True) if o not in final}
            raise ShopError(
                f"{len(stuck)} of {len(order_ids)} orders not final after {timeout:.0f}s: {stuck}"
            )
        await asyncio.sleep(poll)
