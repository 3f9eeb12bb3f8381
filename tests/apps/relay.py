"""Test app with no tracing code: read one record from IN_TOPIC, forward it to OUT_TOPIC."""

import asyncio
import os

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition


async def main() -> None:
    bootstrap = os.environ["KAFKA_BOOTSTRAP_SERVERS"]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await consumer.start()
    await producer.start()
    try:
        partition = TopicPartition(os.environ["IN_TOPIC"], 0)
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        record = await consumer.getone()
        await producer.send_and_wait(os.environ["OUT_TOPIC"], record.value)
    finally:
        await producer.stop()
        await consumer.stop()


asyncio.run(main())
