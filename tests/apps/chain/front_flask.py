"""Chain step 1: a Flask service that produces with confluent-kafka's Producer."""

import os

from confluent_kafka import Producer
from flask import Flask, request
from werkzeug.serving import make_server

app = Flask("front")
producer = Producer({"bootstrap.servers": os.environ["KAFKA_BOOTSTRAP_SERVERS"], "linger.ms": 0})


@app.post("/orders")
def create_order():
    order = request.get_json()
    producer.produce(os.environ["TOPIC"], f'{{"order_id": "{order["id"]}"}}'.encode(), order["id"].encode())
    producer.flush(10)
    return {"accepted": order["id"]}, 202


@app.get("/health")
def health():
    return {"status": "ok"}


make_server("127.0.0.1", int(os.environ["PORT"]), app, threaded=True).serve_forever()
