"""Strict W3C Trace Context Level 2 propagation.

Used in place of OpenTelemetry's stock ``tracecontext`` propagator, which takes the first of
several ``traceparent`` values (Level 2 says: duplicated ⇒ start a new trace) and throws the
whole ``tracestate`` away when a single member is malformed (Level 2 lets us drop just that
member).  Extraction runs on every inbound request and every consumed record, often on
hostile input, so it is written without regular expressions or logging for the common
``traceparent`` path and never raises.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from opentelemetry import trace
from opentelemetry.context.context import Context
from opentelemetry.propagators import textmap
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
MAX_TRACESTATE_MEMBERS = 32
# A tracestate longer than this is not worth parsing: 32 members of the largest legal size.
MAX_TRACESTATE_LENGTH = 32 * (256 + 1 + 256 + 1)

_HEX = frozenset("0123456789abcdef")
_ZERO_TRACE_ID = "0" * 32
_ZERO_SPAN_ID = "0" * 16
# Level 2 key grammar: simple keys, and multi-tenant keys "tenant@system".
_TRACESTATE_KEY = re.compile(
    r"[a-z][_0-9a-z\-*/]{0,255}|[a-z0-9][_0-9a-z\-*/]{0,240}@[a-z][_0-9a-z\-*/]{0,13}"
)
_TRACESTATE_VALUE = re.compile(r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]")


def parse_traceparent(value: str) -> SpanContext | None:
    """Return the remote span context a ``traceparent`` value names, or ``None`` if invalid.

    Level 2 rules: lowercase hex only; version ``ff`` is invalid; version ``00`` is exactly 55
    characters; a higher version may carry more fields after a ``-``; all-zero ids are invalid.
    The flags byte is kept as sent, so the random-trace-id flag (``0x02``) survives.
    """
    value = value.strip(" \t")
    length = len(value)
    if length < 55 or value[2] != "-" or value[35] != "-" or value[52] != "-":
        return None
    version = value[0:2]
    if version == "00":
        if length != 55:
            return None
    elif version == "ff" or (length > 55 and value[55] != "-"):
        return None
    trace_id = value[3:35]
    span_id = value[36:52]
    flags = value[53:55]
    if not _HEX.issuperset(version) or not _HEX.issuperset(trace_id):
        return None
    if not _HEX.issuperset(span_id) or not _HEX.issuperset(flags):
        return None
    if trace_id == _ZERO_TRACE_ID or span_id == _ZERO_SPAN_ID:
        return None
    return SpanContext(
        trace_id=int(trace_id, 16),
        span_id=int(span_id, 16),
        is_remote=True,
        trace_flags=TraceFlags(int(flags, 16)),
    )


def parse_tracestate(values: Iterable[str]) -> TraceState:
    """Parse one or more ``tracestate`` values, keeping every legal member.

    Illegal members are dropped one by one; for a duplicated key the first (most recent)
    member wins; members past the 32nd are dropped.
    """
    entries: list[tuple[str, str]] = []
    seen: set[str] = set()
    total = 0
    for value in values:
        total += len(value)
        if total > MAX_TRACESTATE_LENGTH:
            break
        for member in value.split(","):
            member = member.strip(" \t")
            if not member:
                continue
            key, sep, item = member.partition("=")
            if not sep or key in seen:
                continue
            if _TRACESTATE_KEY.fullmatch(key) is None or _TRACESTATE_VALUE.fullmatch(item) is None:
                continue
            seen.add(key)
            entries.append((key, item))
            if len(entries) == MAX_TRACESTATE_MEMBERS:
                return TraceState(entries)
    return TraceState(entries)


class StrictTraceContextPropagator(textmap.TextMapPropagator):
    """W3C Trace Context Level 2, strict on input, never raising."""

    def extract(
        self,
        carrier: textmap.CarrierT,
        context: Context | None = None,
        getter: textmap.Getter[textmap.CarrierT] = textmap.default_getter,
    ) -> Context:
        """Return ``context`` with the remote parent named by the carrier, if it names a valid one."""
        if context is None:
            context = Context()
        try:
            parents = getter.get(carrier, TRACEPARENT)
            # Duplicated traceparent is ambiguous: start a new trace rather than guess.
            if not parents or len(parents) != 1:
                return context
            span_context = parse_traceparent(parents[0])
            if span_context is None:
                return context
            states = getter.get(carrier, TRACESTATE)
            if states:
                span_context = SpanContext(
                    trace_id=span_context.trace_id,
                    span_id=span_context.span_id,
                    is_remote=True,
                    trace_flags=span_context.trace_flags,
                    trace_state=parse_tracestate(states),
                )
            return trace.set_span_in_context(NonRecordingSpan(span_context), context)
        except Exception:  # a hostile carrier or getter must never reach the application
            return context

    def inject(
        self,
        carrier: textmap.CarrierT,
        context: Context | None = None,
        setter: textmap.Setter[textmap.CarrierT] = textmap.default_setter,
    ) -> None:
        """Write ``traceparent`` (and ``tracestate`` when non-empty) for the span in ``context``."""
        span_context = trace.get_current_span(context).get_span_context()
        if not span_context.is_valid:
            return
        setter.set(
            carrier,
            TRACEPARENT,
            f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-{span_context.trace_flags:02x}",
        )
        if span_context.trace_state:
            setter.set(carrier, TRACESTATE, span_context.trace_state.to_header())

    @property
    def fields(self) -> set[str]:
        """The carrier keys this propagator writes."""
        return {TRACEPARENT, TRACESTATE}
