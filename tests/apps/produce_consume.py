"""Test app: produce COUNT records and consume them all back; prints how many arrived.

With PROBE=1 it also reports what the exporter dropped and how long shutdown took — a probe
for the dead-collector test, not something an application would do.
"""

import asyncio
import os
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition


async def main() -> int:
    bootstrap = os.environ["KAFKA_BOOTSTRAP_SERVERS"]
    topic = os.environ["TOPIC"]
    count = int(os.environ.get("COUNT", "200"))
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for number in range(count):
            await producer.send_and_wait(topic, str(number).encode())
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    seen = set()
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        while len(seen) < count:
            record = await consumer.getone()
            seen.add(int(record.value))
            await asyncio.sleep(0)
    finally:
        await consumer.stop()
    return len(seen)


consumed = asyncio.run(main())
print(f"consumed {consumed}", flush=True)
if os.environ.get("PROBE"):
    import tracebridge.sdk

    started = time.monotonic()
    tracebridge.sdk.shutdown()
    state = tracebridge.sdk.configured()
    print(f"dropped {tracebridge.sdk.dropped_spans()} exported {state.exporter.exported_spans}", flush=True)
    print(f"shutdown {time.monotonic() - started:.2f}", flush=True)
