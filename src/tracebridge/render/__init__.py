"""Terminal rendering of traces (rich)."""
