"""Version and semantic-conventions schema of tracebridge's own instrumentation."""

__version__ = "0.1.0"
SCHEMA_URL = "https://opentelemetry.io/schemas/1.37.0"
