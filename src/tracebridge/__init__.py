"""tracebridge: one unbroken trace through HTTP, GraphQL and Kafka hops.

import tracebridge
tracebridge.configure(service_name="order")
tracebridge.instrument()

The names below are imported on first use: a process that only needs one part of the package
(the export helper process, the collector, the CLI) does not pay for the instrumentation's
imports (~160 ms).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tracebridge.config import ConsumerParent, KafkaCarrier, Settings
    from tracebridge.instrument import instrument, uninstrument
    from tracebridge.instrument.traced import traced
    from tracebridge.messaging.delivery import ATTEMPT_HEADER
    from tracebridge.sdk import configure, shutdown
    from tracebridge.version import __version__

_WHERE = {
    "ATTEMPT_HEADER": "tracebridge.messaging.delivery",
    "ConsumerParent": "tracebridge.config",
    "KafkaCarrier": "tracebridge.config",
    "Settings": "tracebridge.config",
    "__version__": "tracebridge.version",
    "configure": "tracebridge.sdk",
    "instrument": "tracebridge.instrument",
    "shutdown": "tracebridge.sdk",
    "traced": "tracebridge.instrument.traced",
    "uninstrument": "tracebridge.instrument",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'tracebridge' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])


__all__ = [
    "ATTEMPT_HEADER",
    "ConsumerParent",
    "KafkaCarrier",
    "Settings",
    "__version__",
    "configure",
    "instrument",
    "shutdown",
    "traced",
    "uninstrument",
]
