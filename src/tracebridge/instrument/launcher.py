"""``tracebridge run -- CMD``: run a Python program configured and instrumented, unchanged.

The child gets our ``bootstrap/`` folder first on ``PYTHONPATH``; Python imports its
``sitecustomize`` before the program, which configures the SDK from the environment and
instruments every installed library.  ``exec`` replaces this process, so signals, exit codes
and stdio belong to the program exactly as if it had been started directly.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

BOOTSTRAP_DIR = Path(__file__).resolve().parent / "bootstrap"


class LaunchError(RuntimeError):
    """The command to run could not be found or is empty."""


def auto_instrument() -> None:
    """What the bootstrap runs in the child: ``configure()``, ``instrument()``, and a flush on
    SIGTERM for programs that leave SIGTERM at its default."""
    from tracebridge.instrument import instrument
    from tracebridge.sdk import configure, flush_on_sigterm

    configure()
    instrument()
    flush_on_sigterm()


def child_environment(environ: Mapping[str, str], service_name: str | None = None) -> dict[str, str]:
    """The environment for the launched program: bootstrap first on PYTHONPATH."""
    env = dict(environ)
    existing = env.get("PYTHONPATH", "")
    parts = [str(BOOTSTRAP_DIR)] + [p for p in existing.split(os.pathsep) if p and p != str(BOOTSTRAP_DIR)]
    env["PYTHONPATH"] = os.pathsep.join(parts)
    if service_name:
        env["OTEL_SERVICE_NAME"] = service_name
    return env


def run(command: Sequence[str], service_name: str | None = None) -> None:
    """Replace this process with ``command``, instrumented; returns only on failure."""
    if not command:
        raise LaunchError("nothing to run: give a command after '--', e.g. tracebridge run -- python app.py")
    executable = shutil.which(command[0])
    if executable is None:
        raise LaunchError(f"command not found: {command[0]!r} (is it installed and on PATH?)")
    # The program inherits the repaired environment, so only we can still say what was wrong.
    from tracebridge.config import repaired_problems

    for problem in repaired_problems():
        print(f"tracebridge configuration: {problem}", file=sys.stderr, flush=True)
    os.execve(executable, list(command), child_environment(os.environ, service_name))
