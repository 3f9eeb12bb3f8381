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
    """The spans of one trace with their parent edges; links are followed by the analysis.

    Built from whatever a source returns, hostile or broken data included, so that every
    analysis can walk it without guarding: a span id seen twice (a retried export, a buggy
    SDK) is kept once — the first by start time — and counted in :attr:`duplicate_spans`; a
    parent cycle (``a → b → a``, or a span that is its own parent) is cut where it is found, its
    earliest span becoming a root, and counted in :attr:`cycles_broken`.  So the parent edges
    always form a forest: every span is reached exactly once from :attr:`roots`.
    """

    def __init__(self, spans: Iterable[SpanRecord]) -> None:
        ordered = sorted(spans, key=lambda s: (s.start_ns, s.span_id))
        self.by_id: dict[str, SpanRecord] = {}
        self.spans: list[SpanRecord] = []
        self.duplicate_spans = 0
        for span in ordered:
            if span.span_id in self.by_id:
                self.duplicate_spans += 1
                continue
            self.by_id[span.span_id] = span
            self.spans.append(span)
        self.children: dict[str | None, list[SpanRecord]] = {}
        own_parents = 0
        for span in self.spans:
            parent = span.parent_span_id
            if parent == span.span_id:
                own_parents += 1
                parent = None
            elif parent not in self.by_id:
                parent = None
            self.children.setdefault(parent, []).append(span)
        self.cycles_broken = own_parents + self._break_cycles()

    def _break_cycles(self) -> int:
        """Make the earliest span of every parent cycle a root; returns how many were cut."""
        reached: set[str] = set()

        def walk(start: SpanRecord) -> None:
            stack = [start]
            while stack:
                span = stack.pop()
                reached.add(span.span_id)
                stack.extend(self.children.get(span.span_id, ()))

        for root in self.children.get(None, ()):
            walk(root)
        if len(reached) == len(self.spans):
            return 0
        cut = 0
        for span in self.spans:  # in start order: the earliest of a cycle becomes its root
            if span.span_id in reached:
                continue
            siblings = self.children[span.parent_span_id]
            siblings.remove(span)
            self.children.setdefault(None, []).append(span)
            cut += 1
            walk(span)
        self.children[None].sort(key=lambda s: (s.start_ns, s.span_id))
        return cut

    @property
    def roots(self) -> list[SpanRecord]:
        """Spans whose parent is not in this trace (normally exactly one)."""
        return self.children.get(None, [])

    @property
    def trace_ids(self) -> set[str]:
        return {span.trace_id for span in self.spans}
