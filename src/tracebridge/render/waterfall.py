"""A trace as a terminal waterfall: one row per span on a shared time axis.

Async hops are drawn as what they are — the record waiting in its topic (░, yellow) before the
consumer's processing bar — the critical path is marked ◆, and failed spans are red.
"""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from tracebridge.analysis.diagnosis import Diagnosis, format_duration
from tracebridge.analysis.model import SpanRecord, Trace

MIN_BAR, MAX_BAR = 10, 60
NOTES_WIDTH = 16
TABLE_OVERHEAD = 15  # rich's padding and separators for six columns
# Deeper spans are drawn at this depth: past it, indentation would push the name out of its
# column (and a 10 000-hop chain would print 20 kB of spaces per row).
MAX_INDENT = 8
_KIND_STYLE = {"SERVER": "green", "CLIENT": "cyan", "PRODUCER": "magenta", "CONSUMER": "yellow"}


def tree_order(trace: Trace) -> list[tuple[SpanRecord, int]]:
    """Spans depth-first, children in start order, with their depth."""
    out: list[tuple[SpanRecord, int]] = []
    stack = [(root, 0) for root in reversed(trace.roots)]
    while stack:
        span, depth = stack.pop()
        out.append((span, depth))
        stack.extend((child, depth + 1) for child in reversed(trace.children.get(span.span_id, [])))
    return out


def _bar(span: SpanRecord, waited: int, start: int, scale: float, width: int) -> Text:
    begin = min(width - 1, int((span.start_ns - start) / scale))
    finish = min(width, max(begin + 1, int((span.end_ns - start) / scale)))
    style = "red" if span.status == "ERROR" else _KIND_STYLE.get(span.kind, "white")
    wait_begin = max(0, int((span.start_ns - waited - start) / scale)) if waited else begin
    bar = Text(" " * wait_begin)
    bar.append("░" * (begin - wait_begin), style="yellow")
    bar.append("█" * (finish - begin), style=style)
    bar.append(" " * (width - finish))
    return bar


def waterfall(trace: Trace, diagnosis: Diagnosis, width: int = 120) -> Table:
    """A rich Table: marker, service, span (indented), bar, duration and the hop facts, fitted
    to ``width`` columns (the bar takes what the text columns leave)."""
    rows = tree_order(trace)
    narrow = width < 100
    service_width = min(12 if narrow else 20, max(len(span.service) for span, _ in rows))
    name_width = min(
        18 if narrow else 36, max(len(span.name) + 2 * min(depth, MAX_INDENT) for span, depth in rows)
    )
    text_width = 1 + service_width + name_width + 8 + NOTES_WIDTH + TABLE_OVERHEAD
    bar_width = max(MIN_BAR, min(MAX_BAR, width - text_width))
    start = diagnosis.start_ns
    scale = max(1.0, (diagnosis.end_ns - start) / bar_width)
    waits = {hop.process_span_id: hop.queue_wait_ns for hop in diagnosis.hops}
    table = Table(
        title=f"trace {diagnosis.trace_id} — {format_duration(diagnosis.end_to_end_ns)} end to end, "
        f"{diagnosis.span_count} spans, {len(diagnosis.services)} services",
        title_justify="left",
        show_edge=False,
        pad_edge=False,
    )
    table.add_column("", width=1)
    table.add_column("service", style="bold blue", no_wrap=True, width=service_width, overflow="ellipsis")
    table.add_column("span", no_wrap=True, width=name_width, overflow="ellipsis")
    table.add_column(f"0 … {format_duration(diagnosis.end_to_end_ns)}", no_wrap=True, width=bar_width)
    table.add_column("duration", justify="right", no_wrap=True, min_width=8)
    table.add_column("", overflow="fold", min_width=NOTES_WIDTH, max_width=NOTES_WIDTH)
    for span, depth in rows:
        critical = span.span_id in diagnosis.critical_span_ids
        name = Text(
            "  " * min(depth, MAX_INDENT) + span.name, style="bold red" if span.status == "ERROR" else ""
        )
        notes = Text()
        waited = waits.get(span.span_id, 0)
        if waited:
            notes.append(f"waited {format_duration(waited)} ", style="yellow")
        attempt = span.attributes.get("tracebridge.delivery.attempt")
        if isinstance(attempt, int) and attempt > 1:
            notes.append(f"attempt {attempt} ", style="bold yellow")
        if span.span_id in trace.linked_parents:
            notes.append(f"linked trace {span.trace_id[:8]}… ", style="cyan")
        if span.attributes.get("tracebridge.context.source") == "none":
            notes.append("no context (broken chain) ", style="bold red")
        if span.status == "ERROR":
            notes.append(span.status_message or "error", style="red")
        table.add_row(
            Text("◆", style="bold magenta") if critical else Text(" "),
            span.service,
            name,
            _bar(span, waited, start, scale, bar_width),
            format_duration(span.duration_ns),
            notes,
        )
    return table
