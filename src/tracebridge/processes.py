"""Child processes that never outlive us: the broker, the demo's services.

``PR_SET_PDEATHSIG`` makes Linux send the child SIGTERM when its parent dies — even by
SIGKILL — so a killed demo or test run leaves no broker or service behind.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

# Run by a fresh, single-threaded interpreter, never in a forked copy of ours: code between
# fork and exec in a process with threads (subprocess's preexec_fn) can deadlock — we saw the
# broker spawn hang once exporter threads existed.  It asks Linux for SIGTERM when our process
# dies, checks we didn't die before it asked, then becomes the real program.
_TRAMPOLINE = (
    "import ctypes, os, signal, sys\n"
    "if sys.platform.startswith('linux'):\n"
    "    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)\n"
    "    if os.getppid() != int(sys.argv[1]):\n"
    "        sys.exit(1)\n"
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)


def spawn(args: Sequence[str], env: Mapping[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start ``args`` with stdout and stderr in ``log_path``, tied to this process' life.

    Linux sends the signal when the *thread* that spawned the child ends, not only the process:
    spawn from a thread that outlives the child (the main thread, or one that waits)."""
    command = [sys.executable, "-c", _TRAMPOLINE, str(os.getpid()), *args]
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=dict(env)
        )


def stop(process: subprocess.Popen[bytes] | None, timeout: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout``; safe on an already finished process."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout)


def tail(log_path: Path | None, lines: int = 8) -> str:
    """The last lines of a child's log, for error messages."""
    if log_path is None or not log_path.exists():
        return ""
    return "\n".join(log_path.read_text(errors="replace").strip().splitlines()[-lines:])
