"""confluent-kafka's asyncio clients (``confluent_kafka.aio``, 2.13+): the trace context
survives their thread pool.

``AIOProducer``/``AIOConsumer`` run the C client's calls on worker threads, where the caller's
context is gone, and ``AIOProducer`` batches records and sends them later from a timer.  So
the spans are made here, in the caller's task, around the asyncio methods; the C clients
inside are marked passthrough so nothing is traced twice.

``AIOProducer.produce`` refuses headers, so the context travels in the JSON envelope whatever
``TRACEBRIDGE_KAFKA_CARRIER`` says; the send span records it in
``tracebridge.context.carrier``.  A record that can't hold an envelope (not a JSON object) is
sent untouched — the business message matters more than its trace — with one warning per
topic, and its span says ``tracebridge.context.carrier=none``.
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from typing import Any

from opentelemetry.instrumentation.utils import unwrap
from opentelemetry.trace import Span
from wrapt import wrap_function_wrapper

from tracebridge.config import KafkaCarrier
from tracebridge.messaging import scope
from tracebridge.messaging.kafka import confluent_kafka as sync
from tracebridge.messaging.spans import ClientInfo, MessagingSpans, sending_context

logger = logging.getLogger("tracebridge")

CARRIER_ATTRIBUTE = "tracebridge.context.carrier"
_ENDING = ("commit", "seek", "close", "unsubscribe", "store_offsets")
_warned_topics: set[str] = set()
_wrapped: list[tuple[type, str]] = []


def _info(instance: Any, inner: str) -> ClientInfo:
    info: ClientInfo | None = getattr(getattr(instance, inner, None), "_tb_info", None)
    return info if info is not None else ClientInfo(system="kafka")


def _passthrough_inner(inner: str, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    result = wrapped(*args, **kwargs)
    client = getattr(instance, inner, None)
    if client is not None and hasattr(client, "_tb_passthrough"):
        client._tb_passthrough = True
    return result


async def _produce(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    spans = sync.active_spans()
    context = sending_context()
    if spans is None or context is None or "headers" in kwargs:
        return await wrapped(*args, **kwargs)  # (headers: the client's own error, unchanged)
    topic, value, key, rest, options = _bind_produce(*args, **kwargs)
    span, headers, new_value = spans.start_send(
        _info(instance, "_producer"),
        topic,
        partition=kwargs.get("partition"),
        key=key,
        value=value,
        headers=None,
        carrier=KafkaCarrier.ENVELOPE,
        context=context,
    )
    if headers:  # no room for an envelope: send the record as it is
        new_value = value
        carrier = "none"
        if topic not in _warned_topics:
            _warned_topics.add(topic)
            logger.warning(
                "tracebridge: AIOProducer can't send headers and records to %r are not JSON objects, "
                "so they carry no trace context; consumers will start new traces",
                topic,
            )
    else:
        carrier = "envelope"
    if span.is_recording():
        span.set_attribute(CARRIER_ATTRIBUTE, carrier)
    try:
        future: asyncio.Future[Any] = await wrapped(topic, new_value, key, *rest, **options)
    except BaseException as error:
        MessagingSpans.end_send(span, error=error)
        raise
    if span.is_recording():
        future.add_done_callback(partial(_acknowledged, span))
    return future


def _bind_produce(
    topic: str, value: Any = None, key: Any = None, *rest: Any, **options: Any
) -> tuple[str, Any, Any, tuple[Any, ...], dict[str, Any]]:
    return topic, value, key, rest, options


def _acknowledged(span: Span, future: asyncio.Future[Any]) -> None:
    if future.cancelled():
        MessagingSpans.end_send(span, error=asyncio.CancelledError("produce cancelled before delivery"))
        return
    error = future.exception()
    if error is not None:
        MessagingSpans.end_send(span, error=error, error_type=sync._error_name(error))
        return
    message = future.result()
    MessagingSpans.end_send(span, partition=_call(message, "partition"), offset=_call(message, "offset"))


def _call(message: Any, name: str) -> Any:
    method = getattr(message, name, None)
    return method() if callable(method) else None


def wrap_async_consumer(
    cls: type,
    inner: str,
    *,
    created_by: str,
    poll: str,
    batch: str,
    ending: tuple[str, ...],
    registry: list[tuple[type, str]],
) -> None:
    """Trace an asyncio wrapper ``cls`` around a confluent ``Consumer`` kept in ``inner``: the
        C consumer, made in ``created_by``, becomes passthrough; ``poll`` starts a process span and
        ``batch`` a receive span in the caller's task; each ``ending`` method ends it.  (Used for
        ``AIOConsumer`` and for FastStream's confluent consumer, which have the same shape.)  What
    it wraps is added to ``registry``, for :func:`unwrap_all`."""

    async def polled(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        scope.finish(instance)
        message = await wrapped(*args, **kwargs)
        sync.start_process(instance, _info(instance, inner), message)
        return message

    async def batched(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        scope.finish(instance)
        messages = await wrapped(*args, **kwargs)
        sync.start_batch(instance, _info(instance, inner), messages)
        return messages

    _wrap(cls, created_by, partial(_passthrough_inner, inner), registry)
    _wrap(cls, poll, polled, registry)
    _wrap(cls, batch, batched, registry)
    for name in ending:
        _wrap(cls, name, scope.finishing_first, registry)


def _wrap(cls: type, name: str, wrapper: Any, registry: list[tuple[type, str]]) -> None:
    wrap_function_wrapper(cls, name, wrapper)
    registry.append((cls, name))


def unwrap_all(registry: list[tuple[type, str]]) -> None:
    """Undo every wrapper in ``registry``, newest first."""
    while registry:
        cls, name = registry.pop()
        unwrap(cls, name)


def instrument() -> None:
    """Wrap the asyncio clients, if this confluent-kafka has them."""
    try:
        from confluent_kafka.aio import AIOConsumer, AIOProducer
    except ImportError:  # before 2.13
        return
    _wrap(AIOProducer, "__init__", partial(_passthrough_inner, "_producer"), _wrapped)
    _wrap(AIOProducer, "produce", _produce, _wrapped)
    wrap_async_consumer(
        AIOConsumer,
        "_consumer",
        created_by="__init__",
        poll="poll",
        batch="consume",
        ending=_ENDING,
        registry=_wrapped,
    )


def uninstrument() -> None:
    unwrap_all(_wrapped)
