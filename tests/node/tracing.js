// Stock OpenTelemetry JS, set up the way its docs show: a NodeTracerProvider exporting OTLP/HTTP
// protobuf, the http and kafkajs instrumentations registered before the app loads its modules.
// Nothing here knows about tracebridge.
"use strict";
const { NodeTracerProvider, BatchSpanProcessor } = require("@opentelemetry/sdk-trace-node");
const { OTLPTraceExporter } = require("@opentelemetry/exporter-trace-otlp-proto");
const { resourceFromAttributes } = require("@opentelemetry/resources");
const { registerInstrumentations } = require("@opentelemetry/instrumentation");
const { HttpInstrumentation } = require("@opentelemetry/instrumentation-http");
const { KafkaJsInstrumentation } = require("@opentelemetry/instrumentation-kafkajs");

const provider = new NodeTracerProvider({
  resource: resourceFromAttributes({ "service.name": process.env.OTEL_SERVICE_NAME || "node" }),
  spanProcessors: [new BatchSpanProcessor(new OTLPTraceExporter(), { scheduledDelayMillis: 100 })],
});
provider.register();
registerInstrumentations({ instrumentations: [new HttpInstrumentation(), new KafkaJsInstrumentation()] });

module.exports = { shutdown: () => provider.shutdown() };
