"""Strict W3C Trace Context Level 2 propagation.

Used in place of OpenTelemetry's stock ``tracecontext`` propagator, which takes the first of
several ``traceparent`` values (Level 2 says: duplicated ⇒ start a new trace), validates
``tracestate`` keys with the old grammar (``foo@``, a key starting with a digit or a long
vendor part are legal today), and keeps part of a ``tracestate`` it should discard.  The
processing model here is the spec's: a ``tracestate`` with any invalid member, a duplicated
key or more than 32 members is discarded whole; a valid one travels unchanged, in order.
Extraction runs on every inbound request and every consumed record, often on hostile input,
so it is written without regular expressions or logging for the common ``traceparent`` path
and never raises.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from opentelemetry import trace
from opentelemetry.context.context import Context
from opentelemetry.propagators import textmap
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
MAX_TRACESTATE_MEMBERS = 32
# Longer than 32 members of the largest legal size plus generous optional white space is
# hostile, not a tracestate: discarded without being split.
MAX_TRACESTATE_LENGTH = 32 * (256 + 1 + 256 + 1) + 4096

_HEX = frozenset("0123456789abcdef")
_ZERO_TRACE_ID = "0" * 32
_ZERO_SPAN_ID = "0" * 16
# key = ( lcalpha / DIGIT ) 0*255( keychar ); keychar = lcalpha / DIGIT / "_" / "-" / "*" / "/" / "@"
_TRACESTATE_KEY = re.compile(r"[a-z0-9][a-z0-9_\-*/@]{0,255}")
# value = 0*255( chr ) nblk-chr; chr = %x20 / nblk-chr; nblk-chr = %x21-2B / %x2D-3C / %x3E-7E
_TRACESTATE_VALUE = re.compile(r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]")
_OWS = " \t"


def is_valid_tracestate_member(key: str, value: str) -> bool:
    """Whether ``key=value`` is a legal ``tracestate`` list member (current key grammar)."""
    return _TRACESTATE_KEY.fullmatch(key) is not None and _TRACESTATE_VALUE.fullmatch(value) is not None


class W3CTraceState(TraceState):
    """A ``TraceState`` validated with the current W3C key grammar.

    The SDK's own ``TraceState`` checks keys against the old grammar and silently drops members
    we must propagate (``foo@bar@baz``, ``1vendor``, ``t@vvvvvvvvvvvvvvv``) — in its constructor
    and in every ``add``/``update``/``delete``, which build a new one.  This subclass is built
    from members already validated, and its modifications validate with the same rules and
    return the same type, so a state we accepted reaches the next hop whole.
    """

    def __init__(self, entries: Sequence[tuple[str, str]] | None = None) -> None:
        super().__init__()
        if entries:
            self._dict.update(entries)

    def add(self, key: str, value: str) -> TraceState:
        if key in self._dict or not is_valid_tracestate_member(key, value):
            return self
        if len(self._dict) >= MAX_TRACESTATE_MEMBERS:
            return self
        return W3CTraceState([(key, value), *self._dict.items()])

    def update(self, key: str, value: str) -> TraceState:
        if key not in self._dict or not is_valid_tracestate_member(key, value):
            return self
        rest = [(k, v) for k, v in self._dict.items() if k != key]
        return W3CTraceState([(key, value), *rest])

    def delete(self, key: str) -> TraceState:
        if key not in self._dict:
            return self
        return W3CTraceState([(k, v) for k, v in self._dict.items() if k != key])


_EMPTY_STATE = W3CTraceState()


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


def parse_context(traceparent: str, tracestates: Sequence[str] | None) -> SpanContext | None:
    """The remote span context a ``traceparent`` names, with the ``tracestate`` lines that came
    with it (HTTP headers, Kafka record headers); ``None`` if the ``traceparent`` is invalid."""
    span_context = parse_traceparent(traceparent)
    if span_context is None or not tracestates:
        return span_context
    return SpanContext(
        span_context.trace_id,
        span_context.span_id,
        is_remote=True,
        trace_flags=span_context.trace_flags,
        trace_state=parse_tracestate(tracestates),
    )


def format_traceparent(span_context: SpanContext) -> str:
    """The ``traceparent`` value (version 00) for a valid span context."""
    return f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-{span_context.trace_flags:02x}"


def parse_tracestate(values: Iterable[str]) -> TraceState:
    """Parse every ``tracestate`` header line of one request or record, as one list.

    The spec's processing model: empty and white-space-only list members are allowed (they
    come from joining several header lines); any other member that is not ``key=value`` in
    the current grammar, a key seen twice, or a 33rd member makes the whole ``tracestate``
    invalid, and an invalid one is discarded (an empty state is returned).  A valid one keeps
    its members in order, unchanged.
    """
    entries: list[tuple[str, str]] = []
    seen: set[str] = set()
    total = 0
    for value in values:
        total += len(value)
        if total > MAX_TRACESTATE_LENGTH:
            return _EMPTY_STATE
        for member in value.split(","):
            member = member.strip(_OWS)
            if not member:
                continue
            key, sep, item = member.partition("=")
            if not sep or key in seen or not is_valid_tracestate_member(key, item):
                return _EMPTY_STATE
            if len(entries) == MAX_TRACESTATE_MEMBERS:
                return _EMPTY_STATE
            seen.add(key)
            entries.append((key, item))
    return W3CTraceState(entries) if entries else _EMPTY_STATE


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
            span_context = parse_context(parents[0], getter.get(carrier, TRACESTATE))
            if span_context is None:
                return context
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
        setter.set(carrier, TRACEPARENT, format_traceparent(span_context))
        if span_context.trace_state:
            setter.set(carrier, TRACESTATE, span_context.trace_state.to_header())

    @property
    def fields(self) -> set[str]:
        """The carrier keys this propagator writes."""
        return {TRACEPARENT, TRACESTATE}
