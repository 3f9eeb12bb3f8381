"""The embedded store as an analysis :class:`Source` (the CLI's default ``--source``)."""

from __future__ import annotations

from pathlib import Path

from tracebridge.analysis.model import SpanRecord, Trace, TraceSummary
from tracebridge.analysis.sources import SearchQuery, SourceUnavailable, TraceNotFound
from tracebridge.collector.store import DEFAULT_DB, SpanStore
from tracebridge.collector.store import TraceNotFound as StoreTraceNotFound


class StoreSource:
    """Reads a collector's SQLite store; never creates one."""

    def __init__(self, path: str | Path | None = None, store: SpanStore | None = None) -> None:
        if store is not None:  # the collector's own, open store
            self.path, self.store = store.path, store
            return
        self.path = Path(path).expanduser() if path else DEFAULT_DB
        if not self.path.exists():
            raise SourceUnavailable(
                f"no trace store at {self.path}: start one with `tracebridge collector` "
                "(or `tracebridge demo`), or pass --source with a Jaeger URL or an OTLP JSON file"
            )
        self.store = SpanStore(self.path)
        if self.store.is_empty():
            raise SourceUnavailable(
                f"the trace store at {self.path} is empty: no service has exported spans to it yet"
            )

    def describe(self) -> str:
        return f"store {self.path}"

    def trace(self, trace_id: str) -> Trace:
        try:
            return Trace(self.store.trace(trace_id))
        except StoreTraceNotFound:
            raise TraceNotFound(trace_id) from None

    def find(self, key: str, value: str, limit: int = 20) -> list[str]:
        return self.store.trace_ids_with(key, value, limit)

    def recent_spans(self, since_ns: int) -> list[SpanRecord]:
        return self.store.spans_between(since_ns)

    def linked_to(self, trace_id: str) -> list[SpanRecord]:
        return self.store.linking_to(trace_id)

    def services(self) -> list[str]:
        return self.store.services()

    def spans_between(self, start_ns: int, end_ns: int, service: str | None = None) -> list[SpanRecord]:
        return self.store.spans_between(start_ns, end_ns, limit=50_000, service=service)

    def search(self, query: SearchQuery) -> list[TraceSummary]:
        return self.store.search(
            service=query.services[0] if query.services else None,
            also_services=query.services[1:],
            name=query.name,
            attribute=query.attribute,
            min_duration_ns=query.min_duration_ns,
            errors_only=query.errors_only,
            start_ns=query.start_ns,
            end_ns=query.end_ns,
            limit=query.limit,
            offset=query.offset,
        )
