"""Moving a trace context into and out of one message, whatever the broker.

Producers write where ``TRACEBRIDGE_KAFKA_CARRIER`` says; consumers always try headers first,
then the envelope, and report which one worked as ``tracebridge.context.source`` so a broken
chain (``none``) is visible instead of silently becoming a new trace.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context

from tracebridge.config import KafkaCarrier
from tracebridge.propagation.carriers import (
    DICT_GETTER,
    KAFKA_HEADERS_GETTER,
    KAFKA_HEADERS_SETTER,
    read_envelope,
    write_envelope,
)

SOURCE_HEADERS = "headers"
SOURCE_ENVELOPE = "envelope"
SOURCE_NONE = "none"


def extract_record_context(
    headers: Sequence[tuple[str, bytes | None]] | None, value: object
) -> tuple[Context, str]:
    """Return the context a record carries and where it came from; never raises.

    The returned context always holds whatever baggage was found, even when no valid parent
    was, so business keys survive a broken chain.
    """
    propagator = propagate.get_global_textmap()
    found = Context()
    if headers:
        try:
            found = propagator.extract(headers, Context(), getter=KAFKA_HEADERS_GETTER)
        except Exception:
            found = Context()
        if trace.get_current_span(found).get_span_context().is_valid:
            return found, SOURCE_HEADERS
    try:
        envelope = read_envelope(value)
        if envelope is not None:
            from_envelope = propagator.extract(envelope, found, getter=DICT_GETTER)
            if trace.get_current_span(from_envelope).get_span_context().is_valid:
                return from_envelope, SOURCE_ENVELOPE
    except Exception:
        pass
    return found, SOURCE_NONE


def inject_record_context(
    carrier_mode: KafkaCarrier,
    context: Context,
    headers: Sequence[tuple[str, bytes | None]] | None,
    value: object,
) -> tuple[list[tuple[str, bytes | None]], object]:
    """Return ``(headers, value)`` carrying ``context`` as ``carrier_mode`` asks.

    Never mutates the caller's headers or value (a producer may reuse them).  A body that
    can't hold an envelope (not a JSON object) gets headers instead: a context written in the
    wrong place is better than a context lost.
    """
    propagator = propagate.get_global_textmap()
    new_headers: list[tuple[str, bytes | None]] = list(headers) if headers else []
    if carrier_mode is not KafkaCarrier.HEADERS:
        fields: dict[str, str] = {}
        propagator.inject(fields, context)
        enveloped = write_envelope(value, fields) if fields else None
        if enveloped is not None:
            value = enveloped
            if carrier_mode is KafkaCarrier.ENVELOPE:
                return _strip_fields(new_headers, propagator.fields), value
    propagator.inject(new_headers, context, setter=KAFKA_HEADERS_SETTER)  # type: ignore[misc]
    return new_headers, value


def _strip_fields(headers: list[tuple[str, Any]], fields: set[str]) -> list[tuple[str, Any]]:
    """Drop stale context headers (from a forwarded record) when only the envelope is written."""
    if not headers:
        return headers
    return [item for item in headers if not (isinstance(item[0], str) and item[0].lower() in fields)]
