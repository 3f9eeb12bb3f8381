"""OTLP trace data ⇄ :class:`SpanRecord`: the one place that knows the wire formats.

Used by the collector (protobuf and JSON request bodies) and by the analysis (OTLP JSON files,
Jaeger's v3 API), so both read spans the same way.  OTLP JSON is not protobuf's JSON mapping:
ids are hex, not base64 — so ids are converted before the generic parser sees the document.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tracebridge.analysis.model import KINDS, EventRecord, LinkRecord, SpanRecord

_STATUS = {0: "UNSET", 1: "OK", 2: "ERROR"}
_NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}
_ID_FIELDS = ("traceId", "spanId", "parentSpanId")
# OTLP times are fixed64; the store and every analysis keep them as signed 64-bit integers.
MAX_TIME_NS = 2**63 - 1


class InvalidOtlp(ValueError):
    """The body is not an OTLP ExportTraceServiceRequest."""


def any_value(value: AnyValue) -> Any:
    """An OTLP AnyValue as a plain JSON-able Python value."""
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "string_value":
        return value.string_value
    if which == "array_value":
        return [any_value(item) for item in value.array_value.values]
    if which == "kvlist_value":
        return attributes(value.kvlist_value.values)
    if which == "bytes_value":
        return value.bytes_value.hex()
    if which == "double_value":
        number = value.double_value
        # NaN and ±inf are legal doubles but not JSON: as text, every API and --json output
        # stays valid JSON (OTLP's own JSON mapping writes them the same way).
        return number if math.isfinite(number) else _NON_FINITE[str(number)]
    return getattr(value, which)


def attributes(pairs: Any) -> dict[str, Any]:
    """OTLP KeyValue list → dict."""
    return {pair.key: any_value(pair.value) for pair in pairs}


_Request = TypeVar("_Request", ExportTraceServiceRequest, ExportLogsServiceRequest)


def _parse_binary(message: type[_Request], body: bytes) -> _Request:
    request = message()
    try:
        request.ParseFromString(body)
    except Exception as error:
        raise InvalidOtlp(f"not an OTLP protobuf {message.__name__}: {error}") from error
    return request


def _parse_document(
    message: type[_Request], body: bytes | str, top: str, convert: Callable[[dict[str, Any]], None]
) -> _Request:
    """OTLP JSON: hex ids (``convert`` makes them protobuf's base64), camelCase or snake_case."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as error:
        raise InvalidOtlp(f"not JSON: {error}") from error
    if not isinstance(document, dict):
        raise InvalidOtlp(f"an OTLP JSON document is an object with {top}")
    try:
        convert(document)
        request = message()
        json_format.ParseDict(document, request, ignore_unknown_fields=True)
        return request
    except InvalidOtlp:
        raise
    except Exception as error:
        raise InvalidOtlp(f"not an OTLP JSON {message.__name__}: {error}") from error


def parse_protobuf(body: bytes) -> ExportTraceServiceRequest:
    """Parse a protobuf request body; raises :class:`InvalidOtlp` on garbage."""
    return _parse_binary(ExportTraceServiceRequest, body)


def parse_json(body: bytes | str) -> ExportTraceServiceRequest:
    """Parse an OTLP JSON document (hex ids, camelCase or snake_case fields)."""
    return _parse_document(ExportTraceServiceRequest, body, "resourceSpans", _hex_ids_to_base64)


def parse_logs_protobuf(body: bytes) -> ExportLogsServiceRequest:
    """Parse a ``/v1/logs`` protobuf body; raises :class:`InvalidOtlp` on garbage."""
    return _parse_binary(ExportLogsServiceRequest, body)


def parse_logs_json(body: bytes | str) -> ExportLogsServiceRequest:
    """Parse an OTLP JSON logs document (hex ids, camelCase or snake_case fields)."""
    return _parse_document(ExportLogsServiceRequest, body, "resourceLogs", _hex_log_ids_to_base64)


def _hex_log_ids_to_base64(document: dict[str, Any]) -> None:
    for resource_logs in _list(document, "resourceLogs", "resource_logs"):
        for scope_logs in _list(resource_logs, "scopeLogs", "scope_logs"):
            for record in _list(scope_logs, "logRecords", "log_records"):
                _convert_ids(record)


def _hex_ids_to_base64(document: dict[str, Any]) -> None:
    for resource_spans in _list(document, "resourceSpans", "resource_spans"):
        for scope_spans in _list(resource_spans, "scopeSpans", "scope_spans"):
            for span in _list(scope_spans, "spans"):
                _convert_ids(span)
                for link in _list(span, "links"):
                    _convert_ids(link)


def _list(container: object, *names: str) -> list[Any]:
    if not isinstance(container, dict):
        raise InvalidOtlp("expected an object")
    for name in names:
        value = container.get(name)
        if value is not None:
            if not isinstance(value, list):
                raise InvalidOtlp(f"{name} must be a list")
            return value
    return []


def _convert_ids(item: dict[str, Any]) -> None:
    for camel in _ID_FIELDS:
        snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in camel)
        for key in (camel, snake):
            value = item.get(key)
            if isinstance(value, str) and value:
                try:
                    item[key] = base64.b64encode(bytes.fromhex(value)).decode()
                except ValueError as error:
                    raise InvalidOtlp(f"{key} {value!r} is not hex") from error


def to_json(request: ExportTraceServiceRequest) -> str:
    """An OTLP JSON document (hex ids), e.g. for files the analysis reads."""
    document = json_format.MessageToDict(request)
    for resource_spans in document.get("resourceSpans", []):
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                for item in (span, *span.get("links", [])):
                    for key in _ID_FIELDS:
                        if key in item:
                            item[key] = base64.b64decode(item[key]).hex()
    return json.dumps(document)


def span_problem(span: Span) -> str | None:
    """Why a span can't be stored, or ``None`` (OTLP: ids of 16/8 bytes, not all zero)."""
    return ids_and_times_problem(
        span.trace_id, span.span_id, span.parent_span_id, span.start_time_unix_nano, span.end_time_unix_nano
    )


_NO_TRACE_ID, _NO_SPAN_ID = bytes(16), bytes(8)


def ids_and_times_problem(
    trace_id: bytes, span_id: bytes, parent_id: bytes, start: int, end: int
) -> str | None:
    """:func:`span_problem` for a caller that has read the fields already: each read of a
    decoded protobuf field builds a new object, and the collector reads them for every span."""
    if len(trace_id) != 16 or trace_id == _NO_TRACE_ID:
        return "invalid trace_id"
    if len(span_id) != 8 or span_id == _NO_SPAN_ID:
        return "invalid span_id"
    if parent_id and len(parent_id) != 8:
        return "invalid parent_span_id"
    if end and end < start:
        return "ends before it starts"
    if start > MAX_TIME_NS or end > MAX_TIME_NS:
        return "time past year 2262"
    return None


def record_from_span(span: Span, service: str, resource: dict[str, Any], scope: str) -> SpanRecord:
    """One protobuf span as a :class:`SpanRecord`."""
    return SpanRecord(
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
        events=tuple(EventRecord(e.name, e.time_unix_nano, attributes(e.attributes)) for e in span.events),
        links=tuple(
            LinkRecord(link.trace_id.hex(), link.span_id.hex(), attributes(link.attributes))
            for link in span.links
        ),
        scope=scope,
        resource=resource,
    )


def iter_spans(request: ExportTraceServiceRequest) -> Iterator[tuple[Span, str, dict[str, Any], str]]:
    """Every span of a request with its service, resource attributes and scope name."""
    for resource_spans in request.resource_spans:
        resource = attributes(resource_spans.resource.attributes)
        service = str(resource.get("service.name", "unknown_service"))
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                yield span, service, resource, scope_spans.scope.name


def records(request: ExportTraceServiceRequest) -> list[SpanRecord]:
    """All valid spans of a request as records (invalid ones are skipped)."""
    return [
        record_from_span(span, service, resource, scope)
        for span, service, resource, scope in iter_spans(request)
        if span_problem(span) is None
    ]


__all__ = [
    "InvalidOtlp",
    "any_value",
    "attributes",
    "ids_and_times_problem",
    "iter_spans",
    "parse_json",
    "parse_logs_json",
    "parse_logs_protobuf",
    "parse_protobuf",
    "record_from_span",
    "records",
    "span_problem",
    "to_json",
]
