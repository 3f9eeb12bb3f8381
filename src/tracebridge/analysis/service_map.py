"""Service map: who calls whom, synchronously or through a topic, how often, how fast.

Edges come from parent/child pairs that cross services *and* from send→process links, so a
consumer in link-only mode (a new trace per record) still shows up as fed by its producer.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from tracebridge.analysis import messaging
from tracebridge.analysis.model import SpanRecord


@dataclass
class _Edge:
    source: str
    target: str
    kind: str  # "sync" | "async"
    topic: str | None
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def service_map(spans: Iterable[SpanRecord]) -> list[dict[str, Any]]:
    """Edges between services, each with its call count, error rate and p50/p95 latency.

    Sync edges measure the callee's span; async edges measure the hop from send start to
    process start (publish + queue wait).
    """
    spans = list(spans)
    by_id = {(span.trace_id, span.span_id): span for span in spans}
    edges: dict[tuple[str, str, str, str | None], _Edge] = {}

    def add(upstream: SpanRecord, downstream: SpanRecord) -> None:
        if upstream.service == downstream.service:
            return
        is_async = messaging.is_send(upstream) and messaging.is_consumer(downstream)
        topic = (messaging.topic(downstream) or messaging.topic(upstream)) if is_async else None
        key = (upstream.service, downstream.service, "async" if is_async else "sync", topic)
        edge = edges.setdefault(key, _Edge(*key))
        latency = (downstream.start_ns - upstream.start_ns) if is_async else downstream.duration_ns
        edge.latencies_ms.append(max(0, latency) / 1e6)
        if downstream.status == "ERROR":
            edge.errors += 1

    for span in spans:
        parent = by_id.get((span.trace_id, span.parent_span_id)) if span.parent_span_id else None
        if parent is not None:
            add(parent, span)
        for link in span.links:
            target = by_id.get((link.trace_id, link.span_id))
            if target is not None and target is not parent:
                add(target, span)
    return [
        {
            "source": edge.source,
            "target": edge.target,
            "type": edge.kind,
            "topic": edge.topic,
            "count": len(edge.latencies_ms),
            "error_rate": edge.errors / len(edge.latencies_ms),
            "p50_ms": round(statistics.median(edge.latencies_ms), 3),
            "p95_ms": round(_percentile(edge.latencies_ms, 0.95), 3),
        }
        for edge in sorted(edges.values(), key=lambda e: (e.source, e.target, e.kind, e.topic or ""))
    ]
