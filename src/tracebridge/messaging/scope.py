"""Keeping a consumer span current for the whole handler, with no code in the handler.

``record = await consumer.getone()`` runs the fetch in the caller's task, so a context
attached inside the fetch is still current when it returns: the handler's HTTP calls and
sends become children of the process span.  The span ends when the consumer is next asked
for a record, commits or stops — the first moment we know the handler is done.  An exception
on its way out of the handler (``consumer.stop()`` in a ``finally``, ``async with`` exiting)
marks the span as failed.
"""

from __future__ import annotations

import sys
from typing import Any

from opentelemetry import context as context_api
from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan, Span

from tracebridge.messaging.spans import mark_failed

_ATTRIBUTE = "_tracebridge_active_span"


class ActiveSpan:
    """The span a consumer made current, and the context to restore when it ends."""

    __slots__ = ("context", "previous", "span")

    def __init__(self, span: Span, context: Context, previous: Context) -> None:
        self.span = span
        self.context = context
        self.previous = previous


# Owners that can't take an attribute (``__slots__`` classes, such as FastStream's confluent
# consumer) keep theirs here, by identity: one entry per such consumer, removed when it ends.
_SLOTTED: dict[int, ActiveSpan] = {}


def activate(owner: object, span: Span, context: Context) -> None:
    """Make ``span`` current in the calling task until :func:`finish` is called for ``owner``."""
    previous = context_api.get_current()
    context_api.attach(context)
    active = ActiveSpan(span, context, previous)
    try:
        setattr(owner, _ATTRIBUTE, active)
    except AttributeError:
        _SLOTTED[id(owner)] = active


def finish(owner: object, error: BaseException | None = None) -> None:
    """End the span ``owner`` made current, if any, and restore the context from before it.

    An exception being handled right now (this runs from a ``finally`` or ``except`` of the
    loop that called the handler) counts as the handler's failure.
    """
    active: ActiveSpan | None = getattr(owner, _ATTRIBUTE, None)
    if active is not None:
        setattr(owner, _ATTRIBUTE, None)
    elif _SLOTTED:
        active = _SLOTTED.pop(id(owner), None)
    if active is None:
        return
    span = active.span
    if type(span) is not NonRecordingSpan:  # (an unsampled record's: nothing to end or mark)
        if error is None:
            error = sys.exc_info()[1]
        if error is not None and not isinstance(error, GeneratorExit | StopAsyncIteration):
            mark_failed(span, error)
        span.end()
    # Only restore if our context is still the current one: another task may be calling us,
    # or the handler may have attached its own context on top, and both are left alone.
    if context_api.get_current() is active.context:
        context_api.attach(active.previous)


async def finishing_first(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """A wrapt wrapper for an asyncio consumer method that means "the handler is done" (commit,
    seek, stop, close, …): end the active span, then call the method."""
    finish(instance)
    return await wrapped(*args, **kwargs)
