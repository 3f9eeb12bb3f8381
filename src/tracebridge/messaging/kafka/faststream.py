"""FastStream on Kafka (its aiokafka and confluent brokers): one correct trace, with or without
FastStream's own ``KafkaTelemetryMiddleware``.

FastStream sends and receives through the clients we already trace, so what is left is:

- its **confluent** consumer polls on a worker thread (``run_in_executor``), where a process
  span would be current for nobody; its asyncio ``getone``/``getmany`` are wrapped like
  ``AIOConsumer``'s, so the span is current in the task that runs the handler;
- its **TelemetryMiddleware** would make a second layer of spans for the same records (a
  ``create`` and a ``publish`` PRODUCER span per send, a ``process`` CONSUMER span next to
  ours), and every hop would count twice.  Under tracebridge the middleware's tracing scopes
  pass the message straight on: the record keeps exactly one send and one process span, ours.
  Its metrics, recorded in the same scopes, go with it (FastStream's Prometheus middleware
  still works).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Collection
from typing import Any

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from wrapt import wrap_function_wrapper

from tracebridge.messaging.kafka import confluent_aio

logger = logging.getLogger("tracebridge")

_SCOPES = ("publish_scope", "consume_scope")
_wrapped: list[tuple[type, str]] = []
_warned = False


async def _pass_through(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    global _warned
    if not _warned:
        _warned = True
        logger.info(
            "tracebridge: FastStream's TelemetryMiddleware leaves tracing to tracebridge "
            "(one send and one process span per record)"
        )
    call_next, message = _bind_scope(*args, **kwargs)
    return await call_next(message)


def _bind_scope(call_next: Any, msg: Any) -> tuple[Any, Any]:
    return call_next, msg


class FastStreamInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Makes FastStream's Kafka brokers produce tracebridge's span model, once per record."""

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("faststream >= 0.5",)

    def _instrument(self, **kwargs: Any) -> None:
        try:
            middleware = importlib.import_module("faststream.opentelemetry.middleware")
        except ImportError:  # FastStream without its opentelemetry extra
            middleware = None
        if middleware is not None:
            for scope in _SCOPES:
                wrap_function_wrapper(middleware.BaseTelemetryMiddleware, scope, _pass_through)
                _wrapped.append((middleware.BaseTelemetryMiddleware, scope))
        try:
            client = importlib.import_module("faststream.confluent.helpers.client")
        except ImportError:  # no confluent-kafka: FastStream's aiokafka broker needs nothing more
            return
        # FastStream binds confluent's classes at import; if that came before the confluent
        # instrumentation replaced them, point it at the current (traced) ones.
        import confluent_kafka

        setattr(client, "Producer", confluent_kafka.Producer)  # noqa: B010
        setattr(client, "Consumer", confluent_kafka.Consumer)  # noqa: B010
        confluent_aio.wrap_async_consumer(
            client.AsyncConfluentConsumer,
            "consumer",
            created_by="start",
            poll="getone",
            batch="getmany",
            ending=("commit", "seek", "stop"),
            registry=_wrapped,
        )

    def _uninstrument(self, **kwargs: Any) -> None:
        confluent_aio.unwrap_all(_wrapped)
