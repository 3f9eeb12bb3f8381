"""Where spans come from, as far as the analysis cares: any :class:`Source`.

The embedded store's source lives with the store (the collector); here are the ones that read
the backends teams already run — a Jaeger query API (v3 OTLP JSON, or the classic JSON API;
Jaeger v2 on any storage serves both), Grafana Tempo's API (``/api/v2/traces``, TraceQL search)
— and OTLP JSON files.  Each turns what it reads into :class:`SpanRecord` and nothing else, and
answers the same questions, so the CLI and the collector's UI run over any of them.

Following a link *backwards* (which traces link into this one?) is what Jaeger and Tempo's own
UIs can't do (jaeger#4516, tempo#4918).  Tempo can search for it (TraceQL ``link:traceID``);
Jaeger can't, so its source looks among the traces of the minutes after the trace (bounded).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx

from tracebridge.analysis.model import (
    KINDS,
    EventRecord,
    LinkRecord,
    SpanRecord,
    Trace,
    TraceSummary,
    attribute_matches,
    summarize,
)
from tracebridge.otlp import InvalidOtlp, parse_json, records

LINK_WINDOW_S = 600.0  # how long after a trace Jaeger's source looks for traces linking to it


class TraceNotFound(LookupError):
    """The source has no span of that trace."""


class SourceUnavailable(RuntimeError):
    """The source can't be reached or read; the message says which and why."""


class InvalidSource(ValueError):
    """The ``--source`` value names nothing we can read."""


class Source(Protocol):
    """What the analysis needs from a place where spans live."""

    def describe(self) -> str:
        """Where this source reads from, for messages."""
        ...

    def trace(self, trace_id: str) -> Trace:
        """All spans of one trace; :class:`TraceNotFound` if there are none."""
        ...

    def find(self, key: str, value: str, limit: int = 20) -> list[str]:
        """Trace ids with a span whose attribute ``key`` is ``value``, newest first."""
        ...

    def recent_spans(self, since_ns: int) -> list[SpanRecord]:
        """Spans that started at or after ``since_ns`` (for the doctor)."""
        ...

    def linked_to(self, trace_id: str) -> list[SpanRecord]:
        """Spans of *other* traces with a link into ``trace_id`` (link-only consumers)."""
        ...

    def spans_between(self, start_ns: int, end_ns: int, service: str | None = None) -> list[SpanRecord]:
        """Spans of any trace running in a window — of one service, if given (what a consumer
        did while a record waited)."""
        ...

    def services(self) -> list[str]:
        """Every service the source has spans of."""
        ...

    def search(self, query: SearchQuery) -> list[TraceSummary]:
        """Traces matching every filter of ``query``, newest first."""
        ...


@dataclass(frozen=True)
class SearchQuery:
    """The UI's and API's search filters, whatever the source."""

    services: tuple[str, ...] = ()
    name: str | None = None
    attribute: tuple[str, str] | None = None
    min_duration_ns: int | None = None
    errors_only: bool = False
    start_ns: int | None = None
    end_ns: int | None = None
    limit: int = 20
    offset: int = 0

    def matches(self, trace: TraceSummary, spans: list[SpanRecord]) -> bool:
        """Whether one trace passes every filter (sources that filter in memory)."""
        if any(service not in trace.services for service in self.services):
            return False
        if self.name and not any(span.name == self.name for span in spans):
            return False
        if self.attribute and not any(
            attribute_matches(span.attributes.get(self.attribute[0]), self.attribute[1]) for span in spans
        ):
            return False
        if self.min_duration_ns and trace.duration_ns < self.min_duration_ns:
            return False
        if self.errors_only and not trace.error_count:
            return False
        if self.start_ns is not None and trace.end_ns < self.start_ns:
            return False
        return self.end_ns is None or trace.start_ns <= self.end_ns


def nearby_of(source: Source) -> Callable[[int, int, str | None], list[SpanRecord]]:
    """The ``nearby`` a diagnosis asks for a cause (other traces' spans of a window, of one
    service): ``source.spans_between``, where a source that fails costs the cause, not the
    answer."""

    def nearby(start_ns: int, end_ns: int, service: str | None) -> list[SpanRecord]:
        try:
            return source.spans_between(start_ns, end_ns, service)
        except SourceUnavailable:
            return []

    return nearby


def _search_in_memory(traces: dict[str, list[SpanRecord]], query: SearchQuery) -> list[TraceSummary]:
    found = []
    for spans in traces.values():
        summary = summarize(spans)
        if query.matches(summary, spans):
            found.append(summary)
    found.sort(key=lambda summary: summary.start_ns, reverse=True)
    return found[query.offset : query.offset + query.limit]


class SpanListSource:
    """Spans already in memory (files, tests)."""

    def __init__(self, spans: Iterable[SpanRecord], description: str = "memory") -> None:
        self.spans = list(spans)
        self.description = description

    def describe(self) -> str:
        return self.description

    def trace(self, trace_id: str) -> Trace:
        members = [span for span in self.spans if span.trace_id == trace_id.lower()]
        if not members:
            raise TraceNotFound(trace_id)
        return Trace(members)

    def find(self, key: str, value: str, limit: int = 20) -> list[str]:
        latest: dict[str, int] = {}
        for span in self.spans:
            if attribute_matches(span.attributes.get(key), value):
                latest[span.trace_id] = max(latest.get(span.trace_id, 0), span.start_ns)
        return sorted(latest, key=lambda trace_id: latest[trace_id], reverse=True)[:limit]

    def recent_spans(self, since_ns: int) -> list[SpanRecord]:
        return [span for span in self.spans if span.start_ns >= since_ns]

    def linked_to(self, trace_id: str) -> list[SpanRecord]:
        wanted = trace_id.lower()
        return [
            span
            for span in self.spans
            if span.trace_id != wanted and any(link.trace_id == wanted for link in span.links)
        ]

    def services(self) -> list[str]:
        return sorted({span.service for span in self.spans})

    def spans_between(self, start_ns: int, end_ns: int, service: str | None = None) -> list[SpanRecord]:
        return [
            span
            for span in self.spans
            if span.end_ns >= start_ns and span.start_ns <= end_ns and service in (None, span.service)
        ]

    def search(self, query: SearchQuery) -> list[TraceSummary]:
        traces: dict[str, list[SpanRecord]] = {}
        for span in self.spans:
            traces.setdefault(span.trace_id, []).append(span)
        return _search_in_memory(traces, query)


def file_source(path: Path) -> SpanListSource:
    """OTLP JSON: one file or a folder of ``*.json``/``*.jsonl``; whole documents or one
    document per line (what the OTLP file exporters write)."""
    files = sorted(path.glob("*.json*")) if path.is_dir() else [path]
    if not files:
        raise InvalidSource(f"{path} holds no .json files")
    spans: list[SpanRecord] = []
    for file in files:
        try:
            text = file.read_text()
        except OSError as error:
            raise SourceUnavailable(f"cannot read {file}: {error}") from error
        documents = (
            [text] if text.lstrip().startswith("{") and not _is_json_lines(text) else text.splitlines()
        )
        for number, document in enumerate(documents, start=1):
            if not document.strip():
                continue
            try:
                spans.extend(records(parse_json(document)))
            except InvalidOtlp as error:
                raise InvalidSource(f"{file}:{number} is not OTLP JSON: {error}") from error
    return SpanListSource(spans, str(path))


def _is_json_lines(text: str) -> bool:
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) < 2:
        return False
    try:
        json.loads(lines[0])
    except ValueError:
        return False
    return True


class _HttpBackend:
    """A trace backend's query API over HTTP: one client, errors said with the backend's name."""

    name = "the backend"

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.client = httpx.Client(timeout=timeout)

    def describe(self) -> str:
        return f"{self.name} at {self.url}"

    def _get(self, path: str, params: dict[str, Any] | None = None) -> httpx.Response:
        try:
            return self.client.get(f"{self.url}{path}", params=params)
        except httpx.HTTPError as error:
            raise SourceUnavailable(f"cannot reach {self.name} at {self.url}: {error}") from error


class JaegerSource(_HttpBackend):
    """A Jaeger query service (``http://jaeger:16686``)."""

    name = "Jaeger"

    def trace(self, trace_id: str) -> Trace:
        response = self._get(f"/api/v3/traces/{trace_id}")
        if response.status_code == 200:
            spans = _spans_from_v3(response.json())
            if spans:
                return Trace(spans)
        response = self._get(f"/api/traces/{trace_id}")
        if response.status_code == 404:
            raise TraceNotFound(trace_id)
        if response.status_code != 200:
            raise SourceUnavailable(f"Jaeger answered {response.status_code} for trace {trace_id}")
        spans = [span for trace in response.json().get("data") or [] for span in jaeger_spans(trace)]
        if not spans:
            raise TraceNotFound(trace_id)
        return Trace(spans)

    def services(self) -> list[str]:
        response = self._get("/api/services")
        if response.status_code != 200:
            raise SourceUnavailable(f"Jaeger answered {response.status_code} for /api/services")
        return sorted(str(name) for name in response.json().get("data") or [])

    def _traces(self, params: dict[str, Any]) -> dict[str, list[SpanRecord]]:
        """Whole traces of every service (Jaeger searches one service at a time)."""
        found: dict[str, list[SpanRecord]] = {}
        for service in self.services():
            for raw in self._search({**params, "service": service}):
                spans = jaeger_spans(raw)
                if spans:
                    found[spans[0].trace_id] = spans
        return found

    def linked_to(self, trace_id: str) -> list[SpanRecord]:
        """Jaeger can't be asked who links to a trace: look among the traces that started
        while it ran and in the :data:`LINK_WINDOW_S` after (a consumer behind a backlog)."""
        wanted = trace_id.lower()
        own = self.trace(wanted)
        start_us = min(span.start_ns for span in own.spans) // 1000
        end_us = max(span.end_ns for span in own.spans) // 1000 + int(LINK_WINDOW_S * 1e6)
        out: list[SpanRecord] = []
        for other, spans in self._traces({"start": start_us, "end": end_us, "limit": 200}).items():
            if other != wanted:
                out.extend(s for s in spans if any(link.trace_id == wanted for link in s.links))
        return out

    def spans_between(self, start_ns: int, end_ns: int, service: str | None = None) -> list[SpanRecord]:
        window = {"start": start_ns // 1000, "end": end_ns // 1000 + 1, "limit": 200}
        if service is not None:
            traces = [jaeger_spans(raw) for raw in self._search({**window, "service": service})]
        else:
            traces = list(self._traces(window).values())
        return [
            span
            for spans in traces
            for span in spans
            if span.end_ns >= start_ns and span.start_ns <= end_ns and service in (None, span.service)
        ]

    def search(self, query: SearchQuery) -> list[TraceSummary]:
        params: dict[str, Any] = {"limit": max(query.limit + query.offset, 20)}
        if query.attribute is not None:
            params["tags"] = json.dumps({query.attribute[0]: query.attribute[1]})
        if query.min_duration_ns:
            params["minDuration"] = f"{query.min_duration_ns // 1000}us"
        if query.start_ns is not None:
            params["start"] = query.start_ns // 1000
        if query.end_ns is not None:
            params["end"] = query.end_ns // 1000
        if query.errors_only:
            params["tags"] = json.dumps({**json.loads(params.get("tags", "{}")), "error": "true"})
        if query.services:
            traces: dict[str, list[SpanRecord]] = {}
            for raw in self._search({**params, "service": query.services[0]}):
                spans = jaeger_spans(raw)
                if spans:
                    traces[spans[0].trace_id] = spans
        else:
            traces = self._traces(params)
        return _search_in_memory(traces, SearchQuery(**{**query.__dict__, "attribute": None}))

    def _search(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        response = self._get("/api/traces", params)
        if response.status_code != 200:
            raise SourceUnavailable(f"Jaeger answered {response.status_code} for a search")
        return list(response.json().get("data") or [])

    def find(self, key: str, value: str, limit: int = 20) -> list[str]:
        found: dict[str, int] = {}
        for service in self.services():
            for trace in self._search({"service": service, "tags": json.dumps({key: value}), "limit": limit}):
                spans = jaeger_spans(trace)
                if spans:
                    found[spans[0].trace_id] = max(s.start_ns for s in spans)
        return sorted(found, key=lambda trace_id: found[trace_id], reverse=True)[:limit]

    def recent_spans(self, since_ns: int) -> list[SpanRecord]:
        spans: dict[tuple[str, str], SpanRecord] = {}
        for service in self.services():
            for trace in self._search({"service": service, "start": since_ns // 1000, "limit": 1000}):
                for span in jaeger_spans(trace):
                    spans[(span.trace_id, span.span_id)] = span
        return [span for span in spans.values() if span.start_ns >= since_ns]


def _spans_from_v3(document: Any) -> list[SpanRecord]:
    """Jaeger's v3 API answers OTLP JSON, wrapped in ``result`` (one or more chunks)."""
    chunks = document if isinstance(document, list) else [document]
    spans: list[SpanRecord] = []
    for chunk in chunks:
        body = chunk.get("result", chunk) if isinstance(chunk, dict) else None
        if isinstance(body, dict) and "resourceSpans" in body:
            spans.extend(records(parse_json(json.dumps(body))))
    return spans


_JAEGER_TYPES = {"int64": int, "float64": float, "bool": bool, "string": str}


def _tag_value(tag: dict[str, Any]) -> Any:
    value = tag.get("value")
    kind = tag.get("type", "string")
    if kind == "bool" and isinstance(value, str):
        return value.lower() == "true"
    convert = _JAEGER_TYPES.get(kind)
    try:
        return convert(value) if convert is not None else value
    except (TypeError, ValueError):
        return value


def jaeger_spans(trace: dict[str, Any]) -> list[SpanRecord]:
    """Spans of one trace in Jaeger's classic JSON (``/api/traces/{id}``)."""
    processes = trace.get("processes") or {}
    out = []
    for raw in trace.get("spans") or []:
        tags = {tag["key"]: _tag_value(tag) for tag in raw.get("tags") or [] if "key" in tag}
        kind = str(tags.pop("span.kind", "internal")).upper()
        status = str(tags.pop("otel.status_code", "UNSET")).upper()
        if tags.pop("error", False) is True:
            status = "ERROR"
        message = str(tags.pop("otel.status_description", ""))
        parent = None
        links = []
        for reference in raw.get("references") or []:
            trace_id = str(reference.get("traceID", "")).rjust(32, "0")
            span_id = str(reference.get("spanID", "")).rjust(16, "0")
            if (
                reference.get("refType") == "CHILD_OF"
                and parent is None
                and trace_id == str(raw["traceID"]).rjust(32, "0")
            ):
                parent = span_id
            else:
                links.append(LinkRecord(trace_id, span_id, {"tracebridge.link.type": "follows_from"}))
        process = processes.get(raw.get("processID"), {})
        resource = {tag["key"]: _tag_value(tag) for tag in process.get("tags") or [] if "key" in tag}
        start_ns = int(raw.get("startTime", 0)) * 1000
        out.append(
            SpanRecord(
                trace_id=str(raw["traceID"]).rjust(32, "0"),
                span_id=str(raw["spanID"]).rjust(16, "0"),
                parent_span_id=parent,
                name=str(raw.get("operationName", "")),
                kind=kind if kind in KINDS else "INTERNAL",
                start_ns=start_ns,
                end_ns=start_ns + int(raw.get("duration", 0)) * 1000,
                service=str(process.get("serviceName", "unknown_service")),
                status=status if status in ("UNSET", "OK", "ERROR") else "UNSET",
                status_message=message,
                attributes=tags,
                events=tuple(
                    EventRecord(
                        str(
                            next(
                                (f.get("value") for f in log.get("fields", []) if f.get("key") == "event"),
                                "log",
                            )
                        ),
                        int(log.get("timestamp", 0)) * 1000,
                        {f["key"]: _tag_value(f) for f in log.get("fields", []) if f.get("key") != "event"},
                    )
                    for log in raw.get("logs") or []
                ),
                links=tuple(links),
                resource={**resource, "service.name": process.get("serviceName", "unknown_service")},
            )
        )
    return out


_HEX = frozenset("0123456789abcdefABCDEF")


def _hex_id(value: object, size: int) -> object:
    """An id as Tempo writes it (base64 of the bytes, protojson's default) or as OTLP JSON
    does (hex) — always hex out; anything else is left for the parser to reject."""
    if not isinstance(value, str) or not value:
        return value
    if len(value) == size * 2 and set(value) <= _HEX:
        return value.lower()
    try:
        raw = base64.b64decode(value, validate=True)
    except ValueError:
        return value
    return raw.hex() if len(raw) == size else value


def otlp_from_tempo(document: Any) -> dict[str, Any]:
    """Tempo's trace JSON (``{"trace": {"resourceSpans"}}`` from ``/api/v2/traces``,
    ``{"batches"}`` from ``/api/traces``, base64 ids) as standard OTLP JSON."""
    if not isinstance(document, dict):
        raise InvalidSource("Tempo answered something that is not a trace document")
    body = document.get("trace", document)
    if not isinstance(body, dict):
        raise InvalidSource("Tempo's trace document has no trace")
    resource_spans = body.get("resourceSpans") or body.get("batches") or []
    for resource in resource_spans if isinstance(resource_spans, list) else []:
        scopes = resource.get("scopeSpans") or resource.pop("instrumentationLibrarySpans", None) or []
        resource["scopeSpans"] = scopes
        for scope in scopes:
            for span in scope.get("spans") or []:
                for key, size in (("traceId", 16), ("spanId", 8), ("parentSpanId", 8)):
                    if key in span:
                        span[key] = _hex_id(span[key], size)
                for link in span.get("links") or []:
                    for key, size in (("traceId", 16), ("spanId", 8)):
                        if key in link:
                            link[key] = _hex_id(link[key], size)
    return {"resourceSpans": resource_spans if isinstance(resource_spans, list) else []}


def _traceql_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class TempoSource(_HttpBackend):
    """A Grafana Tempo query frontend (``http://tempo:3200``): traces by id from
    ``/api/v2/traces/{id}``, search with TraceQL on ``/api/search``, links with ``link:traceID``."""

    name = "Tempo"

    def __init__(self, url: str, timeout: float = 10.0, lookback_s: float = 24 * 3600) -> None:
        super().__init__(url, timeout)
        self.lookback_s = lookback_s

    def _json(self, response: httpx.Response, what: str) -> Any:
        if response.status_code != 200:
            detail = response.text.strip()[:200]
            raise SourceUnavailable(f"Tempo answered {response.status_code} for {what}: {detail}")
        try:
            return response.json()
        except ValueError as error:
            raise SourceUnavailable(f"Tempo answered {what} with something that is not JSON") from error

    def trace(self, trace_id: str) -> Trace:
        response = self._get(f"/api/v2/traces/{trace_id.lower()}")
        if response.status_code == 404:
            raise TraceNotFound(trace_id)
        document = otlp_from_tempo(self._json(response, f"trace {trace_id}"))
        try:
            spans = records(parse_json(json.dumps(document)))
        except InvalidOtlp as error:
            raise SourceUnavailable(f"Tempo's trace {trace_id} is not OTLP JSON: {error}") from error
        if not spans:
            raise TraceNotFound(trace_id)
        return Trace(spans)

    def _search(
        self, traceql: str, limit: int, start_ns: int | None = None, end_ns: int | None = None
    ) -> list[str]:
        """Trace ids (hex, 32 digits) of a TraceQL search, newest first."""
        now = time.time()
        params: dict[str, Any] = {
            "q": traceql,
            "limit": limit,
            "start": int(start_ns / 1e9) if start_ns is not None else int(now - self.lookback_s),
            "end": int(end_ns / 1e9) + 1 if end_ns is not None else int(now) + 1,
        }
        found = self._json(self._get("/api/search", params), f"the search {traceql}")
        traces = [t for t in found.get("traces") or [] if isinstance(t, dict) and t.get("traceID")]
        traces.sort(key=lambda t: int(t.get("startTimeUnixNano") or 0), reverse=True)
        return [str(t["traceID"]).lower().rjust(32, "0") for t in traces]

    def find(self, key: str, value: str, limit: int = 20) -> list[str]:
        return self._search(f"{{ .{key} = {_traceql_string(value)} }}", limit)

    def linked_to(self, trace_id: str) -> list[SpanRecord]:
        wanted = trace_id.lower()
        out: list[SpanRecord] = []
        for other in self._search(f"{{ link:traceID = {_traceql_string(wanted)} }}", 100):
            if other != wanted:
                spans = self.trace(other).spans
                out.extend(s for s in spans if any(link.trace_id == wanted for link in s.links))
        return out

    def recent_spans(self, since_ns: int) -> list[SpanRecord]:
        spans: list[SpanRecord] = []
        for trace_id in self._search("{ }", 200, start_ns=since_ns):
            spans.extend(span for span in self.trace(trace_id).spans if span.start_ns >= since_ns)
        return spans

    def spans_between(self, start_ns: int, end_ns: int, service: str | None = None) -> list[SpanRecord]:
        traceql = f"{{ resource.service.name = {_traceql_string(service)} }}" if service else "{ }"
        return [
            span
            for trace_id in self._search(traceql, 50, start_ns=start_ns, end_ns=end_ns)
            for span in self.trace(trace_id).spans
            if span.end_ns >= start_ns and span.start_ns <= end_ns and service in (None, span.service)
        ]

    def services(self) -> list[str]:
        found = self._json(self._get("/api/v2/search/tag/resource.service.name/values"), "the services")
        return sorted(str(v.get("value")) for v in found.get("tagValues") or [] if isinstance(v, dict))

    def search(self, query: SearchQuery) -> list[TraceSummary]:
        conditions = [f"resource.service.name = {_traceql_string(name)}" for name in query.services[:1]]
        if query.name:
            conditions.append(f"name = {_traceql_string(query.name)}")
        if query.attribute is not None:
            conditions.append(f".{query.attribute[0]} = {_traceql_string(query.attribute[1])}")
        if query.errors_only:
            conditions.append("status = error")
        traceql = "{ " + " && ".join(conditions) + " }" if conditions else "{ }"
        if query.min_duration_ns:
            traceql += f" | select(traceDuration) && {{ traceDuration >= {query.min_duration_ns // 1000}us }}"
        ids = self._search(traceql, query.limit + query.offset, query.start_ns, query.end_ns)
        traces = {trace_id: self.trace(trace_id).spans for trace_id in ids[query.offset :]}
        rest = SearchQuery(services=query.services[1:], start_ns=query.start_ns, limit=query.limit)
        return _search_in_memory(traces, rest)


def open_source(spec: str | None, default_store: Any = None) -> Source:
    """``--source``: ``jaeger:URL`` or ``tempo:URL`` (a bare http(s) URL is asked: Tempo
    answers ``/api/echo``, Jaeger doesn't), a .json file or folder is OTLP JSON; anything else
    (or nothing) is the embedded store, which the caller provides as ``default_store`` (a
    function from path to Source) because the store belongs to the collector."""
    if spec and spec.startswith(("jaeger:", "tempo:")):
        kind, _, url = spec.partition(":")
        if not url.startswith(("http://", "https://")):
            raise InvalidSource(f"{spec!r}: give {kind}:http://host:port")
        return JaegerSource(url) if kind == "jaeger" else TempoSource(url)
    if spec and spec.startswith(("http://", "https://")):
        return TempoSource(spec) if _is_tempo(spec) else JaegerSource(spec)
    if spec:
        path = Path(spec).expanduser()
        if path.is_dir() or path.suffix in (".json", ".jsonl"):
            if not path.exists():
                raise InvalidSource(f"{path} does not exist")
            return file_source(path)
    if default_store is None:
        raise InvalidSource(
            f"cannot read {spec!r}: give a Jaeger or Tempo URL (jaeger:http://…, tempo:http://…), "
            "an OTLP .json file or a store path"
        )
    source: Source = default_store(spec)
    return source


def _is_tempo(url: str) -> bool:
    try:
        response = httpx.get(f"{url.rstrip('/')}/api/echo", timeout=5.0)
    except httpx.HTTPError as error:
        raise SourceUnavailable(f"cannot reach Jaeger or Tempo at {url}: {error}") from error
    return response.status_code == 200 and response.text.strip() == "echo"
