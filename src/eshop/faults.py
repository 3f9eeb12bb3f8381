"""Fault injection from the environment: latency, failures, and a producer that loses context.

These exist so the demo and the tests can make the diagnosis and the doctor *find* something
real: a slow worker, a failing REST service, a broken context chain.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Iterator

from opentelemetry.instrumentation.utils import suppress_instrumentation

from eshop.config import Faults


class InjectedFault(RuntimeError):
    """Raised (or answered with 503) where ``ESHOP_FAULT_ERROR_RATE`` says so."""


@contextlib.contextmanager
def producing(faults: Faults) -> Iterator[None]:
    """Around a send: with ``ESHOP_FAULT_DROP_CONTEXT`` the record goes out without trace
    context, like one from a client library nobody instrumented — OpenTelemetry's standard
    ``suppress_instrumentation()`` switch, which every Kafka instrumentation honours."""
    if faults.drop_context:
        with suppress_instrumentation():
            yield
    else:
        yield


def _fail_at_rate(faults: Faults) -> None:
    if faults.error_rate > 0 and random.random() < faults.error_rate:
        raise InjectedFault(f"injected fault (ESHOP_FAULT_ERROR_RATE={faults.error_rate:g})")


async def apply(faults: Faults) -> None:
    """Wait the added latency, then fail at the configured rate."""
    if faults.latency_ms > 0:
        await asyncio.sleep(faults.latency_ms / 1000.0)
    _fail_at_rate(faults)


def apply_blocking(faults: Faults) -> None:
    """:func:`apply` for blocking code (WSGI servers, ``poll()`` loops)."""
    if faults.latency_ms > 0:
        time.sleep(faults.latency_ms / 1000.0)
    _fail_at_rate(faults)


Send = Callable[[dict[str, object]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, object]]]


class FaultMiddleware:
    """ASGI middleware: every request except ``/health`` gets the faults; a failure is a 503."""

    def __init__(self, app: Callable[..., Awaitable[None]], faults: Faults) -> None:
        self.app = app
        self.faults = faults

    async def __call__(self, scope: dict[str, object], receive: Receive, send: Send) -> None:
        if scope.get("type") != "http" or scope.get("path") == "/health" or not self.faults.any:
            await self.app(scope, receive, send)
            return
        try:
            await apply(self.faults)
        except InjectedFault as fault:
            body = f'{{"detail": "{fault}"}}'.encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 503,
                    "headers": [(b"content-type", b"application/json"), (b"retry-after", b"1")],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)
