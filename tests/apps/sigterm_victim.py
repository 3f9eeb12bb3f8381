"""Test app: produce a few records, say so, then idle until killed — default SIGTERM handling,
as most programs have."""

import asyncio
import os
import time

from aiokafka import AIOKafkaProducer


async def produce() -> None:
    producer = AIOKafkaProducer(bootstrap_servers=os.environ["KAFKA_BOOTSTRAP_SERVERS"])
    await producer.start()
    try:
        for number in range(5):
            await producer.send_and_wait(os.environ["TOPIC"], str(number).encode())
    finally:
        await producer.stop()


asyncio.run(produce())
print("produced", flush=True)
time.sleep(60)
