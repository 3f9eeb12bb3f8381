"""What every Kafka adapter shares: the spans builder from settings, the client's identity,
the consumer-group key for delivery counting, and where a record's timestamp says it was made.

Each client library keeps these in a different place (aiokafka in private attributes,
confluent-kafka and kafka-python in a config dict); the adapters read their own place and
hand the values here, so a span never depends on which client sent or read the record.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry import trace

from tracebridge.config import ConsumerParent, KafkaCarrier, Settings
from tracebridge.messaging.delivery import DeliveryTracker
from tracebridge.messaging.spans import ClientInfo, MessagingSpans
from tracebridge.version import SCHEMA_URL, __version__


def spans_from_settings(module: str, options: Mapping[str, Any]) -> MessagingSpans:
    """The :class:`MessagingSpans` an instrumentor's ``instrument(**options)`` asks for.

    ``tracer_provider``, ``carrier`` and ``consumer_parent`` come from ``options`` when given,
    else from the active settings (``TRACEBRIDGE_KAFKA_CARRIER``, ``TRACEBRIDGE_CONSUMER_PARENT``).
    """
    from tracebridge.sdk import configured

    state = configured()
    settings = state.settings if state is not None else Settings.from_env()
    tracer = trace.get_tracer(
        module, __version__, tracer_provider=options.get("tracer_provider"), schema_url=SCHEMA_URL
    )
    return MessagingSpans(
        tracer,
        carrier=KafkaCarrier(options.get("carrier", settings.kafka_carrier)),
        consumer_parent=ConsumerParent(options.get("consumer_parent", settings.consumer_parent)),
        deliveries=DeliveryTracker(),
    )


def first_server(servers: object) -> tuple[str | None, int | None]:
    """``server.address`` and ``server.port`` of the first bootstrap server (a
    comma-separated string or a list of ``host[:port]``); Kafka's default port when none."""
    if isinstance(servers, str):
        first: object = servers
    elif isinstance(servers, list | tuple) and servers:
        first = servers[0]
    else:
        return None, None
    if not isinstance(first, str) or not first.strip():
        return None, None
    first = first.split(",")[0].strip()
    host, sep, port = first.rpartition(":")
    if not sep:
        return first, 9092
    host = host.strip("[]")
    return (host or None), (int(port) if port.isdigit() else None)


def client_info(servers: object, client_id: object, group: object, system: str = "kafka") -> ClientInfo:
    """A :class:`ClientInfo` from the raw config values a client was built with."""
    address, port = first_server(servers)
    return ClientInfo(
        system=system,
        client_id=client_id if isinstance(client_id, str) and client_id else None,
        server_address=address,
        server_port=port,
        consumer_group=group if isinstance(group, str) and group else None,
    )


def group_key(consumer: object, client: ClientInfo) -> object:
    """Redeliveries are counted per consumer group; without a group every consumer reads on
    its own, so per consumer."""
    return client.consumer_group if client.consumer_group is not None else id(consumer)
