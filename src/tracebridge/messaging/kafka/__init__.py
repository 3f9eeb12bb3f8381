"""Kafka client adapters, one module per client library."""
