"""``instrument()``: turn on every instrumentation whose library is installed.

Ours (aiokafka, confluent-kafka, kafka-python, FastStream, strawberry) and every installed upstream
OpenTelemetry instrumentation (``opentelemetry_instrumentor`` entry points: FastAPI, Flask,
Django, requests, aiohttp, httpx, grpc, SQLAlchemy, redis, …), as ``opentelemetry-instrument``
loads them — except upstream's Kafka ones, which ours replace: two layers tracing one client
would give every record two send spans and two ``traceparent`` headers.  Our HTTP policies
(business keys carried back, the edge's inbound-context policy, no per-message ASGI spans) are
passed to every HTTP stack we load.
"""

from __future__ import annotations

import functools
import importlib
import logging
import sys
from importlib.metadata import EntryPoint, entry_points, packages_distributions
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from tracebridge.config import Settings
from tracebridge.instrument import http_policy, lazy, log_events

logger = logging.getLogger("tracebridge")

ENTRY_POINT_GROUP = "opentelemetry_instrumentor"

# Ours: name -> (module that must import, "module:Instrumentor class").
OURS: dict[str, tuple[str, str]] = {
    "aiokafka": ("aiokafka", "tracebridge.messaging.kafka.aiokafka:AIOKafkaInstrumentor"),
    "confluent_kafka": (
        "confluent_kafka",
        "tracebridge.messaging.kafka.confluent_kafka:ConfluentKafkaInstrumentor",
    ),
    "kafka_python": ("kafka", "tracebridge.messaging.kafka.kafka_python:KafkaPythonInstrumentor"),
    "strawberry": ("strawberry", "tracebridge.instrument.strawberry:StrawberryInstrumentor"),
    # Any ASGI app uvicorn serves, not only the frameworks upstream instruments class by class.
    "uvicorn": ("uvicorn", "tracebridge.instrument.asgi_servers:UvicornInstrumentor"),
    # After the Kafka clients: FastStream's confluent client imports their (replaced) classes.
    "faststream": ("faststream", "tracebridge.messaging.kafka.faststream:FastStreamInstrumentor"),
}

# Our light HTTP spans (``TRACEBRIDGE_HTTP_SPANS=light``, the default): name -> (module, class),
# and the upstream entry points each replaces.  FastAPI apps are Starlette apps.
LIGHT_HTTP: dict[str, tuple[str, str]] = {
    "starlette": ("starlette", "tracebridge.instrument.http_asgi:StarletteInstrumentor"),
    "flask": ("flask", "tracebridge.instrument.http_wsgi:FlaskInstrumentor"),
    "httpx": ("httpx", "tracebridge.instrument.http_clients:HttpxInstrumentor"),
    "requests": ("requests", "tracebridge.instrument.http_clients:RequestsInstrumentor"),
    "aiohttp-client": ("aiohttp", "tracebridge.instrument.http_clients:AiohttpClientInstrumentor"),
}
LIGHT_REPLACES: dict[str, str] = {
    "fastapi": "starlette",
    "starlette": "starlette",
    "flask": "flask",
    "httpx": "httpx",
    "requests": "requests",
    "aiohttp-client": "aiohttp-client",
}

# Upstream instrumentations ours replace: their entry-point name -> ours, and where they live.
REPLACED: dict[str, tuple[str, str]] = {
    "aiokafka": ("aiokafka", "opentelemetry.instrumentation.aiokafka:AIOKafkaInstrumentor"),
    "confluent_kafka": (
        "confluent_kafka",
        "opentelemetry.instrumentation.confluent_kafka:ConfluentKafkaInstrumentor",
    ),
    "kafka": ("kafka_python", "opentelemetry.instrumentation.kafka:KafkaInstrumentor"),
}

# Defaults we pass to upstream instrumentors (keyword arguments of their ``instrument()``).
DEFAULT_OPTIONS: dict[str, dict[str, Any]] = {
    # The ASGI per-message "http send"/"http receive" spans triple the span count of every
    # request and answer no question we ask.
    "fastapi": {"exclude_spans": ["receive", "send"]},
    "starlette": {"exclude_spans": ["receive", "send"]},
    "uvicorn": {"exclude_spans": ["receive", "send"]},
    # Trace and span ids on every log record (``%(otelTraceID)s``), without touching the
    # application's own log format — and without the upstream default of putting an OTel
    # logs-bridge handler on the root logger, which would also silence Python's last-resort
    # stderr output (a program with no logging set up would stop showing its warnings).
    "logging": {
        "inject_trace_context": True,
        "log_hook": log_events.hook,
        "enable_log_auto_instrumentation": False,
    },
    # Business keys a server learned (``order.id``) come back in a ``baggage`` response
    # header and join the caller's spans (tracebridge.business_keys), whatever the client.
    "httpx": {
        "response_hook": http_policy.response_hook,
        "async_response_hook": http_policy.async_response_hook,
    },
    "requests": {"response_hook": http_policy.response_hook},
    "urllib3": {"response_hook": http_policy.response_hook},
    "aiohttp-client": {"response_hook": http_policy.aiohttp_response_hook},
}


def _trace_fastapi() -> bool:
    from tracebridge.instrument.http_asgi import trace_fastapi

    return trace_fastapi()


def _instrumentor(target: str) -> Any:
    module_name, _, class_name = target.partition(":")
    return getattr(importlib.import_module(module_name), class_name)()


def _is_disabled(name: str, settings: Settings) -> bool:
    """``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` names a library's tracing, whoever provides
    it: ``aiokafka`` (or ``tracebridge_aiokafka``) turns off ours, ``kafka`` our kafka-python."""
    disabled = settings.disabled_instrumentations
    if name in disabled or f"tracebridge_{name}" in disabled:
        return True
    return any(ours == name and upstream in disabled for upstream, (ours, _) in REPLACED.items())


def _upstream_entry_points(light_http: bool = False) -> list[EntryPoint]:
    """Installed upstream instrumentors, less ours and the Kafka ones ours replace (and the
    HTTP ones, when our light HTTP spans replace them)."""
    return [
        entry_point
        for entry_point in entry_points(group=ENTRY_POINT_GROUP)
        if not entry_point.name.startswith("tracebridge_")
        and entry_point.name not in REPLACED
        and not (light_http and entry_point.name in LIGHT_REPLACES)
    ]


def _wanted(name: str, only: tuple[str, ...] | None) -> bool:
    """Whether ``only`` asks for ``name`` — by our name or an upstream one it replaces
    (``fastapi`` asks for our ``starlette`` spans)."""
    return only is None or name in only or any(LIGHT_REPLACES.get(asked) == name for asked in only)


def _light_disabled(name: str, settings: Settings) -> bool:
    """Disabling an upstream name (``fastapi``) disables the light spans that replace it."""
    return _is_disabled(name, settings) or any(
        ours == name and _is_disabled(upstream, settings) for upstream, ours in LIGHT_REPLACES.items()
    )


def _library_present(entry_point: EntryPoint) -> bool:
    """Whether the library an upstream instrumentation is for is installed in a version it
    supports (the check ``opentelemetry-instrument`` makes)."""
    from opentelemetry.instrumentation.dependencies import get_dist_dependency_conflicts

    dist = entry_point.dist
    if dist is None:
        return True
    return get_dist_dependency_conflicts(dist) is None


def _neutralise(name: str, ours: str, target: str) -> bool:
    """Make one upstream Kafka instrumentor do nothing (it is a singleton, so for every caller);
    ``False`` if it is not installed or already active."""
    try:
        instrumentor = _instrumentor(target)
    except Exception:  # not installed (ImportError) or broken: nothing to replace
        return False
    if instrumentor.is_instrumented_by_opentelemetry:
        logger.warning(
            "tracebridge: opentelemetry-instrumentation for %s was already active; records will "
            "be traced by it and by tracebridge",
            name,
        )
        return False

    def skip(_name: str = name, _ours: str = ours, **_: Any) -> None:
        logger.debug("tracebridge: upstream instrumentation %r skipped in favour of ours (%s)", _name, _ours)

    instrumentor._instrument = skip
    instrumentor._uninstrument = lambda **_: None
    return True


def replace_upstream_kafka() -> list[str]:
    """Make upstream's Kafka instrumentors do nothing, with a log line, so a record is traced
    once whoever calls them (``opentelemetry-instrument`` loads every entry point; an
    application may call one itself).  Returns the names it neutralised."""
    return [name for name, (ours, target) in REPLACED.items() if _neutralise(name, ours, target)]


def _replace_upstream_kafka_when_imported() -> None:
    """:func:`replace_upstream_kafka`, each as its module is first imported: importing them
    now would import the Kafka clients they are for, used or not."""
    for name, (ours, target) in REPLACED.items():
        module = target.partition(":")[0]
        if lazy.is_installed(module):
            neutralise = functools.partial(_neutralise, name, ours, target)
            lazy.when_imported((module,), f"upstream {name}", neutralise)


@functools.cache
def _modules_by_distribution() -> dict[str, tuple[str, ...]]:
    """Top-level modules of every installed distribution, by canonical distribution name."""
    found: dict[str, list[str]] = {}
    for module, distributions in packages_distributions().items():
        for distribution in distributions:
            found.setdefault(canonicalize_name(distribution), []).append(module)
    return {name: tuple(sorted(set(modules))) for name, modules in found.items()}


def _library_modules(entry_point: EntryPoint) -> tuple[str, ...]:
    """The modules of the libraries an upstream instrumentation is for (its ``instruments``
    extra), to arm it on; empty when it names none (``logging``, ``threading``): start it now."""
    dist = entry_point.dist
    if dist is None:
        return ()
    libraries: set[str] = set()
    for line in dist.requires or ():
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            continue
        marker = requirement.marker
        if marker is None or marker.evaluate({"extra": ""}):
            continue  # a dependency of the instrumentation itself, not a library it instruments
        if marker.evaluate({"extra": "instruments"}):
            libraries.add(canonicalize_name(requirement.name))
    modules = _modules_by_distribution()
    return tuple(module for library in sorted(libraries) for module in modules.get(library, ()))


def pre_instrument() -> None:
    """``opentelemetry-instrument``'s pre-instrument hook: upstream's Kafka instrumentors step
    aside before any instrumentor loads, and say so once (before the logging instrumentation
    can reroute warnings away from stderr)."""
    replaced = replace_upstream_kafka()
    if replaced:
        logger.warning(
            "tracebridge: skipping upstream instrumentation %s: tracebridge traces %s itself "
            "(one send and one process span per record)",
            ", ".join(repr(name) for name in replaced),
            "these Kafka clients" if len(replaced) > 1 else "this Kafka client",
        )


def instrument(only: tuple[str, ...] | None = None, **kwargs: Any) -> list[str]:
    """Instrument each installed library (or just those in ``only``); return their names.

    A library the application has not imported yet is instrumented right after its first
    import (:mod:`.lazy`), so an installed but unused library costs no memory.
    A library that isn't installed is skipped silently; one whose instrumentation fails is
    logged and skipped — a tracing problem must never stop the service.  Calling it again
    does nothing for libraries already instrumented.
    """
    from tracebridge.sdk import configured

    state = configured()
    settings = state.settings if state is not None else Settings.from_env()
    _replace_upstream_kafka_when_imported()
    http_policy.install_response_hooks()
    light_http = settings.http_spans == "light"
    done: list[str] = []
    ours = {**OURS, **(LIGHT_HTTP if light_http else {})}
    for name, (library, target) in ours.items():
        if not _wanted(name, only) or _light_disabled(name, settings) or not lazy.is_installed(library):
            continue
        options = {**({"light": light_http} if name == "uvicorn" else {}), **kwargs}

        def start_ours(name: str = name, target: str = target, options: dict[str, Any] = options) -> bool:
            return _start(name, lambda: _instrumentor(target), options)

        if lazy.when_imported((library,), name, start_ours) is not False:
            done.append(name)
    if "starlette" in done:
        # FastAPI imports Starlette: Starlette's instrumentation runs before FastAPI exists.
        lazy.when_imported(("fastapi",), "fastapi", _trace_fastapi)
    for entry_point in _upstream_entry_points(light_http):
        name = entry_point.name
        if (only is not None and name not in only) or _is_disabled(name, settings):
            continue
        try:
            if not _library_present(entry_point):
                continue
            modules = _library_modules(entry_point)
        except Exception as error:
            logger.debug("tracebridge: can't check %s's dependencies: %s", name, error)
            continue

        def start_upstream(name: str = name, entry_point: EntryPoint = entry_point) -> bool:
            return _start(name, lambda: entry_point.load()(), kwargs, skip_dep_check=True)

        started = lazy.when_imported(modules, name, start_upstream) if modules else start_upstream()
        if started is not False:
            done.append(name)
    levels = {"warning": logging.WARNING, "error": logging.ERROR}
    log_events.set_level(levels.get(settings.log_events) if "logging" in done else None)
    http_policy.install_inbound_policy(settings.inbound_context)
    return done


def _start(name: str, make: Any, kwargs: dict[str, Any], **extra: Any) -> bool:
    try:
        instrumentor = make()
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument(**{**DEFAULT_OPTIONS.get(name, {}), **extra, **kwargs})
    except ImportError as error:  # its library isn't installed after all (as opentelemetry-instrument)
        logger.debug("tracebridge: skipping %s: %s", name, error)
        return False
    except Exception as error:
        logger.warning("tracebridge: could not instrument %s: %s", name, error)
        return False
    return True


def uninstrument() -> None:
    """Undo :func:`instrument` for every library it instrumented."""
    lazy.disarm()
    http_policy.uninstall_inbound_policy()
    http_policy.uninstall_response_hooks()
    log_events.set_level(None)
    instrumentors: list[tuple[str, Any]] = []
    for name, (library, target) in (*OURS.items(), *LIGHT_HTTP.items()):
        if library not in sys.modules:  # never imported, so never instrumented
            continue
        try:
            instrumentors.append((name, _instrumentor(target)))
        except ImportError:
            continue
    for entry_point in _upstream_entry_points():
        try:
            instrumentors.append((entry_point.name, entry_point.load()()))
        except Exception:
            continue
    for name, instrumentor in instrumentors:
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()
            logger.debug("tracebridge: uninstrumented %s", name)
