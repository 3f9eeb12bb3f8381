"""Per-record cost of Kafka tracing: bare aiokafka vs tracebridge vs opentelemetry-instrumentation-aiokafka.

    python bench/kafka_overhead.py [--records 50000] [--size 200] [--rounds 3]

All variants run in this one invocation against one embedded broker, each in a fresh process
(the tracer provider and the instrumentation are process-global), interleaved round by round
so machine noise hits them alike; the median of the rounds is reported.  Each traced variant
uses the span pipeline a user gets by default — the SDK's batch processor for the contrib
instrumentation, ``tracebridge.configure()``'s for ours — ending in an exporter that discards.
The result is the added µs/record over bare aiokafka, and tracebridge's added cost as a ratio
of the contrib instrumentation's (target ≤ 0.5; ≤ 3 µs added when the trace isn't sampled).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid

VARIANTS = ("bare", "bare+header", "contrib", "tracebridge", "tracebridge-unsampled")
# What aiokafka itself costs to carry one traceparent header per record — a floor no
# propagating instrumentation can go below, shown so the rest can be read against it.
CONSTANT_HEADER = [("traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")]
WARMUP = 2000


def setup(variant: str) -> None:
    """Install the variant's tracing, exactly as a user would."""
    if variant in ("bare", "bare+header"):
        return
    if variant == "contrib":
        from opentelemetry import trace
        from opentelemetry.instrumentation.aiokafka import AIOKafkaInstrumentor
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        from tracebridge.exporting import CountingExporter

        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(CountingExporter()))
        trace.set_tracer_provider(provider)
        AIOKafkaInstrumentor().instrument()
        return
    import tracebridge
    from tracebridge.exporting import CountingExporter

    # Unsampled as it happens in practice: the trace was not sampled upstream, and every span
    # follows its parent's decision (the default parent-based sampler).
    sampler = "parentbased_always_off" if variant == "tracebridge-unsampled" else "parentbased_always_on"
    tracebridge.configure(exporter=CountingExporter(), service_name="bench", sampler=sampler)
    tracebridge.instrument(only=("aiokafka",))


async def measure(variant: str, bootstrap: str, topic: str, records: int, size: int) -> dict[str, float]:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    setup(variant)
    payload = os.urandom(size // 2).hex().encode()[:size]
    headers = list(CONSTANT_HEADER) if variant == "bare+header" else None
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()

    async def produce(count: int) -> float:
        started = time.perf_counter()
        pending = []
        for _ in range(count):
            pending.append(await producer.send(topic, payload, headers=headers))
            if len(pending) == 1000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        return time.perf_counter() - started

    try:
        await produce(WARMUP)
        produce_seconds = await produce(records)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        for _ in range(WARMUP):
            await consumer.getone()
        started = time.perf_counter()
        for _ in range(records):
            await consumer.getone()
        consume_seconds = time.perf_counter() - started
    finally:
        await consumer.stop()
    return {"produce_us": produce_seconds / records * 1e6, "consume_us": consume_seconds / records * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--size", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:  # one measurement, in a fresh process
        result = asyncio.run(measure(args.variant, args.bootstrap, args.topic, args.records, args.size))
        print(json.dumps(result))
        return

    from tracebridge.broker import EmbeddedBroker

    results: dict[str, list[dict[str, float]]] = {variant: [] for variant in VARIANTS}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TRACEBRIDGE_"))}
    with EmbeddedBroker() as broker:
        for round_number in range(1, args.rounds + 1):
            for variant in VARIANTS:
                topic = f"bench-{variant}-{uuid.uuid4().hex[:6]}"
                broker.create_topics([topic], partitions=1)
                command = [
                    sys.executable,
                    __file__,
                    "--variant",
                    variant,
                    "--bootstrap",
                    broker.bootstrap_servers,
                ]
                command += ["--topic", topic, "--records", str(args.records), "--size", str(args.size)]
                output = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
                results[variant].append(json.loads(output.strip().splitlines()[-1]))
                print(
                    f"round {round_number} {variant:<22} {results[variant][-1]}", file=sys.stderr, flush=True
                )

    report(results, args)


def report(results: dict[str, list[dict[str, float]]], args: argparse.Namespace) -> None:
    """Medians per variant, and ratios computed within each round (the variants of one round
    share the machine's mood) then taken as the median over rounds."""
    median = {
        variant: {key: statistics.median(run[key] for run in runs) for key in ("produce_us", "consume_us")}
        for variant, runs in results.items()
    }
    bare = median["bare"]
    print(f"\n{args.records} records of {args.size} B, one partition, median of {args.rounds} rounds")
    print("µs per record; 'added' is over bare aiokafka in the same run")
    print(f"{'variant':<24}{'produce':>10}{'added':>10}{'consume':>10}{'added':>10}")
    for variant in VARIANTS:
        m = median[variant]
        print(
            f"{variant:<24}{m['produce_us']:>10.1f}{m['produce_us'] - bare['produce_us']:>10.1f}"
            f"{m['consume_us']:>10.1f}{m['consume_us'] - bare['consume_us']:>10.1f}"
        )
    rounds = range(len(results["bare"]))
    for side in ("produce_us", "consume_us"):

        def added(variant: str, number: int, side: str = side) -> float:
            return results[variant][number][side] - results["bare"][number][side]

        ratios = [added("tracebridge", n) / added("contrib", n) for n in rounds if added("contrib", n) > 0]
        ratio = statistics.median(ratios) if ratios else float("nan")
        unsampled = statistics.median(added("tracebridge-unsampled", n) for n in rounds)
        header_floor = statistics.median(added("bare+header", n) for n in rounds)
        print(
            f"{side.removesuffix('_us')}: tracebridge/contrib added cost = {ratio:.2f} "
            f"(per round: {', '.join(f'{r:.2f}' for r in ratios)}; target ≤ 0.5, goal ≤ 0.33); "
            f"unsampled adds {unsampled:.1f} µs, of which {header_floor:.1f} µs is aiokafka carrying "
            "the header (target ≤ 3)"
        )


if __name__ == "__main__":
    main()
