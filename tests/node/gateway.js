// A Node.js order gateway with no tracing code: POST /orders sends the order to Kafka;
// POST /notify is what the Node consumer calls for every shipment.
"use strict";
const tracing = require("./tracing");
const http = require("http");
const { Kafka, logLevel } = require("kafkajs");

const kafka = new Kafka({ brokers: [process.env.KAFKA_BOOTSTRAP_SERVERS], logLevel: logLevel.WARN });
const producer = kafka.producer();

async function main() {
  await producer.connect();
  const server = http.createServer((request, response) => {
    let body = "";
    request.on("data", (chunk) => { body += chunk; });
    request.on("end", async () => {
      if (request.method === "GET" && request.url === "/health") { response.end("ok"); return; }
      if (request.method === "POST" && request.url === "/notify") { response.end("sent"); return; }
      if (request.method === "POST" && request.url === "/orders") {
        const order = JSON.parse(body || "{}");
        await producer.send({ topic: process.env.TOPIC, messages: [{ key: order.id, value: JSON.stringify(order) }] });
        response.statusCode = 202;
        response.end(JSON.stringify({ id: order.id }));
        return;
      }
      response.statusCode = 404;
      response.end();
    });
  });
  server.listen(Number(process.env.PORT), "127.0.0.1");
  const stop = async () => {
    server.close();
    await producer.disconnect();
    await tracing.shutdown();
    process.exit(0);
  };
  process.on("SIGTERM", stop);
}

main().catch((error) => { console.error(error); process.exit(1); });
