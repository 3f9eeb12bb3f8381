"""The store's rows for one OTLP traces request: a span row each (its bytes stored as they are,
decoded only when a trace is read), the indexed attributes once per trace, the links.

Two ways to the same rows.  :func:`rows_from_message` reads the decoded protobuf — the
reference, and the way for JSON requests.  ``_span_scan`` (C, built at install when a compiler
is there) reads the request's protobuf bytes directly: building rows from the decoded message
cost ~8 µs a span in Python, as much as SQLite's commit, and bound ingest.  The tests compare
the two on every request shape they have, and on mutated bodies.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from tracebridge.otlp import ids_and_times_problem

_span_scan: ModuleType | None
try:
    from tracebridge.collector import _span_scan
except ImportError:  # built without a C compiler: the Python path builds the same rows
    _span_scan = None

MAX_INDEXED_VALUE = 256


@dataclass(frozen=True)
class WriteResult:
    """What one request added: spans stored, spans rejected and why."""

    accepted: int
    rejected: int
    reason: str = ""


@dataclass(frozen=True)
class PreparedBatch:
    """The rows of one request, ready to commit (a traces request's, or a logs request's)."""

    span_rows: list[tuple[Any, ...]]
    attribute_rows: set[tuple[str, str, str]]
    link_rows: list[tuple[str, str, str, str]]
    resource_rows: dict[int, bytes]
    result: WriteResult
    log_rows: list[tuple[Any, ...]] = field(default_factory=list)


class Indexed:
    """The attribute keys a store indexes, in the two forms the two paths compare."""

    def __init__(self, keys: frozenset[str]) -> None:
        self.keys = keys
        self.encoded = tuple((key.encode(), key) for key in sorted(keys))


def scanner_built() -> bool:
    """Whether the C scanner is there (``tracebridge doctor`` and the benchmarks say so)."""
    return _span_scan is not None


def resource_id(resource: Resource) -> tuple[int, bytes]:
    """A resource's id in the store: a hash of its deterministic encoding, so one service's
    resource is one row however its exporter ordered the fields."""
    body = resource.SerializeToString(deterministic=True)
    return int.from_bytes(hashlib.blake2b(body, digest_size=8).digest(), "big", signed=True), body


def _resource_id_of_bytes(raw: bytes) -> tuple[int, bytes]:
    """:func:`resource_id` for the scanner, which has the resource's bytes as they came:
    decoded and encoded again, so both paths give one resource the same id (once a request)."""
    return resource_id(Resource.FromString(raw))


def prepare(request: ExportTraceServiceRequest, body: bytes | None, indexed: Indexed) -> PreparedBatch:
    """The rows of a request, off its protobuf ``body`` when there is one and the scanner is
    built; a body the scanner does not follow goes the reference way (never lost)."""
    if body is not None and _span_scan is not None:
        try:
            spans, attribute_rows, links, resources, accepted, rejected, reason = _span_scan.scan(
                body, indexed.encoded, MAX_INDEXED_VALUE, _resource_id_of_bytes
            )
        except ValueError:
            pass
        else:
            return PreparedBatch(
                spans, attribute_rows, links, resources, WriteResult(accepted, rejected, reason)
            )
    return rows_from_message(request, indexed.keys)


def rows_from_message(request: ExportTraceServiceRequest, indexed: frozenset[str]) -> PreparedBatch:
    """The rows of a decoded request: the reference the scanner's rows are tested against."""
    span_rows: list[tuple[Any, ...]] = []
    attribute_rows: set[tuple[str, str, str]] = set()
    link_rows: list[tuple[str, str, str, str]] = []
    resource_rows: dict[int, bytes] = {}
    accepted = rejected = 0
    reason = ""
    for resource_spans in request.resource_spans:
        id_, resource_body = resource_id(resource_spans.resource)
        resource_rows[id_] = resource_body
        service = "unknown_service"
        for pair in resource_spans.resource.attributes:
            if pair.key == "service.name":
                service = pair.value.string_value or service
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.scope.name
            for span in scope_spans.spans:
                # Each field read once: a read of a decoded protobuf field builds an object.
                trace_bytes, span_bytes, parent_bytes = span.trace_id, span.span_id, span.parent_span_id
                start, end = span.start_time_unix_nano, span.end_time_unix_nano
                problem = ids_and_times_problem(trace_bytes, span_bytes, parent_bytes, start, end)
                if problem is not None:
                    rejected += 1
                    reason = reason or problem
                    continue
                accepted += 1
                trace_id = trace_bytes.hex()
                span_id = span_bytes.hex()
                span_rows.append(
                    (
                        trace_id,
                        span_id,
                        parent_bytes.hex() or None,
                        service,
                        span.name,
                        span.kind,
                        start,
                        end or start,
                        span.status.code,
                        id_,
                        scope,
                        span.SerializeToString(),
                    )
                )
                for pair in span.attributes:
                    key = pair.key
                    if key in indexed:
                        value = pair.value
                        which = value.WhichOneof("value")
                        if which == "string_value":
                            text = value.string_value
                        elif which in ("int_value", "double_value", "bool_value"):
                            text = str(getattr(value, which)).lower()
                        else:
                            continue
                        if len(text) <= MAX_INDEXED_VALUE:
                            attribute_rows.add((key, text, trace_id))
                for link in span.links:
                    link_rows.append((trace_id, span_id, link.trace_id.hex(), link.span_id.hex()))
    return PreparedBatch(
        span_rows, attribute_rows, link_rows, resource_rows, WriteResult(accepted, rejected, reason)
    )
