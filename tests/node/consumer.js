// A Node.js shipment consumer with no tracing code: reads EXPECT records from TOPIC with
// kafkajs eachMessage or eachBatch (MODE), calls NOTIFY_URL for each, prints their order ids, exits.
"use strict";
const tracing = require("./tracing");
const http = require("http");
const { Kafka, logLevel } = require("kafkajs");

const kafka = new Kafka({ brokers: [process.env.KAFKA_BOOTSTRAP_SERVERS], logLevel: logLevel.WARN });
const consumer = kafka.consumer({ groupId: process.env.GROUP, sessionTimeout: 6000, heartbeatInterval: 1000 });
const expected = Number(process.env.EXPECT || "1");
const seen = [];

function notify(key) {
  return new Promise((resolve, reject) => {
    const request = http.request(process.env.NOTIFY_URL, { method: "POST" }, (response) => {
      response.resume();
      response.on("end", resolve);
    });
    request.on("error", reject);
    request.end(key);
  });
}

async function handle(message) {
  const order = JSON.parse(message.value.toString());
  await notify(order.id);
  seen.push(order.id);
}

async function main() {
  await consumer.connect();
  await consumer.subscribe({ topic: process.env.TOPIC, fromBeginning: true });
  const done = new Promise((resolve) => {
    const check = () => { if (seen.length >= expected) resolve(); };
    const run = process.env.MODE === "batch"
      ? { eachBatch: async ({ batch }) => { for (const message of batch.messages) await handle(message); check(); } }
      : { eachMessage: async ({ message }) => { await handle(message); check(); } };
    consumer.run(run);
  });
  await done;
  await consumer.disconnect();
  await tracing.shutdown();
  console.log(seen.join(","));
}

main().catch((error) => { console.error(error); process.exit(1); });
