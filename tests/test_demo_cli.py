"""`tracebridge demo`, `up` and `down` as a user runs them: real processes end to end, the
story on screen, and no process left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx


def eshop_processes() -> list[int]:
    """Processes running an eshop service (their command line names the module)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(part.startswith(b"eshop.") for part in command) and b"-m" in command:
            found.append(int(entry.name))
    return found


def tracebridge(
    *args: str, timeout: float = 180, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TRACEBRIDGE_"))}
    env["COLUMNS"] = "160"
    return subprocess.run(
        [sys.executable, "-m", "tracebridge", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=cwd,
    )


def test_demo_tells_the_whole_story_and_leaves_nothing_running(tmp_path: Path) -> None:
    assert eshop_processes() == []
    result = tracebridge(
        "demo",
        "--orders",
        "3",
        "--db",
        str(tmp_path / "traces.db"),
        "--logs",
        str(tmp_path / "logs"),
        "--slow",
        "logistics-worker=400",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "broker, collector and 9 services up" in out
    assert "3 shipped, 0 cancelled" in out
    assert "one trace of" in out and "across 9 services" in out
    # the slowed worker is the verdict itself (the waterfall names every service anyway)
    verdicts = [line for line in out.splitlines() if line.startswith("verdict")]
    assert verdicts and "logistics-worker" in verdicts[0], verdicts
    assert "web UI: run tracebridge collector --db" in out and "/trace/" in out
    logs = {path.stem for path in (tmp_path / "logs").glob("*.log")}
    assert {"gateway", "order", "notification-worker", "collector"} <= logs
    assert eshop_processes() == []


def test_demo_rejects_an_unknown_service_before_starting_anything(tmp_path: Path) -> None:
    result = tracebridge("demo", "--slow", "shipping=100", "--logs", str(tmp_path / "logs"))
    assert result.returncode == 2
    assert "unknown service 'shipping'" in result.stderr
    assert not (tmp_path / "logs").exists()


def test_up_leaves_the_stack_running_and_down_stops_all_of_it(tmp_path: Path) -> None:
    state = tmp_path / "stack"
    up = tracebridge("up", "--dir", str(state))
    assert up.returncode == 0, up.stdout + up.stderr
    info = json.loads((state / "stack.json").read_text())
    assert f"gateway   {info['gateway']}/graphql" in up.stdout
    try:
        assert httpx.get(f"{info['gateway']}/health", timeout=5).status_code == 200
        assert httpx.get(f"{info['collector']}/api/health", timeout=5).status_code == 200
        assert len(eshop_processes()) == 9
        again = tracebridge("up", "--dir", str(state))
        assert again.returncode == 0 and "already running" in again.stdout
    finally:
        down = tracebridge("down", "--dir", str(state))
    assert down.returncode == 0 and "stopped" in down.stdout
    assert not (state / "stack.json").exists()
    deadline = time.monotonic() + 10
    while eshop_processes() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert eshop_processes() == []
    assert {path.stem for path in state.glob("*.log")} >= {"gateway", "order", "supervisor", "collector"}


def test_up_starts_fresh_and_the_cli_reads_the_running_stacks_store(tmp_path: Path) -> None:
    """`up` in a folder: `trace`/`doctor` there read that stack's store; a second `up` starts
    with empty databases and an empty store, as the in-memory broker starts with empty topics."""
    import asyncio

    from tracebridge.demo import runner

    assert tracebridge("up", cwd=tmp_path).returncode == 0
    try:
        info = json.loads((tmp_path / ".tracebridge" / "stack.json").read_text())
        (order_id,) = asyncio.run(runner.place_orders(info["gateway"], 1))
        asyncio.run(runner.wait_final(info["gateway"], [order_id], timeout=60))
        deadline = time.monotonic() + 30
        while (found := tracebridge("diagnose", "--order", order_id, "--json", cwd=tmp_path)).returncode != 0:
            assert time.monotonic() < deadline, found.stderr
            time.sleep(0.5)
        assert "reading the running stack's store" in found.stderr
        assert json.loads(found.stdout)["trace_id"]
    finally:
        assert tracebridge("down", cwd=tmp_path).returncode == 0
    elsewhere = tracebridge(
        "diagnose", "--order", order_id, "--source", str(tmp_path / "none.db"), cwd=tmp_path
    )
    assert elsewhere.returncode == 1  # no stack running: the default store again, not the stack's
    assert tracebridge("up", cwd=tmp_path).returncode == 0
    try:
        info = json.loads((tmp_path / ".tracebridge" / "stack.json").read_text())
        query = {"query": "query($id: ID!) { order(id: $id) { id } }", "variables": {"id": order_id}}
        answer = httpx.post(f"{info['gateway']}/graphql", json=query, timeout=10)
        assert answer.json().get("data") == {"order": None}, (answer.status_code, answer.text)
        again = tracebridge("diagnose", "--order", order_id, cwd=tmp_path)
        assert again.returncode == 1 and f"no trace has order.id={order_id}" in again.stderr
    finally:
        assert tracebridge("down", cwd=tmp_path).returncode == 0
    assert "cleared the previous run" in (tmp_path / ".tracebridge" / "supervisor.log").read_text()


def test_demo_shows_an_order_stuck_behind_a_stopped_consumer_then_finishing(tmp_path: Path) -> None:
    result = tracebridge(
        "demo",
        "--orders",
        "1",
        "--db",
        str(tmp_path / "traces.db"),
        "--logs",
        str(tmp_path / "logs"),
        "--stuck-behind",
        "logistics-worker",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = " ".join(result.stdout.split())  # the terminal wraps long answers
    # the first order's record on `inventory` was offset 0; the stuck one's is 1, next for the group
    assert (
        "verdict in flight: waiting in `inventory` partition 0 (offset 1) for group `logistics` "
        "(logistics-worker): 1 record behind, oldest unprocessed "
    ) in out
    assert "already processed by `order-status`" in out
    assert "logistics-worker resumed: order " in out and " SHIPPED — " in out
    assert eshop_processes() == []


def test_demo_stuck_behind_must_name_a_consumer(tmp_path: Path) -> None:
    result = tracebridge("demo", "--stuck-behind", "billing", "--db", str(tmp_path / "traces.db"))
    assert result.returncode == 2
    said = " ".join(result.stderr.split())
    assert "not a consumer; choose one of inventory-worker, logistics-worker" in said
    assert eshop_processes() == []
