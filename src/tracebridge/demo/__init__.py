"""The demo chain: HTTP → Kafka → consumer → HTTP → Kafka → consumer, as real processes."""
