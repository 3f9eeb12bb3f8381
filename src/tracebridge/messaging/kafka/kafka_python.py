"""kafka-python (and kafka-python-ng) adapter: where their producer and consumer keep a
record's parts.

- ``KafkaProducer.send`` starts ``send {topic}``; the span ends with the returned future's
  success (partition, offset) or failure, so it covers the broker's acknowledgement.
- ``for record in consumer`` (``__next__``) starts ``process {topic}`` and keeps it current
  until the loop asks for the next record, or the consumer commits, seeks, unsubscribes or
  closes.  ``poll()`` — the batch API — gives one ``receive`` span linked to every record;
  the ``poll()`` that iteration makes inside ``__next__`` is not a batch of the application's.
- ``ConsumerRecord`` has exactly the fields the broker-neutral code reads, so records are
  handed over as they are.
"""

from __future__ import annotations

from collections.abc import Collection
from functools import partial
from importlib import metadata
from typing import Any

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.instrumentation.utils import unwrap
from opentelemetry.trace import Span
from wrapt import wrap_function_wrapper

from tracebridge.messaging import scope
from tracebridge.messaging.kafka.client import client_info, group_key, spans_from_settings
from tracebridge.messaging.spans import ClientInfo, MessagingSpans, sending_context

_DISTRIBUTIONS = ("kafka-python", "kafka-python-ng")
_CLIENT_INFO = "_tracebridge_client_info"
_ITERATING = "_tracebridge_iterating"
_ENDING = ("commit", "commit_async", "seek", "seek_to_beginning", "seek_to_end", "unsubscribe", "close")


def _installed_distribution() -> str:
    for name in _DISTRIBUTIONS:
        try:
            metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        return name
    return _DISTRIBUTIONS[0]


def _info(instance: Any, consumer: bool) -> ClientInfo:
    """Computed once per producer/consumer from its config, and cached on it."""
    info: ClientInfo | None = instance.__dict__.get(_CLIENT_INFO)
    if info is None:
        config = getattr(instance, "config", None) or {}
        info = client_info(
            config.get("bootstrap_servers"),
            config.get("client_id"),
            config.get("group_id") if consumer else None,
        )
        instance.__dict__[_CLIENT_INFO] = info
    return info


def _traced_send(
    spans: MessagingSpans, wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    context = sending_context()
    if context is None:
        return wrapped(*args, **kwargs)
    topic, value, key, headers, partition, timestamp_ms = _bind_send(*args, **kwargs)
    span, headers, value = spans.start_send(
        _info(instance, consumer=False),
        topic,
        partition=partition,
        key=key,
        value=value,
        headers=headers,
        context=context,
    )
    try:
        future = wrapped(topic, value, key, headers, partition, timestamp_ms)
    except BaseException as error:
        MessagingSpans.end_send(span, error=error)
        raise
    if span.is_recording():
        future.add_callback(partial(_acknowledged, span))
        future.add_errback(partial(_refused, span))
    return future


def _bind_send(
    topic: str,
    value: Any = None,
    key: Any = None,
    headers: Any = None,
    partition: int | None = None,
    timestamp_ms: int | None = None,
) -> tuple[str, Any, Any, Any, int | None, int | None]:
    return topic, value, key, headers, partition, timestamp_ms


def _acknowledged(span: Span, metadata: Any) -> None:
    MessagingSpans.end_send(
        span, partition=getattr(metadata, "partition", None), offset=getattr(metadata, "offset", None)
    )


def _refused(span: Span, error: BaseException) -> None:
    MessagingSpans.end_send(span, error=error)


def _traced_next(
    spans: MessagingSpans, wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    scope.finish(instance)
    instance.__dict__[_ITERATING] = True
    try:
        record = wrapped(*args, **kwargs)
    finally:
        instance.__dict__[_ITERATING] = False
    client = _info(instance, consumer=True)
    span, context = spans.start_process(client, record, group_key(instance, client))
    scope.activate(instance, span, context)
    return record


def _traced_poll(
    spans: MessagingSpans, wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    if instance.__dict__.get(_ITERATING):
        return wrapped(*args, **kwargs)
    scope.finish(instance)
    batches = wrapped(*args, **kwargs)
    if batches:
        client = _info(instance, consumer=True)
        records = [record for batch in batches.values() for record in batch]
        span, context = spans.start_receive(client, records, group_key(instance, client))
        scope.activate(instance, span, context)
    return batches


def _ends_active_span(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if not instance.__dict__.get(_ITERATING):  # iteration's own commits and seeks
        scope.finish(instance)
    return wrapped(*args, **kwargs)


class KafkaPythonInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Traces kafka-python's (or kafka-python-ng's) ``KafkaProducer`` and ``KafkaConsumer``
    with tracebridge's span model.

    Keyword arguments to ``instrument()``: ``tracer_provider``, ``carrier``, ``consumer_parent``
    (as for the aiokafka instrumentor).
    """

    def instrumentation_dependencies(self) -> Collection[str]:
        return (f"{_installed_distribution()} >= 2.0",)

    def _instrument(self, **kwargs: Any) -> None:
        import kafka

        spans = spans_from_settings(__name__, kwargs)
        wrap_function_wrapper(kafka.KafkaProducer, "send", partial(_traced_send, spans))
        wrap_function_wrapper(kafka.KafkaConsumer, "__next__", partial(_traced_next, spans))
        wrap_function_wrapper(kafka.KafkaConsumer, "poll", partial(_traced_poll, spans))
        for method in _ENDING:
            if hasattr(kafka.KafkaConsumer, method):
                wrap_function_wrapper(kafka.KafkaConsumer, method, _ends_active_span)

    def _uninstrument(self, **kwargs: Any) -> None:
        import kafka

        unwrap(kafka.KafkaProducer, "send")
        for method in ("__next__", "poll", *_ENDING):
            unwrap(kafka.KafkaConsumer, method)
