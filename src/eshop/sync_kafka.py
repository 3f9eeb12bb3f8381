"""Workers on the blocking Kafka clients: confluent-kafka's ``Consumer.poll()`` loop and
kafka-python's ``for record in consumer`` — what most Python teams run.

Same contract as :class:`eshop.kafka.Worker` (at-least-once, commit after success or
dead-lettering, retries by seeking back with a bounded backoff, idempotent handlers), same
:class:`~eshop.kafka.Retries`; only the client calls differ.  Like the rest of eshop, nothing
here carries trace context: tracebridge instruments both clients.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from eshop import faults
from eshop.config import Config
from eshop.events import Event, UndecodableEvent, dead_letter_topic, decode
from eshop.kafka import Retries, consumer_options, dead_letter_headers

logger = logging.getLogger("eshop.kafka")

SyncHandler = Callable[[Event], None]


@dataclass(frozen=True)
class Delivered:
    """A consumed record, whichever client read it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes | None]] | None


class SyncClient(Protocol):
    """The calls a worker makes, on one consumer and one producer of some client library."""

    def next(self, timeout_s: float) -> Delivered | None: ...
    def seek(self, record: Delivered) -> None: ...
    def commit(self, record: Delivered) -> None: ...
    def send(self, topic: str, value: bytes | None, key: bytes | None, headers: list[Any]) -> None: ...
    def ready(self) -> bool:
        """Has partitions (asked from any thread: answered without calling the client, which
        serialises calls across threads)."""
        ...

    def close(self) -> None: ...


class ConfluentClient:
    """confluent-kafka: ``Consumer.poll()`` and a ``Producer`` waited on per record."""

    def __init__(self, config: Config, group: str, topics: Sequence[str]) -> None:
        import confluent_kafka  # looked up when built: tracebridge replaces the classes first

        self._kafka = confluent_kafka
        self.consumer = confluent_kafka.Consumer(
            {
                "bootstrap.servers": config.kafka_bootstrap_servers,
                "group.id": group,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "session.timeout.ms": config.session_timeout_ms,
                "heartbeat.interval.ms": config.heartbeat_interval_ms,
                "fetch.wait.max.ms": config.fetch_max_wait_ms,
            }
        )
        self._assigned = False
        self.consumer.subscribe(list(topics), on_assign=self._on_assign, on_revoke=self._on_revoke)
        self.producer = confluent_kafka.Producer(
            {"bootstrap.servers": config.kafka_bootstrap_servers, "linger.ms": 0}
        )

    def next(self, timeout_s: float) -> Delivered | None:
        message = self.consumer.poll(timeout_s)
        if message is None:
            return None
        if message.error() is not None:
            logger.warning("consumer error: %s", message.error())
            return None
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        if topic is None or partition is None or offset is None:  # not a record
            return None
        return Delivered(
            topic,
            partition,
            offset,
            message.key(),
            message.value(),
            message.headers(),  # type: ignore[arg-type]  # a list of pairs when consumed
        )

    def seek(self, record: Delivered) -> None:
        self.consumer.seek(self._kafka.TopicPartition(record.topic, record.partition, record.offset))

    def commit(self, record: Delivered) -> None:
        offsets = [self._kafka.TopicPartition(record.topic, record.partition, record.offset + 1)]
        self.consumer.commit(offsets=offsets, asynchronous=False)

    def send(self, topic: str, value: bytes | None, key: bytes | None, headers: list[Any]) -> None:
        failures: list[Any] = []
        self.producer.produce(
            topic, value, key, headers=headers, on_delivery=lambda error, _: failures.append(error)
        )
        if self.producer.flush(30) != 0:
            raise TimeoutError(f"no delivery report from the broker for a record to {topic!r}")
        if failures and failures[0] is not None:
            raise self._kafka.KafkaException(failures[0])

    def _on_assign(self, _consumer: Any, partitions: list[Any]) -> None:
        self._assigned = bool(partitions)

    def _on_revoke(self, _consumer: Any, _partitions: list[Any]) -> None:
        self._assigned = False

    def ready(self) -> bool:
        return self._assigned

    def close(self) -> None:
        try:
            self.consumer.close()
        finally:
            self.producer.flush(10)


class KafkaPythonClient:
    """kafka-python: ``for record in consumer`` and ``KafkaProducer.send().get()``.

    One member per group: kafka-python's rebalancing with several members is flaky against
    the embedded broker (DESIGN §4)."""

    def __init__(self, config: Config, group: str, topics: Sequence[str]) -> None:
        import kafka

        self._kafka = kafka
        self.consumer = kafka.KafkaConsumer(
            *topics,
            **consumer_options(config, group),
            consumer_timeout_ms=500,  # the loop looks at its stop flag this often
        )
        self.producer = kafka.KafkaProducer(bootstrap_servers=config.kafka_bootstrap_servers, linger_ms=0)
        self._assigned = False

    def next(self, timeout_s: float) -> Delivered | None:
        try:
            record = next(self.consumer)
        except StopIteration:
            return None
        finally:
            self._assigned = bool(self.consumer.assignment())
        return Delivered(
            record.topic, record.partition, record.offset, record.key, record.value, record.headers
        )

    def seek(self, record: Delivered) -> None:
        self.consumer.seek(self._kafka.TopicPartition(record.topic, record.partition), record.offset)

    def commit(self, record: Delivered) -> None:
        position = self._kafka.TopicPartition(record.topic, record.partition)
        self.consumer.commit({position: self._kafka.OffsetAndMetadata(record.offset + 1, "", -1)})

    def send(self, topic: str, value: bytes | None, key: bytes | None, headers: list[Any]) -> None:
        self.producer.send(topic, value, key=key, headers=headers).get(30)

    def ready(self) -> bool:
        return self._assigned

    def close(self) -> None:
        try:
            self.consumer.close()
        finally:
            self.producer.close(10)


class SyncWorker:
    """A consumer group member on a blocking client: decode, handle, retry, dead-letter."""

    def __init__(
        self,
        config: Config,
        group: str,
        handlers: dict[type[Event], SyncHandler],
        client: SyncClient,
    ) -> None:
        self.config = config
        self.group = group
        self.handlers = handlers
        self.client = client
        self.retries = Retries(config)

    @property
    def ready(self) -> bool:
        return self.client.ready()

    def publish(self, topic: str, event: Event) -> None:
        self._send(topic, event.encode(), event.order_id.encode(), [])

    def run(self, stopping: threading.Event) -> None:
        try:
            while not stopping.is_set():
                record = self.client.next(0.5)
                if record is not None:
                    self.handle(record)
        finally:
            self.client.close()

    def handle(self, record: Delivered) -> None:
        try:
            event = decode(record.value)
        except UndecodableEvent as error:
            logger.error(
                "dead-lettering %s/%s@%s: %s", record.topic, record.partition, record.offset, error.reason
            )
            self._dead_letter(record, error.reason, attempts=1)
            self.client.commit(record)
            return
        handler = self.handlers.get(type(event))
        retry_in_ms: float | None = None
        if handler is not None:
            try:
                faults.apply_blocking(self.config.faults)
                handler(event)
                logger.info("handled %s for order %s", type(event).__name__, event.order_id)
            except Exception as error:
                retry_in_ms, attempts, reason = self.retries.failed(record, event, error)
                if retry_in_ms is None:
                    self._dead_letter(record, reason, attempts)
        if retry_in_ms is not None:
            self.client.seek(record)  # ends this attempt; the backoff lies between attempts
            time.sleep(retry_in_ms / 1000.0)
            return
        self.retries.done(record)
        self.client.commit(record)

    def _dead_letter(self, record: Delivered, reason: str, attempts: int) -> None:
        headers = dead_letter_headers(record, self.group, reason, attempts)
        self._send(dead_letter_topic(record.topic), record.value, record.key, headers)

    def _send(self, topic: str, value: bytes | None, key: bytes | None, headers: list[Any]) -> None:
        with faults.producing(self.config.faults):
            self.client.send(topic, value, key, headers)
