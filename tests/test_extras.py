"""Each extra on its own, installed into a fresh virtualenv from a wheel of this tree, gives a
working ``tracebridge run``; a verb that needs another extra says which one instead of failing
with a traceback."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (built,) = out.glob("tracebridge-*.whl")
    return built


def fresh_install(root: Path, wheel: Path, extra: str) -> Path:
    # No pip inside: the dev environment's current pip installs into it (`pip --python`), which
    # saves bootstrapping and upgrading one per extra (the one ensurepip bundles, 23.x, can't
    # resolve OpenTelemetry's pinned pre-releases anyway).
    venv.EnvBuilder(with_pip=False).create(root)
    python = root / "bin" / "python"
    requirement = f"tracebridge[{extra}] @ {wheel.as_uri()}" if extra else f"tracebridge @ {wheel.as_uri()}"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--quiet",
            "--disable-pip-version-check",
            requirement,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return root / "bin"


EXTRAS = [
    "",
    "kafka",
    "confluent",
    "kafka-python",
    "http",
    "graphql",
    "flask",
    "django",
    "requests",
    "aiohttp",
    "collector",
    "embedded",
    "postgres",
    "eshop",
]


@pytest.mark.parametrize("extra", EXTRAS)
def test_each_extra_alone_gives_a_working_run_and_clear_messages(
    tmp_path: Path, wheel: Path, extra: str
) -> None:
    bin_dir = fresh_install(tmp_path / "venv", wheel, extra)
    python = str(bin_dir / "python")
    run = subprocess.run(
        [str(bin_dir / "tracebridge"), "run", "--", python, "-c", "import sys; print('ran', sys.prefix)"],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "OTEL_TRACES_EXPORTER": "none"},
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("ran ") and "auto-instrumentation failed" not in run.stderr, run.stderr
    collector = subprocess.run(
        [str(bin_dir / "tracebridge"), "collector", "--port", "0", "--db", str(tmp_path / "t.db"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert collector.returncode == 0  # --help needs nothing beyond the core
    demo = subprocess.run(
        [str(bin_dir / "tracebridge"), "demo", "--orders", "1"], capture_output=True, text=True, timeout=120
    )
    assert demo.returncode != 0 and "Traceback" not in demo.stderr, demo.stderr
    said = " ".join(demo.stderr.split())  # (the terminal width wraps it)
    assert "pip install 'tracebridge[" in said, said
