"""Log records beside the spans: exported by a service under ``tracebridge run`` with their
trace and span ids, received at ``/v1/logs`` (protobuf and JSON, same limits and errors as
traces), stored, aged out with their traces, served by the API and ``tracebridge logs``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from tests.conftest import RunningCollector

APPS = Path(__file__).parent / "apps"
TRACE = "5b8efff798038103d269b633813fc60c"
SPAN = "eee19b7ec3c1b174"


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TRACEBRIDGE_"))}
    return {**env, "COLUMNS": "300", **extra}


def wait_for_logs(collector: RunningCollector, count: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while collector.store.log_count() < count:
        assert time.monotonic() < deadline, f"only {collector.store.log_count()} log records arrived"
        time.sleep(0.05)


def logs_document(*records: dict, service: str = "ledger") -> dict:
    return {
        "resourceLogs": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
                "scopeLogs": [{"scope": {"name": "test"}, "logRecords": list(records)}],
            }
        ]
    }


def test_a_services_log_records_arrive_with_their_span_and_keep_logging_as_it_was(collector) -> None:
    env = clean_env(OTEL_SERVICE_NAME="shop", OTEL_EXPORTER_OTLP_ENDPOINT=collector.url)
    command = [sys.executable, "-m", "tracebridge", "run", "--", sys.executable, str(APPS / "logging_app.py")]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    ids = json.loads(result.stdout.strip().splitlines()[-1])
    # the program's own logging set-up still decides its output (no handler of ours on root)
    assert "APP WARNING card 4111 1111 1111 1111 declined" in result.stderr
    wait_for_logs(collector, 4)
    lines = collector.store.log_lines([ids["trace_id"]])
    assert [(line.severity, line.body, line.span_id, line.service) for line in lines] == [
        ("INFO", "checking out cart c-17", ids["span_id"], "shop"),
        ("WARNING", "card REDACTED declined for REDACTED", ids["span_id"], "shop"),
        ("ERROR", "checkout failed", ids["span_id"], "shop"),
    ]
    assert lines[2].is_error and lines[2].attributes["exception.type"] == "ValueError"
    assert lines[2].attributes["exception.message"] == "stock ran out"
    assert not any(key.startswith("otel") for line in lines for key in line.attributes)
    assert collector.store.log_count() == 4  # and the one outside the span, with no trace id

    logs_command = [sys.executable, "-m", "tracebridge", "logs", ids["trace_id"]]
    logs_command += ["--source", str(collector.store.path)]
    shown = subprocess.run(
        logs_command,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    printed = shown.stdout.splitlines()
    assert len(printed) == 3
    assert [line.split()[1:3] for line in printed] == [
        ["INFO", "shop"],
        ["WARNING", "shop"],
        ["ERROR", "shop"],
    ]
    assert printed[2].endswith("checkout failed (checkout)")  # the span it was logged in
    as_json = subprocess.run(
        [
            sys.executable,
            "-m",
            "tracebridge",
            "logs",
            ids["trace_id"],
            "--source",
            str(collector.store.path),
            "--json",
        ],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert [line["body"] for line in json.loads(as_json.stdout)["logs"]] == [line.body for line in lines]


def test_json_and_protobuf_logs_are_stored_bad_ones_refused_and_served_in_time_order(tmp_path) -> None:
    with RunningCollector(tmp_path / "traces.db") as collector:
        spans = {
            "resourceSpans": [
                {
                    "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "ledger"}}]},
                    "scopeSpans": [
                        {
                            "spans": [
                                {
                                    "traceId": TRACE,
                                    "spanId": SPAN,
                                    "name": "post entry",
                                    "startTimeUnixNano": "1000",
                                    "endTimeUnixNano": "9000",
                                }
                            ]
                        }
                    ],
                }
            ]
        }
        assert httpx.post(f"{collector.url}/v1/traces", json=spans).status_code == 200
        document = logs_document(
            {
                "timeUnixNano": "3000",
                "severityNumber": 17,
                "body": {"stringValue": "second"},
                "traceId": TRACE,
                "spanId": SPAN,
            },
            {
                "timeUnixNano": "2000",
                "severityText": "INFO",
                "severityNumber": 9,
                "body": {"stringValue": "first"},
                "traceId": TRACE,
            },
            {"timeUnixNano": "2500", "body": {"stringValue": "bad id"}, "traceId": "abcd"},
        )
        answer = httpx.post(f"{collector.url}/v1/logs", json=document)  # "abcd": a 2-byte trace id
        assert answer.status_code == 200, answer.text
        assert answer.json()["partialSuccess"] == {
            "rejectedLogRecords": "1",
            "errorMessage": "1 log records rejected: invalid trace_id",
        }
        request = ExportLogsServiceRequest()
        record = request.resource_logs.add().scope_logs.add().log_records.add()
        record.time_unix_nano, record.body.string_value = 4000, "from another language"
        record.trace_id, record.severity_number = bytes.fromhex(TRACE), 13
        binary = httpx.post(
            f"{collector.url}/v1/logs",
            content=request.SerializeToString(),
            headers={"content-type": "application/x-protobuf"},
        )
        assert binary.status_code == 200
        served = httpx.get(f"{collector.url}/api/traces/{TRACE}/logs").json()["logs"]
        assert [(line["body"], line["severity"], line["service"], line["error"]) for line in served] == [
            ("first", "INFO", "ledger", False),
            ("second", "ERROR", "ledger", True),
            ("from another language", "WARN", "unknown_service", False),
        ]
        garbage = httpx.post(
            f"{collector.url}/v1/logs",
            content=b"\xff\x00garbage",
            headers={"content-type": "application/x-protobuf"},
        )
        assert garbage.status_code == 400 and b"ExportLogsServiceRequest" in garbage.content
        assert httpx.get(f"{collector.url}/api/health").json()["logs_received"] == 3

        # retention takes a trace's log lines with it
        collector.store.apply_retention(max_age_s=0, max_bytes=None)
        assert collector.store.log_count() == 0


def test_log_records_are_encoded_as_the_standard_otlp_schema_decodes_them() -> None:
    from opentelemetry.sdk.resources import Resource

    from tracebridge.log_export import severity_number
    from tracebridge.otlp import any_value, attributes
    from tracebridge.otlp_wire import LogItem, encode_logs

    traced = LogItem(
        1_700_000_000_123_456_789,
        17,
        "ERROR",
        "charge failed",
        {"attempt": 2, "ok": False},
        int(TRACE, 16),
        int(SPAN, 16),
        1,
        "shop.billing",
    )
    loose = LogItem(1_700_000_000_200_000_000, 9, "INFO", "ünïcode ✓", {}, 0, 0, 0, "shop.orders")
    body = encode_logs([traced, loose, traced], Resource({"service.name": "shop"}))
    request = ExportLogsServiceRequest.FromString(body)
    (resource_logs,) = request.resource_logs
    assert attributes(resource_logs.resource.attributes)["service.name"] == "shop"
    scopes = {scope.scope.name: list(scope.log_records) for scope in resource_logs.scope_logs}
    assert [len(scopes["shop.billing"]), len(scopes["shop.orders"])] == [2, 1]
    first = scopes["shop.billing"][0]
    assert (first.time_unix_nano, first.severity_number, first.severity_text) == (traced.time_ns, 17, "ERROR")
    assert (first.trace_id.hex(), first.span_id.hex(), first.flags) == (TRACE, SPAN, 1)
    assert any_value(first.body) == "charge failed" and attributes(first.attributes) == {
        "attempt": 2,
        "ok": False,
    }
    other = scopes["shop.orders"][0]
    assert (other.trace_id, other.span_id, any_value(other.body)) == (b"", b"", "ünïcode ✓")
    assert [severity_number(level) for level in (10, 20, 30, 40, 50, 25)] == [5, 9, 13, 17, 21, 11]


def test_log_records_of_another_languages_sdk_land_beside_its_spans(collector) -> None:
    """Stock OpenTelemetry JS (pinned in tests/node/package-lock.json) exporting a log record
    made inside a span: stored with that span's ids, served with the trace's lines."""
    import shutil

    node = shutil.which("node")
    assert node, "the mixed-language tests need Node.js (make test checks for it)"
    env = clean_env(OTEL_SERVICE_NAME="node-stock", OTEL_EXPORTER_OTLP_ENDPOINT=collector.url)
    result = subprocess.run(
        [node, str(Path(__file__).parent / "node" / "logger.js")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    ids = json.loads(result.stdout.strip().splitlines()[-1])
    wait_for_logs(collector, 1)
    (line,) = collector.store.log_lines([ids["trace_id"]])
    assert (line.service, line.severity, line.severity_number, line.body) == (
        "node-stock",
        "WARN",
        13,
        "stock low for sku-1",
    )
    assert (line.trace_id, line.span_id) == (ids["trace_id"], ids["span_id"])
    assert line.attributes == {"sku": "sku-1", "left": 2}
    served = httpx.get(f"{collector.url}/api/traces/{ids['trace_id']}/logs").json()["logs"]
    assert [entry["body"] for entry in served] == ["stock low for sku-1"]


def test_log_records_are_held_while_the_collector_is_down_and_delivered_once_it_is_back(tmp_path) -> None:
    import logging

    from opentelemetry.sdk.resources import Resource

    from tracebridge.broker import free_port
    from tracebridge.config import Settings
    from tracebridge.log_export import LogExport

    port = free_port()
    settings = Settings(
        otlp_logs_endpoint=f"http://127.0.0.1:{port}/v1/logs", exporter_retry_after_s=0.2, otlp_timeout_s=1.0
    )
    export = LogExport(settings, Resource({"service.name": "outage"}))
    try:
        for number in range(5):
            export.emit(
                logging.LogRecord("shop", logging.WARNING, __file__, 1, "attempt %s", (number,), None)
            )
        export.force_flush(2000)  # the collector is down: sent, refused, held
        assert export.exporter.held_spans == 5
        with RunningCollector(tmp_path / "traces.db", port=port) as collector:
            deadline = time.monotonic() + 10
            while collector.store.log_count() < 5:
                assert time.monotonic() < deadline, "held log records were not delivered"
                time.sleep(0.05)
            assert export.exporter.held_spans == 0
            bodies = sorted(row[0] for row in collector.store._writer.execute("SELECT body FROM logs"))
            assert bodies == [f"attempt {n}" for n in range(5)]
    finally:
        export.shutdown(1000)
