"""Chain step 4: a confluent-kafka consumer reading a batch with consume()."""

import os
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

consumer = Consumer(
    {
        "bootstrap.servers": os.environ["KAFKA_BOOTSTRAP_SERVERS"],
        "group.id": "batch",
        "enable.auto.commit": False,
    }
)
consumer.assign([TopicPartition(os.environ["TOPIC"], 0, OFFSET_BEGINNING)])
wanted, seen = int(os.environ.get("COUNT", "1")), 0
deadline = time.monotonic() + 30
while seen < wanted and time.monotonic() < deadline:
    seen += len([m for m in consumer.consume(wanted - seen, 1.0) if m.error() is None])
consumer.commit(asynchronous=False)
consumer.close()
print(seen)
