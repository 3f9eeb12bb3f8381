"""Test app: under ``tracebridge run``, libraries are instrumented on first import, not before.

Prints which instrumented libraries were loaded before the program's first line (``requests``
is: the OTLP exporter uses it), then imports confluent-kafka, Flask and FastAPI and shows that what
it got is traced: confluent's ``Producer`` is the traced class, a Flask request gets a server
span whose ``requests`` call to ``URL`` carries the trace, a FastAPI request gets one.
"""

import json
import os
import sys

WATCHED = ("flask", "aiohttp", "kafka", "confluent_kafka", "faststream", "strawberry", "fastapi", "starlette")
preloaded = sorted(name for name in WATCHED if name in sys.modules)

import requests  # noqa: E402
from confluent_kafka import Producer  # noqa: E402  (the point: imported after start-up)
from flask import Flask  # noqa: E402

app = Flask("lazy")


@app.get("/hello")
def hello() -> str:
    return requests.get(os.environ["URL"], timeout=10).text


sent = app.test_client().get("/hello").get_data(as_text=True)

# FastAPI imports Starlette, whose instrumentation runs before the FastAPI class exists: the
# request must still get exactly one server span (ours, FastAPI's own telemetry stepping aside).
from fastapi import FastAPI  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

api = FastAPI()


@api.get("/items/{item}")
def item(item: str) -> dict[str, str]:
    return {"item": item}


assert TestClient(api).get("/items/7").json() == {"item": "7"}
print(
    json.dumps(
        {
            "preloaded": preloaded,
            "producer_class": f"{Producer.__module__}.{Producer.__qualname__}",
            "traceparent_sent": sent,
        }
    )
)
