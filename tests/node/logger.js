// Stock OpenTelemetry JS logs: a LoggerProvider exporting OTLP/HTTP protobuf, set up as its docs
// show, and one log record emitted inside an active span (the SDK takes the trace and span id
// from the active context).  Prints the span's ids.  Nothing here knows about tracebridge.
"use strict";
const { trace, context } = require("@opentelemetry/api");
const { logs, SeverityNumber } = require("@opentelemetry/api-logs");
const { LoggerProvider, BatchLogRecordProcessor } = require("@opentelemetry/sdk-logs");
const { OTLPLogExporter } = require("@opentelemetry/exporter-logs-otlp-proto");
const { NodeTracerProvider, BatchSpanProcessor } = require("@opentelemetry/sdk-trace-node");
const { OTLPTraceExporter } = require("@opentelemetry/exporter-trace-otlp-proto");
const { resourceFromAttributes } = require("@opentelemetry/resources");

const resource = resourceFromAttributes({ "service.name": process.env.OTEL_SERVICE_NAME || "node" });
const tracing = new NodeTracerProvider({ resource, spanProcessors: [new BatchSpanProcessor(new OTLPTraceExporter())] });
tracing.register();
const logging = new LoggerProvider({ resource, processors: [new BatchLogRecordProcessor({ exporter: new OTLPLogExporter() })] });
logs.setGlobalLoggerProvider(logging);

const span = trace.getTracer("node-app").startSpan("reserve stock");
context.with(trace.setSpan(context.active(), span), () => {
  logs.getLogger("node-app").emit({
    severityNumber: SeverityNumber.WARN,
    severityText: "WARN",
    body: "stock low for sku-1",
    attributes: { "sku": "sku-1", "left": 2 },
  });
});
span.end();
const ids = span.spanContext();
Promise.all([logging.shutdown(), tracing.shutdown()]).then(() => {
  console.log(JSON.stringify({ trace_id: ids.traceId, span_id: ids.spanId }));
});
