"""Orders per second through the whole eshop stack, traced vs untraced, in one run.

    python bench/eshop.py [--orders 150] [--rounds 2] [--concurrency 8] [--export-process inline|helper]

Each round starts the stack twice — services under ``tracebridge run`` exporting to a real
collector, and the same services started plainly with no collector — places the same
``--orders`` orders through the gateway (same seed, ``--concurrency`` clients), and times until
every order is SHIPPED.  Completion is read from the order database directly, so polling puts
no load on the services being measured.  A short warm-up batch runs first in each stack.
Traced services export with OpenTelemetry's default batch schedule (5 s).
Target (issue "Tracing that costs close to nothing"): traced >= 0.95 x untraced.  Memory: each
service's resident set (``VmRSS``) and its peak (``VmHWM``) from ``/proc`` at the end of the
timed batch, summed over the nine services — what tracing adds, under sustained load, is the
traced sum minus the untraced one.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from tracebridge.demo import runner
from tracebridge.demo.stack import Stack


def shipped(db: Path, order_ids: list[str]) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as connection:
        marks = ",".join("?" * len(order_ids))
        row = connection.execute(
            f"SELECT count(*) FROM orders WHERE status = 'SHIPPED' AND id IN ({marks})", order_ids
        ).fetchone()
    return int(row[0])


def run_batch(stack: Stack, orders: int, concurrency: int, seed: int, timeout: float = 300) -> float:
    """Seconds from the first order placed to the last one shipped."""
    started = time.perf_counter()
    ids = asyncio.run(runner.place_orders(stack.gateway_url, orders, concurrency=concurrency, seed=seed))
    db = stack.directory / "order.db"
    deadline = time.monotonic() + timeout
    while shipped(db, ids) < len(ids):
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {shipped(db, ids)} of {len(ids)} orders shipped in {timeout:.0f}s")
        time.sleep(0.02)
    return time.perf_counter() - started


def memory_kib(stack: Stack) -> dict[str, int]:
    """Summed ``VmRSS`` and ``VmHWM`` (peak) of the services and their children — a traced
    service's export helper process (``TRACEBRIDGE_EXPORT_PROCESS``) is its memory too — in KiB."""
    totals = {"VmRSS": 0, "VmHWM": 0}
    for process in stack.children.values():
        # A child belongs to the thread that started it: the helper, to the export thread.
        tasks = Path(f"/proc/{process.pid}/task").glob("*/children")
        children = [child for task in tasks for child in task.read_text().split()]
        for pid in (process.pid, *map(int, children)):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                key, _, value = line.partition(":")
                if key in totals:
                    totals[key] += int(value.split()[0])
    return totals


def measure(
    traced: bool,
    orders: int,
    concurrency: int,
    root: Path,
    sample: float = 1.0,
    export_process: str = "inline",
) -> tuple[float, dict[str, int]]:
    directory = Path(tempfile.mkdtemp(prefix="traced-" if traced else "plain-", dir=root))
    # Traced services export on OpenTelemetry's default schedule (5 s), as in production; the
    # demo and the tests use 200 ms so traces show up at once.
    env = {"OTEL_BSP_SCHEDULE_DELAY": "5000", "TRACEBRIDGE_EXPORT_PROCESS": export_process}
    if sample < 1.0:
        env |= {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": str(sample)}
    with Stack(directory, traced=traced, extra_env=env) as stack:
        run_batch(stack, max(10, orders // 10), concurrency, seed=1)  # warm-up
        seconds = run_batch(stack, orders, concurrency, seed=2)
        memory = memory_kib(stack)
    return orders / seconds, memory


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--orders", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--sample",
        type=float,
        default=1.0,
        help="head-sampling ratio of the traced stack (default: every trace)",
    )
    parser.add_argument(
        "--export-process",
        choices=("helper", "inline"),
        default="inline",
        help="where the traced services export (TRACEBRIDGE_EXPORT_PROCESS; default: inline)",
    )
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="tracebridge-bench-eshop-"))
    ratios, traced_rates, plain_rates = [], [], []
    memory: dict[bool, list[dict[str, int]]] = {True: [], False: []}
    for number in range(1, args.rounds + 1):
        # Alternate which goes first, so drift in the machine's load doesn't favour one side.
        order = (False, True) if number % 2 else (True, False)
        rates = {}
        for traced in order:
            rates[traced], used = measure(
                traced, args.orders, args.concurrency, root, args.sample, args.export_process
            )
            memory[traced].append(used)
        traced_rates.append(rates[True])
        plain_rates.append(rates[False])
        ratios.append(rates[True] / rates[False])
        print(
            f"round {number}: untraced {rates[False]:6.1f} orders/s, traced {rates[True]:6.1f} orders/s, "
            f"ratio {ratios[-1]:.2f}",
            flush=True,
        )
    print(
        f"eshop, {args.orders} orders x {args.rounds} rounds, {args.concurrency} clients, "
        f"sampling {args.sample:g}, export {args.export_process}: "
        f"untraced {statistics.median(plain_rates):.1f} orders/s, "
        f"traced {statistics.median(traced_rates):.1f} orders/s; "
        f"traced/untraced = {statistics.median(ratios):.2f} (target >= 0.95: "
        f"{'met' if statistics.median(ratios) >= 0.95 else 'NOT met'})"
    )
    for key, label in (("VmRSS", "resident"), ("VmHWM", "peak resident")):
        plain = statistics.median(m[key] for m in memory[False]) / 1024
        traced_mib = statistics.median(m[key] for m in memory[True]) / 1024
        print(
            f"memory, nine services after {args.orders} orders: {label} untraced {plain:.0f} MiB, "
            f"traced {traced_mib:.0f} MiB — tracing adds {traced_mib - plain:.0f} MiB "
            f"({(traced_mib - plain) / 9:.1f} MiB a service)"
        )


if __name__ == "__main__":
    main()
