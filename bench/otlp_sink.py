"""A separate process that receives OTLP/HTTP trace and log exports and counts them.

    python bench/otlp_sink.py PORT

Benchmarks export to it over real HTTP, so the exporter's encoding, batching and network
work are in every measurement, while the receiver's own cost (a collector's storage) stays
out of the process being measured.  ``GET /count`` answers the spans received so far,
``GET /count-logs`` the log records.
"""

from __future__ import annotations

import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

_lock = threading.Lock()
_received = 0
_logs = 0


class Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        global _received, _logs
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        if self.path.endswith("/v1/logs"):
            logs = ExportLogsServiceRequest.FromString(body)
            count = sum(len(scope.log_records) for rl in logs.resource_logs for scope in rl.scope_logs)
            with _lock:
                _logs += count
        else:
            request = ExportTraceServiceRequest.FromString(body)
            count = sum(len(scope.spans) for rs in request.resource_spans for scope in rs.scope_spans)
            with _lock:
                _received += count
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        body = str(_logs if self.path == "/count-logs" else _received).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return None


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink)
    print("ready", flush=True)
    server.serve_forever()
