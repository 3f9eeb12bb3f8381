"""Where spans come from, as far as the analysis cares: any :class:`Source`.

The embedded store's source lives with the store (the collector); here are the ones that read
other people's systems: a Jaeger query API (its v3 OTLP JSON API, or the classic JSON API) and
OTLP JSON files.  Each turns what it reads into :class:`SpanRecord` and nothing else.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

import httpx

from tracebridge.analysis.model import KINDS, EventRecord, LinkRecord, SpanRecord, Trace, attribute_matches
from tracebridge.otlp import InvalidOtlp, parse_json, records


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


class JaegerSource:
    """A Jaeger query service (``http://jaeger:16686``)."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.client = httpx.Client(timeout=timeout)

    def describe(self) -> str:
        return f"Jaeger at {self.url}"

    def _get(self, path: str, params: dict[str, Any] | None = None) -> httpx.Response:
        try:
            return self.client.get(f"{self.url}{path}", params=params)
        except httpx.HTTPError as error:
            raise SourceUnavailable(f"cannot reach Jaeger at {self.url}: {error}") from error

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

    def _services(self) -> list[str]:
        response = self._get("/api/services")
        if response.status_code != 200:
            raise SourceUnavailable(f"Jaeger answered {response.status_code} for /api/services")
        return [str(name) for name in response.json().get("data") or []]

    def _search(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        response = self._get("/api/traces", params)
        if response.status_code != 200:
            raise SourceUnavailable(f"Jaeger answered {response.status_code} for a search")
        return list(response.json().get("data") or [])

    def find(self, key: str, value: str, limit: int = 20) -> list[str]:
        found: dict[str, int] = {}
        for service in self._services():
            for trace in self._search({"service": service, "tags": json.dumps({key: value}), "limit": limit}):
                spans = jaeger_spans(trace)
                if spans:
                    found[spans[0].trace_id] = max(s.start_ns for s in spans)
        return sorted(found, key=lambda trace_id: found[trace_id], reverse=True)[:limit]

    def recent_spans(self, since_ns: int) -> list[SpanRecord]:
        spans: dict[tuple[str, str], SpanRecord] = {}
        for service in self._services():
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


def open_source(spec: str | None, default_store: Any = None) -> Source:
    """``--source``: an http(s) URL is Jaeger, a .json file or folder is OTLP JSON; anything
    else (or nothing) is the embedded store, which the caller provides as ``default_store``
    (a function from path to Source) because the store belongs to the collector."""
    if spec and spec.startswith(("http://", "https://")):
        return JaegerSource(spec)
    if spec:
        path = Path(spec).expanduser()
        if path.is_dir() or path.suffix in (".json", ".jsonl"):
            if not path.exists():
                raise InvalidSource(f"{path} does not exist")
            return file_source(path)
    if default_store is None:
        raise InvalidSource(
            f"cannot read {spec!r}: give an http(s) Jaeger URL, an OTLP .json file or a store path"
        )
    source: Source = default_store(spec)
    return source
