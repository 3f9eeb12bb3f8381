"""The collector's HTTP surface: OTLP/HTTP ingestion and the JSON query API (Starlette).

Ingestion answers only after the spans are committed, so an acknowledged span is never lost;
the writer groups whatever requests are waiting into one transaction, so that costs one commit
per burst rather than one per request.  When the writer falls behind, new requests get 429
with ``Retry-After`` — the OTLP exporters back off and retry — instead of queueing without
bound.
"""

from __future__ import annotations

import asyncio
import json
import queue
import secrets
import threading
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from google.protobuf import json_format
from google.rpc import status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceResponse,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from tracebridge.analysis.diagnosis import diagnose
from tracebridge.analysis.doctor import doctor
from tracebridge.analysis.model import SpanRecord, Trace
from tracebridge.analysis.pending import GroupsSeen, Offsets, for_trace
from tracebridge.analysis.service_map import service_map
from tracebridge.analysis.sources import SearchQuery, Source, SourceUnavailable, TraceNotFound, nearby_of
from tracebridge.analysis.story import story
from tracebridge.collector import ui
from tracebridge.collector.source import StoreSource
from tracebridge.collector.store import PreparedBatch, SpanStore, WriteResult
from tracebridge.otlp import InvalidOtlp, parse_json, parse_logs_json, parse_logs_protobuf, parse_protobuf

T = TypeVar("T")
PROTOBUF = "application/x-protobuf"
JSON = "application/json"


@dataclass
class CollectorConfig:
    """Limits and policies of one collector."""

    max_body_bytes: int = 8 * 1024 * 1024  # after decompression
    max_pending_requests: int = 64  # requests waiting for the writer before we answer 429
    retry_after_s: int = 1
    retention_max_age_s: float | None = 7 * 24 * 3600
    retention_max_bytes: int | None = 2 * 1024**3
    retention_every_s: float = 60.0
    token: str | None = None
    # The broker to ask how far consumer groups have got, for orders in flight (``--kafka``).
    offsets: Offsets | None = None


class PayloadTooLarge(ValueError):
    pass


class _Writer:
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


def build_app(
    store: SpanStore | None, config: CollectorConfig | None = None, source: Source | None = None
) -> Starlette:
    """The collector's ASGI application: OTLP in and the query API over ``store``, or — with
    ``source`` (Jaeger, Tempo, files) and no store — the same pages and answers over spans that
    live elsewhere, ingestion refused with a pointer to where spans go instead."""
    config = config or CollectorConfig()
    writer = _Writer(store, config) if store is not None else None
    if source is None:
        if store is None:
            raise ValueError("a collector needs a store or a source")
        source = StoreSource(store=store)
    reader: Source = source
    groups = GroupsSeen(reader)

    def intake(
        what: str,
        parse_binary: Callable[[bytes], Any],
        parse_text: Callable[[bytes], Any],
        prepare: Callable[[Any], PreparedBatch],
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
                # Rows are built here, in Python, while the writer thread is in SQLite (which
                # releases the GIL) with the previous requests: the two overlap.
                result = await writer.submit(prepare(parsed))
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

    def prepare_spans(parsed: Any) -> PreparedBatch:
        assert store is not None
        return store.prepare(parsed)

    def prepare_logs(parsed: Any) -> PreparedBatch:
        assert store is not None
        return store.prepare_logs(parsed)

    ingest_traces = intake("spans", parse_protobuf, parse_json, prepare_spans, traces_answer)
    ingest_logs = intake("log records", parse_logs_protobuf, parse_logs_json, prepare_logs, logs_answer)

    def get_logs(request: Request) -> Response:
        """A trace's (or an order's story's) log lines, every service's, in time order."""
        if store is None:
            message = f"no log records here: this collector reads {reader.describe()}"
            return JSONResponse({"error": message}, status_code=404)
        found = _known_story(request)
        if isinstance(found, Response):
            return found
        lines = store.log_lines(sorted(found.trace_ids))
        return JSONResponse({"logs": [line.to_json() for line in lines]})

    def _read(request: Request, read: Callable[[str], T]) -> T | Response:
        """``read`` of the trace the path names, or the 400/404/502 answer for it."""
        trace_id = request.path_params["trace_id"].lower()
        if len(trace_id) != 32 or any(c not in "0123456789abcdef" for c in trace_id):
            return JSONResponse({"error": "a trace id is 32 hex characters"}, status_code=400)
        try:
            return read(trace_id)
        except TraceNotFound:
            return JSONResponse({"error": f"trace {trace_id} not found"}, status_code=404)
        except SourceUnavailable as error:
            return JSONResponse({"error": str(error)}, status_code=502)

    def _known_story(request: Request) -> Trace | Response:
        """The story of the trace the path names: its trace plus the linked ones."""
        return _read(request, lambda trace_id: story(reader, trace_id))

    def _linking(trace_id: str) -> list[SpanRecord]:
        reader.trace(trace_id)  # TraceNotFound for an unknown trace, without building its story
        return reader.linked_to(trace_id)

    def get_trace(request: Request) -> Response:
        found = _known_story(request)
        if isinstance(found, Response):
            return found
        trace_id = request.path_params["trace_id"].lower()
        linked: dict[str, list[dict[str, Any]]] = {}
        own = []
        for span in found.spans:
            if span.trace_id == trace_id:
                own.append(span_json(span))
            else:
                linked.setdefault(span.trace_id, []).append(span_json(span))
        return JSONResponse(
            {
                "trace_id": trace_id,
                "spans": own,
                # the order's story: traces joined by consumer links, and where each hangs
                "linked_traces": [{"trace_id": key, "spans": spans} for key, spans in linked.items()],
                "linked_parents": found.linked_parents,
                "linked_left_out": found.truncated,
            }
        )

    def search(request: Request) -> Response:
        query = request.query_params
        try:
            attribute = None
            if query.get("attr"):
                key, sep, value = query["attr"].partition("=")
                if not sep or not key:
                    raise ValueError("attr is key=value")
                attribute = (key, value)
            wanted = SearchQuery(
                services=tuple(name for name in query.getlist("service") if name),
                name=query.get("name") or None,
                attribute=attribute,
                min_duration_ns=int(float(query.get("min_duration_ms", "0")) * 1e6) or None,
                errors_only=query.get("error", "").lower() in ("1", "true", "yes"),
                start_ns=int(query["start_ns"]) if query.get("start_ns") else None,
                end_ns=int(query["end_ns"]) if query.get("end_ns") else None,
                limit=max(1, min(int(query.get("limit", "20")), 1000)),
                offset=max(0, int(query.get("offset", "0"))),
            )
        except ValueError as error:
            return JSONResponse({"error": f"bad query: {error}"}, status_code=400)
        try:
            summaries = reader.search(wanted)
        except SourceUnavailable as error:
            return JSONResponse({"error": str(error)}, status_code=502)
        return JSONResponse({"traces": [asdict(summary) for summary in summaries]})

    def get_diagnosis(request: Request) -> Response:
        found = _known_story(request)
        if isinstance(found, Response):
            return found
        deliveries = for_trace(found, groups, config.offsets)
        return JSONResponse(diagnose(found, nearby=nearby_of(reader), deliveries=deliveries).to_json())

    def get_linking(request: Request) -> Response:
        found = _read(request, _linking)
        if isinstance(found, Response):
            return found
        return JSONResponse({"spans": [span_json(span) for span in found]})

    def get_doctor(request: Request) -> Response:
        try:
            since_s = float(request.query_params.get("since_s", "3600"))
            unprocessed_after_s = float(request.query_params.get("unprocessed_after_s", "60"))
        except ValueError:
            return JSONResponse({"error": "since_s and unprocessed_after_s are seconds"}, status_code=400)
        now = time.time_ns()
        try:
            spans = reader.recent_spans(now - int(since_s * 1e9))
        except SourceUnavailable as error:
            return JSONResponse({"error": str(error)}, status_code=502)
        chains = doctor(spans, now, unprocessed_after_s, offsets=config.offsets)
        return JSONResponse({"spans_examined": len(spans), "broken": [asdict(chain) for chain in chains]})

    def services(request: Request) -> Response:
        try:
            return JSONResponse({"services": reader.services()})
        except SourceUnavailable as error:
            return JSONResponse({"error": str(error)}, status_code=502)

    def get_service_map(request: Request) -> Response:
        try:
            since_ns = int(request.query_params.get("start_ns", "0"))
        except ValueError:
            return JSONResponse({"error": "start_ns is an integer"}, status_code=400)
        try:
            return JSONResponse({"edges": service_map(reader.recent_spans(since_ns))})
        except SourceUnavailable as error:
            return JSONResponse({"error": str(error)}, status_code=502)

    def health(request: Request) -> Response:
        if store is None:
            return JSONResponse({"status": "ok", "source": reader.describe()})
        received = {"spans_received": store.spans_received(), "logs_received": store.log_count()}
        return JSONResponse({"status": "ok", **received})

    app = Starlette(
        routes=[
            Route("/v1/traces", ingest_traces, methods=["POST"]),
            Route("/v1/logs", ingest_logs, methods=["POST"]),
            Route("/api/traces/{trace_id}/logs", get_logs),
            Route("/api/traces/{trace_id}/diagnosis", get_diagnosis),
            Route("/api/traces/{trace_id}/linked", get_linking),
            Route("/api/traces/{trace_id}", get_trace),
            Route("/api/doctor", get_doctor),
            Route("/api/traces", search),
            Route("/api/services", services),
            Route("/api/service-map", get_service_map),
            Route("/api/health", health),
            *ui.routes(),
        ],
        lifespan=_stops(writer),
    )
    if config.token:
        app.add_middleware(BearerToken, token=config.token)
    return app


class BearerToken:
    """Refuses every request without ``Authorization: Bearer <token>`` (non-loopback binds)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not (scope["method"] == "GET" and ui.is_shell(scope["path"])):
            supplied = dict(scope["headers"]).get(b"authorization", b"")
            if not secrets.compare_digest(supplied, b"Bearer " + self.token):
                response = JSONResponse({"error": "missing or wrong bearer token"}, status_code=401)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def span_json(span: SpanRecord) -> dict[str, Any]:
    """A span as the query API returns it."""
    data = asdict(span)
    data["duration_ns"] = span.duration_ns
    encoded: dict[str, Any] = json.loads(json.dumps(data, default=str))
    return encoded


def _stops(writer: _Writer | None) -> Callable[[Starlette], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        if writer is not None:
            writer.stop()

    return lifespan
