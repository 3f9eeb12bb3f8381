"""Log records in the trace store, beside the spans: OTLP ``/v1/logs`` in, a trace's lines out.

Each record keeps its OTLP protobuf bytes (attributes, exception details) next to the columns
that are read — time, trace and span id, service, severity, the body as text — indexed by
trace id, so a trace's lines come with one index range; records outside any trace are kept
too (``trace_id`` NULL) and age out with the same retention.  Any OTLP log record with a trace
id lands here, whichever language's SDK sent it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from tracebridge.otlp import MAX_TIME_NS, any_value, attributes

LOG_SCHEMA = """
CREATE TABLE IF NOT EXISTS logs (
    time_ns INTEGER NOT NULL,
    trace_id TEXT,
    span_id TEXT,
    service TEXT NOT NULL,
    severity INTEGER NOT NULL,
    severity_text TEXT NOT NULL,
    body TEXT NOT NULL,
    record BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS logs_trace ON logs (trace_id, time_ns);
CREATE INDEX IF NOT EXISTS logs_time ON logs (time_ns);
"""
INSERT_INTO, COLUMNS = "INTO logs", 8  # the store inserts many rows a statement
MAX_BODY = 64 * 1024  # characters of a body kept as text (the record keeps it whole)
# OTLP severity numbers: 1-4 TRACE, 5-8 DEBUG, 9-12 INFO, 13-16 WARN, 17-20 ERROR, 21-24 FATAL
_SEVERITY_NAMES = ((21, "FATAL"), (17, "ERROR"), (13, "WARN"), (9, "INFO"), (5, "DEBUG"), (1, "TRACE"))


def severity_name(number: int, text: str = "") -> str:
    """The record's own severity text, else the name of its OTLP severity range."""
    if text:
        return text
    for lowest, name in _SEVERITY_NAMES:
        if number >= lowest:
            return name
    return "UNSPECIFIED"


@dataclass(frozen=True)
class LogLine:
    """One stored log record, as the CLI, the API and the UI show it."""

    time_ns: int
    trace_id: str | None
    span_id: str | None
    service: str
    severity: str
    severity_number: int
    body: str
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def is_error(self) -> bool:
        return self.severity_number >= 17

    def to_json(self) -> dict[str, Any]:
        return {
            "time_ns": self.time_ns,
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "service": self.service,
            "severity": self.severity,
            "severity_number": self.severity_number,
            "body": self.body,
            "attributes": self.attributes,
            "error": self.is_error,
        }


_NO_TRACE = bytes(16)
_NO_SPAN = bytes(8)


def record_problem(record: LogRecord) -> str | None:
    """Why a log record can't be stored, or ``None``: ids of 16/8 bytes, or none (empty or
    all zero — what an SDK sends for a record made outside any span), and a time."""
    if record.trace_id and len(record.trace_id) != 16:
        return "invalid trace_id"
    if record.span_id and len(record.span_id) != 8:
        return "invalid span_id"
    if max(record.time_unix_nano, record.observed_time_unix_nano) > MAX_TIME_NS:
        return "time past year 2262"
    return None


def _body_text(record: LogRecord) -> str:
    value = any_value(record.body) if record.HasField("body") else ""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:MAX_BODY]


@dataclass(frozen=True)
class PreparedLogs:
    """The rows of one ``/v1/logs`` request, and what was refused."""

    rows: list[tuple[Any, ...]]
    accepted: int
    rejected: int
    reason: str


def prepare(request: ExportLogsServiceRequest) -> PreparedLogs:
    """Rows for every valid record of a request (pure Python, outside the writer)."""
    rows: list[tuple[Any, ...]] = []
    rejected = 0
    reason = ""
    for resource_logs in request.resource_logs:
        service = "unknown_service"
        for pair in resource_logs.resource.attributes:
            if pair.key == "service.name":
                service = pair.value.string_value or service
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                problem = record_problem(record)
                if problem is not None:
                    rejected += 1
                    reason = reason or problem
                    continue
                rows.append(
                    (
                        record.time_unix_nano or record.observed_time_unix_nano,
                        record.trace_id.hex() if record.trace_id.strip(b"\0") else None,
                        record.span_id.hex() if record.span_id.strip(b"\0") else None,
                        service,
                        record.severity_number,
                        record.severity_text,
                        _body_text(record),
                        record.SerializeToString(),
                    )
                )
    return PreparedLogs(rows, len(rows), rejected, reason)


def lines(connection: sqlite3.Connection, trace_ids: Sequence[str], limit: int = 10_000) -> list[LogLine]:
    """The log lines of these traces, in time order (every service's, interleaved)."""
    if not trace_ids:
        return []
    marks = ",".join("?" * len(trace_ids))
    rows = connection.execute(
        "SELECT time_ns, trace_id, span_id, service, severity, severity_text, body, record FROM logs "
        f"WHERE trace_id IN ({marks}) ORDER BY time_ns LIMIT ?",
        (*[trace_id.lower() for trace_id in trace_ids], limit),
    ).fetchall()
    return list(_lines(rows))


def _lines(rows: Iterable[tuple[Any, ...]]) -> Iterable[LogLine]:
    for time_ns, trace_id, span_id, service, number, text, body, blob in rows:
        record = LogRecord()
        record.ParseFromString(blob)
        severity = severity_name(number, text)
        extra = attributes(record.attributes)
        yield LogLine(time_ns, trace_id, span_id, service, severity, number, body, extra)
