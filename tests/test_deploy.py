"""deploy/k8s: every manifest parses, every eshop service has a Deployment and a Service whose
ports agree, every environment variable is one the code reads, peers point at real Services,
and tracing goes through Istio's Telemetry API (no EnvoyFilter)."""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from eshop.config import ENVIRONMENT, Config
from tracebridge.config import Settings
from tracebridge.demo.stack import SERVICES

K8S = Path(__file__).resolve().parent.parent / "deploy" / "k8s"


class RecordingEnv(dict[str, str]):
    """An empty environment that remembers every name the code asks it for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        self.asked.add(key)
        return default

    def __contains__(self, key: object) -> bool:
        self.asked.add(str(key))
        return False


def names_read_by_the_code() -> set[str]:
    tracebridge_env, eshop_env = RecordingEnv(), RecordingEnv()
    Settings.from_env(tracebridge_env)
    Config.from_env(eshop_env)
    assert eshop_env.asked == set(ENVIRONMENT)  # the documented list is the real one
    return tracebridge_env.asked | eshop_env.asked


@functools.cache
def documents() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                docs.append(doc)
    return docs


def find(kind: str, name: str, namespace: str = "eshop") -> dict[str, Any]:
    found = [
        d
        for d in documents()
        if d["kind"] == kind and d["metadata"]["name"] == name and d["metadata"].get("namespace") == namespace
    ]
    assert len(found) == 1, f"{kind} {namespace}/{name}: {len(found)} found"
    return found[0]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def env_of(deployment: dict[str, Any]) -> dict[str, Any]:
    """Name → value (or the valueFrom reference) with envFrom ConfigMaps expanded."""
    spec = container(deployment)
    env: dict[str, Any] = {}
    for source in spec.get("envFrom", []):
        env.update(find("ConfigMap", source["configMapRef"]["name"])["data"])
    for item in spec.get("env", []):
        env[item["name"]] = item.get("value", item.get("valueFrom"))
    return env


def test_every_document_parses_and_names_its_kind() -> None:
    docs = documents()
    assert len(docs) >= 30
    for doc in docs:
        assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"]
    assert not [d for d in docs if d["kind"] == "EnvoyFilter"]


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_each_service_has_a_deployment_and_a_service_whose_ports_agree(service: Any) -> None:
    deployment = find("Deployment", service.name)
    svc = find("Service", service.name)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert svc["spec"]["selector"].items() <= labels.items()
    spec = container(deployment)
    ports = {p["name"]: p["containerPort"] for p in spec["ports"]}
    env = env_of(deployment)
    assert int(env["PORT"]) in ports.values()
    for port in svc["spec"]["ports"]:
        target = port["targetPort"]
        assert (ports[target] if isinstance(target, str) else target) == int(env["PORT"])
    for probe in ("readinessProbe", "livenessProbe"):
        assert spec[probe]["httpGet"]["path"] == "/health"
    assert env["OTEL_SERVICE_NAME"] == service.name
    command = spec["command"]
    assert command[:3] == ["tracebridge", "run", "--"] and command[3:5] == ["python", "-m"]
    assert command[5] == service.module and importlib.util.find_spec(service.module) is not None
    if service.domain is not None:
        secret = env["DATABASE_URL"]["secretKeyRef"]
        assert (
            urlsplit(find("Secret", secret["name"])["stringData"][secret["key"]]).path == f"/{service.domain}"
        )


def test_every_environment_variable_is_one_the_code_reads() -> None:
    known = names_read_by_the_code()
    for service in SERVICES:
        unknown = set(env_of(find("Deployment", service.name))) - known
        assert not unknown, f"{service.name}: {sorted(unknown)} are read by nothing"


def service_port(host: str, port: int) -> None:
    name, _, namespace = host.partition(".")
    namespace = (namespace.split(".")[0] if namespace else "") or "eshop"
    svc = find("Service", name, namespace)
    assert port in [p["port"] for p in svc["spec"]["ports"]], f"{host}:{port}"


def test_peer_urls_collector_and_kafka_point_at_real_services() -> None:
    for service in SERVICES:
        env = env_of(find("Deployment", service.name))
        for name, value in env.items():
            if (name.endswith("_URL") and name != "DATABASE_URL") or name == "OTEL_EXPORTER_OTLP_ENDPOINT":
                url = urlsplit(value)
                service_port(url.hostname or "", url.port or 80)
        for server in env["KAFKA_BOOTSTRAP_SERVERS"].split(","):
            host, _, port = server.rpartition(":")
            pod, _, headless = host.partition(".")
            assert find("StatefulSet", headless)["spec"]["serviceName"] == headless
            assert int(pod.rsplit("-", 1)[1]) < find("StatefulSet", headless)["spec"]["replicas"]
            service_port(headless, int(port))
    secrets = find("Secret", "eshop-databases")["stringData"]
    for url in secrets.values():
        parts = urlsplit(url)
        service_port(parts.hostname or "", parts.port or 5432)


def test_istio_routes_graphql_to_the_gateway_and_traces_through_the_telemetry_api() -> None:
    route = find("VirtualService", "eshop")["spec"]["http"][0]
    assert route["match"][0]["uri"] == {"exact": "/graphql"}
    destination = route["route"][0]["destination"]
    service_port(destination["host"].split(".")[0], destination["port"]["number"])
    telemetry = find("Telemetry", "mesh-tracing", "istio-system")
    assert telemetry["spec"]["tracing"][0]["providers"][0]["name"] == "otel-tracing"
    collector_config = yaml.safe_load(
        find("ConfigMap", "otel-collector", "observability")["data"]["config.yaml"]
    )
    exporter = collector_config["exporters"]["otlp/jaeger"]["endpoint"]
    host, _, port = exporter.rpartition(":")
    service_port(host, int(port))
