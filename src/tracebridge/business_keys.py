"""Business keys (``order.id``) on every span of a trace — including spans that started before
the key existed, and the callers' spans in other processes.

A key is born in the middle of a request: the order service learns the order id inside its
resolver, after the gateway's span, its own server span and strawberry's parsing spans have
started (some have even ended).  Baggage carries the key *forward* to every later span, in
every service.  This module carries it *backward*:

- in-process, :class:`BusinessKeysProcessor` sets the key on the trace's spans that are still
  open here, and holds back the ones that already ended until the key is known or the trace's
  last local span ends, then passes them on with the key added;
- across HTTP, the server writes the keys it learned into a ``baggage`` *response* header
  (:class:`BusinessKeysResponsePropagator`, through OpenTelemetry's response-propagator hook),
  and the httpx client hook adopts them onto the caller's spans (:func:`adopt_from_response`).

Only allowlisted names (``TRACEBRIDGE_BAGGAGE_ATTRIBUTES``) are ever copied or written, and
baggage parsing applies the W3C limits, so a response can't inject arbitrary attributes.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry import baggage, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Setter, default_setter
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from tracebridge.span_copy import replaced

_BAGGAGE = W3CBaggagePropagator()
_active: BusinessKeysProcessor | None = None


def active() -> BusinessKeysProcessor | None:
    """The processor :func:`tracebridge.configure` installed, if business keys are on."""
    return _active


def set_active(processor: BusinessKeysProcessor | None) -> None:
    global _active
    _active = processor


class BusinessKeysProcessor(SpanProcessor):
    """Copies allowlisted baggage entries onto spans, forward and backward in time.

    Wraps the export processor (``downstream``): spans that ended before their trace's key
    was known are held — at most ``max_held`` of them — and handed on, with the key, once it
    is known or the trace has no open span left in this process.  Nothing is ever dropped:
    past the bound, or on flush and shutdown, held spans go on as they are.
    """

    def __init__(
        self,
        names: Iterable[str],
        downstream: SpanProcessor | None = None,
        max_held: int = 10_000,
        max_traces: int = 10_000,
    ) -> None:
        self.names = tuple(names)
        self.downstream = downstream
        self.max_held = max_held
        self.max_traces = max_traces
        self._lock = threading.Lock()
        self._open: dict[int, dict[int, Span]] = {}
        self._keys: OrderedDict[int, dict[str, str]] = OrderedDict()
        self._held: dict[int, list[ReadableSpan]] = {}
        self._held_count = 0

    # -- what callers use ------------------------------------------------------------------
    def keys_for(self, trace_id: int) -> dict[str, str]:
        with self._lock:
            return dict(self._keys.get(trace_id, {}))

    def adopt(self, trace_id: int, keys: Mapping[str, str]) -> None:
        """``keys`` belong to the trace: put them on its open spans and release held ones."""
        keys = {name: str(value) for name, value in keys.items() if name in self.names}
        if not keys:
            return
        with self._lock:
            known = self._keys.setdefault(trace_id, {})
            self._keys.move_to_end(trace_id)
            new = {name: value for name, value in keys.items() if name not in known}
            if not new:
                return
            known.update(new)
            merged = dict(known)
            while len(self._keys) > self.max_traces:
                self._keys.popitem(last=False)
            open_spans = list(self._open.get(trace_id, {}).values())
            released = self._release(trace_id)
        for span in open_spans:
            _set_missing(span, merged)
        self._forward(released, merged)

    # -- SpanProcessor ---------------------------------------------------------------------
    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        context = span.get_span_context()
        trace_id = context.trace_id
        entries = baggage.get_all(parent_context)
        from_baggage = {n: str(entries[n]) for n in self.names if n in entries} if entries else {}
        with self._lock:
            self._open.setdefault(trace_id, {})[context.span_id] = span
            known = self._keys.get(trace_id)
            adopt = bool(from_baggage) and (known is None or any(n not in known for n in from_baggage))
            keys = {**(known or {}), **from_baggage}
        _set_missing(span, keys)
        if adopt:
            self.adopt(trace_id, from_baggage)
        if self.downstream is not None:
            self.downstream.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        context = span.get_span_context()
        if context is None:
            return
        trace_id = context.trace_id
        attributes = span.attributes or {}
        with self._lock:
            open_spans = self._open.get(trace_id)
            if open_spans is not None:
                open_spans.pop(context.span_id, None)
                if not open_spans:
                    del self._open[trace_id]
                    open_spans = None
            keys = dict(self._keys.get(trace_id, {}))
            complete = all(name in attributes for name in self.names)
            hold = self.downstream is not None and self._held_count < self.max_held
            if hold and not complete and not keys and open_spans is not None:
                self._held.setdefault(trace_id, []).append(span)
                self._held_count += 1
                return
            released = self._release(trace_id) if open_spans is None else []
        self._forward([*released, span], keys)  # in the order they ended

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        self._release_all()
        return self.downstream.force_flush(timeout_millis) if self.downstream is not None else True

    def shutdown(self) -> None:
        self._release_all()
        if self.downstream is not None:
            self.downstream.shutdown()

    # -- internals -------------------------------------------------------------------------
    def _release(self, trace_id: int) -> list[ReadableSpan]:
        held = self._held.pop(trace_id, [])
        self._held_count -= len(held)
        return held

    def _release_all(self) -> None:
        with self._lock:
            batches = [(self._keys.get(t, {}), self._release(t)) for t in list(self._held)]
        for keys, spans in batches:
            self._forward(spans, dict(keys))

    def _forward(self, spans: list[ReadableSpan], keys: Mapping[str, str]) -> None:
        if self.downstream is None:
            return
        for span in spans:
            self.downstream.on_end(_with_keys(span, keys) if keys else span)


def _set_missing(span: Span, keys: Mapping[str, str]) -> None:
    if not keys or not span.is_recording():
        return
    attributes = span.attributes or {}
    for name, value in keys.items():
        if name not in attributes:
            span.set_attribute(name, value)


def _with_keys(span: ReadableSpan, keys: Mapping[str, str]) -> ReadableSpan:
    """``span`` itself if it has every key; else an ended copy with the missing ones added."""
    attributes = span.attributes or {}
    missing = {name: value for name, value in keys.items() if name not in attributes}
    if not missing:
        return span
    return replaced(span, attributes={**attributes, **missing})


class BusinessKeysResponsePropagator:
    """Writes the keys a server learned while handling a request into a ``baggage`` response
    header, so the caller's spans get them too (OpenTelemetry ASGI's response-propagator hook)."""

    def inject(
        self, carrier: Any, context: Context | None = None, setter: Setter[Any] = default_setter
    ) -> None:
        processor = _active
        if processor is None:
            return
        span_context = trace.get_current_span(context).get_span_context()
        if not span_context.is_valid:
            return
        keys = processor.keys_for(span_context.trace_id)
        if not keys:
            return
        header: dict[str, str] = {}
        ctx = Context()
        for name, value in keys.items():
            ctx = baggage.set_baggage(name, value, context=ctx)
        _BAGGAGE.inject(header, context=ctx)
        if "baggage" in header:
            setter.set(carrier, "baggage", header["baggage"])


def adopt_from_response(span: trace.Span, headers: Any) -> None:
    """httpx response hook: the ``baggage`` response header's allowlisted keys join the trace."""
    processor = _active
    if processor is None or headers is None:
        return
    try:
        values = [_text(value) for name, value in _pairs(headers) if _text(name).lower() == "baggage"]
    except Exception:  # a hook must never break the caller's request
        return
    if not values:
        return
    context = _BAGGAGE.extract({"baggage": ",".join(values)})
    entries = baggage.get_all(context)
    keys = {name: str(entries[name]) for name in processor.names if name in entries}
    span_context = span.get_span_context()
    if keys and span_context.is_valid:
        processor.adopt(span_context.trace_id, keys)


def _pairs(headers: Any) -> Iterable[tuple[Any, Any]]:
    if hasattr(headers, "multi_items"):
        return headers.multi_items()  # type: ignore[no-any-return]
    if isinstance(headers, Mapping):
        return headers.items()
    return headers  # type: ignore[no-any-return]


def _text(value: Any) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else str(value)
