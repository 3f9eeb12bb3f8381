"""Test app: produce COUNT records with confluent-kafka's Producer, then flush."""

import os

from confluent_kafka import Producer

producer = Producer({"bootstrap.servers": os.environ["KAFKA_BOOTSTRAP_SERVERS"], "linger.ms": 0})
for number in range(int(os.environ.get("COUNT", "3"))):
    producer.produce(os.environ["TOPIC"], str(number).encode())
producer.flush(10)
