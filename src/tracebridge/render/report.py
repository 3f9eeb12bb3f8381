"""Terminal views of a diagnosis and of the doctor's findings."""

from __future__ import annotations

from collections import defaultdict

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from tracebridge.analysis.critical_path import NETWORK
from tracebridge.analysis.diagnosis import Diagnosis, format_duration
from tracebridge.analysis.doctor import BrokenChain
from tracebridge.analysis.pending import PROCESSED


def diagnosis_view(diagnosis: Diagnosis) -> RenderableType:
    """Verdict first, then where the time went, the hops, and what failed."""
    parts: list[RenderableType] = [
        Text.assemble(("verdict  ", "bold"), (diagnosis.headline, "bold yellow")),
        Text(
            f"trace {diagnosis.trace_id}: {format_duration(diagnosis.end_to_end_ns)} end to end "
            f"(first start to last end, async hops included), {diagnosis.span_count} spans, "
            f"services: {', '.join(diagnosis.services)}",
            style="dim",
        ),
    ]
    if diagnosis.failure_cause is not None:
        parts.append(Text.assemble(("failure  ", "bold"), (diagnosis.failure_cause.text, "red")))
    pending = [delivery for delivery in diagnosis.deliveries if delivery.state != PROCESSED]
    if len(pending) > 1:  # the headline names the first; list them all when there are more
        for delivery in pending:
            parts.append(Text.assemble(("pending  ", "bold"), (delivery.text, "yellow")))
    if diagnosis.linked_trace_ids:
        parts.append(
            Text(
                f"+ {len(diagnosis.linked_trace_ids)} linked trace(s) joined by consumer links: "
                + ", ".join(diagnosis.linked_trace_ids),
                style="dim",
            )
        )
    totals: dict[str, int] = defaultdict(int)
    for segment in diagnosis.segments:
        if segment.category == NETWORK:
            label = f"network {segment.service} → {segment.peer or '?'}"
        elif segment.topic:
            label = f"{segment.category} `{segment.topic}` ({segment.service})"
        else:
            label = f"{segment.category} in {segment.service}"
        totals[label] += segment.duration_ns
    path = Table(title="critical path", title_justify="left", show_edge=False)
    path.add_column("where the time went")
    path.add_column("time", justify="right")
    path.add_column("share", justify="right")
    for label, duration in sorted(totals.items(), key=lambda item: -item[1])[:8]:
        path.add_row(label, format_duration(duration), f"{duration / max(1, diagnosis.end_to_end_ns):.0%}")
    parts.append(path)
    if diagnosis.hops:
        table = Table(title="async hops", title_justify="left", show_edge=False)
        for column in ("topic", "producer → consumer", "publish", "queue wait", "processing", ""):
            table.add_column(
                column, justify="right" if column in ("publish", "queue wait", "processing") else "left"
            )
        for hop in diagnosis.hops:
            flags = []
            if hop.attempt > 1:
                flags.append(f"attempt {hop.attempt}")
            if hop.clock_skew:
                flags.append("clock skew")
            if hop.linked:
                flags.append("linked")
            if hop.failed:
                flags.append("FAILED")
            table.add_row(
                hop.topic,
                f"{hop.producer} → {hop.consumer}",
                format_duration(hop.publish_ns),
                format_duration(hop.queue_wait_ns),
                format_duration(hop.processing_ns),
                ", ".join(flags),
            )
        parts.append(table)
    for failure in diagnosis.failures:
        parts.append(
            Text(
                f"failed  {failure.service}: {failure.span_name} — {failure.error_type}: {failure.message}",
                style="red",
            )
        )
    for retry in diagnosis.retries:
        parts.append(
            Text(
                f"retried {retry.topic}[{retry.partition}]@{retry.offset}: {retry.deliveries} deliveries "
                f"to group {retry.group} ({retry.service})",
                style="yellow",
            )
        )
    for letter in diagnosis.dead_letters:
        parts.append(Text(f"dead-lettered to {letter.topic} by {letter.service}", style="bold red"))
    if diagnosis.broken_hops:
        parts.append(Text(f"{diagnosis.broken_hops} hop(s) lost the trace context here", style="bold red"))
    return Group(*parts)


def doctor_view(chains: list[BrokenChain], window: str) -> RenderableType:
    """The broken-chain table."""
    if not chains:
        return Text(
            f"no broken chains in the last {window}: every hop carried its trace context", style="green"
        )
    table = Table(title=f"broken trace chains, last {window}", title_justify="left")
    for column in ("symptom", "why", "topic", "producer", "consumer", "count", "example trace"):
        table.add_column(column, justify="right" if column == "count" else "left")
    for chain in chains:
        producer = Text(chain.producer)
        if chain.producer_confidence:
            producer.append(f" ({chain.producer_confidence})", style="dim")
        table.add_row(
            chain.symptom,
            chain.reason,
            chain.topic,
            producer,
            chain.consumer,
            str(chain.count),
            chain.example_trace_id,
        )
    named = [chain for chain in chains if chain.producer_evidence]
    if not named:
        return table
    notes = [
        Text(f"{chain.producer} → `{chain.topic}`: {chain.producer_evidence}", style="dim") for chain in named
    ]
    return Group(table, Text("how the producers were named", style="bold"), *notes)
