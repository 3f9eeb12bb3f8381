"""Collector throughput and lookup latency.

    python bench/collector.py [--spans 1000000] [--clients 4] [--lookups 200]

Starts one ``tracebridge collector`` process with a fresh store, sends OTLP protobuf batches of
512 spans over real HTTP from a few client threads until ``--spans`` are stored, then fetches
traces by ``order.id`` (search, then the trace) with everything stored.  Baselines measured in
the same run: the same requests carrying no spans (the HTTP stack's own ceiling) and
``/api/health`` round trips.  Targets (issue "Tracing that costs close to nothing"):
≥ 100 000 spans/s ingested, ≤ 50 ms per lookup at 5 000 000 spans stored (``--spans 5000000``).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tracebridge.collector.process import CollectorProcess

SERVICES = (
    "gateway",
    "order",
    "inventory-worker",
    "logistics-worker",
    "notification-worker",
    "billing",
    "shipper",
)
BATCH = 512
INGEST_TARGET = 100_000
LOOKUP_TARGET_MS = 50
LOOKUP_AT_SPANS = 5_000_000


def batch(number: int, now_ns: int) -> bytes:
    """512 spans as one service's exporter sends them: the same hop of 512 different orders.
    Seven consecutive batches (one per service) complete the same 512 traces."""
    hop = number % len(SERVICES)
    first_order = 1 + (number // len(SERVICES)) * BATCH
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    attribute = resource_spans.resource.attributes.add()
    attribute.key, attribute.value.string_value = "service.name", SERVICES[hop]
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name = "tracebridge.messaging.kafka.aiokafka"
    name = (
        "POST /graphql",
        "send orders",
        "process orders",
        "send shipments",
        "process shipments",
        "POST /charges",
        "POST /sendEmail",
    )[hop]
    for order in range(first_order, first_order + BATCH):
        span = scope_spans.spans.add()
        span.trace_id = order.to_bytes(16, "big")
        span.span_id = (order * 8 + hop + 1).to_bytes(8, "big")
        if hop:
            span.parent_span_id = (order * 8 + hop).to_bytes(8, "big")
        span.name = name
        span.kind = (2, 4, 5, 4, 5, 3, 2)[hop]
        span.start_time_unix_nano = now_ns + hop * 1_000_000
        span.end_time_unix_nano = span.start_time_unix_nano + 900_000
        for key, value in (
            ("order.id", f"o-{order}"),
            ("messaging.system", "kafka"),
            ("messaging.destination.name", "orders"),
            ("messaging.operation.type", "process"),
            ("tracebridge.context.source", "headers"),
            ("server.address", "kafka-0"),
        ):
            attribute = span.attributes.add()
            attribute.key, attribute.value.string_value = key, value
        attribute = span.attributes.add()
        attribute.key, attribute.value.int_value = "messaging.kafka.offset", order
    return request.SerializeToString()


def send_all(url: str, payloads: list[bytes], clients: int) -> float:
    """Post every payload from ``clients`` threads (keep-alive); return the elapsed seconds."""
    lock = threading.Lock()
    queue = list(reversed(payloads))
    failures: list[str] = []

    def worker() -> None:
        with httpx.Client(timeout=60) as client:
            while True:
                with lock:
                    if not queue:
                        return
                    body = queue.pop()
                while True:
                    response = client.post(
                        url, content=body, headers={"Content-Type": "application/x-protobuf"}
                    )
                    if response.status_code == 429:
                        time.sleep(float(response.headers.get("Retry-After", "1")) / 10)
                        continue
                    if response.status_code != 200:
                        failures.append(f"{response.status_code} {response.text[:200]}")
                    break

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise SystemExit(f"{len(failures)} requests failed, e.g. {failures[0]}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--spans", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--lookups", type=int, default=200)
    args = parser.parse_args()
    per_round = BATCH * len(SERVICES)  # seven batches complete 512 traces
    requests = max(1, -(-args.spans // per_round)) * len(SERVICES)  # at least --spans
    now = time.time_ns()
    print(f"building {requests} batches of {BATCH} spans ...", flush=True)
    payloads = [batch(number, now) for number in range(requests)]
    empty = [ExportTraceServiceRequest().SerializeToString()] * min(requests, 500)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TRACEBRIDGE_"))}
    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "traces.db"
        # no retention: the lookup target is for every span stored (the default keeps 2 GB)
        no_limit = ("--max-size", "1TB", "--max-age", "3650d")
        with CollectorProcess(db, Path(folder) / "collector.log", env, args=no_limit) as collector:
            endpoint = f"{collector.url}/v1/traces"
            empty_seconds = send_all(endpoint, empty, args.clients)
            seconds = send_all(endpoint, payloads, args.clients)
            stored = httpx.get(f"{collector.url}/api/health").json()["spans_received"]
            # every order that was sent, all seven of its spans stored
            orders = [1 + random.randrange(requests // len(SERVICES) * BATCH) for _ in range(args.lookups)]
            lookups = []
            health = []
            with httpx.Client(timeout=30) as client:
                for order in orders:
                    started = time.perf_counter()
                    found = client.get(
                        f"{collector.url}/api/traces", params={"attr": f"order.id=o-{order}", "limit": 1}
                    )
                    traces = found.json().get("traces")
                    if not traces:
                        raise SystemExit(
                            f"order o-{order} not found ({found.status_code} {found.text[:300]}); "
                            f"collector log:\n{Path(folder, 'collector.log').read_text()[-2000:]}"
                        )
                    trace_id = traces[0]["trace_id"]
                    spans = client.get(f"{collector.url}/api/traces/{trace_id}").json()["spans"]
                    lookups.append(time.perf_counter() - started)
                    assert len(spans) == 7 and spans[0]["attributes"]["order.id"] == f"o-{order}"
                    started = time.perf_counter()
                    client.get(f"{collector.url}/api/health")
                    health.append(time.perf_counter() - started)
            size = db.stat().st_size / 1e6
    rate = requests * BATCH / seconds
    empty_rate = len(empty) / empty_seconds
    p50, p95 = statistics.median(lookups) * 1e3, statistics.quantiles(lookups, n=20)[-1] * 1e3
    print(
        f"\ningest: {requests * BATCH} spans in {seconds:.1f} s = {rate:,.0f} spans/s "
        f"({requests / seconds:.0f} requests/s; carrying no spans the same clients reach "
        f"{empty_rate:.0f} requests/s)"
    )
    verdict = "met" if rate >= INGEST_TARGET else "NOT met"
    print(f"        target ≥ {INGEST_TARGET:,} spans/s → {rate / INGEST_TARGET:.2f} of target: {verdict}")
    print(f"stored: {stored:,} spans, store {size:.0f} MB")
    print(
        f"lookup by order.id (search + fetch 7 spans) with {stored:,} spans: p50 {p50:.1f} ms, "
        f"p95 {p95:.1f} ms (a /api/health round trip: p50 {statistics.median(health) * 1e3:.1f} ms)"
    )
    verdict = "met" if p95 <= LOOKUP_TARGET_MS else "NOT met"
    scale = "" if stored >= LOOKUP_AT_SPANS else f" (the target is for {LOOKUP_AT_SPANS:,} spans)"
    print(
        f"        target ≤ {LOOKUP_TARGET_MS} ms → p95 at {p95 / LOOKUP_TARGET_MS:.2f} of target: "
        f"{verdict}{scale}"
    )


if __name__ == "__main__":
    main()
