"""A trace as a terminal tree: who called whom, across HTTP and Kafka hops.

Process spans show what makes an async hop legible — queue wait, delivery attempt and where
the context came from — and a broken chain (``context.source=none``) is shown in red.
"""

from __future__ import annotations

from rich.text import Text
from rich.tree import Tree

from tracebridge.analysis.model import SpanRecord, Trace

_KIND_STYLE = {
    "SERVER": "green",
    "CLIENT": "cyan",
    "PRODUCER": "magenta",
    "CONSUMER": "yellow",
    "INTERNAL": "white",
}


def span_label(span: SpanRecord, trace: Trace) -> Text:
    """One line: service, name, kind, duration, and the async-hop facts of consumer spans."""
    label = Text()
    label.append(f"{span.service}", style="bold blue")
    label.append("  ")
    label.append(span.name, style="bold red" if span.status == "ERROR" else "bold")
    label.append(f"  {span.kind}", style=_KIND_STYLE.get(span.kind, "white"))
    label.append(f"  {span.duration_ns / 1e6:.1f} ms", style="dim")
    attributes = span.attributes
    if "tracebridge.queue_wait_ms" in attributes:
        label.append(f"  queue wait {float(attributes['tracebridge.queue_wait_ms']):.1f} ms", style="yellow")
    attempt = attributes.get("tracebridge.delivery.attempt")
    if isinstance(attempt, int) and attempt > 1:
        label.append(f"  attempt {attempt}", style="bold yellow")
    source = attributes.get("tracebridge.context.source")
    if source is not None:
        label.append(f"  context: {source}", style="bold red" if source == "none" else "dim")
    if span.status == "ERROR":
        label.append(f"  ERROR {span.status_message}", style="red")
    for link in span.links:
        target = trace.by_id.get(link.span_id)
        where = f"{target.service}: {target.name}" if target else f"{link.trace_id[:8]}…/{link.span_id}"
        label.append(f"  ↪ follows {where}", style="dim magenta")
    return label


def trace_tree(trace: Trace, title: str | None = None) -> Tree:
    """A rich Tree of the trace, children in start order."""
    root_title = title or (f"trace {next(iter(sorted(trace.trace_ids)))}" if trace.spans else "empty trace")
    tree = Tree(Text(root_title, style="bold"))

    def add(node: Tree, span: SpanRecord) -> None:
        child = node.add(span_label(span, trace))
        for grandchild in trace.children.get(span.span_id, []):
            add(child, grandchild)

    for root in trace.roots:
        add(tree, root)
    return tree
