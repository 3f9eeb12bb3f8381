"""CPU per request of HTTP tracing — server spans (FastAPI) and client spans (httpx) — bare vs
OpenTelemetry contrib's instrumentation vs tracebridge, every traced variant exporting for real.

    python bench/http_overhead.py [--requests 3000] [--rounds 3] [--concurrency 8]

**Server**: a FastAPI app (``GET /stock/{sku}``, a small JSON answer) under uvicorn in a fresh
process per variant; a load generator in this process sends ``--requests`` requests over
``--concurrency`` keep-alive connections; the figure is the *server process's* CPU time
(user + system, from ``/proc``) per request, measured from before the first timed request to
after the server flushed its spans (``GET /flush``), so export is inside it — with the CPU of
its export helper process (a child, ``TRACEBRIDGE_EXPORT_PROCESS``), which is the service's
cost too.
**Client**: ``--requests`` httpx calls from a fresh process per variant to a bare server; the
figure is the calling process's CPU per call (and its helper's), flush included.

Variants: ``bare``; ``contrib`` — ``FastAPIInstrumentor`` / ``HTTPXClientInstrumentor`` behind the
SDK's ``BatchSpanProcessor`` and OTLP/HTTP exporter; ``tracebridge`` — ``configure()`` +
``instrument()``.  Traced variants export OTLP/HTTP protobuf to a separate receiving process
(``otlp_sink.py``).  Variants are interleaved round by round; ratios are computed within a round.
Target (issue "Tracing that costs close to nothing"): tracebridge's added CPU ≤ 0.15 x contrib's.

``--count instructions`` (``make bench-http-instructions``) counts instructions instead of CPU
seconds, because on a shared 2-core machine the seconds of one round differ from the next by
more than the figure being measured: each measured process (and its export helper) runs under
``valgrind --tool=callgrind`` twice, once with ``--requests`` timed requests and once with twice
as many, both flushed and shut down the same way; the difference over ``--requests`` is what one
request costs, start-up and shutdown cancel out, and export (the OTLP requests to the separate
receiver) is inside it.  Spans are exported in full batches (``OTEL_BSP_SCHEDULE_DELAY`` is set
beyond the run, for every variant), so ``--requests 512`` is one batch of 512 more in the longer
run: what a span costs under sustained load.  Instructions are a proxy for CPU — they do not
count cache misses or the time a thread waits for the GIL — so they show the work each variant
adds, steadily.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

from kafka_overhead import (  # one pipeline, one separate receiver, one /proc reader
    QUEUE,
    Sink,
    contrib_provider,
    process_cpu_seconds,
)

VARIANTS = ("bare", "contrib", "tracebridge")
TARGET = 0.15


def _cpu_seconds(pid: int) -> float:
    """The process's CPU and its running children's: tracebridge exports from a helper process
    (``TRACEBRIDGE_EXPORT_PROCESS``), and that CPU is the service's cost too."""
    # A child belongs to the thread that started it: the helper, to the export thread.
    children = [
        child for task in Path(f"/proc/{pid}/task").glob("*/children") for child in task.read_text().split()
    ]
    return process_cpu_seconds(pid) + sum(process_cpu_seconds(int(child)) for child in children)


def _callgrind(folder: Path) -> list[str]:
    """The prefix that runs a process (and the helper it starts) under callgrind."""
    return ["valgrind", "--tool=callgrind", "--trace-children=yes", f"--callgrind-out-file={folder}/cg.%p"]


def _instructions(folder: Path) -> int:
    """Every instruction counted in ``folder``'s callgrind files (a process and its helper),
    waiting for each to be written: a helper finishes its last export after its parent."""
    deadline = time.monotonic() + 300
    while True:
        files = list(folder.glob("cg.*"))
        totals = [re.search(r"^(?:summary|totals): (\d+)", f.read_text(), re.M) for f in files]
        if files and all(totals):
            return sum(int(found.group(1)) for found in totals if found)
        if time.monotonic() > deadline:
            raise RuntimeError(f"callgrind wrote no totals in {folder}")
        time.sleep(0.5)


def _setup(variant: str, endpoint: str, side: str):  # type: ignore[no-untyped-def]
    """Install the variant's tracing as a user would; return its flush."""
    if variant == "bare":
        return lambda: None
    if variant == "contrib":
        provider = contrib_provider(endpoint)
        if side == "client":
            from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

            HTTPXClientInstrumentor().instrument()
        return provider.force_flush
    import tracebridge

    provider = tracebridge.configure(
        service_name=f"bench-{side}", otlp_traces_endpoint=endpoint, bsp_max_queue_size=QUEUE
    )
    tracebridge.instrument(only=("httpx",) if side == "client" else ("fastapi", "starlette", "asgi"))
    return provider.force_flush


def serve(variant: str, port: int, endpoint: str) -> None:
    """The measured server (its own process)."""
    flush = _setup(variant, endpoint, "server")
    import uvicorn
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/stock/{sku}")
    async def stock(sku: str) -> dict[str, object]:
        return {"sku": sku, "available": 42}

    @app.get("/flush")
    async def flush_spans() -> dict[str, bool]:
        return {"flushed": bool(flush())}

    if variant == "contrib":
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(app)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


async def _load(base: str, requests: int, concurrency: int) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=base, limits=httpx.Limits(max_connections=concurrency)) as client:
        queue = iter(range(requests))

        async def worker() -> None:
            for number in queue:
                response = await client.get(f"/stock/SKU-{number % 50}")
                response.raise_for_status()

        await asyncio.gather(*(worker() for _ in range(concurrency)))


def _wait_up(base: str, process: subprocess.Popen[bytes], within_s: float) -> None:
    import httpx

    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        assert process.poll() is None, "the benchmark server died"
        try:
            httpx.get(f"{base}/stock/warm", timeout=within_s / 30)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError("the benchmark server did not start")


def run_server(
    variant: str,
    requests: int,
    warmup: int,
    concurrency: int,
    endpoint: str,
    env: dict[str, str],
    prefix: tuple[str, ...] = (),
) -> float:
    """One server process under load: its CPU µs per timed request (and its helper's).  With
    a ``prefix`` (callgrind) it is also shut down and waited for, so its counts get written."""
    import httpx

    from tracebridge.broker import free_port

    slow = 40 if prefix else 1  # callgrind runs Python ~40 times slower
    port = free_port()
    command = [*prefix, sys.executable, __file__, "--serve", variant, "--port", str(port)]
    process = subprocess.Popen([*command, "--endpoint", endpoint], env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_up(base, process, 30 * slow)
        asyncio.run(_load(base, warmup, concurrency))
        httpx.get(f"{base}/flush", timeout=30 * slow)
        before = _cpu_seconds(process.pid)
        asyncio.run(_load(base, requests, concurrency))
        httpx.get(f"{base}/flush", timeout=30 * slow)
        return (_cpu_seconds(process.pid) - before) / requests * 1e6
    finally:
        process.terminate()
        process.wait(10 * slow)


def client_calls(variant: str, base: str, requests: int, warmup: int, endpoint: str) -> float:
    """The measured client (its own process): CPU µs per httpx call, flush included."""
    flush = _setup(variant, endpoint, "client")
    import httpx

    with httpx.Client(base_url=base) as client:
        for number in range(warmup):
            client.get(f"/stock/SKU-{number % 50}")
        flush()
        started = _cpu_seconds(os.getpid())
        for number in range(requests):
            client.get(f"/stock/SKU-{number % 50}")
        flush()
        return (_cpu_seconds(os.getpid()) - started) / requests * 1e6


def run_client(
    variant: str,
    base: str,
    requests: int,
    warmup: int,
    endpoint: str,
    env: dict[str, str],
    prefix: tuple[str, ...] = (),
) -> float:
    """:func:`client_calls` in a fresh process."""
    command = [*prefix, sys.executable, __file__, "--call", variant, "--base", base, "--endpoint", endpoint]
    command += ["--requests", str(requests), "--warmup", str(warmup)]
    output = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    return float(json.loads(output.strip().splitlines()[-1])["cpu_us"])


def instructions_per_request(run: Any, requests: int) -> float:
    """``run(requests, prefix)`` under callgrind with ``requests`` and with twice as many timed
    requests; the difference in instructions (the process's and its helper's), per request."""
    counts = []
    for timed in (requests, 2 * requests):
        with tempfile.TemporaryDirectory() as folder:
            run(timed, prefix=tuple(_callgrind(Path(folder))))
            counts.append(_instructions(Path(folder)))
    return (counts[1] - counts[0]) / requests


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--export-process",
        choices=("inline", "helper"),
        default="inline",
        help="where tracebridge exports (TRACEBRIDGE_EXPORT_PROCESS; default: inline)",
    )
    parser.add_argument(
        "--count",
        choices=("cpu", "instructions"),
        default="cpu",
        help="CPU seconds per request (default) or callgrind instructions per request",
    )
    parser.add_argument("--warmup", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--serve", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--call", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--base", help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.endpoint)
        return
    if args.call:
        cpu_us = client_calls(args.call, args.base, args.requests, args.warmup, args.endpoint)
        print(json.dumps({"cpu_us": cpu_us}))
        return

    from tracebridge.broker import free_port

    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TRACEBRIDGE_"))}
    env["TRACEBRIDGE_EXPORT_PROCESS"] = args.export_process
    if args.count == "instructions":
        # Batches leave full (as under sustained load) or at the final flush, never on the
        # 5 s schedule: under callgrind a run lasts minutes, and each scheduled export of a
        # part-filled batch would add a whole request's instructions to one run but not the
        # other (measured: ±15 k a call between two runs of the same code at 200 calls).
        env["OTEL_BSP_SCHEDULE_DELAY"] = str(24 * 3600 * 1000)
    what = "instructions" if args.count == "instructions" else "CPU"
    unit = "instructions" if args.count == "instructions" else "µs"
    server: dict[str, list[float]] = {v: [] for v in VARIANTS}
    client: dict[str, list[float]] = {v: [] for v in VARIANTS}
    with Sink() as sink:
        target_port = free_port()
        target = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--serve",
                "bare",
                "--port",
                str(target_port),
                "--endpoint",
                sink.endpoint,
            ],
            env=env,
        )
        base = f"http://127.0.0.1:{target_port}"
        try:
            _wait_up(base, target, 30)
            warmup = max(200, args.requests // 10)
            for round_number in range(1, args.rounds + 1):
                for variant in VARIANTS:
                    serve_once = partial(
                        run_server,
                        variant,
                        warmup=warmup,
                        concurrency=args.concurrency,
                        endpoint=sink.endpoint,
                        env=env,
                    )
                    call_once = partial(
                        run_client, variant, base, warmup=warmup, endpoint=sink.endpoint, env=env
                    )
                    for side, once in ((server, serve_once), (client, call_once)):
                        if args.count == "instructions":
                            side[variant].append(instructions_per_request(once, args.requests))
                        else:
                            side[variant].append(once(args.requests))
                    print(
                        f"round {round_number} {variant:<12} "
                        f"server {server[variant][-1]:9.1f} {unit}/request  "
                        f"client {client[variant][-1]:9.1f} {unit}/call",
                        file=sys.stderr,
                        flush=True,
                    )
        finally:
            target.terminate()
            target.wait(10)
        spans = sink.received()
    print(
        f"\nHTTP: {args.requests} requests x {args.rounds} rounds, export {args.export_process}; "
        f"{'callgrind instructions' if what == 'instructions' else 'CPU µs'} per request, median; "
        f"{spans} spans exported"
    )
    print(f"{'variant':<14}{'server':>10}{'added':>10}{'client':>10}{'added':>10}")
    for variant in VARIANTS:
        s, c = statistics.median(server[variant]), statistics.median(client[variant])
        print(
            f"{variant:<14}{s:>10.1f}{s - statistics.median(server['bare']):>10.1f}"
            f"{c:>10.1f}{c - statistics.median(client['bare']):>10.1f}"
        )
    for name, side in (("server (FastAPI)", server), ("client (httpx)", client)):
        ratios = [
            (side["tracebridge"][n] - side["bare"][n]) / (side["contrib"][n] - side["bare"][n])
            for n in range(args.rounds)
            if side["contrib"][n] > side["bare"][n]
        ]
        ratio = statistics.median(ratios) if ratios else float("nan")
        verdict = "met" if ratio <= TARGET else "NOT met"
        print(
            f"{name}: tracebridge/contrib added {what} = {ratio:.2f} (per round: "
            f"{', '.join(f'{r:.2f}' for r in ratios)}; target ≤ {TARGET}: {verdict})"
        )


if __name__ == "__main__":
    main()
