"""What every eshop process shares: logging with trace ids, the HTTP app shell, the health
port of workers, and a clean SIGTERM.

Nothing here knows about tracing: trace ids reach the log lines because tracebridge turns on
OpenTelemetry's logging instrumentation, which puts ``otelTraceID`` on every log record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI

from eshop.config import Config, ConfigError
from eshop.faults import FaultMiddleware

if TYPE_CHECKING:
    from flask import Flask

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s trace_id=%(otelTraceID)s span_id=%(otelSpanID)s %(message)s"
_NO_TRACE = {"otelTraceID": "0", "otelSpanID": "0"}


def setup_logging(level: int = logging.INFO) -> None:
    """One line per record, each with the trace id (``0`` outside any trace)."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter(LOG_FORMAT, defaults=_NO_TRACE))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("aiokafka", "kafka", "httpx", "urllib3", "werkzeug", "uvicorn.access", "sqlalchemy"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def load_config() -> Config:
    try:
        return Config.from_env()
    except ConfigError as error:
        raise SystemExit(f"eshop: {error}") from None


def http_app(
    title: str,
    config: Config,
    startup: Callable[[Any], Awaitable[None]] | None = None,
    shutdown: Callable[[Any], Awaitable[None]] | None = None,
) -> FastAPI:
    """A FastAPI app with ``/health``, the injected faults, and the service's start/stop."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if startup is not None:
            await startup(app)
        try:
            yield
        finally:
            if shutdown is not None:
                await shutdown(app)

    app = FastAPI(title=title, lifespan=lifespan)
    app.add_middleware(FaultMiddleware, faults=config.faults)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def serve_http(create_app: Callable[[Config], FastAPI]) -> None:
    """A REST/GraphQL service's ``main``: configuration, logging, then uvicorn on ``PORT``."""
    import uvicorn

    config = load_config()
    setup_logging()
    uvicorn.run(create_app(config), host="0.0.0.0", port=config.port, log_config=None, access_log=False)


async def _health_server(port: int, ready: Callable[[], bool]) -> asyncio.base_events.Server:
    """``GET /health``: 200 once the worker has partitions, 503 before — for probes and the demo."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            status = "200 OK" if ready() else "503 Service Unavailable"
            body = b'{"status": "ok"}' if ready() else b'{"status": "joining"}'
            writer.write(
                f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
                "connection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        writer.close()

    return await asyncio.start_server(answer, "0.0.0.0", port)


def run_worker(build: Callable[[Config], Any]) -> None:
    """A worker's ``main``: run the :class:`eshop.kafka.Worker` ``build`` makes until
    SIGTERM/SIGINT, with its health port."""
    config = load_config()
    setup_logging()

    async def main() -> None:
        worker = build(config)  # in the loop: aiokafka binds its clients to it
        server = await _health_server(config.port, lambda: worker.ready)
        task = asyncio.ensure_future(worker.run())
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            pass
        finally:
            server.close()

    asyncio.run(main())


def flask_app(name: str, config: Config) -> Flask:
    """A Flask app with ``/health`` and the injected faults (a failure is a 503)."""
    from flask import Flask

    from eshop.faults import InjectedFault, apply_blocking

    app = Flask(name)

    @app.before_request
    def inject_faults() -> Any:
        from flask import request

        if request.path == "/health" or not config.faults.any:
            return None
        try:
            apply_blocking(config.faults)
        except InjectedFault as fault:
            return {"detail": str(fault)}, 503, {"retry-after": "1"}
        return None

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def serve_wsgi(create_app: Callable[[Config], Flask]) -> None:
    """A WSGI service's ``main``: configuration, logging, then a threaded WSGI server on
    ``PORT`` until SIGTERM/SIGINT."""
    from werkzeug.serving import make_server

    config = load_config()
    setup_logging()
    server = make_server("0.0.0.0", config.port, create_app(config), threaded=True)
    _stop_on_signals(lambda: threading.Thread(target=server.shutdown, daemon=True).start())
    server.serve_forever()


def _stop_on_signals(stop: Callable[[], None]) -> None:
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop())


class _Health(BaseHTTPRequestHandler):
    """``GET /health`` of a blocking worker: 200 once it has partitions, 503 before."""

    ready: Callable[[], bool] = staticmethod(lambda: False)

    def do_GET(self) -> None:
        ready = type(self).ready()
        body = b'{"status": "ok"}' if ready else b'{"status": "joining"}'
        self.send_response(200 if ready else 503)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        return None


def run_blocking_worker(build: Callable[[Config], Any]) -> None:
    """A blocking worker's ``main`` (:class:`eshop.sync_kafka.SyncWorker`): its health port in a
    thread, the poll loop in the main thread until SIGTERM/SIGINT."""
    config = load_config()
    setup_logging()
    worker = build(config)
    handler = type("Health", (_Health,), {"ready": staticmethod(lambda: worker.ready)})
    server = ThreadingHTTPServer(("0.0.0.0", config.port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stopping = threading.Event()
    _stop_on_signals(stopping.set)
    try:
        worker.run(stopping)
    finally:
        server.shutdown()


__all__ = [
    "ConfigError",
    "flask_app",
    "http_app",
    "load_config",
    "run_blocking_worker",
    "run_worker",
    "serve_http",
    "serve_wsgi",
    "setup_logging",
]
