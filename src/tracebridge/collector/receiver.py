"""A small OTLP/HTTP (protobuf) receiver that keeps spans in memory.

What the demo and the multi-process tests export to: real services, real exporter, real
sockets, and the spans back as :class:`SpanRecord` to print or assert on.  It runs on a
background thread in the calling process and binds 127.0.0.1 only.
"""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from tracebridge.analysis.model import SpanRecord
from tracebridge.collector.otlp import InvalidOtlp, decode_protobuf

MAX_BODY_BYTES = 16 * 1024 * 1024


class SpanSink:
    """Thread-safe list of received spans with a wait-until helper."""

    def __init__(self) -> None:
        self._spans: list[SpanRecord] = []
        self._changed = threading.Condition()

    def add(self, spans: list[SpanRecord]) -> None:
        with self._changed:
            self._spans.extend(spans)
            self._changed.notify_all()

    def spans(self) -> list[SpanRecord]:
        with self._changed:
            return list(self._spans)

    def wait_for(self, predicate: Callable[[list[SpanRecord]], bool], timeout: float) -> list[SpanRecord]:
        """Block until ``predicate(spans)`` holds; raise TimeoutError with what arrived."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(self._spans):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    names = sorted(f"{s.service}:{s.name}" for s in self._spans)
                    raise TimeoutError(f"spans did not arrive within {timeout:.0f}s; received {names}")
                self._changed.wait(remaining)
            return list(self._spans)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        if self.path.rstrip("/") != "/v1/traces":
            self._reply(404, b"only POST /v1/traces is served here")
            return
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip()
        if content_type != "application/x-protobuf":
            self._reply(415, b"send application/x-protobuf")
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._reply(411, b"Content-Length required")
            return
        if length > MAX_BODY_BYTES:
            self._reply(413, b"body too large")
            return
        body = self.rfile.read(length)
        try:
            encoding = self.headers.get("Content-Encoding", "").strip().lower()
            if encoding == "gzip":
                body = _gunzip_bounded(body)
            elif encoding not in ("", "identity"):
                self._reply(415, b"unsupported Content-Encoding")
                return
            spans = decode_protobuf(body)
        except (InvalidOtlp, OSError, EOFError, zlib.error, ValueError) as error:
            self._reply(400, str(error).encode()[:500])
            return
        self.server.sink.add(spans)
        self._reply(200, ExportTraceServiceResponse().SerializeToString(), "application/x-protobuf")

    def _reply(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return None


def _gunzip_bounded(body: bytes) -> bytes:
    """Decompress, refusing to inflate past the body cap (a gzip bomb costs nothing)."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    data = inflater.decompress(body, MAX_BODY_BYTES + 1)
    if len(data) > MAX_BODY_BYTES:
        raise ValueError("decompressed body too large")
    return data


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], sink: SpanSink) -> None:
        super().__init__(address, _Handler)
        self.sink = sink


class OtlpReceiver:
    """``with OtlpReceiver() as receiver:`` → ``receiver.endpoint`` for OTEL_EXPORTER_OTLP_ENDPOINT."""

    def __init__(self, port: int = 0, host: str = "127.0.0.1") -> None:
        self.sink = SpanSink()
        self._server = _Server((host, port), self.sink)
        self._thread = threading.Thread(target=self._server.serve_forever, name="otlp-receiver", daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


__all__ = ["OtlpReceiver", "SpanSink"]
