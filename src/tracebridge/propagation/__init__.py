"""Trace-context carriers and the strict W3C propagator."""

from tracebridge.propagation.carriers import (
    ENVELOPE_FIELD,
    KAFKA_HEADERS_GETTER,
    KAFKA_HEADERS_SETTER,
    read_envelope,
    write_envelope,
)
from tracebridge.propagation.w3c import StrictTraceContextPropagator, parse_traceparent, parse_tracestate

__all__ = [
    "ENVELOPE_FIELD",
    "KAFKA_HEADERS_GETTER",
    "KAFKA_HEADERS_SETTER",
    "StrictTraceContextPropagator",
    "parse_traceparent",
    "parse_tracestate",
    "read_envelope",
    "write_envelope",
]
