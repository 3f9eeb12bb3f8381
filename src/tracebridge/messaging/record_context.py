"""Moving a trace context into and out of one message, whatever the broker.

Producers write where ``TRACEBRIDGE_KAFKA_CARRIER`` says; consumers always try headers first,
then the envelope.  In the headers, whatever ``OTEL_PROPAGATORS`` says for injection, a consumer
reads W3C first, then B3 (single ``b3``, then multi ``X-B3-*``), then Jaeger's ``uber-trace-id``
(with ``uberctx-*`` baggage): a fleet half-way through a migration from Zipkin, Jaeger or
OpenTracing clients keeps one trace.  Which one worked is ``tracebridge.context.source``
(``headers`` for W3C or the configured propagator, ``b3``, ``b3multi``, ``jaeger``,
``envelope``, or ``none``) so a broken
chain (``none``) is visible instead of silently becoming a new trace — and, for a broken chain,
why (``tracebridge.context.problem``: ``missing``, ``duplicated-traceparent``,
``invalid-traceparent``, ``envelope-unparsable``, …), because "a .NET producer appends a second
traceparent" and "nobody injects on this topic" are fixed in different places.  With the default W3C
propagators the headers are handled in one direct pass (this runs for every record); any other
propagator goes through the standard TextMap API.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.b3 import B3MultiFormat
from opentelemetry.propagators.jaeger import JaegerPropagator
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.trace import INVALID_SPAN, NonRecordingSpan, Span, SpanContext

from tracebridge.config import KafkaCarrier
from tracebridge.propagation.carriers import (
    DICT_GETTER,
    KAFKA_HEADERS_GETTER,
    KAFKA_HEADERS_SETTER,
    read_envelope,
    write_envelope,
)
from tracebridge.propagation.composite import TracebridgePropagator, baggage_present
from tracebridge.propagation.w3c import (
    TRACEPARENT,
    TRACESTATE,
    StrictTraceContextPropagator,
    context_fields,
    format_traceparent,
    parse_context,
    tracestate_header,
)

SOURCE_HEADERS = "headers"
SOURCE_B3 = "b3"
SOURCE_B3_MULTI = "b3multi"
SOURCE_JAEGER = "jaeger"
SOURCE_ENVELOPE = "envelope"
SOURCE_NONE = "none"

_B3 = B3MultiFormat()  # reads the single ``b3`` header if there is one, else ``X-B3-*``
# The formats a consumer falls back to, in order: (source, header that says it is there, reader).
_FALLBACKS: tuple[tuple[str, str, TextMapPropagator], ...] = (
    (SOURCE_HEADERS, TRACEPARENT, StrictTraceContextPropagator()),
    (SOURCE_B3, "b3", _B3),
    (SOURCE_B3_MULTI, "x-b3-traceid", _B3),
    (SOURCE_JAEGER, "uber-trace-id", JaegerPropagator()),
)
_CONTEXT_FIELDS = frozenset(field for _source, field, _reader in _FALLBACKS)

# Why a record's context could not be used (``tracebridge.context.problem``).
PROBLEM_MISSING = "missing"
PROBLEM_ENVELOPE_UNPARSABLE = "envelope-unparsable"

Headers = Sequence[tuple[str, bytes | None]]
_BAGGAGE = "baggage"
_W3C_FIELDS = frozenset((TRACEPARENT, TRACESTATE, _BAGGAGE))
_EMPTY = Context()


def _text(raw: object) -> str:
    if raw is None:
        return ""
    if isinstance(raw, bytes | bytearray | memoryview):
        return bytes(raw).decode("utf-8", "replace")
    return str(raw)


def _extract_w3c_headers(
    headers: Headers, propagator: TracebridgePropagator
) -> tuple[SpanContext | None, Context, str | None]:
    """Parent, baggage and (without a parent) the problem, from Kafka headers in one pass
    (strict W3C, like the propagator: a duplicated traceparent starts a new trace)."""
    parents = 0
    traceparent: object = None
    states: list[str] | None = None
    has_baggage = False
    for item in headers:
        name = item[0]
        if name != TRACEPARENT and name != TRACESTATE and name != _BAGGAGE:
            if not isinstance(name, str):
                continue
            name = name.lower()
            if name not in _W3C_FIELDS:
                continue
        if name == TRACEPARENT:
            parents += 1
            traceparent = item[1]
        elif name == TRACESTATE:
            if states is None:
                states = []
            states.append(_text(item[1]))
        else:
            has_baggage = True
    carried = _EMPTY
    if has_baggage and propagator.baggage is not None:
        carried = propagator.baggage.extract(headers, Context(), getter=KAFKA_HEADERS_GETTER)
    if parents != 1:
        return None, carried, (None if parents == 0 else "duplicated-traceparent")
    span_context = parse_context(_text(traceparent), states)
    if span_context is None:
        return None, carried, "invalid-traceparent"
    return span_context, carried, None


def _header_problem(headers: Headers, fields: set[str]) -> str | None:
    """``duplicated-X`` or ``invalid-X`` for the first context field ``X`` the headers carry
    (any propagator: ``traceparent``, ``b3``, ``uber-trace-id``, …); ``None`` if they carry none.
    Runs only for a record whose context could not be used."""
    counts: dict[str, int] = {}
    for item in headers:
        try:
            name = item[0].lower()
        except (AttributeError, IndexError, TypeError):
            continue
        if name in fields:
            counts[name] = counts.get(name, 0) + 1
    for name in sorted(fields, key=lambda field: (field != TRACEPARENT, field)):
        if name in counts:
            return f"duplicated-{name}" if counts[name] > 1 else f"invalid-{name}"
    return None


def _fallback_parent(headers: Headers, carried: Context) -> tuple[SpanContext, Context, str] | None:
    """The first of W3C, B3 single, B3 multi and Jaeger that the headers carry validly, for a
    record the configured propagator found no context in.  Runs only on that failure path."""
    present: set[str] = set()
    for item in headers:
        name = item[0]
        if isinstance(name, str):
            lowered = name.lower()
            if lowered in _CONTEXT_FIELDS:
                present.add(lowered)
    if not present:
        return None
    base = trace.set_span_in_context(INVALID_SPAN, carried)  # keep the baggage, not a parent
    for source, field, reader in _FALLBACKS:
        if field not in present:
            continue
        extracted = reader.extract(headers, base, getter=KAFKA_HEADERS_GETTER)
        parent = trace.get_current_span(extracted).get_span_context()
        if parent.is_valid:
            return parent, extracted, source
    return None


def _envelope_problem(value: object) -> str | None:
    """Why a body that mentions ``trace_context`` gave no parent (``None``: it has no envelope)."""
    if isinstance(value, bytes | bytearray):
        mentioned = b'"trace_context"' in value
    elif isinstance(value, str):
        mentioned = '"trace_context"' in value
    else:
        mentioned = False
    if not mentioned:
        return None
    envelope = read_envelope(value)
    if envelope is None:
        return PROBLEM_ENVELOPE_UNPARSABLE
    return "envelope-invalid-traceparent" if TRACEPARENT in envelope else "envelope-missing-traceparent"


def extract_record_parent(
    headers: Headers | None, value: object
) -> tuple[SpanContext | None, Context, str, str | None]:
    """Return ``(parent, carried, source, problem)`` for a record; never raises.

    ``parent`` is the remote span context the record names (``None`` for a broken chain),
    ``carried`` the rest of what it carries (baggage) — kept even when no parent was found, so
    business keys survive a broken chain — ``source`` where the parent came from, and
    ``problem`` (only when there is no parent) why: the headers' problem first, since headers
    are read first, then the envelope's, else ``missing``.
    """
    propagator = propagate.get_global_textmap()
    carried = _EMPTY
    problem: str | None = None
    if headers:
        source = SOURCE_HEADERS
        try:
            if isinstance(propagator, TracebridgePropagator) and propagator.w3c_only:
                parent, carried, problem = _extract_w3c_headers(headers, propagator)
            else:
                # The configured propagators give the baggage (and, for a propagator of the
                # user's own, perhaps the only parent); the fixed order below still decides.
                carried = propagator.extract(headers, Context(), getter=KAFKA_HEADERS_GETTER)
                parent = trace.get_current_span(carried).get_span_context()
                ordered = _fallback_parent(headers, carried)
                if ordered is not None:
                    parent, carried, source = ordered
                elif not parent.is_valid:
                    problem = _header_problem(headers, propagator.fields - {TRACESTATE, _BAGGAGE})
            if parent is None or not parent.is_valid:
                fallback = _fallback_parent(headers, carried)
                if fallback is not None:
                    parent, carried, source = fallback
                elif problem is None:
                    problem = _header_problem(headers, set(_CONTEXT_FIELDS))
        except Exception:
            parent, carried, problem = None, _EMPTY, "unreadable-headers"
        if parent is not None and parent.is_valid:
            return parent, carried, source, None
    try:
        envelope = read_envelope(value)
        if envelope is not None:
            from_envelope = propagator.extract(envelope, carried, getter=DICT_GETTER)
            parent = trace.get_current_span(from_envelope).get_span_context()
            if parent.is_valid:
                return parent, from_envelope, SOURCE_ENVELOPE, None
        if problem is None:
            problem = _envelope_problem(value)
    except Exception:
        problem = problem or PROBLEM_ENVELOPE_UNPARSABLE
    return None, carried, SOURCE_NONE, problem or PROBLEM_MISSING


def extract_record_context(headers: Headers | None, value: object) -> tuple[Context, str]:
    """The record's context (parent span and baggage) as one Context, and its source."""
    parent, carried, source, _problem = extract_record_parent(headers, value)
    if parent is None:
        return carried, source
    return trace.set_span_in_context(NonRecordingSpan(parent), carried), source


def inject_record_context(
    carrier_mode: KafkaCarrier,
    span: Span,
    headers: Headers | None,
    value: object,
    current: Context | None = None,
) -> tuple[list[tuple[str, bytes | None]], object]:
    """Return ``(headers, value)`` carrying ``span`` and the baggage of ``current`` (default:
    the current context), as ``carrier_mode`` asks.

    Never mutates the caller's headers or value (a producer may reuse them).  Context headers
    left over from a forwarded record are replaced.  A body that can't hold an envelope (not a
    JSON object) gets headers instead: a context in the wrong place beats a context lost.
    """
    propagator = propagate.get_global_textmap()
    if (
        carrier_mode is KafkaCarrier.HEADERS
        and isinstance(propagator, TracebridgePropagator)
        and propagator.w3c_only
    ):
        new_headers = _without(headers, _W3C_FIELDS) if headers else []
        span_context = span.get_span_context()
        valid = context_fields(span_context)[5]
        if valid:
            new_headers.append((TRACEPARENT, format_traceparent(span_context).encode()))
            state = tracestate_header(span_context)
            if state is not None:
                new_headers.append((TRACESTATE, state.encode()))
        if propagator.baggage is not None and baggage_present(current):
            propagator.baggage.inject(new_headers, current, setter=KAFKA_HEADERS_SETTER)
        return new_headers, value

    context = trace.set_span_in_context(span, current)
    fields_written = propagator.fields
    new_headers = list(headers) if headers else []
    if carrier_mode is not KafkaCarrier.HEADERS:
        fields: dict[str, str] = {}
        propagator.inject(fields, context)
        enveloped = write_envelope(value, fields) if fields else None
        if enveloped is not None:
            value = enveloped
            if carrier_mode is KafkaCarrier.ENVELOPE:
                return _without(new_headers, fields_written), value
    propagator.inject(new_headers, context, setter=KAFKA_HEADERS_SETTER)
    return new_headers, value


def _without(headers: Sequence[tuple[str, Any]], fields: set[str] | frozenset[str]) -> list[tuple[str, Any]]:
    """Headers minus stale context fields (from a forwarded record)."""
    return [item for item in headers if not (isinstance(item[0], str) and item[0].lower() in fields)]
