"""Run the demo chain for real and collect its traces.

Embedded broker, an OTLP receiver, and four services each in its own process under
``tracebridge run`` — the same zero-code path a user takes.  Used by ``tracebridge demo`` to
print one order's trace, and by the end-to-end test to assert on exactly that trace.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tracebridge import processes
from tracebridge.analysis.model import SpanRecord, Trace
from tracebridge.broker import EmbeddedBroker, free_port
from tracebridge.collector.receiver import OtlpReceiver

SERVICES = ("web", "mailer", "worker", "shipper")
TOPICS = ("orders", "shipments")
FIRST_SPAN = "POST /orders"
LAST_SPAN = "process shipments"
SPANS_PER_ORDER = 7


class DemoError(RuntimeError):
    """A demo service failed to start or the chain never completed; the message has its log."""


@dataclass
class DemoResult:
    """What a demo run produced: one trace per order, and where the logs are."""

    order_ids: list[str]
    traces: dict[str, Trace]
    log_dir: Path
    spans: list[SpanRecord] = field(default_factory=list)


def _service_env(
    base: Mapping[str, str], name: str, broker: str, endpoint: str, ports: Mapping[str, int]
) -> dict[str, str]:
    # The user's own OTEL_*/TRACEBRIDGE_* settings must not leak into a self-contained demo.
    env = {k: v for k, v in base.items() if not k.startswith(("OTEL_", "TRACEBRIDGE_"))}
    env.update(
        {
            "OTEL_SERVICE_NAME": name,
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "TRACEBRIDGE_BAGGAGE_ATTRIBUTES": "order.id",
            "KAFKA_BOOTSTRAP_SERVERS": broker,
            "KAFKA_SESSION_TIMEOUT_MS": "3000",
            "KAFKA_HEARTBEAT_INTERVAL_MS": "500",
            "MAILER_URL": f"http://127.0.0.1:{ports['mailer']}",
            "PYTHONUNBUFFERED": "1",
        }
    )
    if name in ports:
        env["PORT"] = str(ports[name])
    return env


def _wait_healthy(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DemoError(f"{url} exited with {process.returncode}:\n{processes.tail(log)}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise DemoError(f"{url} did not answer within {timeout:.0f}s:\n{processes.tail(log)}")


def complete_traces(spans: list[SpanRecord]) -> dict[str, Trace]:
    """Traces that went the whole way: order placed through to shipment processed."""
    by_trace: dict[str, list[SpanRecord]] = {}
    for span in spans:
        by_trace.setdefault(span.trace_id, []).append(span)
    complete = {}
    for trace_id, members in by_trace.items():
        names = {span.name for span in members}
        if FIRST_SPAN in names and LAST_SPAN in names and len(members) >= SPANS_PER_ORDER:
            complete[trace_id] = Trace(members)
    return complete


def run_chain(orders: int = 1, timeout: float = 60.0, log_dir: Path | None = None) -> DemoResult:
    """Start everything, place ``orders`` orders over HTTP, wait for their full traces, stop."""
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="tracebridge-demo-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    running: list[subprocess.Popen[bytes]] = []
    with EmbeddedBroker() as broker, OtlpReceiver() as receiver:
        broker.create_topics(list(TOPICS), partitions=1)
        ports = {"web": free_port(), "mailer": free_port()}
        try:
            logs: dict[str, Path] = {}
            for name in SERVICES:
                logs[name] = log_dir / f"{name}.log"
                command = [sys.executable, "-m", "tracebridge", "run", "--"]
                command += [sys.executable, "-m", "tracebridge.demo.services", name]
                env = _service_env(os.environ, name, broker.bootstrap_servers, receiver.endpoint, ports)
                running.append(processes.spawn(command, env, logs[name]))
            for name in ("web", "mailer"):
                process = running[SERVICES.index(name)]
                _wait_healthy(f"http://127.0.0.1:{ports[name]}/health", process, logs[name], timeout)
            order_ids = [f"o-{uuid.uuid4().hex[:8]}" for _ in range(orders)]
            for order_id in order_ids:
                response = httpx.post(
                    f"http://127.0.0.1:{ports['web']}/orders",
                    json={"id": order_id, "email": "buyer@example.com"},
                    headers={"baggage": f"order.id={order_id}"},
                    timeout=10,
                )
                response.raise_for_status()
            try:
                receiver.sink.wait_for(lambda spans: len(complete_traces(spans)) >= orders, timeout)
            except TimeoutError as error:
                details = "\n".join(f"--- {n}.log\n{processes.tail(p)}" for n, p in logs.items())
                raise DemoError(f"{error}\n{details}") from None
            # Let stragglers of the same traces (the last batch of a slower service) arrive.
            time.sleep(0.3)
            spans = receiver.sink.spans()
            return DemoResult(order_ids, complete_traces(spans), log_dir, spans)
        finally:
            for process in running:
                processes.stop(process)
