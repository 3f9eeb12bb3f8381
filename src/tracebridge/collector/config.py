"""What one collector is told: limits, retention, token, the broker to ask."""

from __future__ import annotations

from dataclasses import dataclass

from tracebridge.analysis.pending import Offsets


@dataclass
class CollectorConfig:
    """Limits and policies of one collector."""

    max_body_bytes: int = 8 * 1024 * 1024  # after decompression
    max_pending_requests: int = 64  # requests waiting for the writer before we answer 429
    retry_after_s: int = 1
    retention_max_age_s: float | None = 7 * 24 * 3600
    retention_max_bytes: int | None = 2 * 1024**3
    retention_every_s: float = 60.0
    token: str | None = None
    # The broker to ask how far consumer groups have got, for orders in flight (``--kafka``).
    offsets: Offsets | None = None
