"""The embedded trace backend: OTLP/HTTP receiver, SQLite store, query API."""
