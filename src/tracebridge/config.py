"""Settings: the one place that reads the environment.

OpenTelemetry's own variables come first (so an existing OTel deployment keeps working
unchanged), then ``TRACEBRIDGE_*`` for what OpenTelemetry has no word for.  A bad value never
stops the application: it is reported in :attr:`Settings.problems` (``configure()`` logs
them once) and the default is used, because tracing must not be the reason a service fails
to start.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from enum import StrEnum
from urllib.parse import unquote


class KafkaCarrier(StrEnum):
    """Where producers write the trace context of a record."""

    HEADERS = "headers"
    ENVELOPE = "envelope"
    BOTH = "both"


class InboundContext(StrEnum):
    """Whether an HTTP server continues the trace context its callers send."""

    TRUST = "trust"  # continue the caller's trace (services inside the system)
    DROP = "drop"  # ignore traceparent/tracestate/baggage from callers (the system's edge)


class ConsumerParent(StrEnum):
    """How a process span relates to the context extracted from its record."""

    PARENT = "parent"  # child of the producer's span, plus a follows_from link
    LINK = "link"  # new trace per record, link only


SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)
PROPAGATORS = ("tracecontext", "baggage", "b3", "b3multi", "jaeger", "none")
EXPORTERS = ("otlp", "console", "none")
DEFAULT_OTLP_ENDPOINT = "http://localhost:4318"


# Read by the OpenTelemetry SDK itself (span limits), which raises on anything but a
# non-negative integer or "unset" — while the application starts.
SDK_LIMIT_VARIABLES = (
    "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT",
    "OTEL_ATTRIBUTE_COUNT_LIMIT",
    "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT",
    "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT",
    "OTEL_SPAN_EVENT_COUNT_LIMIT",
    "OTEL_SPAN_LINK_COUNT_LIMIT",
    "OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT",
    "OTEL_LINK_ATTRIBUTE_COUNT_LIMIT",
)
_repaired: list[str] = []


def repair_sdk_environment(environ: MutableMapping[str, str] | None = None) -> list[str]:
    """Take out of the environment the values the OpenTelemetry API and SDK would raise on.

    ``opentelemetry.propagate`` reads ``OTEL_PROPAGATORS`` when it is *imported* and raises on
    a name it can't load; the SDK raises on a malformed span limit when a provider is built.
    Either would stop the application (or ``tracebridge run`` itself) before its first line,
    for a typo in a tracing setting.  Runs when tracebridge is imported, before anything
    imports those modules; the child of ``tracebridge run`` inherits the repaired environment.
    What it removed is reported, like every other bad value, in :attr:`Settings.problems`.
    """
    env = os.environ if environ is None else environ
    found: list[str] = []
    raw = env.get("OTEL_PROPAGATORS")
    if raw is not None:
        names = [name.strip() for name in raw.split(",") if name.strip()]
        known = [name for name in names if name.lower() in PROPAGATORS or _is_registered_propagator(name)]
        if known != names:
            unknown = [name for name in names if name not in known]
            found.append(
                f"OTEL_PROPAGATORS names {', '.join(repr(n) for n in unknown)}, which no installed "
                f"propagator provides; ignoring {'it' if len(unknown) == 1 else 'them'}"
            )
            if known:
                env["OTEL_PROPAGATORS"] = ",".join(known)
            else:
                del env["OTEL_PROPAGATORS"]
    for name in SDK_LIMIT_VARIABLES:
        value = env.get(name)
        if value is None or value.strip().lower() == "unset":
            continue
        try:
            valid = int(value.strip()) >= 0
        except ValueError:
            valid = False
        if not valid:
            found.append(f"{name}={value!r} is not a non-negative integer; using the SDK's default")
            del env[name]
    if environ is None:  # this process's own environment: Settings.from_env() reports it
        _repaired.extend(problem for problem in found if problem not in _repaired)
    return found


def repaired_problems() -> tuple[str, ...]:
    """What :func:`repair_sdk_environment` took out of this process's environment."""
    return tuple(_repaired)


def _is_registered_propagator(name: str) -> bool:
    """A propagator an installed package registers (``opentelemetry_propagator`` entry point)."""
    from importlib.metadata import entry_points

    return any(True for _ in entry_points(group="opentelemetry_propagator", name=name))


@dataclass(frozen=True)
class Settings:
    """Everything tracebridge can be told, already parsed and validated."""

    service_name: str = "unknown_service"
    resource_attributes: Mapping[str, str] = field(default_factory=dict)
    sdk_disabled: bool = False
    traces_exporter: str = "otlp"
    otlp_traces_endpoint: str = DEFAULT_OTLP_ENDPOINT + "/v1/traces"
    logs_exporter: str = "otlp"  # OTEL_LOGS_EXPORTER: otlp, console or none (tracebridge.log_export)
    otlp_logs_endpoint: str = DEFAULT_OTLP_ENDPOINT + "/v1/logs"
    otlp_headers: Mapping[str, str] = field(default_factory=dict)
    otlp_timeout_s: float = 10.0
    otlp_compression: str = "none"
    otlp_certificate: str | None = None  # CA bundle to trust for an https endpoint
    otlp_client_certificate: str | None = None  # mTLS: our certificate ...
    otlp_client_key: str | None = None  # ... and its key
    propagators: tuple[str, ...] = ("tracecontext", "baggage")
    sampler: str = "parentbased_always_on"
    sampler_arg: float = 1.0
    bsp_schedule_delay_ms: int = 5000
    bsp_max_queue_size: int = 2048
    bsp_max_export_batch_size: int = 512
    blrp_schedule_delay_ms: int = 1000  # the logs pipeline's batch processor (OTEL_BLRP_*)
    blrp_max_queue_size: int = 2048
    blrp_max_export_batch_size: int = 512
    kafka_carrier: KafkaCarrier = KafkaCarrier.HEADERS
    consumer_parent: ConsumerParent = ConsumerParent.PARENT
    baggage_attributes: tuple[str, ...] = ()
    exporter_retry_after_s: float = 1.0
    export_buffer_spans: int = 65536
    shutdown_timeout_s: float = 2.0
    collector_token: str | None = None
    inbound_context: InboundContext = InboundContext.TRUST
    http_spans: str = "light"  # TRACEBRIDGE_HTTP_SPANS: ours, or "upstream" instrumentations
    export_process: str = "inline"  # TRACEBRIDGE_EXPORT_PROCESS: the export thread, or "helper"
    disabled_instrumentations: tuple[str, ...] = ()
    log_events: str = "error"
    redact: str = ""  # TRACEBRIDGE_REDACT, validated (tracebridge.redaction)
    problems: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read ``OTEL_*`` and ``TRACEBRIDGE_*`` variables; bad values fall back to defaults."""
        env = os.environ if environ is None else environ
        reader = _Reader(env)
        resource = _parse_key_values(
            env.get("OTEL_RESOURCE_ATTRIBUTES", ""), reader, "OTEL_RESOURCE_ATTRIBUTES"
        )
        service_name = (
            env.get("OTEL_SERVICE_NAME", "").strip() or resource.get("service.name") or "unknown_service"
        )
        base_endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip() or DEFAULT_OTLP_ENDPOINT
        traces_endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip() or (
            base_endpoint.rstrip("/") + "/v1/traces"
        )
        logs_endpoint = env.get("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "").strip() or (
            base_endpoint.rstrip("/") + "/v1/logs"
        )
        if not logs_endpoint.startswith(("http://", "https://")):
            reader.problem(
                f"OTEL_EXPORTER_OTLP_(LOGS_)ENDPOINT={logs_endpoint!r} is not an http(s) URL; "
                f"using {DEFAULT_OTLP_ENDPOINT}/v1/logs"
            )
            logs_endpoint = DEFAULT_OTLP_ENDPOINT + "/v1/logs"
        if not traces_endpoint.startswith(("http://", "https://")):
            reader.problem(
                f"OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT={traces_endpoint!r} is not an http(s) URL; "
                f"using {DEFAULT_OTLP_ENDPOINT}/v1/traces"
            )
            traces_endpoint = DEFAULT_OTLP_ENDPOINT + "/v1/traces"
        protocol = (
            env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or ""
        ).strip()
        if protocol and protocol != "http/protobuf":
            reader.problem(
                f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not supported; tracebridge exports "
                "'http/protobuf' (install and configure the gRPC exporter yourself if you need gRPC)"
            )
        headers = _parse_key_values(
            env.get("OTEL_EXPORTER_OTLP_TRACES_HEADERS") or env.get("OTEL_EXPORTER_OTLP_HEADERS") or "",
            reader,
            "OTEL_EXPORTER_OTLP_HEADERS",
        )
        sampler = reader.choice("OTEL_TRACES_SAMPLER", SAMPLERS, "parentbased_always_on")
        sampler_arg = 1.0
        if "traceidratio" in sampler:
            sampler_arg = reader.number("OTEL_TRACES_SAMPLER_ARG", 1.0, minimum=0.0, maximum=1.0)
        propagators = reader.names("OTEL_PROPAGATORS", PROPAGATORS, ("tracecontext", "baggage"))
        return cls(
            service_name=service_name,
            resource_attributes=resource,
            sdk_disabled=reader.flag("OTEL_SDK_DISABLED", False),
            traces_exporter=reader.choice("OTEL_TRACES_EXPORTER", EXPORTERS, "otlp"),
            otlp_traces_endpoint=traces_endpoint,
            logs_exporter=reader.choice("OTEL_LOGS_EXPORTER", ("otlp", "console", "none"), "otlp"),
            otlp_logs_endpoint=logs_endpoint,
            otlp_headers=headers,
            otlp_timeout_s=reader.number(_traces_first(env, "OTEL_EXPORTER_OTLP_TIMEOUT"), 10000, minimum=1)
            / 1000.0,
            otlp_compression=reader.choice(
                _traces_first(env, "OTEL_EXPORTER_OTLP_COMPRESSION"), ("none", "gzip"), "none"
            ),
            otlp_certificate=reader.file(_traces_first(env, "OTEL_EXPORTER_OTLP_CERTIFICATE")),
            otlp_client_certificate=reader.file(_traces_first(env, "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE")),
            otlp_client_key=reader.file(_traces_first(env, "OTEL_EXPORTER_OTLP_CLIENT_KEY")),
            propagators=propagators,
            sampler=sampler,
            sampler_arg=sampler_arg,
            bsp_schedule_delay_ms=int(reader.number("OTEL_BSP_SCHEDULE_DELAY", 5000, minimum=1)),
            bsp_max_queue_size=int(reader.number("OTEL_BSP_MAX_QUEUE_SIZE", 2048, minimum=1)),
            bsp_max_export_batch_size=int(reader.number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512, minimum=1)),
            blrp_schedule_delay_ms=int(reader.number("OTEL_BLRP_SCHEDULE_DELAY", 1000, minimum=1)),
            blrp_max_queue_size=int(reader.number("OTEL_BLRP_MAX_QUEUE_SIZE", 2048, minimum=1)),
            blrp_max_export_batch_size=int(reader.number("OTEL_BLRP_MAX_EXPORT_BATCH_SIZE", 512, minimum=1)),
            kafka_carrier=KafkaCarrier(
                reader.choice("TRACEBRIDGE_KAFKA_CARRIER", tuple(c.value for c in KafkaCarrier), "headers")
            ),
            consumer_parent=ConsumerParent(
                reader.choice("TRACEBRIDGE_CONSUMER_PARENT", tuple(c.value for c in ConsumerParent), "parent")
            ),
            baggage_attributes=tuple(
                name.strip()
                for name in env.get("TRACEBRIDGE_BAGGAGE_ATTRIBUTES", "").split(",")
                if name.strip()
            ),
            exporter_retry_after_s=reader.number("TRACEBRIDGE_EXPORTER_RETRY_AFTER", 1.0, minimum=0.0),
            export_buffer_spans=int(reader.number("TRACEBRIDGE_EXPORT_BUFFER", 65536, minimum=0)),
            shutdown_timeout_s=reader.number("TRACEBRIDGE_SHUTDOWN_TIMEOUT", 2.0, minimum=0.0),
            collector_token=env.get("TRACEBRIDGE_COLLECTOR_TOKEN", "").strip() or None,
            log_events=reader.choice("TRACEBRIDGE_LOG_EVENTS", ("warning", "error", "off"), "error"),
            disabled_instrumentations=tuple(
                name.strip().lower()
                for name in env.get("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "").split(",")
                if name.strip()
            ),
            inbound_context=InboundContext(
                reader.choice("TRACEBRIDGE_INBOUND_CONTEXT", tuple(c.value for c in InboundContext), "trust")
            ),
            http_spans=reader.choice("TRACEBRIDGE_HTTP_SPANS", ("light", "upstream"), "light"),
            export_process=reader.choice("TRACEBRIDGE_EXPORT_PROCESS", ("inline", "helper"), "inline"),
            redact=reader.redaction("TRACEBRIDGE_REDACT"),
            problems=(tuple(_repaired) if environ is None else ()) + tuple(reader.problems),
        )


class _Reader:
    """Parses one variable at a time and remembers what was wrong with it."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[str] = []

    def problem(self, message: str) -> None:
        self.problems.append(message)

    def choice(self, name: str, allowed: tuple[str, ...], default: str) -> str:
        raw = self.env.get(name, "").strip().lower()
        if not raw:
            return default
        if raw not in allowed:
            self.problem(f"{name}={raw!r} is not one of {', '.join(allowed)}; using {default!r}")
            return default
        return raw

    def names(self, name: str, allowed: tuple[str, ...], default: tuple[str, ...]) -> tuple[str, ...]:
        raw = self.env.get(name, "").strip().lower()
        if not raw:
            return default
        chosen: list[str] = []
        for item in (part.strip() for part in raw.split(",")):
            if not item:
                continue
            if item not in allowed:
                self.problem(f"{name} names {item!r}, which is not one of {', '.join(allowed)}; ignoring it")
            elif item not in chosen:
                chosen.append(item)
        return tuple(chosen)

    def number(
        self, name: str, default: float, *, minimum: float | None = None, maximum: float | None = None
    ) -> float:
        raw = self.env.get(name, "").strip()
        if not raw:
            return default
        try:
            value = float(raw)
        except ValueError:
            self.problem(f"{name}={raw!r} is not a number; using {default}")
            return default
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            self.problem(f"{name}={raw!r} is outside [{minimum}, {maximum}]; using {default}")
            return default
        return value

    def file(self, name: str) -> str | None:
        """A path that must name a readable file; anything else is reported and ignored."""
        raw = self.env.get(name, "").strip()
        if not raw:
            return None
        if not os.path.isfile(raw) or not os.access(raw, os.R_OK):
            self.problem(f"{name}={raw!r} is not a readable file; ignoring it")
            return None
        return raw

    def redaction(self, name: str) -> str:
        """A redaction spec that parses; a bad one is reported and the built-in rules apply
        (never *less* redaction than the default because of a typo)."""
        from tracebridge.redaction import RedactionError, RedactionPolicy

        raw = self.env.get(name, "").strip()
        try:
            RedactionPolicy.parse(raw)
        except RedactionError as error:
            self.problem(f"{error}; using the built-in rules only")
            return ""
        return raw

    def flag(self, name: str, default: bool) -> bool:
        raw = self.env.get(name, "").strip().lower()
        if not raw:
            return default
        if raw in ("true", "1", "yes"):
            return True
        if raw in ("false", "0", "no"):
            return False
        self.problem(f"{name}={raw!r} is not true/false; using {str(default).lower()}")
        return default


def _traces_first(env: Mapping[str, str], name: str) -> str:
    """``OTEL_EXPORTER_OTLP_TRACES_X`` when it is set, else ``OTEL_EXPORTER_OTLP_X`` (the spec's
    precedence for the signal-specific variables)."""
    specific = name.replace("OTEL_EXPORTER_OTLP_", "OTEL_EXPORTER_OTLP_TRACES_", 1)
    return specific if env.get(specific, "").strip() else name


def _parse_key_values(raw: str, reader: _Reader, name: str) -> dict[str, str]:
    """Parse the W3C-baggage-like ``k=v,k2=v2`` format OpenTelemetry uses for env lists."""
    result: dict[str, str] = {}
    for item in raw.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            reader.problem(f"{name} has an entry {item.strip()!r} that is not key=value; ignoring it")
            continue
        result[unquote(key.strip())] = unquote(value.strip())
    return result


# Before anything imports opentelemetry.propagate (which reads OTEL_PROPAGATORS at import):
# every tracebridge module imports this one first.
repair_sdk_environment()
