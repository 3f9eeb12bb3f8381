"""The collector's HTTP surface (Starlette): the OTLP/HTTP endpoints of :mod:`.intake`, the
JSON query API over a store or any other source, the UI's shell, the bearer-token guard."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import asdict
from typing import Any, TypeVar

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from tracebridge.analysis.diagnosis import diagnose
from tracebridge.analysis.doctor import doctor
from tracebridge.analysis.model import SpanRecord, Trace
from tracebridge.analysis.pending import GroupsSeen, for_trace
from tracebridge.analysis.service_map import service_map
from tracebridge.analysis.sources import SearchQuery, Source, SourceUnavailable, TraceNotFound, nearby_of
from tracebridge.analysis.story import story
from tracebridge.collector import ui
from tracebridge.collector.config import CollectorConfig
from tracebridge.collector.intake import Writer, otlp_endpoints
from tracebridge.collector.source import StoreSource
from tracebridge.collector.store import SpanStore

T = TypeVar("T")


def build_app(
    store: SpanStore | None, config: CollectorConfig | None = None, source: Source | None = None
) -> Starlette:
    """The collector's ASGI application: OTLP in and the query API over ``store``, or — with
    ``source`` (Jaeger, Tempo, files) and no store — the same pages and answers over spans that
    live elsewhere, ingestion refused with a pointer to where spans go instead."""
    config = config or CollectorConfig()
    writer = Writer(store, config) if store is not None else None
    if source is None:
        if store is None:
            raise ValueError("a collector needs a store or a source")
        source = StoreSource(store=store)
    reader: Source = source
    groups = GroupsSeen(reader)

    ingest_traces, ingest_logs = otlp_endpoints(store, writer, reader, config)

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


def _stops(writer: Writer | None) -> Callable[[Starlette], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        if writer is not None:
            writer.stop()

    return lifespan


__all__ = ["BearerToken", "CollectorConfig", "build_app", "span_json"]
