"""``tracebridge check``: what this environment has, what traces it, what to install."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from packaging.requirements import Requirement


def check(*args: str, http_spans: str = "light") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tracebridge", "check", *args],
        env={**os.environ, "TRACEBRIDGE_HTTP_SPANS": http_spans},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_check_names_what_traces_each_installed_library() -> None:
    result = check("--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    traced_by = {(row["library"], row["traced_by"]) for row in report["libraries"]}
    # ours for the Kafka clients and (light spans) the web stacks, upstream's for the rest
    assert ("confluent-kafka", "tracebridge (confluent_kafka, with confluent_kafka.aio)") in traced_by
    assert ("kafka-python", "tracebridge (kafka_python)") in traced_by
    assert ("aiokafka", "tracebridge (aiokafka)") in traced_by
    assert ("flask", "tracebridge (light WSGI spans)") in traced_by
    assert ("fastapi", "tracebridge (light ASGI spans)") in traced_by
    assert ("httpx", "tracebridge (light client spans)") in traced_by
    assert ("aiohttp", "tracebridge (light client spans)") in traced_by  # the client
    assert any(
        library == "aiohttp" and (by or "").startswith("opentelemetry-instrumentation-aiohttp-server ")
        for library, by in traced_by
    )  # the server, still upstream's
    # contrib's Kafka packages are installed too (the benchmark), yet never offered or named
    assert not any("kafka" in (row["install"] or "") for row in report["libraries"])
    for row in report["libraries"]:
        assert (row["traced_by"] is None) == (row["install"] is not None), row
        if row["install"]:
            assert Requirement(row["install"]).name.startswith("opentelemetry-instrumentation-")
    assert report["pip_install"] == sorted({row["install"] for row in report["libraries"] if row["install"]})


def test_the_upstream_fallback_is_traced_by_the_upstream_instrumentations() -> None:
    result = check("--json", http_spans="upstream")
    assert result.returncode == 0, result.stderr
    traced_by = {row["library"]: row["traced_by"] or "" for row in json.loads(result.stdout)["libraries"]}
    assert traced_by["flask"].startswith("opentelemetry-instrumentation-flask ")
    assert traced_by["httpx"].startswith("opentelemetry-instrumentation-httpx ")


def test_requirements_are_the_pip_install_line_one_a_line() -> None:
    listed = json.loads(check("--json").stdout)["pip_install"]
    result = check("--requirements")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == listed
    table = check()
    assert "traced by" in table.stdout
    if listed:
        assert "pip install " + " ".join(f"'{r}'" for r in listed) in table.stdout
