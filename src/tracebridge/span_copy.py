"""An ended span with some fields replaced — what a processor or exporter in the pipeline hands
on when it must change a span the SDK has already made read-only (business keys, redaction)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace import Span as SdkSpan
from opentelemetry.sdk.trace import _Span as SdkSpan_
from opentelemetry.trace import Link, Status

from tracebridge.messaging.light_span import LightSpan

# Span classes whose properties return the fields as stored — the SDK's own and ours — so the
# export path (redaction, encoding) reads ``_name``, ``_attributes``... directly: a property
# is a Python call, and a span has a dozen of them.  A subclass that overrides one (the export
# helper's ``ReceivedSpan``, a vendor's span) is read through its properties.
PLAIN_SPAN_TYPES = frozenset((ReadableSpan, SdkSpan, SdkSpan_, LightSpan))


def replaced(
    span: ReadableSpan,
    *,
    name: str | None = None,
    attributes: Mapping[str, Any] | None = None,
    events: Sequence[Event] | None = None,
    links: Sequence[Link] | None = None,
    status: Status | None = None,
) -> ReadableSpan:
    """A copy of ``span`` with the given fields replaced and every other one kept."""
    return ReadableSpan(
        name=span.name if name is None else name,
        context=span.get_span_context(),
        parent=span.parent,
        resource=span.resource,
        attributes=span.attributes if attributes is None else attributes,
        events=span.events if events is None else events,
        links=span.links if links is None else links,
        kind=span.kind,
        status=span.status if status is None else status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )
