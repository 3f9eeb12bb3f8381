"""Write the Tempo and Jaeger v2 responses for one polyglot order (Go kotel checkout → .NET
Confluent.Kafka billing, link only → HTTP to ledger) in each backend's wire format."""

import base64
import json
from pathlib import Path

OUT = Path(__file__).parent
A = "7c0a5b2e9d3f41a8b6e2c4d1f0a9e837"  # checkout's trace
B = "0e41d2c3b4a5968778695a4b3c2d1e0f"  # billing's own trace (leading zero: Tempo's search drops it)
S = {
    "root": "a1b2c3d4e5f60718",
    "send": "b2c3d4e5f6071829",
    "process": "c3d4e5f60718293a",
    "call": "d4e5f60718293a4b",
    "served": "e5f60718293a4b5c",
}
T0 = 1764590400_000_000_000  # 2025-12-01T12:00:00Z
MS = 1_000_000


def ns(ms):
    return str(T0 + int(ms * MS))


def kv(key, value):
    if isinstance(value, bool):
        v = {"boolValue": value}
    elif isinstance(value, int):
        v = {"intValue": str(value)}
    else:
        v = {"stringValue": value}
    return {"key": key, "value": v}


def spans(encode):
    checkout = [
        {
            "traceId": encode(A),
            "spanId": encode(S["root"]),
            "name": "POST /orders",
            "kind": "SPAN_KIND_SERVER",
            "startTimeUnixNano": ns(0),
            "endTimeUnixNano": ns(31),
            "status": {},
            "attributes": [
                kv("http.request.method", "POST"),
                kv("http.route", "/orders"),
                kv("http.response.status_code", 202),
                kv("order.id", "o-7731"),
            ],
        },
        {
            "traceId": encode(A),
            "spanId": encode(S["send"]),
            "parentSpanId": encode(S["root"]),
            "name": "orders send",
            "kind": "SPAN_KIND_PRODUCER",
            "startTimeUnixNano": ns(18),
            "endTimeUnixNano": ns(22),
            "status": {},
            "attributes": [
                kv("messaging.system", "kafka"),
                kv("messaging.destination.name", "orders"),
                kv("messaging.destination.kind", "topic"),
                kv("messaging.kafka.destination.partition", 1),
                kv("messaging.kafka.message.key", "o-7731"),
                kv("messaging.kafka.message.offset", 4410),
            ],
        },
    ]
    billing = [
        {
            "traceId": encode(B),
            "spanId": encode(S["process"]),
            "name": "process orders",
            "kind": "SPAN_KIND_CONSUMER",
            "startTimeUnixNano": ns(1422),
            "endTimeUnixNano": ns(1610),
            "status": {"code": "STATUS_CODE_ERROR", "message": "ledger answered 503"},
            "links": [{"traceId": encode(A), "spanId": encode(S["send"]), "attributes": []}],
            "attributes": [
                kv("messaging.system", "kafka"),
                kv("messaging.destination.name", "orders"),
                kv("messaging.operation.type", "process"),
                kv("messaging.destination.partition.id", "1"),
                kv("messaging.kafka.offset", 4410),
                kv("messaging.consumer.group.name", "billing"),
            ],
            "events": [
                {
                    "timeUnixNano": ns(1609),
                    "name": "exception",
                    "attributes": [
                        kv("exception.type", "System.Net.Http.HttpRequestException"),
                        kv(
                            "exception.message",
                            "Response status code does not indicate success: 503 (Service Unavailable).",
                        ),
                    ],
                }
            ],
        },
        {
            "traceId": encode(B),
            "spanId": encode(S["call"]),
            "parentSpanId": encode(S["process"]),
            "name": "POST",
            "kind": "SPAN_KIND_CLIENT",
            "startTimeUnixNano": ns(1430),
            "endTimeUnixNano": ns(1601),
            "status": {"code": "STATUS_CODE_ERROR"},
            "attributes": [
                kv("http.request.method", "POST"),
                kv("url.full", "http://ledger:8080/entries"),
                kv("http.response.status_code", 503),
                kv("error.type", "503"),
            ],
        },
    ]
    ledger = [
        {
            "traceId": encode(B),
            "spanId": encode(S["served"]),
            "parentSpanId": encode(S["call"]),
            "name": "POST /entries",
            "kind": "SPAN_KIND_SERVER",
            "startTimeUnixNano": ns(1433),
            "endTimeUnixNano": ns(1598),
            "status": {"code": "STATUS_CODE_ERROR"},
            "attributes": [
                kv("http.request.method", "POST"),
                kv("http.route", "/entries"),
                kv("http.response.status_code", 503),
            ],
        },
    ]
    return checkout, billing, ledger


def resource(service, sdk, lang):
    return {
        "attributes": [
            kv("service.name", service),
            kv("telemetry.sdk.name", sdk),
            kv("telemetry.sdk.language", lang),
        ]
    }


def otlp(encode, which):
    checkout, billing, ledger = spans(encode)
    if which == "A":
        return [
            {
                "resource": resource("checkout", "opentelemetry", "go"),
                "scopeSpans": [
                    {"scope": {"name": "github.com/twmb/franz-go/plugin/kotel"}, "spans": [checkout[1]]},
                    {
                        "scope": {
                            "name": "go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp",
                            "version": "0.63.0",
                        },
                        "spans": [checkout[0]],
                    },
                ],
            }
        ]
    return [
        {
            "resource": resource("billing", "opentelemetry", "dotnet"),
            "scopeSpans": [
                {"scope": {"name": "OpenTelemetry.Instrumentation.ConfluentKafka"}, "spans": [billing[0]]},
                {"scope": {"name": "System.Net.Http"}, "spans": [billing[1]]},
            ],
        },
        {
            "resource": resource("ledger", "opentelemetry", "java"),
            "scopeSpans": [
                {
                    "scope": {"name": "io.opentelemetry.tomcat-10.0", "version": "2.21.0-alpha"},
                    "spans": ledger,
                }
            ],
        },
    ]


def b64(h):
    return base64.b64encode(bytes.fromhex(h)).decode()


def hexid(h):
    return h


tempo = OUT / "tempo"
tempo.mkdir(parents=True, exist_ok=True)
for which, _tid in (("A", A), ("B", B)):
    (tempo / f"trace-{which}.json").write_text(
        json.dumps(
            {"trace": {"resourceSpans": otlp(b64, which)}, "metrics": {"inspectedBytes": "48213"}}, indent=1
        )
    )


def summary(tid, root_service, root_name, start_ms, dur_ms, matched):
    return {
        "traceID": tid.lstrip("0"),
        "rootServiceName": root_service,
        "rootTraceName": root_name,
        "startTimeUnixNano": ns(start_ms),
        "durationMs": dur_ms,
        "spanSets": [
            {
                "spans": [
                    {
                        "spanID": sid,
                        "startTimeUnixNano": ns(s),
                        "durationNanos": str(int(d * MS)),
                        "attributes": [],
                    }
                    for sid, s, d in matched
                ],
                "matched": len(matched),
            }
        ],
    }


metrics = {
    "inspectedTraces": 212,
    "inspectedBytes": "1843200",
    "totalBlocks": 3,
    "completedJobs": 3,
    "totalJobs": 3,
}
(tempo / "search-linked-to-A.json").write_text(
    json.dumps(
        {
            "traces": [summary(B, "billing", "process orders", 1422, 188, [(S["process"], 1422, 188)])],
            "metrics": metrics,
        },
        indent=1,
    )
)
(tempo / "search-empty.json").write_text(json.dumps({"traces": [], "metrics": metrics}, indent=1))
(tempo / "search-order.json").write_text(
    json.dumps(
        {"traces": [summary(A, "checkout", "POST /orders", 0, 31, [(S["root"], 0, 31)])], "metrics": metrics},
        indent=1,
    )
)
(tempo / "search-all.json").write_text(
    json.dumps(
        {
            "traces": [
                summary(B, "billing", "process orders", 1422, 188, [(S["process"], 1422, 188)]),
                summary(A, "checkout", "POST /orders", 0, 31, [(S["root"], 0, 31)]),
            ],
            "metrics": metrics,
        },
        indent=1,
    )
)
(tempo / "services.json").write_text(
    json.dumps(
        {
            "tagValues": [{"type": "string", "value": v} for v in ("checkout", "billing", "ledger")],
            "metrics": {"inspectedBytes": "1290"},
        },
        indent=1,
    )
)
(tempo / "echo.txt").write_text("echo")
index = [
    {"path": "/api/echo", "file": "echo.txt", "type": "text/plain"},
    {"path": f"/api/v2/traces/{A}", "file": "trace-A.json"},
    {"path": f"/api/v2/traces/{B}", "file": "trace-B.json"},
    {"path": "/api/search", "query": {"q": f'{{ link:traceID = "{A}" }}'}, "file": "search-linked-to-A.json"},
    {"path": "/api/search", "query": {"q": f'{{ link:traceID = "{B}" }}'}, "file": "search-empty.json"},
    {"path": "/api/search", "query": {"q": '{ .order.id = "o-7731" }'}, "file": "search-order.json"},
    {"path": "/api/search", "query": {"q": "{ }"}, "file": "search-all.json"},
    {"path": "/api/search", "file": "search-empty.json"},
    {"path": "/api/v2/search/tag/resource.service.name/values", "file": "services.json"},
    {"path": "/api/v2/traces/", "prefix": True, "status": 404, "file": "not-found.txt", "type": "text/plain"},
]
(tempo / "not-found.txt").write_text("trace not found")
(tempo / "index.json").write_text(json.dumps(index, indent=1))

# Jaeger v2 (query service): /api/v3 answers OTLP JSON (hex ids) in "result"; the classic
# /api/services and /api/traces search answer Jaeger's classic JSON.
jaeger = OUT / "jaeger"
jaeger.mkdir(parents=True, exist_ok=True)
for which in ("A", "B"):
    (jaeger / f"v3-trace-{which}.json").write_text(
        json.dumps({"result": {"resourceSpans": otlp(hexid, which)}}, indent=1)
    )


def classic(which):
    """The classic JSON Jaeger's /api/traces search returns for the same spans."""
    out_spans, processes = [], {}
    for number, rs in enumerate(otlp(hexid, which), start=1):
        attrs = {a["key"]: a["value"] for a in rs["resource"]["attributes"]}
        pid = f"p{number}"
        processes[pid] = {
            "serviceName": attrs["service.name"]["stringValue"],
            "tags": [
                {"key": k, "type": "string", "value": v["stringValue"]}
                for k, v in attrs.items()
                if k != "service.name"
            ],
        }
        for scope in rs["scopeSpans"]:
            for sp in scope["spans"]:
                tags = [
                    {"key": "otel.scope.name", "type": "string", "value": scope["scope"]["name"]},
                    {
                        "key": "span.kind",
                        "type": "string",
                        "value": sp["kind"].removeprefix("SPAN_KIND_").lower(),
                    },
                ]
                for a in sp["attributes"]:
                    v = a["value"]
                    if "intValue" in v:
                        tags.append({"key": a["key"], "type": "int64", "value": int(v["intValue"])})
                    else:
                        tags.append({"key": a["key"], "type": "string", "value": v["stringValue"]})
                if sp["status"].get("code") == "STATUS_CODE_ERROR":
                    tags += [
                        {"key": "otel.status_code", "type": "string", "value": "ERROR"},
                        {"key": "error", "type": "bool", "value": True},
                    ]
                    if sp["status"].get("message"):
                        tags.append(
                            {
                                "key": "otel.status_description",
                                "type": "string",
                                "value": sp["status"]["message"],
                            }
                        )
                refs = []
                if sp.get("parentSpanId"):
                    refs.append(
                        {"refType": "CHILD_OF", "traceID": sp["traceId"], "spanID": sp["parentSpanId"]}
                    )
                for link in sp.get("links", []):
                    refs.append(
                        {"refType": "FOLLOWS_FROM", "traceID": link["traceId"], "spanID": link["spanId"]}
                    )
                logs = [
                    {
                        "timestamp": int(e["timeUnixNano"]) // 1000,
                        "fields": [{"key": "event", "type": "string", "value": e["name"]}]
                        + [
                            {"key": a["key"], "type": "string", "value": a["value"]["stringValue"]}
                            for a in e["attributes"]
                        ],
                    }
                    for e in sp.get("events", [])
                ]
                start = int(sp["startTimeUnixNano"]) // 1000
                out_spans.append(
                    {
                        "traceID": sp["traceId"],
                        "spanID": sp["spanId"],
                        "operationName": sp["name"],
                        "references": refs,
                        "startTime": start,
                        "duration": int(sp["endTimeUnixNano"]) // 1000 - start,
                        "tags": tags,
                        "logs": logs,
                        "processID": pid,
                        "warnings": None,
                        "flags": 1,
                    }
                )
    return {
        "traceID": (A if which == "A" else B),
        "spans": out_spans,
        "processes": processes,
        "warnings": None,
    }


def envelope(data):
    return {"data": data, "total": 0, "limit": 0, "offset": 0, "errors": None}


(jaeger / "services.json").write_text(json.dumps(envelope(["billing", "checkout", "ledger"]), indent=1))
(jaeger / "search-checkout.json").write_text(json.dumps(envelope([classic("A")]), indent=1))
(jaeger / "search-billing.json").write_text(json.dumps(envelope([classic("B")]), indent=1))
(jaeger / "search-ledger.json").write_text(json.dumps(envelope([classic("B")]), indent=1))
(jaeger / "search-none.json").write_text(json.dumps(envelope([]), indent=1))
(jaeger / "not-found.json").write_text(
    json.dumps(
        {
            "data": None,
            "total": 0,
            "limit": 0,
            "offset": 0,
            "errors": [{"code": 404, "msg": "trace not found"}],
        }
    )
)
(jaeger / "api-404.txt").write_text("404 page not found\n")
jindex = [
    {"path": f"/api/v3/traces/{A}", "file": "v3-trace-A.json"},
    {"path": f"/api/v3/traces/{B}", "file": "v3-trace-B.json"},
    {"path": "/api/v3/traces/", "prefix": True, "status": 404, "file": "not-found.json"},
    {"path": "/api/traces/", "prefix": True, "status": 404, "file": "not-found.json"},
    {"path": "/api/services", "file": "services.json"},
    {
        "path": "/api/traces",
        "query": {"service": "checkout", "tags": '{"order.id": "o-7731"}'},
        "file": "search-checkout.json",
    },
    {"path": "/api/traces", "query": {"tags": '{"order.id": "o-7731"}'}, "file": "search-none.json"},
    {"path": "/api/traces", "query": {"service": "checkout"}, "file": "search-checkout.json"},
    {"path": "/api/traces", "query": {"service": "billing"}, "file": "search-billing.json"},
    {"path": "/api/traces", "query": {"service": "ledger"}, "file": "search-ledger.json"},
    {"path": "/api/", "prefix": True, "status": 404, "file": "api-404.txt", "type": "text/plain"},
]
(jaeger / "index.json").write_text(json.dumps(jindex, indent=1))
print("written")
