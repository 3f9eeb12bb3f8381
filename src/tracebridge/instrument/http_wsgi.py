"""Light server spans for WSGI applications: Flask apps, and any WSGI callable wrapped in
:class:`TracedWSGI`.

The span is current while the application handles the request (its child spans, log lines and
outgoing calls join it) and ends when the application returns its body iterable, as upstream's
Flask instrumentation does.  Flask's matched rule (``/orders/<order_id>``) becomes
``http.route``: it is read inside the request context, where Flask already matched it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from typing import Any

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.instrumentation.utils import unwrap
from wrapt import wrap_function_wrapper

from tracebridge.instrument.http_spans import (
    HttpOptions,
    ServerSpan,
    context_fields,
    default_port,
    request_attributes,
    response_headers,
    split_host,
    suppressed,
)

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]
ROUTE_KEY = "tracebridge.http.route"  # set in the environ by a framework adapter
# An exception the framework turned into a 500 itself (Flask's handle_exception).
ERROR_KEY = "tracebridge.http.error"


def _environ_name(field: str) -> str:
    return "HTTP_" + field.upper().replace("-", "_")


def traced_call(
    options: HttpOptions, app: WSGIApp, environ: dict[str, Any], start_response: StartResponse
) -> Iterable[bytes]:
    """Run one WSGI request under a server span."""
    if suppressed():
        return app(environ, start_response)
    scheme = environ.get("wsgi.url_scheme") or "http"
    path = (environ.get("SCRIPT_NAME") or "") + (environ.get("PATH_INFO") or "/")
    query = environ.get("QUERY_STRING") or ""
    host_header = environ.get("HTTP_HOST")
    host: str | None
    if host_header:
        host, port = split_host(host_header, default_port(scheme))
    else:
        host = environ.get("SERVER_NAME")
        port = int(environ["SERVER_PORT"]) if str(environ.get("SERVER_PORT", "")).isdigit() else None
    if options.request_excluded(scheme, host_header or host, path, query):
        return app(environ, start_response)
    found: dict[str, str] = {}
    for field in context_fields():
        value = environ.get(_environ_name(field))
        if value:
            found[field] = value
    client = environ.get("REMOTE_ADDR")
    protocol = environ.get("SERVER_PROTOCOL") or ""
    attributes = request_attributes(
        scheme,
        path,
        query,
        host,
        port,
        (client, None) if client else None,
        protocol[5:] if protocol.startswith("HTTP/") else None,
        environ.get("HTTP_USER_AGENT"),
    )
    if options.request_headers is not None:
        sent = [
            (key[5:].lower().replace("_", "-"), str(value))
            for key, value in environ.items()
            if key.startswith("HTTP_")
        ]
        attributes.update(options.captured(sent, options.request_headers, response=False))
    server = ServerSpan.start(environ.get("REQUEST_METHOD") or "GET", found, attributes)
    status: int | None = None
    response_attributes: dict[str, Any] = {}

    def traced_start_response(status_line: str, headers: list[tuple[str, str]], *exc_info: Any) -> Any:
        nonlocal status
        code = status_line[:3]
        status = int(code) if code.isdigit() else None
        response_headers(lambda name, value: headers.append((name, value)))
        if options.response_headers is not None and server.recording:
            sent = [(name.lower(), value) for name, value in headers]
            response_attributes.update(options.captured(sent, options.response_headers, response=True))
        return start_response(status_line, headers, *exc_info)

    try:
        body = app(environ, traced_start_response)
    except BaseException as error:
        server.finish(status, error, environ.get(ROUTE_KEY), response_attributes)
        raise
    server.finish(status, environ.get(ERROR_KEY), environ.get(ROUTE_KEY), response_attributes)
    return body


class TracedWSGI:
    """WSGI middleware: one light server span per request."""

    def __init__(self, app: WSGIApp, options: HttpOptions | None = None) -> None:
        self.app = app
        self.options = options or HttpOptions.from_env("WSGI", "SERVER")

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        return traced_call(self.options, self.app, environ, start_response)


class FlaskInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Traces every Flask application: ``Flask.wsgi_app`` runs under a light server span."""

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("flask >= 2.2",)

    def _instrument(self, **kwargs: Any) -> None:
        options = HttpOptions.from_env("FLASK", "SERVER")

        def wsgi_app(wrapped: Any, app: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
            environ, start_response = args if len(args) == 2 else (kw["environ"], kw["start_response"])
            return traced_call(options, wrapped, environ, start_response)

        def full_dispatch_request(wrapped: Any, app: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
            from flask import request

            rule = request.url_rule
            if rule is not None:
                request.environ[ROUTE_KEY] = rule.rule
            return wrapped(*args, **kw)

        def log_exception(wrapped: Any, app: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
            from flask import request

            exc_info = args[0] if args else kw.get("exc_info")
            if exc_info and isinstance(exc_info[1], BaseException):
                request.environ[ERROR_KEY] = exc_info[1]
            return wrapped(*args, **kw)

        wrap_function_wrapper("flask.app", "Flask.wsgi_app", wsgi_app)
        wrap_function_wrapper("flask.app", "Flask.full_dispatch_request", full_dispatch_request)
        wrap_function_wrapper("flask.app", "Flask.log_exception", log_exception)

    def _uninstrument(self, **kwargs: Any) -> None:
        import flask.app

        unwrap(flask.app.Flask, "wsgi_app")
        unwrap(flask.app.Flask, "full_dispatch_request")
        unwrap(flask.app.Flask, "log_exception")
