"""Test app: business code that only logs — under ``tracebridge run`` its records reach the
collector with the trace and span they were made in.

Sets logging up the usual way (``basicConfig``, INFO, its own format: it must still take effect),
then, inside a span, logs an INFO line, a WARNING with a card number and an address in it, and an
ERROR with an exception; and one WARNING outside any span.  Prints the span's ids.
"""

import json
import logging

from opentelemetry import trace

logging.basicConfig(level=logging.INFO, format="APP %(levelname)s %(message)s")
log = logging.getLogger("shop.checkout")

with trace.get_tracer("app").start_as_current_span("checkout") as span:
    log.info("checking out cart %s", "c-17")
    log.warning("card 4111 1111 1111 1111 declined for ada@example.com")
    try:
        raise ValueError("stock ran out")
    except ValueError:
        log.exception("checkout failed")
log.warning("after the span")
context = span.get_span_context()
print(json.dumps({"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}))
