"""What a messaging span is, whoever wrote it: the one place the analysis reads ``messaging.*``.

A fleet's spans come from many instrumentations that disagree on names, kinds and attributes
for the same thing (a record sent, a batch polled, a record processed): ours and the current
OpenTelemetry conventions (``send|poll|process {topic}``, ``messaging.operation.type``), the
old ones the Java agent 1.x/2.x, Go's otelsarama and kotel, the eBPF kafka-go probe and .NET's
first Confluent.Kafka instrumentation still write (``{topic} publish|receive|process``,
``messaging.destination``, ``messaging.kafka.partition``, ``messaging.kafka.message.offset``),
Spring Kafka's Micrometer observations (``messaging.source.name``), kafkajs' first
instrumentation (a span named just ``{topic}``) and OpenTracing's java-kafka-client
(``To_{topic}``/``From_{topic}``, ``message_bus.destination``).  Critical path, hops, retries,
doctor and the service map ask this module and never read those keys themselves.

Roles: ``send`` (a record leaves a producer), ``receive`` (a poll or batch delivery; a hop ends
here only when no process span handled the record) and ``process`` (a record handled).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tracebridge.analysis.model import SpanRecord

SEND = "send"
RECEIVE = "receive"
PROCESS = "process"

# messaging.operation.type (current) and messaging.operation (old) values, and name verbs.
_OPERATIONS = {
    "send": SEND,
    "publish": SEND,
    "create": SEND,
    "receive": RECEIVE,
    "poll": RECEIVE,
    "process": PROCESS,
    "deliver": PROCESS,
}
_NAME_PREFIXES = (
    ("send ", SEND),
    ("publish ", SEND),
    ("poll ", RECEIVE),
    ("receive ", RECEIVE),
    ("process ", PROCESS),
    ("To_", SEND),
    ("From_", PROCESS),
)
_NAME_SUFFIXES = ((" send", SEND), (" publish", SEND), (" receive", RECEIVE), (" process", PROCESS))
_TOPIC_KEYS = (
    "messaging.destination.name",
    "messaging.source.name",
    "messaging.destination",
    "message_bus.destination",
)
_PARTITION_KEYS = (
    "messaging.destination.partition.id",
    "messaging.kafka.destination.partition",
    "messaging.kafka.source.partition",
    "messaging.kafka.partition",
)
_OFFSET_KEYS = ("messaging.kafka.offset", "messaging.kafka.message.offset")
_GROUP_KEYS = (
    "messaging.consumer.group.name",
    "messaging.kafka.consumer.group",
    "messaging.kafka.consumer_group",
    "messaging.destination.subscription.name",
)
_KIND_ROLES = {"PRODUCER": SEND, "CONSUMER": PROCESS}


def _name_role(name: str) -> tuple[str, str] | None:
    """(role, topic) from a span name in any convention we read."""
    for prefix, role in _NAME_PREFIXES:
        if name.startswith(prefix) and len(name) > len(prefix):
            return role, name[len(prefix) :]
    for suffix, role in _NAME_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return role, name[: -len(suffix)]
    return None


def role(span: SpanRecord) -> str | None:
    """``send`` | ``receive`` | ``process`` for a messaging span, ``None`` for anything else.

    The operation attribute wins (a Java ``poll`` span is kind CLIENT, a Micrometer ``receive``
    is the listener's processing); then the kind; then, for a CLIENT span that names a
    messaging system, the name's verb.  A ``settle`` (commit/ack) span is not a hop.
    """
    attributes = span.attributes
    operation = attributes.get("messaging.operation.type") or attributes.get("messaging.operation")
    messaging = span.kind in _KIND_ROLES or "messaging.system" in attributes
    if isinstance(operation, str) and messaging:
        found = _OPERATIONS.get(operation.lower())
        if found is not None or operation.lower() == "settle":
            return found
    by_kind = _KIND_ROLES.get(span.kind)
    if by_kind is not None:
        return by_kind
    if span.kind == "CLIENT" and "messaging.system" in attributes:
        named = _name_role(span.name)
        if named is not None and named[0] == RECEIVE:
            return RECEIVE
    return None


def is_send(span: SpanRecord) -> bool:
    return role(span) == SEND


def is_consumer(span: SpanRecord) -> bool:
    """A receive or process span: where a record arrives."""
    found = role(span)
    return found in (RECEIVE, PROCESS)


def topic(span: SpanRecord) -> str | None:
    """The topic (queue, subject) a messaging span is about."""
    attributes = span.attributes
    for key in _TOPIC_KEYS:
        value = attributes.get(key)
        if isinstance(value, str) and value:
            return value
    named = _name_role(span.name)
    if named is not None:
        return named[1]
    if "messaging.system" in attributes and span.kind in _KIND_ROLES and span.name and " " not in span.name:
        return span.name  # kafkajs' first instrumentation names the span after the topic
    return None


def _integer(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def partition(span: SpanRecord) -> str | None:
    """The partition, as text (instrumentations write it as int or string)."""
    attributes = span.attributes
    keys = _PARTITION_KEYS + (("partition",) if "message_bus.destination" in attributes else ())
    for key in keys:
        value = attributes.get(key)
        if value is not None and not isinstance(value, bool) and str(value) != "":
            return str(value)
    return None


def offset(span: SpanRecord) -> int | None:
    """The record's offset, int or string in the span; otelsarama writes it as the message id."""
    attributes = span.attributes
    for key in _OFFSET_KEYS:
        found = _integer(attributes.get(key))
        if found is not None:
            return found
    if "message_bus.destination" in attributes:
        return _integer(attributes.get("offset"))
    if attributes.get("messaging.system") == "kafka":
        return _integer(attributes.get("messaging.message.id"))
    return None


def group(span: SpanRecord) -> str | None:
    """The consumer group that processed the record."""
    for key in _GROUP_KEYS:
        value = span.attributes.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def key(span: SpanRecord) -> str | None:
    """The record's key, as text."""
    value = span.attributes.get("messaging.kafka.message.key")
    return str(value) if value is not None and value != "" else None


DEAD_LETTER_SUFFIXES = (".dlq", "-dlq", "_dlq", ".DLQ")


def is_dead_letter(span: SpanRecord) -> bool:
    """A send to a dead-letter topic (``orders.dlq``, ``orders-dlq``, …)."""
    found = topic(span)
    return is_send(span) and found is not None and found.endswith(DEAD_LETTER_SUFFIXES)


def measured_queue_wait_ns(span: SpanRecord) -> int | None:
    """The queue wait the consumer measured: ours (``tracebridge.queue_wait_ms``), else the
    Java agent's ``kafka.record.queue_time_ms``; ``None`` when only timestamps can tell."""
    for key in ("tracebridge.queue_wait_ms", "kafka.record.queue_time_ms"):
        measured = span.attributes.get(key)
        if isinstance(measured, int | float) and not isinstance(measured, bool):
            return max(0, int(float(measured) * 1e6))
    return None


def attempt(span: SpanRecord) -> int:
    """Which delivery of the record this was (1 unless the instrumentation counted more)."""
    value = span.attributes.get("tracebridge.delivery.attempt", 1)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 1


def context_broken(span: SpanRecord) -> bool:
    """Whether our instrumentation found no usable context in the record."""
    return span.attributes.get("tracebridge.context.source") == "none"
