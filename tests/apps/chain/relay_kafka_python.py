"""Chain step 2: a kafka-python consumer whose loop calls another service with requests."""

import os

import requests
from kafka import KafkaConsumer, TopicPartition

consumer = KafkaConsumer(
    bootstrap_servers=os.environ["KAFKA_BOOTSTRAP_SERVERS"],
    group_id="relay",
    enable_auto_commit=False,
    consumer_timeout_ms=30_000,
)
partition = TopicPartition(os.environ["TOPIC"], 0)
consumer.assign([partition])
consumer.seek_to_beginning(partition)
for handled, record in enumerate(consumer, start=1):
    requests.post(f"{os.environ['BACK_URL']}/ship", data=record.value, timeout=10).raise_for_status()
    consumer.commit()
    if handled == int(os.environ.get("COUNT", "1")):
        break
consumer.close()
