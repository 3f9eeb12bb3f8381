"""Broker-neutral messaging spans: send, receive, process, links, attempts, queue wait."""

from tracebridge.messaging.delivery import ATTEMPT_HEADER, DeliveryTracker
from tracebridge.messaging.spans import ClientInfo, ConsumedRecord, MessagingSpans, Record

__all__ = ["ATTEMPT_HEADER", "ClientInfo", "ConsumedRecord", "DeliveryTracker", "MessagingSpans", "Record"]
