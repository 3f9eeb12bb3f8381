"""OTLP/HTTP intake: ``/v1/traces`` and ``/v1/logs``, and the one thread that writes the store.

Ingestion answers only after the spans are committed, so an acknowledged span is never lost;
the writer groups whatever requests are waiting into one transaction, so that costs one commit
per burst rather than one per request.  When the writer falls behind, new requests get 429
with ``Retry-After`` — the OTLP exporters back off and retry — instead of queueing without
bound.  Both signals share every limit and answer: body size after decompression, content
types and encodings, malformed bodies, partial success.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

from google.protobuf import json_format
from google.rpc import status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from starlette.requests import Request
from starlette.responses import Response

from tracebridge.analysis.sources import Source
from tracebridge.collector.config import CollectorConfig
from tracebridge.collector.span_rows import PreparedBatch, WriteResult
from tracebridge.collector.store import SpanStore
from tracebridge.otlp import InvalidOtlp, parse_json, parse_logs_json, parse_logs_protobuf, parse_protobuf

PROTOBUF = "application/x-protobuf"
JSON = "application/json"


class PayloadTooLarge(ValueError):
    pass


class Writer:
    """One thread that owns the store's writes; requests wait on a future for their commit."""

    def __init__(self, store: SpanStore, config: CollectorConfig) -> None:
        self.store = store
        self.config = config
        self.pending: queue.Queue[tuple[PreparedBatch, asyncio.Future[WriteResult]] | None] = queue.Queue()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="tracebridge-store-writer", daemon=True)
        self.thread.start()
        self.retention = threading.Thread(target=self._retain, name="tracebridge-retention", daemon=True)
        self.retention.start()

    def busy(self) -> bool:
        """Too far behind to take more: answer 429 before doing any work for the request."""
        return self.pending.qsize() >= self.config.max_pending_requests

    def submit(self, batch: PreparedBatch) -> asyncio.Future[WriteResult]:
        """Queue a prepared request; the future completes once it is committed."""
        future: asyncio.Future[WriteResult] = asyncio.get_running_loop().create_future()
        self.pending.put((batch, future))
        return future

    def _run(self) -> None:
        while True:
            item = self.pending.get()
            if item is None:
                return
            batch = [item]
            while len(batch) < 256:
                try:
                    more = self.pending.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self.pending.put(None)
                    break
                batch.append(more)
            try:
                self.store.commit([prepared for prepared, _ in batch])
                failures: list[BaseException | None] = [None] * len(batch)
            except Exception:
                # One request's rows must not cost the others theirs: commit them one by one,
                # and only the request that fails again is answered with the error.
                failures = [self._commit_alone(prepared) for prepared, _ in batch]
            for (prepared, future), failure in zip(batch, failures, strict=True):
                loop = future.get_loop()
                if failure is not None:
                    loop.call_soon_threadsafe(_fail, future, failure)
                else:
                    loop.call_soon_threadsafe(_succeed, future, prepared.result)

    def _commit_alone(self, prepared: PreparedBatch) -> BaseException | None:
        try:
            self.store.commit([prepared])
        except Exception as error:  # reported to the waiting request, never swallowed
            return error
        return None

    def _retain(self) -> None:
        while not self.stopping.wait(self.config.retention_every_s):
            try:
                self.store.apply_retention(self.config.retention_max_age_s, self.config.retention_max_bytes)
            except Exception:  # retention must never stop ingestion; it retries next round
                continue

    def stop(self) -> None:
        self.stopping.set()
        self.pending.put(None)
        self.thread.join(timeout=10)


def _succeed(future: asyncio.Future[WriteResult], result: WriteResult) -> None:
    if not future.done():
        future.set_result(result)


def _fail(future: asyncio.Future[WriteResult], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


def _status(code: int, message: str, content_type: str, http_status: int, **headers: str) -> Response:
    """An OTLP error answer: a google.rpc.Status in the request's encoding."""
    status = status_pb2.Status(code=code, message=message)
    if content_type == JSON:
        body = json_format.MessageToJson(status).encode()
    else:
        body = status.SerializeToString()
        content_type = PROTOBUF
    return Response(body, status_code=http_status, media_type=content_type, headers=headers)


def _decompress(body: bytes, limit: int) -> bytes:
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    data = inflater.decompress(body, limit + 1)
    if len(data) > limit or inflater.unconsumed_tail:
        raise PayloadTooLarge(f"decompressed body exceeds {limit} bytes")
    if not inflater.eof:
        raise ValueError("truncated gzip body")
    return data


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body exceeds {limit} bytes")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def otlp_endpoints(
    store: SpanStore | None, writer: Writer | None, reader: Source, config: CollectorConfig
) -> tuple[Callable[[Request], Awaitable[Response]], Callable[[Request], Awaitable[Response]]]:
    """The ``/v1/traces`` and ``/v1/logs`` handlers (answering 404 with a pointer when the
    collector reads another source instead of a store)."""

    def intake(
        what: str,
        parse_binary: Callable[[bytes], Any],
        parse_text: Callable[[bytes], Any],
        prepare: Callable[[Any, bytes | None], PreparedBatch],
        answer: Callable[[WriteResult], Any],
    ) -> Callable[[Request], Awaitable[Response]]:
        """One OTLP/HTTP endpoint (``/v1/traces``, ``/v1/logs``): the same limits, errors and
        commit-before-answer for every signal."""

        async def ingest(request: Request) -> Response:
            content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if writer is None or store is None:
                message = f"this collector reads {reader.describe()}; export {what} there, not here"
                return _status(12, message, JSON if content_type != PROTOBUF else PROTOBUF, 404)
            retry = {"Retry-After": str(config.retry_after_s)}
            if writer.busy():
                return _status(14, "collector is busy; retry later", content_type, 429, **retry)
            if content_type not in (PROTOBUF, JSON):
                message = f"unsupported Content-Type {content_type!r}: send {PROTOBUF} or {JSON}"
                return _status(3, message, JSON, 415)
            encoding = request.headers.get("content-encoding", "identity").strip().lower()
            if encoding not in ("identity", "gzip", ""):
                message = f"unsupported Content-Encoding {encoding!r}: send gzip or none"
                return _status(3, message, content_type, 415)
            try:
                body = await _read_body(request, config.max_body_bytes)
                if encoding == "gzip":
                    body = _decompress(body, config.max_body_bytes)
                parsed = parse_text(body) if content_type == JSON else parse_binary(body)
            except PayloadTooLarge as error:
                return _status(8, str(error), content_type, 413)
            except (InvalidOtlp, ValueError, zlib.error, EOFError) as error:
                return _status(3, f"malformed request: {error}", content_type, 400)
            try:
                # Rows are built here while the writer thread is in SQLite (which releases the
                # GIL) with the previous requests: the two overlap.  A protobuf body's rows are
                # read off its bytes (span_rows); it was decoded above all the same, so what
                # the standard decoder rejects is rejected here.
                raw = body if content_type == PROTOBUF else None
                result = await writer.submit(prepare(parsed, raw))
            except Exception as error:
                return _status(14, f"could not store {what}: {error}", content_type, 503, **retry)
            response = answer(result)
            if content_type == JSON:
                return Response(json_format.MessageToJson(response), media_type=JSON)
            return Response(response.SerializeToString(), media_type=PROTOBUF)

        return ingest

    def traces_answer(result: WriteResult) -> ExportTraceServiceResponse:
        response = ExportTraceServiceResponse()
        if result.rejected:
            response.partial_success.rejected_spans = result.rejected
            response.partial_success.error_message = f"{result.rejected} spans rejected: {result.reason}"
        return response

    def logs_answer(result: WriteResult) -> ExportLogsServiceResponse:
        response = ExportLogsServiceResponse()
        if result.rejected:
            response.partial_success.rejected_log_records = result.rejected
            message = f"{result.rejected} log records rejected: {result.reason}"
            response.partial_success.error_message = message
        return response

    def prepare_spans(parsed: Any, raw: bytes | None) -> PreparedBatch:
        assert store is not None
        return store.prepare(parsed, raw)

    def prepare_logs(parsed: Any, raw: bytes | None) -> PreparedBatch:
        assert store is not None
        return store.prepare_logs(parsed)

    ingest_traces = intake("spans", parse_protobuf, parse_json, prepare_spans, traces_answer)
    ingest_logs = intake("log records", parse_logs_protobuf, parse_logs_json, prepare_logs, logs_answer)

    return ingest_traces, ingest_logs
