"""``tracebridge demo --stuck-behind SERVICE``: an order stuck behind a stopped consumer.

The consumer is stopped (SIGSTOP: alive, holding its place in the group, consuming nothing),
one more order is placed, and once its trace stops growing the order is diagnosed as a user
would — the story from the store, the consumer groups' progress from the broker.  Then the
consumer goes on and the same order is diagnosed again, processed.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from tracebridge.analysis.diagnosis import Diagnosis, diagnose
from tracebridge.analysis.kafka_offsets import KafkaOffsets
from tracebridge.analysis.model import Trace
from tracebridge.analysis.pending import GroupsSeen, for_trace
from tracebridge.collector.source import StoreSource
from tracebridge.collector.store import SpanStore
from tracebridge.demo import runner
from tracebridge.demo.stack import SERVICES, Stack

CONSUMERS = tuple(service.name for service in SERVICES if not service.http)


@dataclass(frozen=True)
class StuckOrder:
    order_id: str
    trace: Trace
    diagnosis: Diagnosis


def validate(service: str) -> None:
    """Only a consumer can hold an order up (``ValueError`` names the ones there are)."""
    if service not in CONSUMERS:
        raise ValueError(f"--stuck-behind {service!r}: not a consumer; choose one of {', '.join(CONSUMERS)}")


def _settled(stack: Stack, order_id: str, quiet_s: float, timeout: float) -> Trace:
    """The order's trace once no span has arrived for ``quiet_s`` (every hop that can run has)."""
    store = SpanStore(stack.db)
    try:
        deadline = time.monotonic() + timeout
        seen, since = -1, time.monotonic()
        while True:
            trace = runner.order_trace(store, order_id)
            count = len(trace.spans) if trace is not None else 0
            if count != seen:
                seen, since = count, time.monotonic()
            elif trace is not None and time.monotonic() - since >= quiet_s:
                return trace
            if time.monotonic() > deadline:
                if trace is None:
                    raise RuntimeError(f"no span of order {order_id} reached the collector")
                return trace
            time.sleep(0.2)
    finally:
        store.close()


def diagnosed(stack: Stack, trace: Trace) -> Diagnosis:
    """What ``tracebridge diagnose --kafka`` says: the store's story, the broker's offsets."""
    assert stack.broker is not None
    store = SpanStore(stack.db)
    try:
        source = StoreSource(store=store)
        deliveries = for_trace(trace, GroupsSeen(source), KafkaOffsets(stack.broker.bootstrap_servers))
        return diagnose(trace, nearby=source.spans_between, deliveries=deliveries)
    finally:
        store.close()


def place_stuck_order(stack: Stack, service: str, timeout: float, quiet_s: float = 3.0) -> StuckOrder:
    """Stop ``service``, place one order, and diagnose it where it stopped."""
    stack.pause(service)
    (order_id,) = asyncio.run(runner.place_orders(stack.gateway_url, 1, seed=11))
    trace = _settled(stack, order_id, quiet_s, timeout)
    return StuckOrder(order_id, trace, diagnosed(stack, trace))


def release(stack: Stack, service: str, stuck: StuckOrder, timeout: float) -> tuple[str, Diagnosis]:
    """Let ``service`` go on; the order's final status and its diagnosis once it is final."""
    stack.resume(service)
    statuses = asyncio.run(runner.wait_final(stack.gateway_url, [stuck.order_id], timeout))
    status = statuses.get(stuck.order_id, "not final")
    traces = runner.wait_traces(stack.db, [stuck.order_id], timeout=10)
    trace = traces.get(stuck.order_id, stuck.trace)
    return status, diagnosed(stack, trace)
