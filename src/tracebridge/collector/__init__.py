"""OTLP/HTTP receiving: decoding and the receiver the demo and tests export to."""
