"""The propagator ``configure()`` installs, and the fast path it allows for message headers.

It is OpenTelemetry's CompositePropagator — every HTTP instrumentation uses it unchanged — but
it remembers whether it is exactly W3C trace context (+ baggage).  When it is, a Kafka record's
headers are read and written directly: one pass over the headers instead of one per field
per propagator, no intermediate contexts.  Any other combination (B3, Jaeger, a user's own
propagator) takes the generic path.
"""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry import baggage
from opentelemetry import context as context_api
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import TextMapPropagator

from tracebridge.propagation.w3c import StrictTraceContextPropagator

# The context key the baggage API keeps entries under (private; the public get_all() builds a
# read-only copy, which costs more than the rest of injecting an unsampled record's context).
_BAGGAGE_KEY: str | None = getattr(baggage, "_BAGGAGE_KEY", None)


def baggage_present(context: context_api.Context | None = None) -> bool:
    """Whether ``context`` (default: the current one) carries any baggage entry to propagate."""
    if _BAGGAGE_KEY is None:
        return bool(baggage.get_all(context))
    return bool((context if context is not None else context_api.get_current()).get(_BAGGAGE_KEY))


class TracebridgePropagator(CompositePropagator):
    """A composite propagator that knows whether it is plain W3C (trace context + baggage)."""

    def __init__(self, propagators: Sequence[TextMapPropagator]) -> None:
        super().__init__(propagators)
        kinds = [type(p) for p in propagators]
        self.w3c_only = (
            bool(kinds)
            and kinds[0] is StrictTraceContextPropagator
            and (kinds[1:] in ([], [W3CBaggagePropagator]))
        )
        self.baggage: W3CBaggagePropagator | None = next(
            (p for p in propagators if type(p) is W3CBaggagePropagator), None
        )
