"""A collector as a child process: what the demo (and anything else that needs one) starts."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

from tracebridge import processes
from tracebridge.broker import free_port


class CollectorProcess:
    """``tracebridge collector`` on 127.0.0.1 with its own store; stops with us."""

    def __init__(
        self,
        db: Path,
        log_path: Path,
        env: Mapping[str, str],
        port: int | None = None,
        args: Sequence[str] = (),
    ) -> None:
        self.args = list(args)  # more `tracebridge collector` flags
        self.db = db
        self.log_path = log_path
        self.env = dict(env)
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> CollectorProcess:
        command = [
            sys.executable,
            "-m",
            "tracebridge",
            "collector",
            "--port",
            str(self.port),
            "--db",
            str(self.db),
            *self.args,
        ]
        import httpx  # the collector extra

        self.process = processes.spawn(command, self.env, self.log_path)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the collector exited with {self.process.returncode}:\n{processes.tail(self.log_path)}"
                )
            try:
                if httpx.get(f"{self.url}/api/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(
            f"the collector did not answer within {timeout:.0f}s:\n{processes.tail(self.log_path)}"
        )

    def stop(self) -> None:
        process, self.process = self.process, None
        processes.stop(process)

    def __enter__(self) -> CollectorProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
