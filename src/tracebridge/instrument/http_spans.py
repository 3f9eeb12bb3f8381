"""Light HTTP server and client spans: what every server (ASGI, WSGI) and client (httpx,
requests, aiohttp) adapter shares.

The upstream instrumentations cost more per request than the request itself: measured with a
FastAPI GET, contrib's server span added 747 µs of CPU to a 603 µs request (docs/benchmarks.md),
most of it in generic machinery — per-message wrappers, attribute dictionaries built twice for
old and new semantic conventions, a full SDK span with its locks and per-value type checks,
metrics.  A server or client span needs a dozen attributes of known types; here they are
written once, into a light span (``messaging/light_span.py``) that still takes its sampling
decision, ids, resource and processors from the SDK.

What users rely on from upstream is kept: the stable HTTP semantic conventions
(``http.request.method``, ``http.route``, ``http.response.status_code``, ``url.*``,
``server.*``, ``error.type``), ``OTEL_PYTHON_<LIB>_EXCLUDED_URLS`` / ``OTEL_PYTHON_EXCLUDED_URLS``,
``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_{SERVER,CLIENT}_{REQUEST,RESPONSE}`` with
``…_SANITIZE_FIELDS``, suppression (``suppress_http_instrumentation``), the configured
propagators, and our own policies (inbound context at the edge, business keys back in a
``baggage`` response header).  ``TRACEBRIDGE_HTTP_SPANS=upstream`` brings the upstream
instrumentations back.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from contextvars import Token
from dataclasses import dataclass
from typing import Any

from opentelemetry import context, propagate, trace
from opentelemetry.context import _SUPPRESS_HTTP_INSTRUMENTATION_KEY, _SUPPRESS_INSTRUMENTATION_KEY, Context
from opentelemetry.instrumentation.propagators import get_global_response_propagator
from opentelemetry.trace import NonRecordingSpan, SpanKind, Status, StatusCode
from opentelemetry.util.http import (
    OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS,
    ExcludeList,
    get_custom_headers,
    get_excluded_urls,
    normalise_request_header_name,
    normalise_response_header_name,
    remove_url_credentials,
)

from tracebridge.business_keys import adopt_from_response
from tracebridge.instrument.http_policy import drops_inbound_context
from tracebridge.messaging.light_span import LightTracer, set_known_attributes
from tracebridge.propagation.composite import TracebridgePropagator, baggage_present
from tracebridge.propagation.w3c import context_fields as span_context_fields
from tracebridge.propagation.w3c import format_traceparent, parse_context, tracestate_header
from tracebridge.version import __version__

TRACER = LightTracer(trace.get_tracer("tracebridge.http", __version__))
_EMPTY = Context()
_KNOWN_METHODS = frozenset(
    ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "QUERY")
)
_SUPPRESS_PLAIN = "suppress_instrumentation"  # the key's plain-string spelling, as upstream checks it


@dataclass(frozen=True)
class HttpOptions:
    """What the upstream environment variables ask of one library's spans, read once when it
    is instrumented."""

    excluded: ExcludeList
    request_headers: re.Pattern[str] | None
    response_headers: re.Pattern[str] | None
    sanitize: re.Pattern[str] | None

    @classmethod
    def from_env(cls, library: str, side: str) -> HttpOptions:
        """``library`` as in ``OTEL_PYTHON_<LIBRARY>_EXCLUDED_URLS``; ``side`` ``SERVER`` or
        ``CLIENT`` as in ``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_<SIDE>_REQUEST``."""
        prefix = f"OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_{side}_"
        return cls(
            excluded=get_excluded_urls(library),
            request_headers=_patterns(get_custom_headers(prefix + "REQUEST")),
            response_headers=_patterns(get_custom_headers(prefix + "RESPONSE")),
            sanitize=_patterns(get_custom_headers(OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS)),
        )

    def url_excluded(self, url: str) -> bool:
        """Whether ``OTEL_PYTHON_<LIB>_EXCLUDED_URLS`` names this URL (a regex search)."""
        return bool(self.excluded._excluded_urls) and self.excluded.url_disabled(url)

    def request_excluded(self, scheme: str, host: str | None, path: str, query: str) -> bool:
        """:meth:`url_excluded` for a server's request; the URL is built only when some URL is
        excluded (most services exclude none)."""
        if not self.excluded._excluded_urls:
            return False
        return self.excluded.url_disabled(f"{scheme}://{host or ''}{path}" + (f"?{query}" if query else ""))

    def captured(
        self, headers: Iterable[tuple[str, str]], pattern: re.Pattern[str] | None, response: bool
    ) -> dict[str, tuple[str, ...]]:
        """Header attributes (upstream's names: ``http.request.header.x_request_id``), with
        sanitized fields' values replaced by ``[REDACTED]``."""
        if pattern is None:
            return {}
        normalise = normalise_response_header_name if response else normalise_request_header_name
        values: dict[str, list[str]] = {}
        for name, value in headers:
            if pattern.fullmatch(name):
                if self.sanitize is not None and self.sanitize.search(name):
                    value = "[REDACTED]"
                values.setdefault(normalise(name), []).append(value)
        return {key: tuple(found) for key, found in values.items()}


def _patterns(regexes: list[str]) -> re.Pattern[str] | None:
    return re.compile("|".join(regexes), re.IGNORECASE) if regexes else None


def suppressed(current: Context | None = None) -> bool:
    """Whether the current context (``current`` if the caller has it already) asks for no HTTP
    spans (our exporter's own requests, a library's nested client,
    ``suppress_http_instrumentation()``)."""
    if current is None:
        current = context.get_current()
    return bool(
        current.get(_SUPPRESS_INSTRUMENTATION_KEY)
        or current.get(_SUPPRESS_HTTP_INSTRUMENTATION_KEY)
        or current.get(_SUPPRESS_PLAIN)
    )


def method_attributes(method: str, attributes: dict[str, Any]) -> str:
    """The semantic conventions' method (``_OTHER`` for a non-standard one, with the original
    kept); returns the name to start the span with."""
    upper = method.upper()
    if upper in _KNOWN_METHODS or os.environ.get("OTEL_PYTHON_INSTRUMENTATION_HTTP_CAPTURE_ALL_METHODS"):
        attributes["http.request.method"] = upper
        return upper
    attributes["http.request.method"] = "_OTHER"
    attributes["http.request.method_original"] = method
    return "HTTP"


# -- context in and out ----------------------------------------------------------------------


_fields_of: tuple[object, frozenset[str]] = (None, frozenset())


def context_fields() -> frozenset[str]:
    """The header names the configured propagators read (lower case); computed again only when
    the global propagator is replaced."""
    global _fields_of
    propagator = propagate.get_global_textmap()
    owner, fields = _fields_of
    if owner is not propagator:
        fields = frozenset(field.lower() for field in propagator.fields)
        _fields_of = (propagator, fields)
    return fields


def extract(fields: Mapping[str, str]) -> Context:
    """The caller's context from the context headers found (``{name: value}``, lower-case
    names, repeated headers joined with ``,``); never raises — a hostile header starts a new
    trace, it never fails the request."""
    if not fields:
        return _EMPTY
    propagator = propagate.get_global_textmap()
    try:
        if isinstance(propagator, TracebridgePropagator) and propagator.w3c_only:
            carried = _EMPTY
            if "baggage" in fields and propagator.baggage is not None:
                carried = propagator.baggage.extract(fields, Context())
            traceparent = fields.get("traceparent")
            state = fields.get("tracestate")
            parent = parse_context(traceparent, [state] if state else None) if traceparent else None
            if parent is None:
                return carried
            return trace.set_span_in_context(NonRecordingSpan(parent), carried)
        return propagator.extract(fields, Context())
    except Exception:  # a propagator of the user's own that raises on bad input
        return _EMPTY


def inject(
    span: trace.Span,
    headers: Any,
    set_header: Callable[[Any, str, str], None],
    current: Context | None = None,
) -> None:
    """Write ``span``'s context and the current baggage (``current``'s, if the caller has the
    current context already) into a request's ``headers`` with ``set_header(headers, name,
    value)`` (``operator.setitem`` for most libraries: no bound method made per request)."""
    propagator = propagate.get_global_textmap()
    if isinstance(propagator, TracebridgePropagator) and propagator.w3c_only:
        span_context = span.get_span_context()
        valid = span_context_fields(span_context)[5]
        if valid:
            set_header(headers, "traceparent", format_traceparent(span_context))
            state = tracestate_header(span_context)
            if state is not None:
                set_header(headers, "tracestate", state)
        if propagator.baggage is not None and baggage_present(current):
            fields: dict[str, str] = {}
            propagator.baggage.inject(fields)
            for name, value in fields.items():
                set_header(headers, name, value)
        return
    fields = {}
    propagator.inject(fields, trace.set_span_in_context(span))
    for name, value in fields.items():
        set_header(headers, name, value)


def response_headers(set_header: Callable[[str, str], None]) -> None:
    """Headers the response propagator adds while the server span is current (business keys
    learned during the request, in ``baggage``; upstream's ``traceresponse`` if configured)."""
    propagator = get_global_response_propagator()  # type: ignore[no-untyped-call]
    if propagator is None:
        return
    fields: dict[str, str] = {}
    propagator.inject(fields)
    for name, value in fields.items():
        set_header(name, value)


# -- server spans ----------------------------------------------------------------------------


def request_attributes(
    scheme: str,
    path: str,
    query: str,
    host: str | None,
    port: int | None,
    client: tuple[str, int | None] | None,
    protocol_version: str | None,
    user_agent: str | None,
) -> dict[str, Any]:
    """A server span's request attributes (stable HTTP semantic conventions), from what any
    server interface (ASGI scope, WSGI environ) says about the request."""
    attributes: dict[str, Any] = {"url.scheme": scheme, "url.path": path}
    if query:
        attributes["url.query"] = query
    if host:
        attributes["server.address"] = host
    if port is not None:
        attributes["server.port"] = port
    if client is not None:
        attributes["client.address"] = client[0]
        if client[1] is not None:
            attributes["client.port"] = client[1]
    if protocol_version:
        attributes["network.protocol.version"] = protocol_version
    if user_agent:
        attributes["user_agent.original"] = user_agent
    return attributes


class ServerSpan:
    """One request's server span, current while the application handles it."""

    __slots__ = ("_token", "method", "span")

    def __init__(self, span: trace.Span, parent: Context, method: str) -> None:
        self.span = span
        self.method = method  # the span's name until the route is known
        self._token = context.attach(trace.set_span_in_context(span, parent))

    @classmethod
    def start(cls, method: str, fields: Mapping[str, str], attributes: dict[str, Any]) -> ServerSpan:
        """``attributes`` are the request's (built by the adapter); ``fields`` the context
        headers (ignored at an edge that drops inbound context)."""
        parent = _EMPTY if drops_inbound_context() else extract(fields)
        name = method_attributes(method, attributes)
        span = TRACER.start_span(name, parent, SpanKind.SERVER)
        set_known_attributes(span, attributes)
        return cls(span, parent, name)

    @property
    def recording(self) -> bool:
        return self.span.is_recording()

    def finish(
        self,
        status: int | None,
        error: BaseException | None = None,
        route: str | None = None,
        attributes: dict[str, Any] | None = None,
    ) -> None:
        """End the span (status ≥ 500 or an exception is an error) and restore the context."""
        span = self.span
        try:
            if span.is_recording():
                extra: dict[str, Any] = attributes or {}
                if route:
                    extra["http.route"] = route
                    span.update_name(f"{self.method} {route}")
                if status is not None:
                    extra["http.response.status_code"] = status
                if error is not None:
                    if not _already_recorded(span, error):
                        span.record_exception(error, escaped=True)
                    extra["error.type"] = type(error).__qualname__
                    span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"[:200]))
                elif status is not None and status >= 500:
                    extra["error.type"] = str(status)
                    span.set_status(Status(StatusCode.ERROR))
                set_known_attributes(span, extra)
                span.end()
        finally:
            context.detach(self._token)


def _already_recorded(span: trace.Span, error: BaseException) -> bool:
    """Whether the error's log line already put it on the span (``TRACEBRIDGE_LOG_EVENTS``:
    Flask logs the exception it turns into a 500)."""
    events = getattr(span, "_events", None) or ()
    name = type(error).__qualname__
    message = str(error)
    return any(
        event.name == "exception"
        and event.attributes is not None
        and event.attributes.get("exception.type") in (name, type(error).__name__)
        and event.attributes.get("exception.message") == message
        for event in events
    )


# -- client spans ----------------------------------------------------------------------------


def start_client(
    options: HttpOptions,
    method: str,
    url: str,
    host: str | None,
    port: int | None,
    headers: Any,
    current: Context | None = None,
) -> trace.Span:
    """A client span (child of the current span; ``current`` is the current context, if the
    caller has it already) for a request about to be sent; ``headers`` are the request's
    (anything with ``items()``), captured if the variables ask for it."""
    attributes: dict[str, Any] = {}
    name = method_attributes(method, attributes)
    span = TRACER.start_span(name, current, SpanKind.CLIENT)
    if span.is_recording():
        attributes["url.full"] = remove_url_credentials(url) if "@" in url else url
        if host:
            attributes["server.address"] = host
        if port is not None:
            attributes["server.port"] = port
        if options.request_headers is not None:
            sent = [(str(k).lower(), str(v)) for k, v in headers.items()]
            attributes.update(options.captured(sent, options.request_headers, response=False))
        set_known_attributes(span, attributes)
    return span


def finish_client(
    options: HttpOptions,
    span: trace.Span,
    status: int | None,
    error: BaseException | None = None,
    headers: Any = None,
    attributes: dict[str, Any] | None = None,
) -> None:
    """End a client span: status ≥ 400 or an exception is an error; business keys the server
    sent back join the trace; response headers are captured if the variables ask for it."""
    if not span.is_recording():
        return
    extra: dict[str, Any] = attributes or {}
    if status is not None:
        extra["http.response.status_code"] = status
        if status >= 400:
            extra["error.type"] = str(status)
            span.set_status(Status(StatusCode.ERROR))
    if error is not None:
        span.record_exception(error, escaped=True)
        extra["error.type"] = type(error).__qualname__
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"[:200]))
    if headers is not None and options.response_headers is not None:
        received = [(str(k).lower(), str(v)) for k, v in headers.items()]
        extra.update(options.captured(received, options.response_headers, response=True))
    set_known_attributes(span, extra)
    if headers is not None:
        adopt_from_response(span, headers)
    span.end()


def suppressing_nested() -> Token[Context]:
    """Attach a context in which a lower-level HTTP library (urllib3 under requests) makes no
    second client span; returns the token to detach."""
    return context.attach(context.set_value(_SUPPRESS_HTTP_INSTRUMENTATION_KEY, True))


def default_port(scheme: str) -> int:
    return 443 if scheme in ("https", "wss") else 80


def split_host(value: str, port: int | None) -> tuple[str, int | None]:
    """``host[:port]`` (``[v6]:port`` too) → host and port (``port`` when none is given)."""
    if value.startswith("["):
        end = value.find("]")
        rest = value[end + 1 :] if end > 0 else ""
        host = value[1:end] if end > 0 else value
        return host, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else port
    host, sep, given = value.partition(":")
    return host, int(given) if sep and given.isdigit() else port
