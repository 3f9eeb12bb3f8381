"""Run the demo chain for real and collect its traces.

Embedded broker, a collector with its own store, and four services each in its own process
under ``tracebridge run`` — the same zero-code path a user takes.  Used by ``tracebridge demo``
to print one order's trace and diagnosis, and by the end-to-end test to assert on exactly that.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from tracebridge import processes
from tracebridge.analysis.model import Trace
from tracebridge.broker import EmbeddedBroker, free_port
from tracebridge.collector.process import CollectorProcess
from tracebridge.collector.store import SpanStore

SERVICES = ("web", "mailer", "worker", "shipper")
TOPICS = ("orders", "shipments")
FIRST_SPAN = "POST /orders"
LAST_SPAN = "process shipments"
SPANS_PER_ORDER = 7


class DemoError(RuntimeError):
    """A demo service failed to start or the chain never completed; the message has its log."""


@dataclass
class DemoResult:
    """What a demo run produced: one trace per order, and where everything is."""

    order_ids: list[str]
    traces: dict[str, Trace]  # order id → its trace
    log_dir: Path
    db: Path


def _service_env(
    clean: Mapping[str, str], name: str, broker: str, endpoint: str, ports: Mapping[str, int]
) -> dict[str, str]:
    env = dict(clean)
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


def complete_trace(store: SpanStore, order_id: str) -> Trace | None:
    """The order's trace, once it went the whole way: placed through to shipment processed."""
    found = store.trace_ids_with("order.id", order_id, limit=1)
    if not found:
        return None
    spans = store.trace(found[0])
    names = {span.name for span in spans}
    if FIRST_SPAN in names and LAST_SPAN in names and len(spans) >= SPANS_PER_ORDER:
        return Trace(spans)
    return None


def run_chain(
    orders: int = 1, timeout: float = 60.0, log_dir: Path | None = None, db: Path | None = None
) -> DemoResult:
    """Start everything, place ``orders`` orders over HTTP, wait for their full traces, stop."""
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="tracebridge-demo-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    db = db or log_dir / "traces.db"
    running: list[subprocess.Popen[bytes]] = []
    # The user's own OTEL_*/TRACEBRIDGE_* settings must not leak into a self-contained demo.
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TRACEBRIDGE_"))}
    with EmbeddedBroker() as broker, CollectorProcess(db, log_dir / "collector.log", clean) as collector:
        broker.create_topics(list(TOPICS), partitions=1)
        ports = {"web": free_port(), "mailer": free_port()}
        try:
            logs: dict[str, Path] = {}
            for name in SERVICES:
                logs[name] = log_dir / f"{name}.log"
                command = [sys.executable, "-m", "tracebridge", "run", "--"]
                command += [sys.executable, "-m", "tracebridge.demo.services", name]
                env = _service_env(clean, name, broker.bootstrap_servers, collector.url, ports)
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
            store = SpanStore(db)
            traces: dict[str, Trace] = {}
            deadline = time.monotonic() + timeout
            while len(traces) < len(order_ids):
                for order_id in order_ids:
                    if order_id not in traces and (trace := complete_trace(store, order_id)) is not None:
                        traces[order_id] = trace
                if time.monotonic() > deadline:
                    details = "\n".join(f"--- {n}.log\n{processes.tail(p)}" for n, p in logs.items())
                    raise DemoError(
                        f"{len(traces)} of {orders} orders completed within {timeout:.0f}s\n{details}"
                    )
                time.sleep(0.1)
            return DemoResult(order_ids, traces, log_dir, db)
        finally:
            for process in running:
                processes.stop(process)
