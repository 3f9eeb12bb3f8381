"""No environment variable that tracebridge or the OpenTelemetry SDK under it reads can stop the
application: each bad value is reported and the default used — in ``Settings`` and in a real
program started by ``tracebridge run``."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tracebridge.config import SDK_LIMIT_VARIABLES, Settings, repair_sdk_environment

# Every variable Settings reads that can be malformed, with a malformed value.
BAD_SETTINGS = {
    "OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "ftp://collector",
    "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "thrift",
    "OTEL_EXPORTER_OTLP_HEADERS": "no-equals-sign",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "=value",
    "OTEL_EXPORTER_OTLP_TIMEOUT": "soon",
    "OTEL_EXPORTER_OTLP_COMPRESSION": "zip",
    "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "soon",
    "OTEL_EXPORTER_OTLP_CERTIFICATE": "/nonexistent/ca.pem",
    "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY": "/nonexistent/key.pem",
    "OTEL_RESOURCE_ATTRIBUTES": "team",
    "OTEL_SDK_DISABLED": "maybe",
    "OTEL_TRACES_EXPORTER": "zipkin",
    "OTEL_TRACES_SAMPLER": "sometimes",
    "OTEL_PROPAGATORS": "tracecontext,b4",
    "OTEL_BSP_SCHEDULE_DELAY": "-5",
    "OTEL_BSP_MAX_QUEUE_SIZE": "big",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "0",
    "TRACEBRIDGE_KAFKA_CARRIER": "pigeon",
    "TRACEBRIDGE_CONSUMER_PARENT": "adopt",
    "TRACEBRIDGE_EXPORTER_RETRY_AFTER": "later",
    "TRACEBRIDGE_EXPORT_BUFFER": "-3",
    "TRACEBRIDGE_REDACT": "key:x;re:(unclosed",
    "TRACEBRIDGE_SHUTDOWN_TIMEOUT": "-1",
    "TRACEBRIDGE_INBOUND_CONTEXT": "maybe",
    "TRACEBRIDGE_LOG_EVENTS": "debug",
}


@pytest.mark.parametrize(("variable", "value"), sorted(BAD_SETTINGS.items()))
def test_a_bad_setting_is_reported_and_the_default_used(variable: str, value: str) -> None:
    settings = Settings.from_env({variable: value})
    default = Settings.from_env({})
    assert any(
        variable.removeprefix("OTEL_EXPORTER_OTLP_TRACES_").removeprefix("OTEL_EXPORTER_OTLP_") in p
        for p in settings.problems
    ), settings.problems
    changed = {
        name
        for name in Settings.__dataclass_fields__
        if name != "problems" and getattr(settings, name) != getattr(default, name)
    }
    assert changed <= {"propagators"}, changed  # the known propagator stays, the typo goes


def test_sampler_argument_out_of_range_is_reported() -> None:
    settings = Settings.from_env({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "1.5"})
    assert settings.sampler_arg == 1.0
    assert any("OTEL_TRACES_SAMPLER_ARG" in p for p in settings.problems)


@pytest.mark.parametrize("variable", SDK_LIMIT_VARIABLES)
def test_sdk_limits_the_sdk_would_raise_on_are_taken_out(variable: str) -> None:
    env = {
        variable: "lots",
        "OTEL_SPAN_LINK_COUNT_LIMIT" if variable != "OTEL_SPAN_LINK_COUNT_LIMIT" else "X": "7",
    }
    problems = repair_sdk_environment(env)
    assert variable not in env and env.get("OTEL_SPAN_LINK_COUNT_LIMIT", "7") == "7"
    assert [p for p in problems if variable in p]
    assert (
        repair_sdk_environment({variable: "unset"}) == [] and repair_sdk_environment({variable: " 12 "}) == []
    )


def test_propagator_typos_are_taken_out_and_the_rest_kept() -> None:
    env = {"OTEL_PROPAGATORS": "tracecontext, baggag ,b3"}
    assert repair_sdk_environment(env) and env["OTEL_PROPAGATORS"] == "tracecontext,b3"
    only_typos = {"OTEL_PROPAGATORS": "trace-context"}
    assert repair_sdk_environment(only_typos) and "OTEL_PROPAGATORS" not in only_typos


CASES = [
    ("OTEL_PROPAGATORS", "tracecontext,baggag"),
    *((name, "lots") for name in SDK_LIMIT_VARIABLES),
    *sorted(BAD_SETTINGS.items()),
]


@pytest.mark.parametrize(("variable", "value"), CASES, ids=[c[0] for c in CASES])
def test_tracebridge_run_starts_the_program_whatever_the_value(variable: str, value: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TRACEBRIDGE_"))}
    env |= {variable: value, "OTEL_TRACES_EXPORTER": env.get("OTEL_TRACES_EXPORTER", "none")}
    if variable == "OTEL_TRACES_EXPORTER":
        env[variable] = value
    program = "import opentelemetry.propagate, tracebridge; print('started')"
    result = subprocess.run(
        [sys.executable, "-m", "tracebridge", "run", "--", sys.executable, "-c", program],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "started"
    assert "tracebridge configuration:" in result.stderr and "Traceback" not in result.stderr


def test_tls_files_reach_the_exporter_and_traces_variables_win(tmp_path) -> None:
    from tracebridge.sdk import build_exporter

    ca, cert, key = (tmp_path / name for name in ("ca.pem", "client.pem", "client.key"))
    for path in (ca, cert, key):
        path.write_text("-----BEGIN PLACEHOLDER-----\n")
    settings = Settings.from_env(
        {
            "OTEL_EXPORTER_OTLP_CERTIFICATE": "/nonexistent/general.pem",  # the traces one wins
            "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE": str(ca),
            "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE": str(cert),
            "OTEL_EXPORTER_OTLP_CLIENT_KEY": str(key),
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "2500",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "9000",
        }
    )
    assert settings.problems == ()
    assert (settings.otlp_certificate, settings.otlp_client_certificate, settings.otlp_client_key) == (
        str(ca),
        str(cert),
        str(key),
    )
    exporter = build_exporter(settings)
    session = exporter.inner._session
    assert session.verify == str(ca) and session.cert == (str(cert), str(key))
    assert exporter.inner.timeout_s == 2.5
