"""The trace model every source (collector, Jaeger, files) produces and every analysis reads.

Plain frozen dataclasses with hex ids, nanosecond times and JSON-able attribute values, so a
span can be compared, stored and printed without any OpenTelemetry SDK object around.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

KINDS = ("UNSPECIFIED", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER")


@dataclass(frozen=True)
class LinkRecord:
    """A link to another span (the async edge a consumer keeps to its producer)."""

    trace_id: str
    span_id: str
    attributes: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EventRecord:
    """A timestamped event on a span, e.g. an ``exception``."""

    name: str
    time_ns: int
    attributes: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SpanRecord:
    """One finished span, as stored and analysed."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: str
    start_ns: int
    end_ns: int
    service: str
    status: str = "UNSET"  # UNSET | OK | ERROR
    status_message: str = ""
    attributes: Mapping[str, Any] = field(default_factory=dict)
    events: tuple[EventRecord, ...] = ()
    links: tuple[LinkRecord, ...] = ()
    scope: str = ""
    resource: Mapping[str, Any] = field(default_factory=dict)

    @property
    def duration_ns(self) -> int:
        return max(0, self.end_ns - self.start_ns)


def attribute_matches(value: Any, text: str) -> bool:
    """Whether an attribute value is what a user typed (``true``, ``42`` and ``o-42`` alike)."""
    if value is None:
        return False
    if isinstance(value, bool):
        return str(value).lower() == text.lower()
    return str(value) == text


class Trace:
    """The spans of one trace with their parent edges; links are followed by the analysis."""

    def __init__(self, spans: Iterable[SpanRecord]) -> None:
        self.spans = sorted(spans, key=lambda s: (s.start_ns, s.span_id))
        self.by_id = {span.span_id: span for span in self.spans}
        self.children: dict[str | None, list[SpanRecord]] = {}
        for span in self.spans:
            parent = span.parent_span_id if span.parent_span_id in self.by_id else None
            self.children.setdefault(parent, []).append(span)

    @property
    def roots(self) -> list[SpanRecord]:
        """Spans whose parent is not in this trace (normally exactly one)."""
        return self.children.get(None, [])

    @property
    def trace_ids(self) -> set[str]:
        return {span.trace_id for span in self.spans}
