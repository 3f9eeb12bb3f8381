"""The eshop stack on one machine: embedded broker, collector, and every service as its own
child process on a free port — what ``tracebridge demo``/``up``, the tests and the benchmark run.

Services start under ``tracebridge run`` (the zero-code path a user takes) unless
``traced=False`` (the benchmark's baseline).  Each writes its log to ``<dir>/<service>.log``;
every child dies with us, even if we are killed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from tracebridge import processes
from tracebridge.broker import EmbeddedBroker, free_port
from tracebridge.collector.process import CollectorProcess
from tracebridge.demo.slow_link import SlowLink


@dataclass(frozen=True)
class Service:
    name: str  # service.name, and the log file's name
    module: str  # python -m <module>
    domain: str | None  # whose database it uses (None: no database)
    http: bool = True  # a REST/GraphQL service (else a worker, with only a health port)


SERVICES: tuple[Service, ...] = (
    Service("inventory", "eshop.inventory", "inventory"),
    Service("billing", "eshop.billing", "billing"),
    Service("notification", "eshop.notification", "notification"),
    Service("order", "eshop.order", "order"),
    Service("gateway", "eshop.gateway", None),
    Service("inventory-worker", "eshop.inventory_worker", "inventory", http=False),
    Service("logistics-worker", "eshop.logistics_worker", "logistics", http=False),
    Service("notification-worker", "eshop.notification_worker", "notification", http=False),
    Service("order-status-worker", "eshop.order_status_worker", "order", http=False),
)
SERVICE_NAMES = tuple(service.name for service in SERVICES)
_BY_NAME = {service.name: service for service in SERVICES}
TOPICS = ("orders", "inventory", "shipments", "orders.dlq", "inventory.dlq", "shipments.dlq")
_PEERS = {"order": "ORDER_URL", "inventory": "INVENTORY_URL", "billing": "BILLING_URL"}
_PEERS["notification"] = "NOTIFICATION_URL"


class StackError(RuntimeError):
    """A part of the stack failed to start or died; the message carries its log's tail."""


@dataclass
class Faults:
    """Per-service faults: added latency (ms), error rate (0..1), services that drop context."""

    slow: dict[str, float] = field(default_factory=dict)
    fail: dict[str, float] = field(default_factory=dict)
    break_context: set[str] = field(default_factory=set)
    # "caller:callee" -> ms added on the wire to every request (a delaying TCP link between them)
    slow_network: dict[str, float] = field(default_factory=dict)

    def validate(self) -> None:
        for option, names in (
            ("--slow", self.slow),
            ("--fail", self.fail),
            ("--break-context", self.break_context),
        ):
            for name in names:
                if name not in SERVICE_NAMES:
                    raise ValueError(
                        f"{option}: unknown service {name!r}; the services are {', '.join(SERVICE_NAMES)}"
                    )
        for name, rate in self.fail.items():
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"--fail {name}={rate:g}: the error rate must be between 0 and 1")
        for name, ms in self.slow.items():
            if ms < 0:
                raise ValueError(f"--slow {name}={ms:g}: the latency must not be negative")
        for link, ms in self.slow_network.items():
            caller, _, callee = link.partition(":")
            if caller not in SERVICE_NAMES or callee not in _PEERS:
                raise ValueError(
                    f"--slow-network {link}={ms:g}: give CALLER:CALLEE, a service and one it calls over "
                    f"HTTP ({', '.join(_PEERS)})"
                )
            if ms < 0:
                raise ValueError(f"--slow-network {link}={ms:g}: the latency must not be negative")

    def env(self, name: str) -> dict[str, str]:
        env: dict[str, str] = {}
        if name in self.slow:
            env["ESHOP_FAULT_LATENCY_MS"] = f"{self.slow[name]:g}"
        if name in self.fail:
            env["ESHOP_FAULT_ERROR_RATE"] = f"{self.fail[name]:g}"
        if name in self.break_context:
            env["ESHOP_FAULT_DROP_CONTEXT"] = "true"
        return env


class Stack:
    """Start with :meth:`start` (or ``with Stack(...)``), stop with :meth:`stop`."""

    def __init__(
        self,
        directory: Path,
        faults: Faults | None = None,
        traced: bool = True,
        extra_env: Mapping[str, str] | None = None,
        collector_port: int | None = None,
        db: Path | None = None,
        service_env: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        self.directory = directory
        self._db = db or directory / "traces.db"
        self.service_overrides = {name: dict(env) for name, env in (service_env or {}).items()}
        self.faults = faults or Faults()
        self.faults.validate()
        self.traced = traced
        self.extra_env = dict(extra_env or {})
        self.ports = {service.name: free_port() for service in SERVICES}
        self.broker: EmbeddedBroker | None = None
        self.collector: CollectorProcess | None = None
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.links: dict[str, SlowLink] = {}
        self._collector_port = collector_port
        # The user's own OTEL_*/TRACEBRIDGE_*/ESHOP_* settings must not leak into the stack.
        self._clean = {
            k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TRACEBRIDGE_", "ESHOP_"))
        }

    def clear_previous_run(self) -> list[Path]:
        """Delete what an earlier run left in the directory — the services' databases, the
        trace store, the logs — so a new run starts as fresh as the in-memory broker does (its
        topics are empty: old orders in the databases would point at records that no longer
        exist).  Only files this stack writes are touched; returns what was removed."""
        names = [f"{domain}.db" for domain in {service.domain for service in SERVICES if service.domain}]
        names.append(self.db.name if self.db.parent == self.directory else "")
        removed: list[Path] = []
        for name in filter(None, names):
            for suffix in ("", "-wal", "-shm", "-journal"):
                path = self.directory / f"{name}{suffix}"
                if path.exists():
                    path.unlink()
                    removed.append(path)
        for name in (*SERVICE_NAMES, "collector"):
            log = self.log(name)
            if log.exists():
                log.unlink()
                removed.append(log)
        return removed

    # -- addresses ---------------------------------------------------------------------------
    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    @property
    def gateway_url(self) -> str:
        return self.url("gateway")

    @property
    def collector_url(self) -> str | None:
        return self.collector.url if self.collector is not None else None

    @property
    def db(self) -> Path:
        """The collector's trace store."""
        return self._db

    def log(self, name: str) -> Path:
        return self.directory / f"{name}.log"

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> Stack:
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            self.broker = EmbeddedBroker().start()
            self.broker.create_topics(list(TOPICS), partitions=1)
            if self.traced:
                # --kafka: the diagnosis API asks the broker about orders in flight
                self.collector = CollectorProcess(
                    self.db,
                    self.log("collector"),
                    self._clean,
                    port=self._collector_port,
                    args=("--kafka", self.broker.bootstrap_servers),
                ).start(timeout)
            for link, ms in self.faults.slow_network.items():
                self.links[link] = SlowLink(self.ports[link.partition(":")[2]], ms).start()
            for service in SERVICES:
                self.spawn(service.name)
            self.wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def service_env(self, name: str) -> dict[str, str]:
        service = _BY_NAME[name]
        assert self.broker is not None
        env = dict(self._clean)
        env.update(
            {
                "PORT": str(self.ports[name]),
                "KAFKA_BOOTSTRAP_SERVERS": self.broker.bootstrap_servers,
                "KAFKA_SESSION_TIMEOUT_MS": "3000",
                "KAFKA_HEARTBEAT_INTERVAL_MS": "500",
                "PYTHONUNBUFFERED": "1",
                "OTEL_SERVICE_NAME": name,
            }
        )
        for peer, variable in _PEERS.items():
            link = self.links.get(f"{name}:{peer}")
            env[variable] = link.url if link is not None else self.url(peer)
        if service.domain is not None:
            env["DATABASE_URL"] = f"sqlite:///{self.directory / service.domain}.db"
        if self.collector is not None:
            env.update(
                {
                    "OTEL_EXPORTER_OTLP_ENDPOINT": self.collector.url,
                    "OTEL_BSP_SCHEDULE_DELAY": "200",
                    "TRACEBRIDGE_BAGGAGE_ATTRIBUTES": "order.id",
                }
            )
        if name == "gateway":
            env["TRACEBRIDGE_INBOUND_CONTEXT"] = "drop"  # the edge starts the trace
        env.update(self.faults.env(name))
        env.update(self.extra_env)
        env.update(self.service_overrides.get(name, {}))
        return env

    def spawn(self, name: str) -> subprocess.Popen[bytes]:
        service = _BY_NAME[name]
        command = [sys.executable, "-m", service.module]
        if self.traced:
            command = [sys.executable, "-m", "tracebridge", "run", "--", *command]
        process = processes.spawn(command, self.service_env(name), self.log(name))
        self.children[name] = process
        return process

    def wait_healthy(self, timeout: float, names: tuple[str, ...] = SERVICE_NAMES) -> None:
        """Every service answers ``/health`` (workers: once they have their partitions)."""
        import httpx  # the demo's extra: `tracebridge run` must work without it

        deadline = time.monotonic() + timeout
        waiting = list(names)
        with httpx.Client(timeout=1) as client:
            while waiting:
                name = waiting[0]
                process = self.children[name]
                if process.poll() is not None:
                    raise StackError(
                        f"{name} exited with {process.returncode}:\n{processes.tail(self.log(name), 20)}"
                    )
                try:
                    if client.get(f"{self.url(name)}/health").status_code == 200:
                        waiting.pop(0)
                        continue
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise StackError(
                        f"{name} was not healthy within {timeout:.0f}s:\n{processes.tail(self.log(name), 20)}"
                    )
                time.sleep(0.05)

    def kill(self, name: str) -> None:
        """SIGKILL one service — no goodbye, no flush, no commit (the tests' crash)."""
        process = self.children[name]
        process.kill()
        process.wait(5)

    def pause(self, name: str) -> None:
        """SIGSTOP one service: alive, holding its partitions until the group gives up on it —
        a consumer that stopped consuming."""
        self.children[name].send_signal(signal.SIGSTOP)

    def resume(self, name: str) -> None:
        self.children[name].send_signal(signal.SIGCONT)

    def restart(self, name: str, timeout: float = 30.0) -> None:
        processes.stop(self.children.get(name))
        self.spawn(name)
        self.wait_healthy(timeout, (name,))

    def check_alive(self) -> None:
        for name, process in self.children.items():
            if process.poll() is not None:
                raise StackError(
                    f"{name} died with {process.returncode}:\n{processes.tail(self.log(name), 20)}"
                )

    def stop(self) -> None:
        # All at once: each flushes its spans on SIGTERM, and waiting in turn would add up.
        children = list(self.children.values())
        self.children.clear()
        for process in children:
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)  # a paused service can't hear SIGTERM
                process.terminate()
        for process in children:
            processes.stop(process)
        for link in self.links.values():
            link.stop()
        self.links.clear()
        if self.collector is not None:
            self.collector.stop()
        if self.broker is not None:
            self.broker.stop()
            self.broker = None

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
