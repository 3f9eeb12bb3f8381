"""Light spans for the per-record hot path.

A span from the SDK costs more than the Kafka client's own work per record: three locks, bounded
containers, and a type check of every attribute value on every set.  Our send/process/receive
spans set a dozen attributes of known types per record, so they are built here instead — with
everything that matters still taken from the SDK: the provider's sampler (and its
``OTEL_TRACES_SAMPLER`` setting), id generator, resource, span limits and span processors.
Processors receive this span in ``on_start`` (it implements the API ``Span``) and an SDK
``ReadableSpan`` in ``on_end``, so every exporter and batch processor works unchanged.

When the global provider is not the SDK's (a vendor distro, the no-op API), the ordinary
``tracer.start_span`` path is used, so behaviour is always correct and only speed differs.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Mapping, Sequence
from random import getrandbits
from types import MappingProxyType
from typing import Any

from opentelemetry import trace as trace_api
from opentelemetry.context import Context, get_current
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor, SynchronousMultiSpanProcessor
from opentelemetry.sdk.trace import Tracer as SdkTracer
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, Decision, ParentBased
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.propagation import _SPAN_KEY
from opentelemetry.trace.span import DEFAULT_TRACE_STATE, INVALID_SPAN_CONTEXT, TraceState

from tracebridge.propagation.w3c import context_fields, new_span_context

_SCALARS = (str, bool, int, float)
# The link a consumer span keeps to the producer span its record came from.
FOLLOWS_FROM: Mapping[str, Any] = MappingProxyType({"tracebridge.link.type": "follows_from"})
_EMPTY_STATE = DEFAULT_TRACE_STATE
_INVALID = INVALID_SPAN_CONTEXT
_UNSET = Status(StatusCode.UNSET)
_SAMPLED, _RANDOM_TRACE_ID = int(TraceFlags.SAMPLED), int(TraceFlags.RANDOM_TRACE_ID)
_NO_START = SpanProcessor.on_start  # a processor that doesn't override it is not called


class _FromContext:
    """Marker: take the parent from the context argument."""


_FROM_CONTEXT = _FromContext()


def _is_default_parent_based(sampler: object) -> bool:
    """ParentBased with the standard delegates: a child is sampled exactly when its parent is."""
    return (
        isinstance(sampler, ParentBased)
        and getattr(sampler, "_remote_parent_sampled", None) is ALWAYS_ON
        and getattr(sampler, "_remote_parent_not_sampled", None) is ALWAYS_OFF
        and getattr(sampler, "_local_parent_sampled", None) is ALWAYS_ON
        and getattr(sampler, "_local_parent_not_sampled", None) is ALWAYS_OFF
    )


def _drops_roots(sampler: object) -> bool:
    """A sampler that drops every span without a parent, whatever its name or links say."""
    return _root_sampler(sampler) is ALWAYS_OFF


def _keeps_roots(sampler: object) -> bool:
    """A sampler that records and samples every span without a parent, adding no attributes
    and no trace state (``always_on``, ``parentbased_always_on``)."""
    return _root_sampler(sampler) is ALWAYS_ON


def _root_sampler(sampler: object) -> object:
    return getattr(sampler, "_root", None) if isinstance(sampler, ParentBased) else sampler


class LightTracer:
    """Starts light spans through an SDK tracer, or ordinary spans through any other tracer.

    An unsampled span — a child of an unsampled parent under the default parent-based sampler,
    or a root under ``parentbased_always_off`` / ``always_off`` — is decided without calling the
    sampler: it is only an id to propagate, and it is most of what a low sampling rate sees.
    So is a root under ``always_on`` / ``parentbased_always_on`` (sampled, nothing added).
    """

    def __init__(self, tracer: trace_api.Tracer) -> None:
        self._tracer = tracer
        self._sdk: SdkTracer | None = None
        self._parent_decides = False
        self._roots_dropped = False
        self._roots_kept = False
        self._random_ids = False  # the SDK's default generator: its draws made here, without a call

    def _sdk_tracer(self) -> SdkTracer | None:
        if self._sdk is not None:
            return self._sdk
        tracer: Any = self._tracer
        if isinstance(tracer, trace_api.ProxyTracer):
            tracer = tracer._tracer  # resolves to the real tracer once a provider is set
        if isinstance(tracer, SdkTracer):
            self._sdk = tracer
            self._parent_decides = _is_default_parent_based(tracer.sampler)
            self._roots_dropped = _drops_roots(tracer.sampler)
            self._roots_kept = _keeps_roots(tracer.sampler)
            self._random_ids = type(tracer.id_generator) is RandomIdGenerator
        return self._sdk

    def start_span(
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        follows: SpanContext | None = None,
        parent: SpanContext | _FromContext | None = _FROM_CONTEXT,
    ) -> trace_api.Span:
        """Start a span; the parent is ``parent`` if given, else the span in ``context``
        (default: the current one).

        ``follows`` adds a ``follows_from`` link to that context.  Both it and a context that
        holds ``parent`` are built only if the sampler, a span processor or a recording span
        reads them — most unsampled records need neither.
        """
        # ``context`` holds the parent unless it was passed in ``parent``; then a context that
        # holds it is built only where one is read (_with_parent).
        explicit = parent is not _FROM_CONTEXT
        resolved: SpanContext | None
        if not explicit:
            # get_current_span(context), without its two calls
            current = (context if context is not None else get_current()).get(_SPAN_KEY)
            if current is None:  # a root (asked first: isinstance of an ABC runs Python)
                found = _INVALID
            else:
                found = current.get_span_context() if isinstance(current, trace_api.Span) else _INVALID
            resolved = found if context_fields(found)[5] else None
        else:
            resolved = parent  # type: ignore[assignment]
        sdk = self._sdk if self._sdk is not None else self._sdk_tracer()
        if sdk is None or not sdk._is_enabled():
            return self._tracer.start_span(
                name,
                _with_parent(context, resolved, explicit),
                kind,
                links=_with_follows(links, follows),
                start_time=start_time,
            )
        if resolved is not None:
            trace_id, _, _, parent_flags, parent_state, _ = context_fields(resolved)
            random_id = bool(parent_flags & _RANDOM_TRACE_ID)
            if self._parent_decides and not parent_flags & _SAMPLED:
                return _unsampled(sdk, trace_id, random_id, parent_state)
        else:
            if self._random_ids:  # (0 is invalid: the generator itself draws again)
                trace_id = getrandbits(128) or sdk.id_generator.generate_trace_id()
                random_id = True
            else:
                trace_id = sdk.id_generator.generate_trace_id()
                random_id = sdk.id_generator.is_trace_id_random()
            if self._roots_dropped:
                return _unsampled(sdk, trace_id, random_id, _EMPTY_STATE)
        extra: Mapping[str, Any] | None = None
        if resolved is not None and self._parent_decides:
            sampled = recording = True  # (an unsampled parent returned above)
            state = parent_state
        elif resolved is None and self._roots_kept:  # what the sampler would answer, unasked
            sampled = recording = True
            state = _EMPTY_STATE
        else:
            links = _with_follows(links, follows)
            follows = None
            result = sdk.sampler.should_sample(
                _with_parent(context, resolved, explicit), trace_id, name, kind, None, links
            )
            sampled = result.decision is Decision.RECORD_AND_SAMPLE
            recording = result.decision is not Decision.DROP
            state = result.trace_state or _EMPTY_STATE
            extra = result.attributes
        span_context = new_span_context(
            trace_id,
            (getrandbits(64) or sdk.id_generator.generate_span_id())
            if self._random_ids
            else sdk.id_generator.generate_span_id(),
            False,
            (1 if sampled else 0) | (2 if random_id else 0),
            state,
        )
        if not recording:
            return NonRecordingSpan(span_context)
        if follows is not None:
            links = _with_follows(links, follows)
        max_links = sdk._span_limits.max_links
        if links and max_links is not None and len(links) > max_links:
            links = links[:max_links]
        span = LightSpan(
            name, span_context, resolved, kind, tuple(links or ()), start_time or time.time_ns(), sdk
        )
        if extra:
            span.set_attributes(extra)
        processor = sdk.span_processor
        if type(processor) is SynchronousMultiSpanProcessor:  # its loop, without its call
            for each in processor._span_processors:
                if type(each).on_start is not _NO_START:
                    each.on_start(span, parent_context=_with_parent(context, resolved, explicit))  # type: ignore[arg-type]
        else:
            processor.on_start(span, parent_context=_with_parent(context, resolved, explicit))  # type: ignore[arg-type]
        return span


def _unsampled(sdk: SdkTracer, trace_id: int, random_id: bool, state: TraceState) -> NonRecordingSpan:
    """A span nobody records: only a new span id in the trace, to propagate (drawn as the
    SDK's default generator draws it, without the call, when that is the generator)."""
    if type(sdk.id_generator) is RandomIdGenerator:
        span_id = getrandbits(64) or getrandbits(64) or sdk.id_generator.generate_span_id()
    else:
        span_id = sdk.id_generator.generate_span_id()
    return NonRecordingSpan(new_span_context(trace_id, span_id, False, 2 if random_id else 0, state))


def _with_parent(context: Context | None, parent: SpanContext | None, explicit: bool) -> Context | None:
    """The context to show samplers and processors: ``context`` plus an explicit parent."""
    if not explicit or parent is None:
        return context
    return trace_api.set_span_in_context(NonRecordingSpan(parent), context)


def _with_follows(links: Sequence[Link] | None, follows: SpanContext | None) -> Sequence[Link] | None:
    if follows is None or not follows.is_valid:
        return links
    return [*(links or ()), Link(follows, FOLLOWS_FROM)]


def set_known_attributes(span: trace_api.Span, attributes: dict[str, Any]) -> None:
    """Set attributes we built ourselves (types known good): straight into a light span."""
    if type(span) is LightSpan:
        if span._end_time is None:
            span._attributes.update(attributes)
    else:
        span.set_attributes(attributes)


class LightSpan(trace_api.Span, ReadableSpan):
    """A recording span with plain containers.  Like the SDK's own span it *is* a
    ``ReadableSpan`` (same fields), and since nothing changes it once ended, it is handed to the
    span processors as it is instead of being copied."""

    def __init__(
        self,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        links: tuple[Link, ...],
        start_time: int,
        sdk: SdkTracer,
    ) -> None:
        self._name = name
        self._context: SpanContext | None = context
        self._span_context = context  # never None: what the API's get_span_context promises
        self._parent = parent
        self._kind = kind
        self._links = links
        self._start_time = start_time
        self._end_time: int | None = None
        self._sdk = sdk
        self._attributes: dict[str, Any] = {}
        self._events: list[Event] = []
        self._status = _UNSET  # (a Status is never changed, only replaced: one serves all)
        self._resource = sdk.resource
        self._instrumentation_scope = sdk._instrumentation_scope
        self._instrumentation_info = None

    def get_span_context(self) -> SpanContext:
        return self._span_context

    def is_recording(self) -> bool:
        return self._end_time is None

    def set_attribute(self, key: str, value: Any) -> None:
        if self._end_time is not None or not isinstance(key, str) or not key:
            return
        if isinstance(value, _SCALARS):
            self._attributes[key] = value
        elif isinstance(value, list | tuple) and all(isinstance(item, _SCALARS) for item in value):
            self._attributes[key] = tuple(value)

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        for key, value in attributes.items():
            if type(value) in _SCALARS and self._end_time is None:
                self._attributes[key] = value
            else:
                self.set_attribute(key, value)

    def add_event(
        self, name: str, attributes: Mapping[str, Any] | None = None, timestamp: int | None = None
    ) -> None:
        if self._end_time is None:
            self._events.append(Event(name, dict(attributes or {}), timestamp or time.time_ns()))

    def add_link(self, context: SpanContext, attributes: Mapping[str, Any] | None = None) -> None:
        if self._end_time is None and context.is_valid:
            self._links = (*self._links, Link(context, attributes))

    def update_name(self, name: str) -> None:
        if self._end_time is None:
            self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if self._end_time is not None or self._status.status_code is StatusCode.OK:
            return
        status = status if isinstance(status, Status) else Status(status, description)
        if status.status_code is not StatusCode.UNSET:
            self._status = status

    def record_exception(
        self,
        exception: BaseException,
        attributes: Mapping[str, Any] | None = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        details: dict[str, Any] = {
            "exception.type": type(exception).__qualname__,
            "exception.message": str(exception),
            "exception.stacktrace": "".join(traceback.format_exception(exception)),
            "exception.escaped": str(escaped),
        }
        if attributes:
            details.update(attributes)
        self.add_event("exception", details, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self._end_time is not None:
            return
        self._end_time = end_time or time.time_ns()
        processor = self._sdk.span_processor
        if type(processor) is SynchronousMultiSpanProcessor:  # its loop, without its call
            for each in processor._span_processors:
                each.on_end(self)
        else:
            processor.on_end(self)

    def __repr__(self) -> str:
        return f"LightSpan({self._name!r}, {self._context!r})"
