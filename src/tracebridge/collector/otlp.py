"""OTLP protobuf → :class:`SpanRecord`: the one place that knows the wire format."""

from __future__ import annotations

from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from tracebridge.analysis.model import KINDS, EventRecord, LinkRecord, SpanRecord

_STATUS = {0: "UNSET", 1: "OK", 2: "ERROR"}


class InvalidOtlp(ValueError):
    """The body is not an OTLP ExportTraceServiceRequest."""


def any_value(value: AnyValue) -> Any:
    """An OTLP AnyValue as a plain JSON-able Python value."""
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [any_value(item) for item in value.array_value.values]
    if which == "kvlist_value":
        return attributes(value.kvlist_value.values)
    if which == "bytes_value":
        return value.bytes_value.hex()
    return getattr(value, which)


def attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: any_value(pair.value) for pair in pairs if isinstance(pair, KeyValue)}


def decode_protobuf(body: bytes) -> list[SpanRecord]:
    """Decode an ExportTraceServiceRequest body; raises :class:`InvalidOtlp` on garbage."""
    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(body)
    except Exception as error:
        raise InvalidOtlp(f"not an OTLP protobuf ExportTraceServiceRequest: {error}") from error
    records: list[SpanRecord] = []
    for resource_spans in request.resource_spans:
        resource = attributes(resource_spans.resource.attributes)
        service = str(resource.get("service.name", "unknown_service"))
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                records.append(
                    SpanRecord(
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex() or None,
                        name=span.name,
                        kind=KINDS[span.kind] if 0 <= span.kind < len(KINDS) else "UNSPECIFIED",
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                        service=service,
                        status=_STATUS.get(span.status.code, "UNSET"),
                        status_message=span.status.message,
                        attributes=attributes(span.attributes),
                        events=tuple(
                            EventRecord(e.name, e.time_unix_nano, attributes(e.attributes))
                            for e in span.events
                        ),
                        links=tuple(
                            LinkRecord(link.trace_id.hex(), link.span_id.hex(), attributes(link.attributes))
                            for link in span.links
                        ),
                        scope=scope_spans.scope.name,
                        resource=resource,
                    )
                )
    return records
