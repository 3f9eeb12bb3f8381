"""tracebridge: one unbroken trace through HTTP, GraphQL and Kafka hops.

import tracebridge
tracebridge.configure(service_name="order")
tracebridge.instrument()
"""

from tracebridge.config import ConsumerParent, KafkaCarrier, Settings
from tracebridge.instrument import instrument, uninstrument
from tracebridge.instrument.traced import traced
from tracebridge.messaging.delivery import ATTEMPT_HEADER
from tracebridge.sdk import configure, shutdown
from tracebridge.version import __version__

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
