"""Sources (Jaeger, OTLP JSON files, the store) and the trace/diagnose/doctor commands."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from tracebridge.analysis.diagnosis import diagnose
from tracebridge.analysis.sources import JaegerSource, file_source
from tracebridge.broker import free_port

RECORDED = json.loads((Path(__file__).parent / "data" / "jaeger_trace.json").read_text())
TRACE_ID = "6f1e2d3c4b5a69788796a5b4c3d2e1f0"


class FakeJaeger(BaseHTTPRequestHandler):
    """Jaeger's classic query API, answering from a recorded trace; v3 is not there (404)."""

    def do_GET(self) -> None:
        url = urlparse(self.path)
        if url.path == "/api/services":
            self._json({"data": ["order", "inventory-worker"]})
        elif url.path == f"/api/traces/{TRACE_ID}":
            self._json(RECORDED)
        elif url.path == "/api/traces":
            tags = json.loads(parse_qs(url.query).get("tags", ["{}"])[0])
            matches = tags in ({}, {"order.id": "o-1001"})
            self._json({"data": RECORDED["data"] if matches else []})
        else:
            self._json({"data": None, "errors": [{"code": 404, "msg": "trace not found"}]}, 404)

    def _json(self, body: object, status: int = 200) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture(scope="module")
def jaeger() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeJaeger)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tracebridge", *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_jaeger_source_reads_parents_links_status_and_exceptions(jaeger) -> None:
    trace = JaegerSource(jaeger).trace(TRACE_ID)
    by_name = {span.name: span for span in trace.spans}
    process = by_name["process orders"]
    assert process.parent_span_id == "b2b2b2b2b2b2b2b2" and process.kind == "CONSUMER"
    assert [link.span_id for link in process.links] == ["b2b2b2b2b2b2b2b2"]
    assert process.status == "ERROR" and process.service == "inventory-worker"
    assert process.events[0].attributes["exception.type"] == "StockError"
    assert by_name["POST /orders"].attributes["http.response.status_code"] == 202
    diagnosis = diagnose(trace)
    assert diagnosis.end_to_end_ns == 320_000_000
    (hop,) = diagnosis.hops
    assert (round(hop.queue_wait_ns / 1e6), hop.failed) == (302, True)
    assert diagnosis.headline == "94% of 320 ms: queue wait on `orders` before inventory-worker"


def test_diagnose_json_from_jaeger_by_order(jaeger) -> None:
    result = cli("diagnose", "--order", "o-1001", "--source", jaeger, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["trace_id"] == TRACE_ID
    assert data["verdict"]["category"] == "queue wait" and data["verdict"]["topic"] == "orders"
    assert data["failures"][0]["error_type"] == "StockError"


def test_trace_command_draws_the_waterfall_from_jaeger(jaeger) -> None:
    result = cli("trace", TRACE_ID, "--source", jaeger)
    assert result.returncode == 0, result.stderr
    assert "process orders" in result.stdout and "waited 302 ms" in result.stdout
    assert "queue wait on `orders` before inventory-worker" in result.stdout


def test_otlp_json_file_source(tmp_path) -> None:
    from tracebridge.otlp import parse_json, to_json

    document = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "order"}}]},
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": "11" * 16,
                                "spanId": "22" * 8,
                                "name": "send orders",
                                "kind": 4,
                                "startTimeUnixNano": "1000000",
                                "endTimeUnixNano": "2000000",
                                "attributes": [{"key": "order.id", "value": {"stringValue": "o-9"}}],
                            },
                            {
                                "traceId": "11" * 16,
                                "spanId": "33" * 8,
                                "parentSpanId": "22" * 8,
                                "name": "process orders",
                                "kind": 5,
                                "startTimeUnixNano": "52000000",
                                "endTimeUnixNano": "53000000",
                                "links": [{"traceId": "11" * 16, "spanId": "22" * 8}],
                            },
                        ]
                    }
                ],
            }
        ]
    }
    path = tmp_path / "trace.json"
    path.write_text(to_json(parse_json(json.dumps(document))))  # round trip through our writer
    source = file_source(path)
    assert source.find("order.id", "o-9") == ["11" * 16]
    (hop,) = diagnose(source.trace("11" * 16)).hops
    assert round(hop.queue_wait_ns / 1e6) == 50
    result = cli("diagnose", "11" * 16, "--source", str(path), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["hops"][0]["queue_wait_ns"] == 50_000_000
    found = cli("diagnose", "--find", "order.id=o-9", "--source", str(path), "--json")
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)["trace_id"] == "11" * 16
    missing = cli("diagnose", "--find", "order.id=o-10", "--source", str(path))
    assert missing.returncode == 1 and "no trace has order.id=o-10" in missing.stderr


def test_unknown_trace_id_says_so(jaeger) -> None:
    result = cli("trace", "ff" * 16, "--source", jaeger)
    assert result.returncode == 1 and f"no trace {'ff' * 16}" in result.stderr


def test_unreachable_source_says_so() -> None:
    result = cli("diagnose", TRACE_ID, "--source", f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 1 and "cannot reach Jaeger or Tempo" in result.stderr


def test_missing_and_empty_store_say_what_to_do(tmp_path) -> None:
    result = cli("trace", TRACE_ID, "--source", str(tmp_path / "nothing.db"))
    assert result.returncode == 1 and "tracebridge collector" in result.stderr
    from tracebridge.collector.store import SpanStore

    SpanStore(tmp_path / "empty.db").close()
    result = cli("doctor", "--source", str(tmp_path / "empty.db"))
    assert result.returncode == 1 and "is empty" in result.stderr


def test_naming_no_trace_or_two_is_a_usage_error() -> None:
    assert cli("trace").returncode == 2
    assert cli("trace", TRACE_ID, "--order", "o-1").returncode == 2
    bad_find = cli("trace", "--find", "no-equals-sign", "--source", "x.json")
    assert bad_find.returncode == 2 and "--find takes KEY=VALUE" in bad_find.stderr


class FakeJaegerV3(FakeJaeger):
    """A Jaeger with the v3 API, answering OTLP JSON wrapped in ``result``."""

    def do_GET(self) -> None:
        if urlparse(self.path).path == f"/api/v3/traces/{TRACE_ID}":
            from tracebridge.otlp import parse_json, to_json

            document = {
                "resourceSpans": [
                    {
                        "resource": {
                            "attributes": [{"key": "service.name", "value": {"stringValue": "order"}}]
                        },
                        "scopeSpans": [
                            {
                                "spans": [
                                    {
                                        "traceId": TRACE_ID,
                                        "spanId": "a1" * 8,
                                        "name": "send orders",
                                        "kind": 4,
                                        "startTimeUnixNano": "1000000",
                                        "endTimeUnixNano": "3000000",
                                    },
                                ]
                            }
                        ],
                    }
                ]
            }
            self._json({"result": json.loads(to_json(parse_json(json.dumps(document))))})
        else:
            super().do_GET()


def test_jaeger_v3_api_is_preferred_when_present() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeJaegerV3)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        trace = JaegerSource(f"http://127.0.0.1:{server.server_address[1]}").trace(TRACE_ID)
    finally:
        server.shutdown()
    assert [(s.name, s.kind, s.service) for s in trace.spans] == [("send orders", "PRODUCER", "order")]
