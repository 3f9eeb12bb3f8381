"""Publishing events and running a consumer group: at-least-once, retries, dead letters.

Plain aiokafka — the trace context travels because tracebridge instruments aiokafka, not
because anything here carries it.  A worker commits a record only after its handler succeeded
or the record was dead-lettered, so a crash at any point means a redelivery, never a loss;
handlers are idempotent, so a redelivery never means a duplicate effect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from eshop import faults
from eshop.config import Config
from eshop.events import Event, UndecodableEvent, dead_letter_topic, decode

logger = logging.getLogger("eshop.kafka")

# Headers a dead-letter record must not copy: the producer instrumentation writes fresh ones,
# so the DLQ send is a child of the failed processing instead of pretending to be the original.
_CONTEXT_HEADERS = frozenset({"traceparent", "tracestate", "baggage", "tracebridge-attempt", "b3"})


def dead_letter_headers(record: Any, group: str, reason: str, attempts: int) -> list[tuple[str, bytes]]:
    """The record's own headers (less its trace context) and why and where it failed."""
    headers = [(k, v) for k, v in (record.headers or ()) if k not in _CONTEXT_HEADERS]
    headers += [
        ("dlq.reason", reason[:1000].encode()),
        ("dlq.source.topic", record.topic.encode()),
        ("dlq.source.partition", str(record.partition).encode()),
        ("dlq.source.offset", str(record.offset).encode()),
        ("dlq.consumer.group", group.encode()),
        ("dlq.attempts", str(attempts).encode()),
    ]
    return headers


def consumer_options(config: Config, group: str) -> dict[str, Any]:
    """A group member's settings, in the keyword names aiokafka and kafka-python share: start
    at the earliest record, commit by hand (after the handler), the configured timings."""
    return {
        "bootstrap_servers": config.kafka_bootstrap_servers,
        "group_id": group,
        "auto_offset_reset": "earliest",
        "enable_auto_commit": False,
        "session_timeout_ms": config.session_timeout_ms,
        "heartbeat_interval_ms": config.heartbeat_interval_ms,
        "fetch_max_wait_ms": config.fetch_max_wait_ms,
    }


class Retries:
    """How often each record has failed, and what to do after a failure: retry after a
    backoff (exponential, bounded), or dead-letter once ``max_attempts`` is reached.  Shared by
    every worker, whichever Kafka client it uses."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._failures: dict[tuple[str, int, int], int] = {}

    def failed(self, record: Any, event: Event, error: Exception) -> tuple[float | None, int, str]:
        """Count the failure; return ``(retry_in_ms or None to dead-letter, attempts, reason)``."""
        place = (record.topic, record.partition, record.offset)
        attempts = self._failures.get(place, 0) + 1
        reason = f"{type(error).__name__}: {error}"
        if attempts >= self.config.max_attempts:
            logger.error(
                "dead-lettering %s for order %s after %d attempts: %s",
                type(event).__name__,
                event.order_id,
                attempts,
                reason,
                exc_info=error,
            )
            return None, attempts, reason
        self._failures[place] = attempts
        retry_in_ms = min(
            self.config.retry_backoff_ms * 2 ** (attempts - 1), self.config.retry_backoff_max_ms
        )
        # Logged with the exception: tracebridge records it on this attempt's span.
        logger.error(
            "%s for order %s failed (attempt %d of %d), retrying in %.0f ms: %s",
            type(event).__name__,
            event.order_id,
            attempts,
            self.config.max_attempts,
            retry_in_ms,
            reason,
            exc_info=error,
        )
        return retry_in_ms, attempts, reason

    def done(self, record: Any) -> None:
        self._failures.pop((record.topic, record.partition, record.offset), None)


class Publisher:
    """Sends events keyed by order id, and dead-letters records with the reason in headers."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._producer: AIOKafkaProducer | None = None

    @property
    def producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError("Publisher.start() was not awaited")
        return self._producer

    async def start(self) -> None:
        # Created here, not in __init__: aiokafka binds a client to the running event loop.
        self._producer = AIOKafkaProducer(bootstrap_servers=self.config.kafka_bootstrap_servers, linger_ms=0)
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()

    async def publish(self, topic: str, event: Event) -> None:
        await self._send(topic, event.encode(), event.order_id.encode(), [])

    async def dead_letter(self, record: Any, group: str, reason: str, attempts: int) -> None:
        headers = dead_letter_headers(record, group, reason, attempts)
        await self._send(dead_letter_topic(record.topic), record.value, record.key, headers)

    async def _send(self, topic: str, value: bytes | None, key: bytes | None, headers: list[Any]) -> None:
        with faults.producing(self.config.faults):
            await self.producer.send_and_wait(topic, value, key=key, headers=headers)


class AIOProducerPublisher:
    """Publishes events with confluent-kafka's asyncio producer (``confluent_kafka.aio``).

    That producer can't send headers, so the trace context travels in the JSON body's
    ``trace_context`` envelope — tracebridge chooses that by itself; consumers read it as
    they read headers.  The order service uses it, as a team on confluent-kafka would."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._producer: Any = None

    async def start(self) -> None:
        from confluent_kafka.aio import AIOProducer

        # batch_size=1: each event goes to the broker now, not when a batch fills or times out.
        self._producer = AIOProducer(
            {"bootstrap.servers": self.config.kafka_bootstrap_servers, "linger.ms": 0}, batch_size=1
        )

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.close()

    async def publish(self, topic: str, event: Event) -> None:
        if self._producer is None:
            raise RuntimeError("AIOProducerPublisher.start() was not awaited")
        with faults.producing(self.config.faults):
            delivered = await self._producer.produce(topic, event.encode(), event.order_id.encode())
        # Delivery reports are served by the producer's poll, which otherwise runs only on the
        # next batch or its 1 s timer: flush to have this event acknowledged now.
        await self._producer.flush()
        await delivered


Handler = Callable[[Event], Awaitable[None]]


class Worker:
    """A consumer group member that decodes, handles, retries with backoff, and dead-letters.

    A failed handler is retried by seeking back to the record (a real redelivery, so each
    attempt is its own processing in the trace), with exponential, bounded backoff; after
    ``max_attempts`` the record goes to ``{topic}.dlq``.  A record that cannot be decoded, or
    has a version nobody here understands, is dead-lettered at once: retrying cannot fix it.
    """

    def __init__(
        self,
        config: Config,
        group: str,
        topics: Sequence[str],
        handlers: dict[type[Event], Handler],
        publisher: Publisher,
    ) -> None:
        self.config = config
        self.group = group
        self.topics = tuple(topics)
        self.handlers = handlers
        self.publisher = publisher
        self.consumer = AIOKafkaConsumer(*self.topics, **consumer_options(config, group))
        self.retries = Retries(config)

    @property
    def ready(self) -> bool:
        """Joined the group and got partitions: records published from now on will be seen."""
        return bool(self.consumer.assignment())

    async def run(self) -> None:
        await self.publisher.start()
        await self.consumer.start()
        try:
            async for record in self.consumer:
                await self.handle(record)
        finally:
            with contextlib.suppress(Exception):
                await self.consumer.stop()
            await self.publisher.stop()

    async def handle(self, record: Any) -> None:
        try:
            event = decode(record.value)
        except UndecodableEvent as error:
            logger.error(
                "dead-lettering %s/%s@%s: %s", record.topic, record.partition, record.offset, error.reason
            )
            await self.publisher.dead_letter(record, self.group, error.reason, attempts=1)
            await self._commit(record)
            return
        handler = self.handlers.get(type(event))
        retry_in_ms: float | None = None
        if handler is not None:
            try:
                await faults.apply(self.config.faults)
                await handler(event)
                logger.info("handled %s for order %s", type(event).__name__, event.order_id)
            except Exception as error:
                retry_in_ms, attempts, reason = self.retries.failed(record, event, error)
                if retry_in_ms is None:
                    await self.publisher.dead_letter(record, self.group, reason, attempts)
        if retry_in_ms is not None:
            # Seek back first (that ends this attempt), then wait: the backoff lies between
            # the attempts instead of inflating the failed one.
            self.consumer.seek(TopicPartition(record.topic, record.partition), record.offset)
            await asyncio.sleep(retry_in_ms / 1000.0)
            return
        self.retries.done(record)
        await self._commit(record)

    async def _commit(self, record: Any) -> None:
        await self.consumer.commit({TopicPartition(record.topic, record.partition): record.offset + 1})
