"""The trace store: SQLite in WAL mode, one writer and any number of readers.

Each span keeps its OTLP protobuf bytes (cheap to write, decoded only when a trace is read)
next to the columns the indexes need: trace id, service + start time, and an attribute table
that holds each (key, value) once per trace — so ``order.id`` on every span of an order costs
one row, and "find the trace of order o-42" is a single index lookup.  Spans of one trace
arriving minutes apart (async hops) simply land under the same trace id.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from functools import lru_cache
from itertools import chain
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tracebridge.analysis.model import SpanRecord, TraceSummary, attribute_matches
from tracebridge.collector import logs, span_rows
from tracebridge.collector.span_rows import PreparedBatch, WriteResult
from tracebridge.otlp import attributes, record_from_span

DEFAULT_DB = Path.home() / ".local" / "share" / "tracebridge" / "traces.db"
# Attributes whose values are indexed for instant lookup: the business keys people search by.
# Indexing every attribute of every span costs more than storing the span; any other attribute
# is still found, by scanning recent spans (``SCAN_WINDOW_S``).
DEFAULT_INDEXED_ATTRIBUTES = (
    "order.id",
    "customer.id",
    "user.id",
    "messaging.kafka.message.key",
    "error.type",
)
SCAN_WINDOW_S = 24 * 3600

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spans (
    trace_id TEXT NOT NULL,
    span_id TEXT NOT NULL,
    parent_id TEXT,
    service TEXT NOT NULL,
    name TEXT NOT NULL,
    kind INTEGER NOT NULL,
    start_ns INTEGER NOT NULL,
    end_ns INTEGER NOT NULL,
    status INTEGER NOT NULL,
    resource_id INTEGER NOT NULL,
    scope TEXT NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS spans_trace ON spans (trace_id);
CREATE INDEX IF NOT EXISTS spans_service_time ON spans (service, start_ns);
CREATE TABLE IF NOT EXISTS attributes (
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    trace_id TEXT NOT NULL,
    PRIMARY KEY (key, value, trace_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS attributes_trace ON attributes (trace_id);
CREATE TABLE IF NOT EXISTS links (
    trace_id TEXT NOT NULL,
    span_id TEXT NOT NULL,
    linked_trace_id TEXT NOT NULL,
    linked_span_id TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS links_target ON links (linked_trace_id, linked_span_id);
CREATE INDEX IF NOT EXISTS links_trace ON links (trace_id);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS resources (
    id INTEGER PRIMARY KEY,
    body BLOB NOT NULL
);
"""


def _one(connection: sqlite3.Connection, sql: str, parameters: Sequence[Any] = ()) -> Any:
    """The first row of a query, with its cursor closed: an unfinished statement keeps its read
    snapshot, so the connection would go on seeing old data (and block WAL checkpoints)."""
    cursor = connection.execute(sql, parameters)
    try:
        return cursor.fetchone()
    finally:
        cursor.close()


_ROWS_PER_STATEMENT = 256


@lru_cache(maxsize=256)
def _values_statement(into: str, width: int, rows: int) -> str:
    row = "(" + ", ".join("?" * width) + ")"
    return f"INSERT {into} VALUES " + ", ".join([row] * rows)


class _Checkpointer:
    """Copies the write-ahead log into the database file from its own thread and connection,
    so the writer's commits stop paying for it (it was a third of the writer's time at 0.5 M
    spans).  A passive checkpoint never blocks the writer; the writer's own automatic
    checkpoint (``wal_autocheckpoint``) stays as it was, finds the log already copied but for
    the last frames, and lets the log start over — a checkpoint from here alone could not,
    while commits keep coming."""

    #: Rest between checkpoints: an index page that many commits in a row change is copied
    #: once, not once a commit — half the checkpointer's CPU (0.2 → 0.1 core at 1 M
    #: spans), with ingest the same within the machine's noise.
    PAUSE_S = 0.2

    def __init__(self, path: Path) -> None:
        self.path = path
        self.wanted = threading.Event()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="tracebridge-checkpoint", daemon=True)
        self.thread.start()

    def wake(self) -> None:
        self.wanted.set()

    def _run(self) -> None:
        connection = sqlite3.connect(self.path, check_same_thread=False, timeout=30, isolation_level=None)
        try:
            while True:
                self.wanted.wait()
                self.wanted.clear()
                if self.stopped.is_set():
                    return
                with suppress(sqlite3.Error):  # the writer's own checkpoint still runs
                    _one(connection, "PRAGMA wal_checkpoint(PASSIVE)")
                if self.stopped.wait(self.PAUSE_S):
                    return
        finally:
            connection.close()

    def stop(self) -> None:
        self.stopped.set()
        self.wanted.set()
        self.thread.join(timeout=10)


class TraceNotFound(LookupError):
    """No span of that trace id is stored."""


def _connect(path: Path, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False, timeout=10)
    else:
        connection = sqlite3.connect(path, check_same_thread=False, timeout=30, isolation_level=None)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        # Checkpoint the WAL every ~40 MB rather than every 4 MB, and keep index pages cached:
        # ingestion is bursts of many small rows into a few B-trees.
        connection.execute("PRAGMA wal_autocheckpoint=10000")
        connection.execute("PRAGMA cache_size=-65536")
        connection.execute("PRAGMA temp_store=MEMORY")
    connection.execute("PRAGMA busy_timeout=10000")
    return connection


class SpanStore:
    """Writes (one writer: :meth:`write`) and reads spans in a SQLite file."""

    def __init__(
        self, path: Path | str = DEFAULT_DB, indexed_attributes: Iterable[str] | None = None
    ) -> None:
        """Open (or create) a store.  ``indexed_attributes`` is the collector's choice and is
        recorded in the file; a reader passes ``None`` and gets what the file says."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = _connect(self.path)
        self._writer.executescript(_SCHEMA + logs.LOG_SCHEMA)
        if indexed_attributes is not None:
            chosen = json.dumps(sorted(set(indexed_attributes)))
            self._writer.execute("INSERT OR REPLACE INTO meta VALUES ('indexed_attributes', ?)", (chosen,))
        row = _one(self._writer, "SELECT value FROM meta WHERE key = 'indexed_attributes'")
        self.indexed_attributes = frozenset(json.loads(row[0]) if row else DEFAULT_INDEXED_ATTRIBUTES)
        self._indexed = span_rows.Indexed(self.indexed_attributes)
        self._write_lock = threading.Lock()
        self._local = threading.local()
        self._checkpointer: _Checkpointer | None = None

    # -- writing ------------------------------------------------------------------------------
    def write(self, requests: Sequence[ExportTraceServiceRequest]) -> list[WriteResult]:
        """Store the valid spans of several requests in one transaction."""
        prepared = [self.prepare(request) for request in requests]
        self.commit(prepared)
        return [batch.result for batch in prepared]

    def prepare(self, request: ExportTraceServiceRequest, body: bytes | None = None) -> PreparedBatch:
        """The rows one request adds, off the request path's writer: run it outside the writer
        thread, so building rows overlaps with SQLite writing the previous ones.  With the
        request's protobuf ``body``, the rows are read off its bytes (:mod:`span_rows`)."""
        return span_rows.prepare(request, body, self._indexed)

    def prepare_logs(self, request: ExportLogsServiceRequest) -> PreparedBatch:
        """The rows one ``/v1/logs`` request adds (:mod:`tracebridge.collector.logs`)."""
        found = logs.prepare(request)
        result = WriteResult(found.accepted, found.rejected, found.reason)
        return PreparedBatch([], set(), [], {}, result, log_rows=found.rows)

    def commit(self, batches: Sequence[PreparedBatch]) -> None:
        """Write prepared batches in one transaction (group commit)."""
        resource_rows: dict[int, bytes] = {}
        span_rows: list[tuple[Any, ...]] = []
        attribute_rows: set[tuple[str, str, str]] = set()
        link_rows: list[tuple[str, str, str, str]] = []
        log_rows: list[tuple[Any, ...]] = []
        for batch in batches:
            resource_rows.update(batch.resource_rows)
            span_rows.extend(batch.span_rows)
            attribute_rows.update(batch.attribute_rows)
            link_rows.extend(batch.link_rows)
            log_rows.extend(batch.log_rows)
        if self._checkpointer is None:
            self._checkpointer = _Checkpointer(self.path)
        with self._write_lock:
            cursor = self._writer.cursor()
            cursor.execute("BEGIN")
            try:
                insert = self._insert
                insert(cursor, "OR IGNORE INTO resources", 2, list(resource_rows.items()))
                insert(cursor, "INTO spans", 12, span_rows)
                insert(cursor, "OR IGNORE INTO attributes", 3, list(attribute_rows))
                insert(cursor, "INTO links", 4, link_rows)
                insert(cursor, logs.INSERT_INTO, logs.COLUMNS, log_rows)
                cursor.execute("COMMIT")
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
        self._checkpointer.wake()

    def _insert(self, cursor: sqlite3.Cursor, into: str, width: int, rows: Sequence[Sequence[Any]]) -> None:
        """``INSERT <into> VALUES (…), (…), …``: up to 256 rows a statement.

        Why not ``executemany``: it binds each row with the GIL held and runs it without, so
        every row waits to take the GIL back — behind the event loop, which holds it while it
        reads requests.  Against a thread busy in Python, 4 096 spans took 6 170 µs a span
        that way and 45 µs with 256 rows a statement; alone, 5.8 against 4.9 µs.  Statement
        sizes are powers of two below the full one, so a few statements are ever prepared."""
        limit = cursor.connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        per_statement = max(1, min(_ROWS_PER_STATEMENT, limit // width))
        done, count = 0, len(rows)
        while done < count:
            size = min(per_statement, count - done)
            if size < per_statement:
                size = 1 << (size.bit_length() - 1)
            values = list(chain.from_iterable(rows[done : done + size]))
            cursor.execute(_values_statement(into, width, size), values)
            done += size

    def apply_retention(self, max_age_s: float | None, max_bytes: int | None) -> int:
        """Delete whole traces older than ``max_age_s``, then oldest traces while the file is
        larger than ``max_bytes``; returns how many spans went."""
        deleted = 0
        if max_age_s is not None:
            cutoff = time.time_ns() - int(max_age_s * 1e9)
            deleted += self._delete_traces(
                "SELECT DISTINCT trace_id FROM spans WHERE start_ns < ?", (cutoff,)
            )
            with self._write_lock:  # log records outside any trace age out the same way
                self._writer.execute("DELETE FROM logs WHERE time_ns < ?", (cutoff,))
        if max_bytes is not None:
            for _ in range(100):
                if self.size_bytes() <= max_bytes:
                    break
                removed = self._delete_traces(
                    "SELECT trace_id FROM spans GROUP BY trace_id ORDER BY min(start_ns) LIMIT "
                    "(SELECT max(1, count(DISTINCT trace_id) / 10) FROM spans)",
                    (),
                )
                deleted += removed
                if not removed:
                    break
                # No VACUUM: it rewrote the whole file under the write lock, so a store at its
                # size limit stopped taking spans for the minutes that took (requests timed out
                # at 5 M spans).  Deleted pages go to the free list and new spans reuse them:
                # the file stays at about --max-size, and the size counted is the pages in use.
                with self._write_lock:
                    self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return deleted

    def _delete_traces(self, select: str, parameters: tuple[Any, ...]) -> int:
        with self._write_lock:
            cursor = self._writer.cursor()
            cursor.execute("BEGIN")
            try:
                cursor.execute("CREATE TEMP TABLE IF NOT EXISTS doomed (trace_id TEXT PRIMARY KEY)")
                cursor.execute("DELETE FROM doomed")
                cursor.execute(f"INSERT OR IGNORE INTO doomed {select}", parameters)
                cursor.execute("DELETE FROM spans WHERE trace_id IN (SELECT trace_id FROM doomed)")
                deleted = cursor.rowcount
                cursor.execute("DELETE FROM attributes WHERE trace_id IN (SELECT trace_id FROM doomed)")
                cursor.execute("DELETE FROM links WHERE trace_id IN (SELECT trace_id FROM doomed)")
                cursor.execute("DELETE FROM logs WHERE trace_id IN (SELECT trace_id FROM doomed)")
                cursor.execute("COMMIT")
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
        return max(deleted, 0)

    def size_bytes(self) -> int:
        """The store's pages in use (the file less its free pages, which new spans reuse) plus
        the write-ahead log."""
        with self._write_lock:
            pages = _one(self._writer, "PRAGMA page_count")[0]
            free = _one(self._writer, "PRAGMA freelist_count")[0]
            page_size = _one(self._writer, "PRAGMA page_size")[0]
        wal = Path(f"{self.path}-wal")
        return int(pages - free) * int(page_size) + (wal.stat().st_size if wal.exists() else 0)

    # -- reading ------------------------------------------------------------------------------
    @contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = _connect(self.path, readonly=True)
            self._local.connection = connection
        yield connection

    def _records(self, rows: Iterable[tuple[Any, ...]]) -> list[SpanRecord]:
        """Rows of (service, scope, resource_id, body) → records, each span once (an exporter
        that retried after a timeout may have delivered a span twice)."""
        resources: dict[int, dict[str, Any]] = {}
        out: list[SpanRecord] = []
        seen: set[tuple[bytes, bytes]] = set()
        with self._reader() as connection:
            for service, scope, resource_id, body in rows:
                if resource_id not in resources:
                    row = _one(connection, "SELECT body FROM resources WHERE id = ?", (resource_id,))
                    resource = Resource()
                    if row is not None:
                        resource.ParseFromString(row[0])
                    resources[resource_id] = attributes(resource.attributes)
                span = Span()
                span.ParseFromString(body)
                identity = (span.trace_id, span.span_id)
                if identity in seen:
                    continue
                seen.add(identity)
                out.append(record_from_span(span, service, resources[resource_id], scope))
        return out

    def trace(self, trace_id: str) -> list[SpanRecord]:
        """Every stored span of a trace; :class:`TraceNotFound` if there is none."""
        with self._reader() as connection:
            rows = connection.execute(
                "SELECT service, scope, resource_id, body FROM spans WHERE trace_id = ? ORDER BY start_ns",
                (trace_id.lower(),),
            ).fetchall()
        if not rows:
            raise TraceNotFound(trace_id)
        return self._records(rows)

    def log_lines(self, trace_ids: Sequence[str], limit: int = 10_000) -> list[logs.LogLine]:
        """Every service's log lines of these traces, in time order."""
        with self._reader() as connection:
            return logs.lines(connection, trace_ids, limit)

    def log_count(self) -> int:
        with self._reader() as connection:
            return int(_one(connection, "SELECT count(*) FROM logs")[0])

    def trace_ids_with(self, key: str, value: str, limit: int = 20) -> list[str]:
        """Traces that have a span with attribute ``key`` = ``value`` (newest first): an index
        lookup for indexed keys, else a scan of the last ``SCAN_WINDOW_S`` of spans."""
        if key not in self.indexed_attributes:
            since = time.time_ns() - int(SCAN_WINDOW_S * 1e9)
            latest: dict[str, int] = {}
            for span in self.spans_between(since):
                if attribute_matches(span.attributes.get(key), value):
                    latest[span.trace_id] = max(latest.get(span.trace_id, 0), span.start_ns)
            return sorted(latest, key=lambda trace_id: latest[trace_id], reverse=True)[:limit]
        with self._reader() as connection:
            rows = connection.execute(
                "SELECT a.trace_id FROM attributes a JOIN spans s ON s.trace_id = a.trace_id "
                "WHERE a.key = ? AND a.value = ? GROUP BY a.trace_id ORDER BY max(s.start_ns) DESC LIMIT ?",
                (key, value, limit),
            ).fetchall()
        return [row[0] for row in rows]

    def search(
        self,
        *,
        service: str | None = None,
        also_services: tuple[str, ...] = (),
        name: str | None = None,
        attribute: tuple[str, str] | None = None,
        min_duration_ns: int | None = None,
        errors_only: bool = False,
        start_ns: int | None = None,
        end_ns: int | None = None,
        limit: int = 20,
        offset: int = 0,
    ) -> list[TraceSummary]:
        """Traces matching every given filter, newest first."""
        where: list[str] = []
        parameters: list[Any] = []
        if service:
            where.append("s.service = ?")
            parameters.append(service)
        for other in also_services:  # traces that also passed through these services
            where.append("s.trace_id IN (SELECT trace_id FROM spans WHERE service = ?)")
            parameters.append(other)
        if name:
            where.append("s.name = ?")
            parameters.append(name)
        if errors_only:
            where.append("s.status = 2")
        if start_ns is not None:
            where.append("s.start_ns >= ?")
            parameters.append(start_ns)
        if end_ns is not None:
            where.append("s.start_ns <= ?")
            parameters.append(end_ns)
        if attribute is not None and attribute[0] in self.indexed_attributes:
            where.append("s.trace_id IN (SELECT trace_id FROM attributes WHERE key = ? AND value = ?)")
            parameters.extend(attribute)
        elif attribute is not None:
            matching = self.trace_ids_with(*attribute, limit=10_000)
            where.append(f"s.trace_id IN ({','.join('?' * len(matching)) or 'NULL'})")
            parameters.extend(matching)
        candidates = (
            "SELECT s.trace_id FROM spans s"
            + (f" WHERE {' AND '.join(where)}" if where else "")
            + " GROUP BY s.trace_id ORDER BY max(s.start_ns) DESC"
        )
        having = " HAVING max(end_ns) - min(start_ns) >= ?" if min_duration_ns else ""
        query = (
            "SELECT trace_id, min(start_ns), max(end_ns), count(*), sum(status = 2), "
            "group_concat(DISTINCT service), "
            "sum(kind = 5 AND parent_id IS NULL AND trace_id NOT IN (SELECT trace_id FROM links)) "
            f"FROM spans WHERE trace_id IN ({candidates}) GROUP BY trace_id{having} "
            "ORDER BY min(start_ns) DESC LIMIT ? OFFSET ?"
        )
        if min_duration_ns:
            parameters.append(min_duration_ns)
        parameters.extend((limit, offset))
        with self._reader() as connection:
            rows = connection.execute(query, parameters).fetchall()
            summaries = []
            for trace_id, first, last, count, errors, services, broken in rows:
                root = _one(
                    connection,
                    "SELECT service, name FROM spans WHERE trace_id = ? "
                    "ORDER BY (parent_id IS NOT NULL), start_ns LIMIT 1",
                    (trace_id,),
                )
                links_to = connection.execute(
                    "SELECT DISTINCT linked_trace_id FROM links WHERE trace_id = ? AND linked_trace_id != ?",
                    (trace_id, trace_id),
                ).fetchall()
                summaries.append(
                    TraceSummary(
                        trace_id=trace_id,
                        root_service=root[0],
                        root_name=root[1],
                        start_ns=first,
                        end_ns=last,
                        span_count=count,
                        error_count=errors or 0,
                        services=tuple(sorted((services or "").split(","))),
                        broken=bool(broken),
                        links_to=tuple(sorted(row[0] for row in links_to)),
                    )
                )
        return summaries

    def services(self) -> list[str]:
        """Every service that sent spans."""
        with self._reader() as connection:
            return [
                row[0] for row in connection.execute("SELECT DISTINCT service FROM spans ORDER BY service")
            ]

    def spans_between(
        self, start_ns: int, end_ns: int | None = None, limit: int = 200_000, service: str | None = None
    ) -> list[SpanRecord]:
        """Spans that started in a time window (for the doctor and the service map), of one
        service if given (the service/time index: what one consumer did while a record waited)."""
        end = end_ns if end_ns is not None else 2**63 - 1
        only = "service = ? AND " if service is not None else ""
        parameters = (service, start_ns, end, limit) if service is not None else (start_ns, end, limit)
        with self._reader() as connection:
            rows = connection.execute(
                "SELECT service, scope, resource_id, body FROM spans "
                f"WHERE {only}start_ns >= ? AND start_ns <= ? ORDER BY start_ns LIMIT ?",
                parameters,
            ).fetchall()
        return self._records(rows)

    def linking_to(self, trace_id: str, limit: int = 1000) -> list[SpanRecord]:
        """Spans of *other* traces that link to a span of this one (a link-only consumer, a
        batch receive): the way back along a link."""
        with self._reader() as connection:
            rows = connection.execute(
                "SELECT s.service, s.scope, s.resource_id, s.body FROM links l "
                "JOIN spans s ON s.trace_id = l.trace_id AND s.span_id = l.span_id "
                "WHERE l.linked_trace_id = ? AND l.trace_id != ? ORDER BY s.start_ns LIMIT ?",
                (trace_id.lower(), trace_id.lower(), limit),
            ).fetchall()
        return self._records(rows)

    def spans_received(self) -> int:
        """Spans ever stored (the row id high-water mark: instant, unlike counting)."""
        with self._reader() as connection:
            return int(_one(connection, "SELECT coalesce(max(rowid), 0) FROM spans")[0])

    def is_empty(self) -> bool:
        with self._reader() as connection:
            return _one(connection, "SELECT 1 FROM spans LIMIT 1") is None

    def span_count(self) -> int:
        """Spans stored now (counts every row: for tests and tools, not for hot paths)."""
        with self._reader() as connection:
            return int(_one(connection, "SELECT count(*) FROM spans")[0])

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
        self._writer.close()
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
