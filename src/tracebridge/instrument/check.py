"""``tracebridge check``: which libraries this environment has, what traces each, and what to
``pip install`` for the ones nothing traces yet.

The list of libraries and their upstream instrumentation packages is OpenTelemetry's own
(``opentelemetry.instrumentation.bootstrap_gen``, what ``opentelemetry-bootstrap`` reads), so it
follows the installed OpenTelemetry release; the clients tracebridge traces itself are put in
front of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata

from packaging.requirements import InvalidRequirement, Requirement

# Libraries tracebridge instruments itself (distribution name -> our instrumentation).
OURS: dict[str, str] = {
    "aiokafka": "tracebridge (aiokafka)",
    "confluent-kafka": "tracebridge (confluent_kafka, with confluent_kafka.aio)",
    "kafka-python": "tracebridge (kafka_python)",
    "kafka-python-ng": "tracebridge (kafka_python)",
    "strawberry-graphql": "tracebridge (strawberry)",
}
# Upstream instrumentations our light HTTP spans replace (``TRACEBRIDGE_HTTP_SPANS=light``, the
# default): (library, upstream package) -> what traces it instead.  aiohttp's server keeps
# upstream's instrumentation.
LIGHT_HTTP: dict[tuple[str, str], str] = {
    ("fastapi", "opentelemetry-instrumentation-fastapi"): "tracebridge (light ASGI spans)",
    ("starlette", "opentelemetry-instrumentation-starlette"): "tracebridge (light ASGI spans)",
    ("asgiref", "opentelemetry-instrumentation-asgi"): "tracebridge (light ASGI spans, under uvicorn)",
    ("flask", "opentelemetry-instrumentation-flask"): "tracebridge (light WSGI spans)",
    ("httpx", "opentelemetry-instrumentation-httpx"): "tracebridge (light client spans)",
    ("requests", "opentelemetry-instrumentation-requests"): "tracebridge (light client spans)",
    ("aiohttp", "opentelemetry-instrumentation-aiohttp-client"): "tracebridge (light client spans)",
}
# OpenTelemetry's list pairs pydantic with the Tortoise ORM instrumentation (Tortoise needs
# it); a pydantic user without Tortoise has nothing for it to trace.
_NOT_FOR = {("pydantic", "opentelemetry-instrumentation-tortoiseorm")}


@dataclass(frozen=True)
class LibraryStatus:
    """One installed library and what traces it."""

    library: str
    version: str
    traced_by: str | None  # None: nothing installed traces it
    install: str | None  # the requirement to pip install, when nothing does


def _installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def survey(light_http: bool | None = None) -> list[LibraryStatus]:
    """Every instrumentable library installed here, sorted by name; ``light_http`` (default:
    as ``TRACEBRIDGE_HTTP_SPANS`` says) whether our light HTTP spans trace the web stacks."""
    from opentelemetry.instrumentation.bootstrap_gen import libraries

    from tracebridge.config import Settings

    if light_http is None:
        light_http = Settings.from_env().http_spans == "light"

    found: dict[tuple[str, str], LibraryStatus] = {}
    ours_found: set[str] = set()
    for name, ours in OURS.items():
        version = _installed_version(name)
        if version is not None:
            found[(name, ours)] = LibraryStatus(name, version, ours, None)
            ours_found.add(name)
    for entry in libraries:
        try:
            wanted = Requirement(entry["library"])
            instrumentation = Requirement(entry["instrumentation"])
        except InvalidRequirement:
            continue
        version = _installed_version(wanted.name)
        if (
            version is None
            or wanted.name in ours_found
            or (wanted.name, instrumentation.name) in _NOT_FOR
            or not wanted.specifier.contains(version, prereleases=True)
        ):
            continue
        light = LIGHT_HTTP.get((wanted.name, instrumentation.name)) if light_http else None
        if light is not None:
            found[(wanted.name, instrumentation.name)] = LibraryStatus(wanted.name, version, light, None)
            continue
        upstream = _installed_version(instrumentation.name)
        traced_by = f"{instrumentation.name} {upstream}" if upstream is not None else None
        install = None if upstream is not None else str(instrumentation)
        found[(wanted.name, instrumentation.name)] = LibraryStatus(wanted.name, version, traced_by, install)
    return [found[key] for key in sorted(found)]


def missing_requirements(statuses: list[LibraryStatus]) -> list[str]:
    """What to ``pip install`` so every library found is traced."""
    return sorted({status.install for status in statuses if status.install})
