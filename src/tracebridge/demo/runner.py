"""Drive the eshop stack: place orders through the gateway, follow them to a final state, and
collect their traces from the collector's store — for ``tracebridge demo``, tests and bench."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tracebridge.analysis.model import Trace
from tracebridge.collector.store import SpanStore, TraceNotFound
from tracebridge.demo import shop
from tracebridge.demo.stack import SERVICE_NAMES

# (service, span kind) → how many of them one shipped order's complete trace has.
SHIPPED_ORDER_SPANS: dict[tuple[str, str], int] = {
    ("gateway", "SERVER"): 1,
    ("order", "PRODUCER"): 1,
    ("inventory", "SERVER"): 1,
    ("billing", "SERVER"): 1,
    ("inventory-worker", "CONSUMER"): 1,
    ("logistics-worker", "CONSUMER"): 1,
    ("logistics-worker", "PRODUCER"): 1,
    ("order-status-worker", "CONSUMER"): 2,
    ("notification-worker", "CONSUMER"): 2,
    ("notification", "SERVER"): 2,
}


async def place_orders(
    gateway_url: str,
    count: int,
    concurrency: int = 4,
    seed: int = 7,
    on_placed: Callable[[str], None] | None = None,
) -> list[str]:
    """Place ``count`` random orders through the gateway's GraphQL API; their ids in order."""
    rng = random.Random(seed)
    orders = [shop.sample_order(rng) for _ in range(count)]
    ids: list[str] = [""] * count
    semaphore = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as client:

        async def one(index: int) -> None:
            async with semaphore:
                placed = await shop.place_order(client, orders[index])
            ids[index] = placed.id
            if on_placed is not None:
                on_placed(placed.id)

        await asyncio.gather(*(one(index) for index in range(count)))
    return ids


async def wait_final(gateway_url: str, order_ids: list[str], timeout: float) -> dict[str, str]:
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as client:
        return await shop.wait_final(client, order_ids, timeout)


def order_trace(store: SpanStore, order_id: str) -> Trace | None:
    """Every span tagged with the order, across all its traces (one, unless a chain broke)."""
    spans = []
    for trace_id in store.trace_ids_with("order.id", order_id, limit=20):
        try:
            spans += store.trace(trace_id)
        except TraceNotFound:  # swept by retention between the two reads
            continue
    return Trace(spans) if spans else None


def missing_spans(trace: Trace) -> list[tuple[str, str]]:
    """The (service, kind) pairs of which the trace has fewer than a shipped order produces."""
    counts: dict[tuple[str, str], int] = {}
    for span in trace.spans:
        key = (span.service, span.kind)
        counts[key] = counts.get(key, 0) + 1
    return [key for key, wanted in SHIPPED_ORDER_SPANS.items() if counts.get(key, 0) < wanted]


def is_complete_shipped_trace(trace: Trace) -> bool:
    """The order's spans from every service, as many as a shipped order produces."""
    # One root: every other span's parent has arrived too (services export independently).
    return (
        len(trace.roots) == 1
        and {span.service for span in trace.spans} >= set(SERVICE_NAMES)
        and not missing_spans(trace)
    )


def wait_traces(
    db: Path,
    order_ids: list[str],
    timeout: float,
    complete: Callable[[Trace], bool] = is_complete_shipped_trace,
) -> dict[str, Trace]:
    """Each order's trace once ``complete`` says so; after ``timeout``, what there is."""
    store = SpanStore(db)
    try:
        deadline = time.monotonic() + timeout
        done: dict[str, Trace] = {}
        while True:
            for order_id in order_ids:
                trace = None if order_id in done else order_trace(store, order_id)
                if trace is not None and complete(trace):
                    done[order_id] = trace
            if len(done) == len(order_ids) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        for order_id in order_ids:
            if order_id not in done and (trace := order_trace(store, order_id)) is not None:
                done[order_id] = trace
        return done
    finally:
        store.close()
