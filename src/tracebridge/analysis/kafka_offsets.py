"""Asking a Kafka broker how far each consumer group has got (:class:`pending.Offsets`).

The admin API answers the two offset questions — a group's committed offsets, a partition's end
offset — in one round trip each; the time a record was written is read by fetching that one
record with a consumer that belongs to no group and commits nothing, so asking never moves
anyone's position.  librdkafka's own log lines go to the ``tracebridge.kafka`` logger, not to
the terminal, and every failure becomes :class:`OffsetsUnavailable` with the broker named.
"""

from __future__ import annotations

import importlib
import logging
import uuid
from collections.abc import Sequence
from typing import Any

from tracebridge.analysis.pending import OffsetsUnavailable

_LOGGER = logging.getLogger("tracebridge.kafka")


def _client_library() -> Any:
    try:
        import confluent_kafka
    except ImportError as error:
        raise OffsetsUnavailable(
            "asking the broker needs confluent-kafka: pip install 'tracebridge[confluent]'"
        ) from error
    return confluent_kafka


class KafkaOffsets:
    """:class:`tracebridge.analysis.pending.Offsets` from a Kafka-protocol broker."""

    def __init__(self, bootstrap_servers: str, timeout_s: float = 5.0) -> None:
        if not bootstrap_servers.strip():
            raise ValueError("no Kafka bootstrap servers given")
        self.bootstrap_servers = bootstrap_servers
        self.timeout_s = timeout_s
        self._kafka = _client_library()
        self._admin_api: Any = importlib.import_module("confluent_kafka.admin")
        self._admin = self._admin_api.AdminClient(self._config())

    def _config(self) -> dict[str, Any]:
        return {
            "bootstrap.servers": self.bootstrap_servers,
            "socket.timeout.ms": int(self.timeout_s * 1000),
            "logger": _LOGGER,
        }

    def _failed(self, what: str, error: BaseException) -> OffsetsUnavailable:
        return OffsetsUnavailable(f"broker {self.bootstrap_servers} did not answer {what}: {error}")

    def committed(self, group: str, topic: str, partitions: Sequence[int]) -> dict[int, int | None]:
        kafka = self._kafka
        request = kafka.ConsumerGroupTopicPartitions(
            group, [kafka.TopicPartition(topic, partition) for partition in partitions]
        )
        try:
            futures = self._admin.list_consumer_group_offsets([request], request_timeout=self.timeout_s)
            answer = futures[group].result(timeout=self.timeout_s)
        except Exception as error:
            raise self._failed(f"for group {group!r}", error) from error
        found: dict[int, int | None] = {}
        for item in answer.topic_partitions:
            if item.topic == topic:
                found[item.partition] = item.offset if item.offset >= 0 else None
        return found

    def end_offsets(self, topic: str, partitions: Sequence[int]) -> dict[int, int]:
        """Kafka's high watermark of each partition.  (Tansu, the embedded broker, reports the
        last batch's base offset + 1, so after a batch of several records it under-counts the
        lag; Kafka counts every record.)"""
        latest = self._admin_api.OffsetSpec.latest()
        keys = {partition: self._kafka.TopicPartition(topic, partition) for partition in partitions}
        try:
            futures = self._admin.list_offsets(
                {key: latest for key in keys.values()}, request_timeout=self.timeout_s
            )
            answers = {number: futures[key].result(timeout=self.timeout_s) for number, key in keys.items()}
        except Exception as error:
            raise self._failed(f"for the end of {topic}", error) from error
        return {partition: answer.offset for partition, answer in answers.items()}

    def timestamp_ms(self, topic: str, partition: int, offset: int) -> int | None:
        kafka = self._kafka
        consumer = kafka.Consumer(
            {
                **self._config(),
                "group.id": f"tracebridge-probe-{uuid.uuid4().hex[:8]}",  # never joins or commits
                "enable.auto.commit": False,
                "enable.partition.eof": True,
            }
        )
        try:
            consumer.assign([kafka.TopicPartition(topic, partition, offset)])
            message = consumer.poll(self.timeout_s)
        except Exception as error:
            raise self._failed(f"a fetch of {topic}/{partition}@{offset}", error) from error
        finally:
            consumer.close()
        if message is None or message.error() is not None or message.offset() != offset:
            return None
        kind, timestamp = message.timestamp()
        return int(timestamp) if kind != kafka.TIMESTAMP_NOT_AVAILABLE and timestamp >= 0 else None
