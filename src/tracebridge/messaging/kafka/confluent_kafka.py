"""confluent-kafka adapter: where librdkafka's Python client keeps a record's parts.

``Producer`` and ``Consumer`` are C types: their methods can't be wrapped in place.  So
instrumenting puts subclasses in their place in the ``confluent_kafka`` module (and traced
``SerializingProducer``/``DeserializingConsumer``, whose ``super()`` calls reach our
subclasses through the MRO), before the application imports them — ``tracebridge run``
guarantees that order; a programmatic ``instrument()`` that comes too late says so in a log
line naming the modules that hold the untraced classes.

- ``produce()`` starts ``send {topic}``; the span ends in the **delivery report** (partition
  and offset from it, ERROR with the Kafka error code), so it covers the broker's
  acknowledgement.  The application's own delivery callback — per call or the ``on_delivery``
  config — still runs, after ours; ``delivery.report.only.error`` is honoured for it while we
  still see every report.  A record never reported ends its span *unacknowledged* at
  ``flush()`` (with nothing left in the queue), ``close()`` or exit — never leaked.
- ``poll()`` starts ``process {topic}`` and keeps it current until the consumer is next
  polled, consumes, commits, stores offsets, seeks, unsubscribes or closes: the handler's HTTP
  calls and produces are its children.  ``consume(n)`` gives one ``receive`` span linked to
  every record.
- ``confluent_kafka.aio`` is traced in :mod:`.confluent_aio`; the clients it wraps are marked
  *passthrough* here so a record is never traced twice.
"""

from __future__ import annotations

import atexit
import logging
import sys
import weakref
from collections.abc import Callable, Collection, Iterable
from functools import partial
from typing import Any

import confluent_kafka
from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, KafkaException
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.trace import Span

from tracebridge.messaging import scope
from tracebridge.messaging.kafka.client import client_info, group_key, spans_from_settings
from tracebridge.messaging.spans import ClientInfo, MessagingSpans, Record, sending_context

logger = logging.getLogger("tracebridge")

_INSTRUMENTS = ("confluent-kafka >= 2.0, < 3",)
_REPLACED = ("Producer", "Consumer", "SerializingProducer", "DeserializingConsumer")
_ORIGINALS: dict[str, type] = {}
_spans: MessagingSpans | None = None
_live_producers: weakref.WeakSet[TracedProducer] = weakref.WeakSet()  # ended at exit
_exit_hook_registered = False

DeliveryCallback = Callable[[Any, Any], Any]


def _config(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The configuration a client was built with, as librdkafka merges it (kwargs win)."""
    merged: dict[str, Any] = dict(args[0]) if args and isinstance(args[0], dict) else {}
    merged.update(kwargs)
    return merged


def _record(message: Any) -> Record:
    kind, timestamp = message.timestamp()
    value = message.value()
    return Record(
        topic=message.topic(),
        partition=message.partition(),
        offset=message.offset(),
        key=message.key(),
        timestamp=timestamp if kind != TIMESTAMP_NOT_AVAILABLE else None,
        headers=message.headers(),
        value=value,
        serialized_value_size=len(value) if isinstance(value, bytes) else None,
    )


def _header_list(headers: Any) -> list[tuple[str, Any]] | None:
    """confluent-kafka takes headers as a list of pairs or a dict; we work on pairs."""
    if headers is None:
        return None
    if isinstance(headers, dict):
        return list(headers.items())
    return list(headers)


class TracedProducer(confluent_kafka.Producer):
    """``confluent_kafka.Producer`` whose records carry the trace and get a send span each."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        config = _config(args, kwargs)
        # Our callback goes on every record, which would silence a configured default one;
        # so we take it (and "errors only") out of the config and apply them ourselves.
        self._tb_default: DeliveryCallback | None = config.get("on_delivery")
        self._tb_only_errors = str(config.get("delivery.report.only.error", "false")).lower() == "true"
        args = tuple(
            {k: v for k, v in arg.items() if k not in ("on_delivery", "delivery.report.only.error")}
            if index == 0 and isinstance(arg, dict)
            else arg
            for index, arg in enumerate(args)
        )
        kwargs.pop("on_delivery", None)
        kwargs.pop("delivery.report.only.error", None)
        super().__init__(*args, **kwargs)
        self._tb_info = client_info(config.get("bootstrap.servers"), config.get("client.id"), None)
        self._tb_pending: set[Span] = set()
        _live_producers.add(self)  # once, not per record: exit ends what is still pending
        self._tb_passthrough = False  # set by the asyncio wrapper, which traces for itself

    def _tb_application_callback(self, per_call: DeliveryCallback | None) -> DeliveryCallback | None:
        callback = per_call if per_call is not None else self._tb_default
        if callback is not None and self._tb_only_errors:
            return partial(_errors_only, callback)
        return callback

    def produce(
        self,
        topic: str,
        value: Any = None,
        key: Any = None,
        partition: int = -1,
        callback: DeliveryCallback | None = None,
        on_delivery: DeliveryCallback | None = None,
        timestamp: int = 0,
        headers: Any = None,
    ) -> None:
        application = self._tb_application_callback(on_delivery if on_delivery is not None else callback)
        spans = _spans
        context = None if spans is None or self._tb_passthrough else sending_context()
        if spans is None or context is None:
            # Uninstrumented, or OpenTelemetry's suppress_instrumentation(): no span and no
            # context in the record, exactly what the plain client sends.
            return super().produce(
                topic, value, key, partition, on_delivery=application, timestamp=timestamp, headers=headers
            )
        span, new_headers, new_value = spans.start_send(
            self._tb_info,
            topic,
            partition=partition if partition >= 0 else None,
            key=key,
            value=value,
            headers=_header_list(headers),
            context=context,
        )
        report = application
        if span.is_recording():
            report = partial(_delivered, self, span, application)
            self._tb_pending.add(span)
        try:
            super().produce(
                topic,
                new_value,  # type: ignore[arg-type]
                key,
                partition,
                on_delivery=report,
                timestamp=timestamp,
                headers=new_headers,  # type: ignore[arg-type]
            )
        except BaseException as error:  # BufferError (queue full), KafkaException: refused now
            self._tb_pending.discard(span)
            MessagingSpans.end_send(span, error=error, error_type=_error_name(error))
            raise

    def flush(self, *args: Any, **kwargs: Any) -> int:
        remaining: int = super().flush(*args, **kwargs)
        if remaining == 0:
            self._tb_end_pending("flush() returned and no delivery report came for the record")
        return remaining

    def close(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().close(*args, **kwargs)
        finally:
            self._tb_end_pending("the producer was closed before the record's delivery report")

    def __exit__(self, *exc: Any) -> Any:
        try:
            return super().__exit__(*exc)
        finally:
            self._tb_end_pending("the producer was closed before the record's delivery report")

    def _tb_end_pending(self, why: str) -> None:
        while self._tb_pending:
            MessagingSpans.end_unacknowledged(self._tb_pending.pop(), why)


def _errors_only(callback: DeliveryCallback, error: Any, message: Any) -> Any:
    """``delivery.report.only.error=true`` as the application asked for it."""
    return callback(error, message) if error is not None else None


def _error_name(error: BaseException) -> str | None:
    if isinstance(error, KafkaException) and error.args:
        name = getattr(error.args[0], "name", None)
        if callable(name):
            return str(name())
    return None


def _delivered(
    producer: TracedProducer, span: Span, application: DeliveryCallback | None, error: Any, message: Any
) -> Any:
    """The delivery report: end our span first, then run the application's callback (an
    exception from it propagates out of ``poll()``/``flush()`` as it would untraced)."""
    producer._tb_pending.discard(span)
    if error is not None:
        MessagingSpans.end_send(span, error=KafkaException(error), error_type=error.name())
    else:
        MessagingSpans.end_send(span, partition=message.partition(), offset=message.offset())
    if application is not None:
        return application(error, message)
    return None


def _end_all_pending() -> None:
    for producer in list(_live_producers):
        producer._tb_end_pending("the program exited before the record's delivery report")


class TracedConsumer(confluent_kafka.Consumer):
    """``confluent_kafka.Consumer`` whose records get a process span current for the handler."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        config = _config(args, kwargs)
        self._tb_info = client_info(
            config.get("bootstrap.servers"), config.get("client.id"), config.get("group.id")
        )
        self._tb_passthrough = False

    def poll(self, *args: Any, **kwargs: Any) -> Any:
        if self._tb_passthrough:
            return super().poll(*args, **kwargs)
        scope.finish(self)
        message = super().poll(*args, **kwargs)
        start_process(self, self._tb_info, message)
        return message

    def consume(self, *args: Any, **kwargs: Any) -> Any:
        if self._tb_passthrough:
            return super().consume(*args, **kwargs)
        scope.finish(self)
        messages = super().consume(*args, **kwargs)
        start_batch(self, self._tb_info, messages)
        return messages

    def commit(self, *args: Any, **kwargs: Any) -> Any:
        scope.finish(self)
        return super().commit(*args, **kwargs)

    def store_offsets(self, *args: Any, **kwargs: Any) -> Any:
        scope.finish(self)
        return super().store_offsets(*args, **kwargs)

    def seek(self, *args: Any, **kwargs: Any) -> Any:
        scope.finish(self)
        return super().seek(*args, **kwargs)

    def unsubscribe(self, *args: Any, **kwargs: Any) -> Any:
        scope.finish(self)
        return super().unsubscribe(*args, **kwargs)

    def close(self, *args: Any, **kwargs: Any) -> Any:
        scope.finish(self)
        return super().close(*args, **kwargs)

    def __exit__(self, exc_type: Any, exc: Any, traceback: Any) -> Any:
        scope.finish(self, exc)
        return super().__exit__(exc_type, exc, traceback)


def start_batch(owner: object, info: ClientInfo, messages: Iterable[Any] | None) -> None:
    """One ``receive`` span for a ``consume()`` batch, current until the owner's next call."""
    spans = _spans
    if spans is None or not messages:
        return
    records = [_record(message) for message in messages if message.error() is None]
    if records:
        span, context = spans.start_receive(info, records, group_key(owner, info))
        scope.activate(owner, span, context)


def start_process(owner: object, info: ClientInfo, message: Any) -> None:
    """A ``process`` span for one polled message, current until the owner's next call."""
    spans = _spans
    if spans is not None and message is not None and message.error() is None:
        span, context = spans.start_process(info, _record(message), group_key(owner, info))
        scope.activate(owner, span, context)


def _traced_variant(name: str, base: type, traced: type) -> type:
    """``SerializingProducer``/``DeserializingConsumer`` with our class right after them in the
    MRO, so their ``super().produce()``/``super().poll()`` reach the traced methods with the
    serialized record."""
    return type(name, (base, traced), {"__module__": __name__, "__doc__": base.__doc__})


TracedSerializingProducer = _traced_variant(
    "TracedSerializingProducer", confluent_kafka.SerializingProducer, TracedProducer
)
TracedDeserializingConsumer = _traced_variant(
    "TracedDeserializingConsumer", confluent_kafka.DeserializingConsumer, TracedConsumer
)
_TRACED: dict[str, type] = {
    "Producer": TracedProducer,
    "Consumer": TracedConsumer,
    "SerializingProducer": TracedSerializingProducer,
    "DeserializingConsumer": TracedDeserializingConsumer,
}


def _modules_holding(classes: Iterable[type]) -> list[str]:
    """``module.name`` of every application global that is one of ``classes`` (imported before
    we replaced them, so records made with it are not traced)."""
    wanted = {id(cls) for cls in classes}
    found: list[str] = []
    for module_name, module in list(sys.modules.items()):
        # (FastStream's confluent client is re-pointed by our FastStream instrumentation)
        if module is None or module_name.startswith(
            ("confluent_kafka", "tracebridge", "opentelemetry", "faststream")
        ):
            continue
        namespace = getattr(module, "__dict__", None)
        if not isinstance(namespace, dict):
            continue
        for attribute, value in list(namespace.items()):
            if id(value) in wanted and isinstance(value, type):
                found.append(f"{module_name}.{attribute}")
    return found


class ConfluentKafkaInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Traces confluent-kafka's Producer, Consumer, their (de)serializing variants and the
    asyncio clients with tracebridge's span model.

    Keyword arguments to ``instrument()``: ``tracer_provider``, ``carrier``, ``consumer_parent``
    (as for the aiokafka instrumentor).
    """

    def instrumentation_dependencies(self) -> Collection[str]:
        return _INSTRUMENTS

    def _instrument(self, **kwargs: Any) -> None:
        global _spans, _exit_hook_registered
        _spans = spans_from_settings(__name__, kwargs)
        for name in _REPLACED:
            _ORIGINALS[name] = getattr(confluent_kafka, name)
            setattr(confluent_kafka, name, _TRACED[name])
        stale = _modules_holding(_ORIGINALS.values())
        if stale:
            logger.warning(
                "tracebridge: %s imported confluent_kafka classes before instrument() ran; records "
                "sent or read through them are not traced. Instrument first (tracebridge run does) "
                "or refer to them as confluent_kafka.Producer / confluent_kafka.Consumer.",
                ", ".join(stale),
            )
        if not _exit_hook_registered:
            atexit.register(_end_all_pending)
            _exit_hook_registered = True
        from tracebridge.messaging.kafka import confluent_aio

        confluent_aio.instrument()

    def _uninstrument(self, **kwargs: Any) -> None:
        global _spans
        from tracebridge.messaging.kafka import confluent_aio

        confluent_aio.uninstrument()
        for name, original in _ORIGINALS.items():
            setattr(confluent_kafka, name, original)
        _ORIGINALS.clear()
        _end_all_pending()
        _spans = None


def active_spans() -> MessagingSpans | None:
    """The spans builder while instrumented (the asyncio wrappers share it)."""
    return _spans
