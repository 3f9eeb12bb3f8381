"""Light client spans for httpx, requests and aiohttp.

Each wraps the one call every request of its library passes through — httpx's transports
(``handle_request`` / ``handle_async_request``), ``requests.Session.send``,
``aiohttp.ClientSession._request`` — starts a client span under the current span, writes the
context headers, and ends the span with the status (≥ 400 is an error) or the exception.
Business keys the server sent back in ``baggage`` join the trace (``tracebridge.business_keys``).
Requests made with instrumentation suppressed — our own exporter's — make no span.
"""

from __future__ import annotations

import operator
from collections.abc import Collection
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import context
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.instrumentation.utils import unwrap
from wrapt import wrap_function_wrapper

from tracebridge.instrument.http_spans import (
    HttpOptions,
    default_port,
    finish_client,
    inject,
    start_client,
    suppressed,
    suppressing_nested,
)

_HTTP_VERSIONS = {10: "1.0", 11: "1.1", 20: "2"}
_HTTPX_VERSIONS = {b"HTTP/1.0": "1.0", b"HTTP/1.1": "1.1", b"HTTP/2": "2", b"HTTP/3": "3"}


def _httpx_url(url: Any, parsed_type: Any) -> tuple[str, str | None, int]:
    """``url.full``, ``server.address`` and ``server.port`` of an httpx URL.  Read from the
    parsed tuple httpx keeps (``_uri_reference``, of its own ``parsed_type``) where it is one:
    ``str(url)`` and the ``host``/``port`` properties are five Python calls, a sixth of what
    the whole client span costs.  A URL with credentials (``start_client`` replaces them as
    upstream does) or an internationalised host name goes the long way."""
    parsed: Any = getattr(url, "_uri_reference", None)
    if (
        parsed_type is None
        or type(parsed) is not parsed_type
        or len(parsed) != 7
        or parsed[1]  # credentials
        or parsed[2].startswith("xn--")  # an internationalised name, decoded for the address
    ):
        return str(url), url.host, url.port or default_port(url.scheme)
    scheme, _, host, port, path, query, fragment = parsed
    netloc = f"[{host}]" if ":" in host else host
    text = f"{scheme}://{netloc}:{port}{path}" if port is not None else f"{scheme}://{netloc}{path}"
    if query is not None:
        text += "?" + query
    if fragment is not None:
        text += "#" + fragment
    return text, host or None, port or default_port(scheme)


_HEADER_KEYS = {name: name.encode() for name in ("traceparent", "tracestate", "baggage")}


def _set_httpx_header(headers: Any, name: str, value: str) -> None:
    """``headers[name] = value`` for an httpx ``Headers``: appended to the list it keeps
    (``_list`` of (name, lower-case name, value) bytes) when the name is not there yet — a
    third of what ``__setitem__`` costs, which encodes and compares every header again."""
    items = getattr(headers, "_list", None)
    if type(items) is list and name.isascii():
        key = _HEADER_KEYS.get(name) or name.lower().encode("ascii")
        for item in items:  # (a loop: a generator costs more than the search)
            if item[1] == key:
                break  # the caller set it already: httpx's own replacement rules
        else:
            if value.isascii():  # (a propagator of the user's own may write more: httpx's way)
                items.append((key, key, value.encode("ascii")))
                return
    headers[name] = value


class HttpxInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """httpx: every request through its sync and async HTTP transports."""

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("httpx >= 0.23",)

    def _instrument(self, **kwargs: Any) -> None:
        options = HttpOptions.from_env("HTTPX", "CLIENT")
        parsed_type: Any
        try:
            from httpx._urlparse import ParseResult as parsed_type
        except ImportError:  # an httpx that parses URLs otherwise: str(url), the long way
            parsed_type = None

        def begin(request: Any) -> Any:
            current = context.get_current()  # read once, for the three questions asked of it
            if suppressed(current):
                return None
            text, host, port = _httpx_url(request.url, parsed_type)
            if options.url_excluded(text):
                return None
            headers = request.headers
            span = start_client(options, request.method, text, host, port, headers, current)
            inject(span, headers, _set_httpx_header, current)
            return span

        def end(span: Any, response: Any) -> None:
            version = response.extensions.get("http_version", b"")
            known = _HTTPX_VERSIONS.get(version)
            if known is None and version.startswith(b"HTTP/"):
                known = version.decode()[5:]
            extra = {"network.protocol.version": known} if known else None
            finish_client(options, span, response.status_code, None, response.headers, extra)

        def send(wrapped: Any, transport: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
            span = begin(args[0] if args else kw["request"])
            if span is None:
                return wrapped(*args, **kw)
            try:
                response = wrapped(*args, **kw)
            except BaseException as error:
                finish_client(options, span, None, error)
                raise
            end(span, response)
            return response

        async def send_async(wrapped: Any, transport: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
            span = begin(args[0] if args else kw["request"])
            if span is None:
                return await wrapped(*args, **kw)
            try:
                response = await wrapped(*args, **kw)
            except BaseException as error:
                finish_client(options, span, None, error)
                raise
            end(span, response)
            return response

        wrap_function_wrapper("httpx", "HTTPTransport.handle_request", send)
        wrap_function_wrapper("httpx", "AsyncHTTPTransport.handle_async_request", send_async)

    def _uninstrument(self, **kwargs: Any) -> None:
        import httpx

        unwrap(httpx.HTTPTransport, "handle_request")
        unwrap(httpx.AsyncHTTPTransport, "handle_async_request")


class RequestsInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """requests: every ``Session.send`` (``requests.get`` and friends go through it)."""

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("requests >= 2.0",)

    def _instrument(self, **kwargs: Any) -> None:
        options = HttpOptions.from_env("REQUESTS", "CLIENT")

        def send(wrapped: Any, session: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
            request = args[0] if args else kw.get("request")
            if request is None or suppressed():
                return wrapped(*args, **kw)
            url = str(request.url)
            if options.url_excluded(url):
                return wrapped(*args, **kw)
            parts = urlsplit(url)
            span = start_client(
                options,
                str(request.method or "GET"),
                url,
                parts.hostname,
                parts.port or default_port(parts.scheme),
                request.headers,
            )
            inject(span, request.headers, operator.setitem)
            token = suppressing_nested()  # urllib3's instrumentation, if loaded, makes no second span
            try:
                response = wrapped(*args, **kw)
            except BaseException as error:
                context.detach(token)
                finish_client(options, span, None, error)
                raise
            context.detach(token)
            version = _HTTP_VERSIONS.get(getattr(getattr(response, "raw", None), "version", 0) or 0)
            extra = {"network.protocol.version": version} if version else None
            finish_client(options, span, response.status_code, None, response.headers, extra)
            return response

        wrap_function_wrapper("requests.sessions", "Session.send", send)

    def _uninstrument(self, **kwargs: Any) -> None:
        import requests.sessions

        unwrap(requests.sessions.Session, "send")


class AiohttpClientInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """aiohttp: every ``ClientSession`` request (``session.get(...)`` and friends)."""

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("aiohttp >= 3.8",)

    def _instrument(self, **kwargs: Any) -> None:
        from multidict import CIMultiDict  # aiohttp's own header type

        options = HttpOptions.from_env("AIOHTTP_CLIENT", "CLIENT")

        async def request(wrapped: Any, session: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
            if len(args) < 2 or suppressed():
                return await wrapped(*args, **kw)
            method, target = str(args[0]), args[1]
            try:
                url = session._build_url(target) if hasattr(session, "_build_url") else target
            except Exception:
                url = target
            text = str(url)
            if options.url_excluded(text):
                return await wrapped(*args, **kw)
            host = getattr(url, "host", None)
            port = getattr(url, "port", None)
            headers: Any = CIMultiDict(kw.get("headers") or ())
            span = start_client(options, method, text, host, port, headers)
            inject(span, headers, operator.setitem)
            kw["headers"] = headers
            try:
                response = await wrapped(*args, **kw)
            except BaseException as error:
                finish_client(options, span, None, error)
                raise
            version = getattr(response, "version", None)
            extra = {"network.protocol.version": f"{version.major}.{version.minor}"} if version else None
            finish_client(options, span, response.status, None, response.headers, extra)
            return response

        wrap_function_wrapper("aiohttp.client", "ClientSession._request", request)

    def _uninstrument(self, **kwargs: Any) -> None:
        import aiohttp.client

        unwrap(aiohttp.client.ClientSession, "_request")
