"""Counting deliveries of the same record, as far as one process can see them.

A record seen again at an offset at or below the highest already delivered for its partition
in the same consumer group is a redelivery: a seek back, a rebalance, a consumer restarted in
the same process, a failed handler retried by re-reading.  A retry record re-published by the
application can say which attempt it is in the ``tracebridge-attempt`` header.  A redelivery
after the whole process died is the analysis' job (it sees two process spans for one offset);
we deliberately keep no state on disk for it.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

ATTEMPT_HEADER = "tracebridge-attempt"


class DeliveryTracker:
    """Per (group, topic, partition): highest offset delivered, and attempts of redelivered ones.

    Memory is bounded: only redelivered offsets get an entry, and the oldest are forgotten past
    ``max_redelivered`` (an old redelivery seen again then counts from 2, never from 1).
    """

    def __init__(self, max_redelivered: int = 100_000) -> None:
        self.max_redelivered = max_redelivered
        self._highest: dict[tuple[Hashable, str, int], int] = {}
        self._attempts: dict[tuple[Hashable, str, int, int], int] = {}

    def attempt(
        self, group: Hashable, topic: str, partition: int, offset: int, first_attempt: int = 1
    ) -> int:
        """Record one delivery and return its attempt number (``first_attempt`` for a new record)."""
        key = (group, topic, partition)
        highest = self._highest.get(key)
        if highest is None or offset > highest:
            self._highest[key] = offset
            return first_attempt
        attempt_key = (group, topic, partition, offset)
        attempts = self._attempts.pop(attempt_key, first_attempt) + 1
        self._attempts[attempt_key] = attempts
        if len(self._attempts) > self.max_redelivered:
            del self._attempts[next(iter(self._attempts))]
        return attempts

    def forget(self) -> None:
        """Drop everything (tests, and uninstrument)."""
        self._highest.clear()
        self._attempts.clear()


def attempt_from_headers(headers: Sequence[tuple[str, bytes | None]] | None) -> int:
    """The attempt a re-published retry record declares, or 1; garbage counts as 1."""
    if not headers:
        return 1
    for item in headers:
        if item[0] == ATTEMPT_HEADER:
            raw = item[1]
            try:
                value = int(raw) if raw is not None else 1
            except (TypeError, ValueError):
                return 1
            return value if 1 <= value <= 1_000_000 else 1
    return 1
