"""``tracebridge check``: what this environment has, what traces it, what to install."""

from __future__ import annotations

import json
import subprocess
import sys

from packaging.requirements import Requirement


def check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tracebridge", "check", *args],
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
    # ours for the Kafka clients, upstream's (installed in the dev environment) for the web stacks
    assert ("confluent-kafka", "tracebridge (confluent_kafka, with confluent_kafka.aio)") in traced_by
    assert ("kafka-python", "tracebridge (kafka_python)") in traced_by
    assert ("aiokafka", "tracebridge (aiokafka)") in traced_by
    assert any(
        library == "flask" and (by or "").startswith("opentelemetry-instrumentation-flask ")
        for library, by in traced_by
    )
    # contrib's Kafka packages are installed too (the benchmark), yet never offered or named
    assert not any("kafka" in (row["install"] or "") for row in report["libraries"])
    for row in report["libraries"]:
        assert (row["traced_by"] is None) == (row["install"] is not None), row
        if row["install"]:
            assert Requirement(row["install"]).name.startswith("opentelemetry-instrumentation-")
    assert report["pip_install"] == sorted({row["install"] for row in report["libraries"] if row["install"]})


def test_requirements_are_the_pip_install_line_one_a_line() -> None:
    listed = json.loads(check("--json").stdout)["pip_install"]
    result = check("--requirements")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == listed
    table = check()
    assert "traced by" in table.stdout
    if listed:
        assert "pip install " + " ".join(f"'{r}'" for r in listed) in table.stdout
