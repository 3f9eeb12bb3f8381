"""Trace analysis, independent of where spans come from."""

from tracebridge.analysis.model import LinkRecord, SpanRecord, Trace

__all__ = ["LinkRecord", "SpanRecord", "Trace"]
