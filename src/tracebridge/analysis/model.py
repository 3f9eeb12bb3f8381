"""The trace model every source (collector, Jaeger, files) produces and every analysis reads.

Plain frozen dataclasses with hex ids, nanosecond times and JSON-able attribute values, so a
span can be compared, stored and printed without any OpenTelemetry SDK object around.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
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


def http_status_code(span: SpanRecord) -> Any:
    """The HTTP status a span recorded (current or old conventions), if any."""
    return span.attributes.get("http.response.status_code") or span.attributes.get("http.status_code")


def error_type(span: SpanRecord) -> str | None:
    """What a failed span says went wrong: its exception's type, else ``error.type``, else its
    HTTP status (``HTTP 503``, also when ``error.type`` is the bare status, as the HTTP
    conventions write it); ``None`` if it says nothing."""
    exception = next((event for event in span.events if event.name == "exception"), None)
    found = exception.attributes.get("exception.type") if exception is not None else None
    found = found or span.attributes.get("error.type")
    if found and not str(found).isdigit():
        return str(found)
    code = found or http_status_code(span)  # the conventions' error.type of a 5xx is "503"
    return f"HTTP {code}" if code else None


class Trace:
    """The spans of one trace — or of an order's story, several traces joined by links — with
    the parent edges the analysis walks.

    Built from whatever a source returns, hostile or broken data included, so that every
    analysis can walk it without guarding: a span id seen twice (a retried export, a buggy
    SDK) is kept once — the first by start time — and counted in :attr:`duplicate_spans`; a
    parent cycle (``a → b → a``, or a span that is its own parent) is cut where it is found, its
    earliest span becoming a root, and counted in :attr:`cycles_broken`.  So the parent edges
    always form a forest: every span is reached exactly once from :attr:`roots`.

    A consumer joined to its producer only by a link (a new trace per record, a batch's
    process spans under a poll span, OpenTracing's FOLLOWS_FROM) hangs under that send span
    here, exactly like a parented one: :attr:`linked_parents` records which did, so the
    display can still say "linked", and the analysis treats the hop as the hop it is.
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
        self.parent_of: dict[str, str | None] = {}
        own_parents = 0
        for span in self.spans:
            parent = span.parent_span_id
            if parent == span.span_id:
                own_parents += 1
                parent = None
            elif parent not in self.by_id:
                parent = None
            self.parent_of[span.span_id] = parent
        self.linked_parents = self._attach_linked_consumers()
        self.children: dict[str | None, list[SpanRecord]] = {}
        for span in self.spans:
            self.children.setdefault(self.parent_of[span.span_id], []).append(span)
        self.cycles_broken = own_parents + self._break_cycles()
        self.truncated = 0  # linked traces an order's story left out at its bound

    def _attach_linked_consumers(self) -> dict[str, str]:
        """Hang every link-only consumer under the send span it links to; returns them.

        A process span moves when its parent is missing or is a poll/receive span (the hop
        ends at the process span, not at the poll) — unless every process span of that poll is
        joined here: then the poll moves, with all it holds; a receive span moves only for a
        record no process span handled.  With several linked sends here, the latest-ending one: the
        consumer could not start before that record was there.
        """
        from tracebridge.analysis import messaging

        consumed: set[str] = set()  # sends a process span is joined to, by parent or link
        wanted: list[tuple[SpanRecord, str, list[SpanRecord]]] = []
        for span in self.spans:
            found = messaging.role(span)
            if found != messaging.PROCESS and found != messaging.RECEIVE:
                continue
            parent_id = self.parent_of[span.span_id]
            parent = self.by_id[parent_id] if parent_id is not None else None
            sends = [
                target
                for link in span.links
                if (target := self.by_id.get(link.span_id)) is not None
                and target.trace_id == link.trace_id
                and messaging.is_send(target)
            ]
            if parent is not None and messaging.is_send(parent):
                sends.append(parent)
            if found == messaging.PROCESS:
                consumed.update(s.span_id for s in sends)
            if parent is not None and messaging.role(parent) not in (messaging.RECEIVE, messaging.SEND):
                continue  # parented on something of its own trace: leave it there
            if sends and (parent is None or not messaging.is_send(parent)):
                wanted.append((span, found, sends))
        chosen: dict[str, SpanRecord] = {}
        for span, found, sends in wanted:
            if found == messaging.RECEIVE:
                sends = [send for send in sends if send.span_id not in consumed]
            if sends:
                chosen[span.span_id] = max(sends, key=lambda s: (s.end_ns, s.span_id))
        # A poll whose every process span is joined here moves whole, under the latest send:
        # what the handler did under the poll (kafkajs' eachBatch runs it there) stays with it.
        polls: dict[str, list[SpanRecord]] = {}
        for span in self.spans:
            parent_id = self.parent_of[span.span_id]
            if parent_id is not None and messaging.role(span) == messaging.PROCESS:
                polls.setdefault(parent_id, []).append(span)
        moved: dict[str, str] = {}
        for poll_id, processes in polls.items():
            poll = self.by_id[poll_id]
            if messaging.role(poll) != messaging.RECEIVE or self.parent_of[poll_id] is not None:
                continue
            if all(process.span_id in chosen for process in processes):
                send = max((chosen.pop(p.span_id) for p in processes), key=lambda s: (s.end_ns, s.span_id))
                self.parent_of[poll_id] = send.span_id
                moved[poll_id] = send.span_id
        for span_id, send in chosen.items():
            self.parent_of[span_id] = send.span_id
            moved[span_id] = send.span_id
        return moved

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
            siblings = self.children[self.parent_of[span.span_id]]
            siblings.remove(span)
            self.parent_of[span.span_id] = None
            self.linked_parents.pop(span.span_id, None)
            self.children.setdefault(None, []).append(span)
            cut += 1
            walk(span)
        self.children[None].sort(key=lambda s: (s.start_ns, s.span_id))
        return cut

    def parent(self, span: SpanRecord) -> SpanRecord | None:
        """The span this one hangs under here: its parent, or the send it links to."""
        parent_id = self.parent_of.get(span.span_id)
        return self.by_id[parent_id] if parent_id is not None else None

    @property
    def roots(self) -> list[SpanRecord]:
        """Spans whose parent is not in this trace (normally exactly one)."""
        return self.children.get(None, [])

    @property
    def trace_ids(self) -> set[str]:
        return {span.trace_id for span in self.spans}


@dataclass(frozen=True)
class TraceSummary:
    """One line of a search result."""

    trace_id: str
    root_service: str
    root_name: str
    start_ns: int
    end_ns: int
    span_count: int
    error_count: int
    services: tuple[str, ...]
    broken: bool
    links_to: tuple[str, ...] = ()  # traces its consumer spans link to (what caused it)

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns


def summarize(spans: Sequence[SpanRecord]) -> TraceSummary:
    """A search line for one trace's spans (sources that have no summary of their own)."""
    from tracebridge.analysis import messaging

    trace = Trace(spans)
    root = trace.roots[0] if trace.roots else trace.spans[0]
    links_to = sorted(
        {
            link.trace_id
            for span in trace.spans
            if messaging.is_consumer(span)
            for link in span.links
            if link.trace_id != span.trace_id
        }
    )
    return TraceSummary(
        trace_id=root.trace_id,
        root_service=root.service,
        root_name=root.name,
        start_ns=min(span.start_ns for span in trace.spans),
        end_ns=max(span.end_ns for span in trace.spans),
        span_count=len(trace.spans),
        error_count=sum(1 for span in trace.spans if span.status == "ERROR"),
        services=tuple(sorted({span.service for span in trace.spans})),
        broken=any(
            messaging.role(span) == messaging.PROCESS and span.parent_span_id is None and not span.links
            for span in trace.spans
        ),
        links_to=tuple(links_to),
    )
