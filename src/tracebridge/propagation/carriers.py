"""Carriers: where a trace context travels inside a message.

Two carriers, one format.  Kafka *headers* are the default and touch nothing the business code
sees.  The *envelope* puts the same fields into a JSON object body under ``trace_context`` —
the "manual" option, for fleets whose consumers can't see headers (old clients, bridges, a
database outbox).  Consumers read headers first, then the envelope, so producers can move
from one to the other without breaking a chain.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, MutableSequence, Sequence
from typing import Any

from opentelemetry.propagators import textmap

ENVELOPE_FIELD = "trace_context"

KafkaHeaders = Sequence[tuple[str, bytes | None]]


class KafkaHeadersGetter(textmap.Getter[KafkaHeaders]):
    """Reads Kafka record headers: bytes values, repeated keys, any garbage tolerated.

    Keys match case-insensitively (as the same fields do over HTTP).  A value that is not UTF-8
    is decoded with replacement characters rather than skipped, so it still counts as present
    and fails validation — a corrupted ``traceparent`` next to a good one is a duplicate, and a
    duplicate starts a new trace.
    """

    def get(self, carrier: KafkaHeaders, key: str) -> list[str] | None:
        found: list[str] | None = None
        for item in carrier:
            try:
                name, value = item
            except (TypeError, ValueError):
                continue
            if name != key and (not isinstance(name, str) or name.lower() != key):
                continue
            if value is None:
                text = ""
            elif isinstance(value, bytes | bytearray | memoryview):
                text = bytes(value).decode("utf-8", "replace")
            else:
                text = str(value)
            if found is None:
                found = [text]
            else:
                found.append(text)
        return found

    def keys(self, carrier: KafkaHeaders) -> list[str]:
        return [item[0] for item in carrier if isinstance(item, tuple) and isinstance(item[0], str)]


class KafkaHeadersSetter(textmap.Setter[MutableSequence[tuple[str, bytes]]]):
    """Writes UTF-8 header values, replacing any earlier value of the same key.

    Replacing matters: a record re-sent by a consumer (a retry, a forward) arrives with the old
    ``traceparent`` already in its headers, and two of them would make the next hop start a new
    trace.
    """

    def set(self, carrier: MutableSequence[tuple[str, bytes]], key: str, value: str) -> None:
        for index in range(len(carrier) - 1, -1, -1):
            name = carrier[index][0]
            if isinstance(name, str) and name.lower() == key:
                del carrier[index]
        carrier.append((key, value.encode("utf-8")))


class DictGetter(textmap.Getter[Mapping[str, Any]]):
    """Reads an envelope's ``trace_context`` object; non-string values are ignored."""

    def get(self, carrier: Mapping[str, Any], key: str) -> list[str] | None:
        value = carrier.get(key)
        if isinstance(value, str):
            return [value]
        return None

    def keys(self, carrier: Mapping[str, Any]) -> list[str]:
        return [key for key in carrier if isinstance(key, str)]


KAFKA_HEADERS_GETTER = KafkaHeadersGetter()
KAFKA_HEADERS_SETTER = KafkaHeadersSetter()
DICT_GETTER = DictGetter()


def read_envelope(value: object) -> Mapping[str, Any] | None:
    """Return the ``trace_context`` object of a JSON-object body, or ``None``.

    Accepts the body as the consumer sees it: raw bytes/str, or an already deserialized
    mapping.  Bodies that can't hold an envelope are rejected by a substring test before any
    JSON parsing, so records without one cost almost nothing.
    """
    if isinstance(value, Mapping):
        found = value.get(ENVELOPE_FIELD)
        return found if isinstance(found, Mapping) else None
    if isinstance(value, bytes | bytearray):
        if b'"trace_context"' not in value:
            return None
    elif not isinstance(value, str) or '"trace_context"' not in value:
        return None
    body = _json_object(value)
    found = body.get(ENVELOPE_FIELD) if body is not None else None
    return found if isinstance(found, dict) else None


def write_envelope(value: object, fields: Mapping[str, str]) -> object | None:
    """Return ``value`` with ``fields`` under ``trace_context``, or ``None`` if it has no room.

    A mapping is copied (never mutated: the caller may reuse it); bytes/str must be a JSON
    object and come back in the same type.  Anything else — Avro, protobuf, plain text — can't
    carry an envelope, and the caller falls back to headers rather than lose the context.
    """
    if isinstance(value, Mapping):
        copied = dict(value)
        copied[ENVELOPE_FIELD] = dict(fields)
        return copied
    if not isinstance(value, bytes | bytearray | str):
        return None
    stripped = value.lstrip()
    body = _json_object(value) if stripped[:1] in (b"{", "{") else None
    if body is None:
        return None
    body[ENVELOPE_FIELD] = dict(fields)
    encoded = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    return encoded if isinstance(value, str) else encoded.encode("utf-8")


def _json_object(value: bytes | bytearray | str) -> dict[str, Any] | None:
    """``value`` parsed as a JSON object, or ``None`` for anything else (including hostile
    nesting deep enough to exhaust the parser)."""
    try:
        body = json.loads(value)
    except (ValueError, RecursionError):
        return None
    return body if isinstance(body, dict) else None
