"""aiokafka adapter: where aiokafka keeps topic, partition, offset, key, headers, timestamp.

Wraps ``AIOKafkaProducer.send`` (the span covers the broker acknowledgement, not just the
buffering), ``AIOKafkaConsumer.getone`` (which ``async for`` uses) and ``getmany``, and the
calls that mean "the handler is done": ``commit``, ``seek`` and ``stop``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Collection
from functools import partial
from typing import Any

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.instrumentation.utils import unwrap
from opentelemetry.trace import Span
from wrapt import wrap_function_wrapper

from tracebridge.messaging import scope
from tracebridge.messaging.kafka.client import client_info, group_key, spans_from_settings
from tracebridge.messaging.spans import ClientInfo, MessagingSpans, sending_context

_INSTRUMENTS = ("aiokafka >= 0.11, < 0.15",)
_CLIENT_INFO = "_tracebridge_client_info"
_WRAPPED = (
    ("AIOKafkaProducer", "send"),
    ("AIOKafkaConsumer", "getone"),
    ("AIOKafkaConsumer", "getmany"),
    ("AIOKafkaConsumer", "commit"),
    ("AIOKafkaConsumer", "stop"),
    ("AIOKafkaConsumer", "seek"),
)


class AIOKafkaInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Traces aiokafka producers and consumers with tracebridge's span model.

    Keyword arguments to ``instrument()``: ``tracer_provider``; ``carrier``
    (:class:`KafkaCarrier`) and ``consumer_parent`` (:class:`ConsumerParent`), which default to
    the active settings (``TRACEBRIDGE_KAFKA_CARRIER``, ``TRACEBRIDGE_CONSUMER_PARENT``).
    """

    spans: MessagingSpans | None = None

    def instrumentation_dependencies(self) -> Collection[str]:
        return _INSTRUMENTS

    def _instrument(self, **kwargs: Any) -> None:
        import aiokafka

        spans = spans_from_settings(__name__, kwargs)
        AIOKafkaInstrumentor.spans = spans
        wrap_function_wrapper(aiokafka.AIOKafkaProducer, "send", partial(_traced_send, spans))
        wrap_function_wrapper(aiokafka.AIOKafkaConsumer, "getone", partial(_traced_getone, spans))
        wrap_function_wrapper(aiokafka.AIOKafkaConsumer, "getmany", partial(_traced_getmany, spans))
        wrap_function_wrapper(aiokafka.AIOKafkaConsumer, "commit", scope.finishing_first)
        wrap_function_wrapper(aiokafka.AIOKafkaConsumer, "stop", scope.finishing_first)
        # Seeking (back, to retry; or away) also means "done with this record": a retry's
        # backoff then falls between the attempts' spans, not inside the failed one.
        wrap_function_wrapper(aiokafka.AIOKafkaConsumer, "seek", _seek_ends_active_span)

    def _uninstrument(self, **kwargs: Any) -> None:
        import aiokafka

        for class_name, method in _WRAPPED:
            unwrap(getattr(aiokafka, class_name), method)
        AIOKafkaInstrumentor.spans = None


def _client_info(instance: Any, client: Any, group: str | None) -> ClientInfo:
    """Computed once per producer/consumer and cached on it."""
    info: ClientInfo | None = getattr(instance, _CLIENT_INFO, None)
    if info is not None:
        return info
    info = client_info(
        getattr(client, "_bootstrap_servers", None), getattr(client, "_client_id", None), group
    )
    with contextlib.suppress(AttributeError):  # a client class with __slots__: just don't cache
        setattr(instance, _CLIENT_INFO, info)
    return info


async def _traced_send(
    spans: MessagingSpans, wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> asyncio.Future[Any]:
    context = sending_context()
    if context is None:
        # OpenTelemetry's standard off switch (``suppress_instrumentation()``): no span, and no
        # context written into the record — exactly what an uninstrumented producer sends.
        return await wrapped(*args, **kwargs)  # type: ignore[no-any-return]
    topic, value, key, partition, timestamp_ms, headers = _bind_send(*args, **kwargs)
    span, headers, value = spans.start_send(
        _client_info(instance, instance.client, None),
        topic,
        partition=partition,
        key=key,
        value=value,
        headers=headers,
        context=context,
    )
    try:
        future: asyncio.Future[Any] = await wrapped(topic, value, key, partition, timestamp_ms, headers)
    except BaseException as error:
        MessagingSpans.end_send(span, error=error)
        raise
    if span.is_recording():
        future.add_done_callback(partial(_on_acknowledged, span))
    return future


def _bind_send(
    topic: str,
    value: Any = None,
    key: Any = None,
    partition: int | None = None,
    timestamp_ms: int | None = None,
    headers: Any = None,
) -> tuple[str, Any, Any, int | None, int | None, Any]:
    return topic, value, key, partition, timestamp_ms, headers


def _on_acknowledged(span: Span, future: asyncio.Future[Any]) -> None:
    if future.cancelled():
        MessagingSpans.end_send(span, error=asyncio.CancelledError("send cancelled before acknowledgement"))
        return
    error = future.exception()
    if error is not None:
        MessagingSpans.end_send(span, error=error)
        return
    metadata = future.result()
    MessagingSpans.end_send(
        span, partition=getattr(metadata, "partition", None), offset=getattr(metadata, "offset", None)
    )


def _consumer_info(instance: Any) -> ClientInfo:
    info: ClientInfo | None = getattr(instance, _CLIENT_INFO, None)
    if info is not None:
        return info
    return _client_info(instance, instance._client, getattr(instance, "_group_id", None))


async def _traced_getone(
    spans: MessagingSpans, wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    scope.finish(instance)
    record = await wrapped(*args, **kwargs)
    client = _consumer_info(instance)
    span, context = spans.start_process(client, record, group_key(instance, client))
    scope.activate(instance, span, context)
    return record


async def _traced_getmany(
    spans: MessagingSpans, wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    scope.finish(instance)
    batches = await wrapped(*args, **kwargs)
    if batches:
        client = _consumer_info(instance)
        records = [record for batch in batches.values() for record in batch]
        span, context = spans.start_receive(client, records, group_key(instance, client))
        scope.activate(instance, span, context)
    return batches


def _seek_ends_active_span(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    scope.finish(instance)
    return wrapped(*args, **kwargs)
