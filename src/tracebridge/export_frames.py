"""Finished spans as compact frames, for the export helper process (``tracebridge.export_process``).

Encoding a span to OTLP, redacting it and posting it cost more of the application's GIL than
making the span (measured: half the process's samples were the export thread).  The helper
process does that work; what is left in the application is this: each span read once into a
tuple of plain values and a batch serialized with :mod:`marshal` — C speed, ~1 µs a span.
Resources and instrumentation scopes, the same for almost every span, travel once per helper
and are referred to by number after that.

A frame is a kind byte, a 4-byte length and a marshalled body.  Only our own process writes
frames to its own child, so :mod:`marshal` (which trusts its input) is safe here.
"""

from __future__ import annotations

import marshal
import struct
from collections.abc import Sequence
from typing import Any, BinaryIO

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanKind, Status, StatusCode, TraceState
from opentelemetry.trace.span import DEFAULT_TRACE_STATE

from tracebridge.propagation.w3c import new_span_context

HEADER = struct.Struct("!cI")
SPANS = b"S"  # app → helper: a batch; the helper answers with a REPLY
FLUSH = b"F"  # app → helper: deliver what is held; answered with a REPLY once done
HELLO = b"H"  # app → helper, first frame: the pickled Settings to build the pipeline from
REPLY = b"R"  # helper → app: (sequence number, delivered?, counters …)
# The counters a REPLY carries, in order: what ResilientExporter counts, for dropped_spans()
# and the outage warnings' figures in the application.
COUNTERS = ("exported_spans", "dropped_spans", "delivered_late", "held_spans", "peak_held_spans")
MARSHAL_VERSION = 4
_KINDS = tuple(SpanKind)


class FrameError(Exception):
    """The other end sent something that is not a frame (or closed the pipe mid-frame)."""


def write_frame(stream: BinaryIO, kind: bytes, body: bytes) -> None:
    stream.write(HEADER.pack(kind, len(body)) + body)
    stream.flush()


def read_frame(stream: BinaryIO) -> tuple[bytes, bytes] | None:
    """The next frame, or ``None`` at a clean end of stream."""
    header = stream.read(HEADER.size)
    if not header:
        return None
    if len(header) < HEADER.size:
        raise FrameError("the stream ended inside a frame header")
    kind, length = HEADER.unpack(header)
    body = stream.read(length)
    if len(body) < length:
        raise FrameError(f"the stream ended inside a frame ({len(body)} of {length} bytes)")
    return kind, body


def _plain(value: Any) -> Any:
    """``value`` with subclasses of the attribute types (str enums, int enums) made their base
    type, which is what the OTLP encoder would write anyway."""
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, str):
        return str.__str__(value)  # the characters, as the encoder writes them: not str(enum)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, bytes):
        return bytes(value)
    if isinstance(value, list | tuple):
        return tuple(_plain(item) for item in value)
    return str(value)


def _plain_dict(attributes: Any) -> dict[str, Any]:
    return {str(key): _plain(value) for key, value in (attributes or {}).items()}


def _dropped(attributes: Any) -> int:
    return attributes.dropped if isinstance(attributes, BoundedAttributes) else 0


class SpanPacker:
    """The application's side: batches of ended spans → frame bodies.  One per helper process
    (its resource and scope numbering is what that helper knows)."""

    def __init__(self) -> None:
        self._resources: dict[int, int] = {}
        self._scopes: dict[int, int] = {}
        self._keep: list[Any] = []  # the interned objects, so their ids stay theirs

    def pack(self, spans: Sequence[ReadableSpan]) -> bytes:
        new_resources: list[tuple[Any, ...]] = []
        new_scopes: list[tuple[Any, ...]] = []
        rows = [self._row(span, new_resources, new_scopes) for span in spans]
        batch = (new_resources, new_scopes, rows)
        try:
            return marshal.dumps(batch, MARSHAL_VERSION)
        except ValueError:  # an attribute of a type marshal refuses (a str enum …): made plain
            return marshal.dumps(_plain_batch(batch), MARSHAL_VERSION)

    def _row(
        self, span: Any, new_resources: list[tuple[Any, ...]], new_scopes: list[tuple[Any, ...]]
    ) -> tuple[Any, ...]:
        resource = span._resource
        resource_number = self._resources.get(id(resource))
        if resource_number is None:
            resource_number = self._intern(self._resources, resource, new_resources, _resource_row(resource))
        scope = span._instrumentation_scope
        scope_number = self._scopes.get(id(scope))
        if scope_number is None:
            scope_number = self._intern(self._scopes, scope, new_scopes, _scope_row(scope))
        context = span._context
        state = context.trace_state
        parent = span._parent
        attributes = span._attributes
        dropped = 0
        if type(attributes) is not dict:
            dropped = _dropped(attributes)
            attributes = dict(attributes) if attributes else {}
        events = span._events
        links = span._links
        status = span._status
        dropped_events = getattr(events, "dropped", 0)
        dropped_links = getattr(links, "dropped", 0)
        return (
            span._name,
            context.trace_id,
            context.span_id,
            int(context.trace_flags),
            state.to_header() if state else "",
            parent.span_id if parent is not None else -1,
            bool(parent is not None and parent.is_remote),
            span._kind.value,
            span._start_time or 0,
            span._end_time or 0,
            attributes,
            tuple(
                (event.name, event.timestamp, dict(event.attributes or {}), _dropped(event.attributes))
                for event in events
            )
            if events
            else (),
            tuple(
                (
                    link.context.trace_id,
                    link.context.span_id,
                    int(link.context.trace_flags),
                    link.context.trace_state.to_header() if link.context.trace_state else "",
                    link.context.is_remote,
                    dict(link.attributes or {}),
                    _dropped(link.attributes),
                )
                for link in links
            )
            if links
            else (),
            status.status_code.value,
            status.description or "",
            resource_number,
            scope_number,
            (dropped, dropped_events, dropped_links) if dropped or dropped_events or dropped_links else 0,
        )

    def _intern(
        self, numbers: dict[int, int], known: Any, new: list[tuple[Any, ...]], row: tuple[Any, ...]
    ) -> int:
        """Number a resource or scope the helper has not seen; its row travels once."""
        number = numbers[id(known)] = len(numbers)
        self._keep.append(known)
        new.append(row)
        return number


def _resource_row(resource: Any) -> tuple[Any, ...]:
    return (dict(resource.attributes) if resource else {}, resource.schema_url if resource else "")


def _scope_row(scope: Any) -> tuple[Any, ...]:
    if scope is None:
        return ("", "", "", {}, False)
    return (scope.name or "", scope.version or "", scope.schema_url or "", dict(scope.attributes or {}), True)


def _plain_batch(batch: tuple[Any, ...]) -> tuple[Any, ...]:
    resources, scopes, rows = batch
    plain_rows = []
    for row in rows:
        row = list(row)
        row[0] = str(row[0])
        row[10] = _plain_dict(row[10])
        row[11] = tuple((str(n), t, _plain_dict(a), d) for n, t, a, d in row[11])
        row[12] = tuple((*link[:5], _plain_dict(link[5]), link[6]) for link in row[12])
        row[14] = str(row[14])
        plain_rows.append(tuple(row))
    resources = [(_plain_dict(attributes), str(schema)) for attributes, schema in resources]
    scopes = [(str(n), str(v), str(s), _plain_dict(a), known) for n, v, s, a, known in scopes]
    return resources, scopes, plain_rows


class ReceivedSpan(ReadableSpan):
    """A span rebuilt in the helper; it carries the counts of what its SDK span dropped."""

    _dropped_counts: tuple[int, int, int]

    @property
    def dropped_attributes(self) -> int:
        return self._dropped_counts[0]

    @property
    def dropped_events(self) -> int:
        return self._dropped_counts[1]

    @property
    def dropped_links(self) -> int:
        return self._dropped_counts[2]


def _attributes(values: dict[str, Any], dropped: int) -> Any:
    if not dropped:
        return values
    bounded = BoundedAttributes(attributes=values, immutable=False)
    bounded.dropped = dropped
    return bounded


def _state(header: str) -> TraceState:
    return TraceState.from_header([header]) if header else DEFAULT_TRACE_STATE


_UNSET, _OK = Status(StatusCode.UNSET), Status(StatusCode.OK)


def _status(code: int, description: str) -> Status:
    if code == StatusCode.ERROR.value:
        return Status(StatusCode.ERROR, description or None)
    return _OK if code == StatusCode.OK.value else _UNSET


class SpanUnpacker:
    """The helper's side: frame bodies → spans the ordinary exporters take."""

    def __init__(self) -> None:
        self._resources: list[Resource] = []
        self._scopes: list[InstrumentationScope | None] = []

    def unpack(self, body: bytes) -> list[ReadableSpan]:
        new_resources, new_scopes, rows = marshal.loads(body)
        for attributes, schema_url in new_resources:
            self._resources.append(Resource(attributes, schema_url or None))
        for name, version, schema_url, attributes, known in new_scopes:
            self._scopes.append(
                InstrumentationScope(name, version or None, schema_url or None, attributes or None)
                if known
                else None
            )
        return [self._span(row) for row in rows]

    def _span(self, row: tuple[Any, ...]) -> ReadableSpan:
        (
            name,
            trace_id,
            span_id,
            flags,
            state,
            parent_span_id,
            parent_remote,
            kind,
            start,
            end,
            attributes,
            events,
            links,
            status_code,
            status_description,
            resource_number,
            scope_number,
            dropped,
        ) = row
        # Built field by field rather than through the constructors (argument handling, id
        # validation, a TraceFlags and a Status each): these spans are our own, checked when
        # they were made, and this runs for every span the helper exports.
        span = object.__new__(ReceivedSpan if dropped else ReadableSpan)
        span.__dict__.update(
            _name=name,
            _context=new_span_context(trace_id, span_id, False, flags, _state(state)),
            _parent=new_span_context(trace_id, parent_span_id, parent_remote, flags)
            if parent_span_id >= 0
            else None,
            _resource=self._resources[resource_number],
            _attributes=attributes,
            _events=tuple(Event(n, _attributes(a, d), t) for n, t, a, d in events) if events else (),
            _links=tuple(
                Link(new_span_context(t, s, remote, f, _state(ts)), _attributes(a, d))
                for t, s, f, ts, remote, a, d in links
            )
            if links
            else (),
            _kind=_KINDS[kind] if 0 <= kind < len(_KINDS) else SpanKind.INTERNAL,
            _status=_status(status_code, status_description),
            _start_time=start or None,
            _end_time=end or None,
            _instrumentation_scope=self._scopes[scope_number],
            _instrumentation_info=None,
        )
        if dropped:
            span.__dict__["_dropped_counts"] = tuple(dropped)
        return span


__all__ = [
    "COUNTERS",
    "FLUSH",
    "HELLO",
    "REPLY",
    "SPANS",
    "FrameError",
    "ReceivedSpan",
    "SpanPacker",
    "SpanUnpacker",
    "read_frame",
    "write_frame",
]
