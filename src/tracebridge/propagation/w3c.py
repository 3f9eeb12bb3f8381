"""Strict W3C Trace Context Level 2 propagation.

Used in place of OpenTelemetry's stock ``tracecontext`` propagator, which takes the first of
several ``traceparent`` values (Level 2 says: duplicated ⇒ start a new trace), validates
``tracestate`` keys with the old grammar (``foo@``, a key starting with a digit or a long
vendor part are legal today), and keeps part of a ``tracestate`` it should discard.  The
processing model here is the spec's: a ``tracestate`` with any invalid member, a duplicated
key or more than 32 members is discarded whole; a valid one travels unchanged, in order.
Extraction runs on every inbound request and every consumed record, often on hostile input,
so the common ``traceparent`` path is one anchored fixed-width pattern (linear on any input,
no backtracking) and no logging, and never raises.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from opentelemetry import trace
from opentelemetry.context.context import Context
from opentelemetry.propagators import textmap
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState
from opentelemetry.trace.span import DEFAULT_TRACE_STATE

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
MAX_TRACESTATE_MEMBERS = 32
# Longer than 32 members of the largest legal size plus generous optional white space is
# hostile, not a tracestate: discarded without being split.
MAX_TRACESTATE_LENGTH = 32 * (256 + 1 + 256 + 1) + 4096

# version-traceid-parentid-flags, lowercase hex only; what may follow is checked by hand.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
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


_FLAGS = tuple(TraceFlags(value) for value in range(256))
_MAX_TRACE_ID = (1 << 128) - 1
_MAX_SPAN_ID = (1 << 64) - 1


def _direct_construction_matches() -> bool:
    """Whether ``SpanContext`` is still the 6-tuple we build directly (checked once, at import;
    a future API that changes its layout gets the constructor instead)."""
    try:
        probe = SpanContext(1, 2, True, _FLAGS[1], DEFAULT_TRACE_STATE)
        direct = tuple.__new__(SpanContext, (1, 2, True, _FLAGS[1], DEFAULT_TRACE_STATE, True))
        return len(probe) == 6 and direct == probe and direct.is_valid and direct.trace_flags.sampled
    except Exception:
        return False


_DIRECT = _direct_construction_matches()


def context_fields(span_context: SpanContext) -> tuple[int, int, bool, int, TraceState, bool]:
    """``(trace_id, span_id, is_remote, trace_flags, trace_state, is_valid)`` in one read: the
    tuple a ``SpanContext`` is, where its layout is the one checked at import, instead of a
    Python property call for each field (six of them per record on the consumer's path)."""
    if _DIRECT:
        return span_context
    return (
        span_context.trace_id,
        span_context.span_id,
        span_context.is_remote,
        span_context.trace_flags,
        span_context.trace_state,
        span_context.is_valid,
    )


def new_span_context(
    trace_id: int,
    span_id: int,
    is_remote: bool,
    flags: int,
    trace_state: TraceState = DEFAULT_TRACE_STATE,
) -> SpanContext:
    """``SpanContext(...)`` with shared ``TraceFlags`` and without the constructor's argument
    handling, which costs more than the rest of an unsampled record: one is made for every span
    and every parsed ``traceparent``, sampled or not."""
    if _DIRECT:
        valid = 0 < trace_id <= _MAX_TRACE_ID and 0 < span_id <= _MAX_SPAN_ID
        return tuple.__new__(
            SpanContext, (trace_id, span_id, is_remote, _FLAGS[flags & 0xFF], trace_state, valid)
        )
    return SpanContext(trace_id, span_id, is_remote, _FLAGS[flags & 0xFF], trace_state)


def parse_traceparent(value: str) -> SpanContext | None:
    """Return the remote span context a ``traceparent`` value names, or ``None`` if invalid.

    Level 2 rules: lowercase hex only; version ``ff`` is invalid; version ``00`` is exactly 55
    characters; a higher version may carry more fields after a ``-``; all-zero ids are invalid.
    The flags byte is kept as sent, so the random-trace-id flag (``0x02``) survives.
    """
    value = value.strip(" \t")
    match = _TRACEPARENT.match(value)
    if match is None:
        return None
    version = match[1]
    if version == "00":
        if len(value) != 55:
            return None
    elif version == "ff" or (len(value) > 55 and value[55] != "-"):
        return None
    trace_id = match[2]
    span_id = match[3]
    if trace_id == _ZERO_TRACE_ID or span_id == _ZERO_SPAN_ID:
        return None
    return new_span_context(int(trace_id, 16), int(span_id, 16), True, int(match[4], 16))


def parse_context(traceparent: str, tracestates: Sequence[str] | None) -> SpanContext | None:
    """The remote span context a ``traceparent`` names, with the ``tracestate`` lines that came
    with it (HTTP headers, Kafka record headers); ``None`` if the ``traceparent`` is invalid."""
    span_context = parse_traceparent(traceparent)
    if span_context is None or not tracestates:
        return span_context
    return new_span_context(
        span_context.trace_id,
        span_context.span_id,
        True,
        span_context.trace_flags,
        parse_tracestate(tracestates),
    )


_FLAGS_SUFFIX = tuple(f"-{value:02x}" for value in range(256))


def format_traceparent(span_context: SpanContext) -> str:
    """The ``traceparent`` value (version 00) for a valid span context."""
    # %-formatting and a table for the flags: half the time of an f-string with format specs,
    # paid for every record sent and every call made, sampled or not.
    trace_id, span_id, _, flags, _, _ = span_context if _DIRECT else context_fields(span_context)
    return "00-%032x-%016x" % (trace_id, span_id) + _FLAGS_SUFFIX[flags & 0xFF]  # noqa: UP031


def tracestate_header(span_context: SpanContext) -> str | None:
    """The ``tracestate`` value to send with a span context, ``None`` when it has no members
    (the common case, answered without asking the state object)."""
    state = span_context[4] if _DIRECT else span_context.trace_state
    if state is DEFAULT_TRACE_STATE or not state:
        return None
    return state.to_header()


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
        state = tracestate_header(span_context)
        if state is not None:
            setter.set(carrier, TRACESTATE, state)

    @property
    def fields(self) -> set[str]:
        """The carrier keys this propagator writes."""
        return {TRACEPARENT, TRACESTATE}
