"""An OTLP/HTTP receiver on a real socket that keeps every request it was sent, decoded with
the standard schema: what the export tests read back."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest


class Receiver(BaseHTTPRequestHandler):
    """An OTLP/HTTP receiver that keeps what each request looked like."""

    requests: list[tuple[dict[str, str], ExportTraceServiceRequest]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        headers = {k.lower(): v for k, v in self.headers.items()}
        if headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        if self.path.endswith("/v1/traces"):  # the log records a program sends go elsewhere
            type(self).requests.append((headers, ExportTraceServiceRequest.FromString(body)))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def receiver() -> Iterator[str]:
    Receiver.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def spans_received() -> list[str]:
    return [
        span.name
        for _, request in Receiver.requests
        for resource in request.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]


def run_python(program: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``program`` in a fresh interpreter with none of our environment but ``env``."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TRACEBRIDGE_"))}
    return subprocess.run(
        [sys.executable, "-c", program],
        env=environment | env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
