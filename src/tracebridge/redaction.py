"""Redaction: personal data and secrets never leave the process.

Every instrumentation we load writes attributes we don't control: Flask and requests record
URLs with their query strings, captured request headers carry ``Authorization``, an exception
message quotes the e-mail address it choked on.  So the policy sits in front of the exporter —
the one point every span of every instrumentation passes — and rewrites span names, attribute
values (of spans, events and links) and status descriptions before anything is encoded.

It runs in the export thread, off the request path, and only copies a span when something in
it changed.  Most values repeat (topic names, routes, methods), so results are cached.

``TRACEBRIDGE_REDACT`` is a ``;``-separated list (``;``, not ``,``: patterns contain commas):

- ``key:GLOB`` — attributes whose key matches are replaced whole (``key:enduser.*``);
- ``re:REGEX`` — every match in a string value is replaced (``re:SSN-\\d{3}-\\d{2}-\\d{4}``);
- ``card``, ``email``, ``url-query``, ``headers`` — the built-in rules, on by default;
  ``-card`` (etc.) turns one off, ``none`` turns all of them off.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import Link, Status

from tracebridge.span_copy import PLAIN_SPAN_TYPES, replaced

REDACTED = "REDACTED"  # the OpenTelemetry semantic conventions' placeholder (url.full, url.query)
BUILTIN_RULES = ("card", "email", "url-query", "headers")

# 13 to 19 digits, optionally grouped by single spaces or dashes; confirmed by the Luhn check, so
# order numbers and timestamps that merely look long are left alone.
_CARD = re.compile(r"(?<![\d])\d(?:[ -]?\d){12,18}(?![\d])")
_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")
# The value of every name=value pair after a '?' (a URL or a path with its query).
_QUERY_VALUE = re.compile(r"([?&;][^=&#;\s?]*=)[^&#;\s]*")
# Keys whose whole value is a query string (no '?').
_QUERY_KEYS = frozenset(("url.query", "http.query", "db.query.parameter"))
_HEADER_GLOBS = (
    "http.request.header.authorization",
    "http.request.header.proxy-authorization",
    "http.request.header.cookie",
    "http.response.header.set-cookie",
    "http.request.header.x-api-key",
    "http.request.header.x-auth-token",
    "*.password",
    "*.secret",
    "*.token",
)
_CACHE_LIMIT = 8192
_DIGITS_ONLY = str.maketrans({**{str(digit): "d" for digit in range(10)}, " ": None, "-": None})
_THIRTEEN_DIGITS = "d" * 13
_CACHEABLE_LENGTH = 512


def _luhn(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        number = ord(char) - 48
        if position % 2:
            number *= 2
            if number > 9:
                number -= 9
        total += number
    return total % 10 == 0


def _redact_card(match: re.Match[str]) -> str:
    digits = match.group(0).replace(" ", "").replace("-", "")
    return REDACTED if _luhn(digits) else match.group(0)


class RedactionError(ValueError):
    """A ``TRACEBRIDGE_REDACT`` entry that can't be used (the message says which and why)."""


@dataclass(frozen=True)
class RedactionPolicy:
    """What to take out of spans: whole keys, and patterns inside string values."""

    key_globs: tuple[str, ...] = ()
    patterns: tuple[re.Pattern[str], ...] = ()
    card: bool = True
    email: bool = True
    url_query: bool = True
    _exact_keys: frozenset[str] = field(default=frozenset(), init=False, repr=False, compare=False)
    _wild_keys: tuple[str, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        exact = frozenset(g for g in self.key_globs if not any(c in g for c in "*?["))
        object.__setattr__(self, "_exact_keys", exact)
        object.__setattr__(self, "_wild_keys", tuple(g for g in self.key_globs if g not in exact))

    @classmethod
    def parse(cls, spec: str | None) -> RedactionPolicy:
        """The policy ``TRACEBRIDGE_REDACT`` describes (``None`` or empty: the built-in rules).

        Raises :class:`RedactionError` naming the first entry that can't be used.
        """
        rules = dict.fromkeys(BUILTIN_RULES, True)
        globs: list[str] = []
        patterns: list[re.Pattern[str]] = []
        for raw in (spec or "").split(";"):
            entry = raw.strip()
            if not entry:
                continue
            if entry == "none":
                rules = dict.fromkeys(BUILTIN_RULES, False)
            elif entry in rules:
                rules[entry] = True
            elif entry.startswith("-") and entry[1:] in rules:
                rules[entry[1:]] = False
            elif entry.startswith("key:") and entry[4:].strip():
                globs.append(entry[4:].strip())
            elif entry.startswith("re:") and entry[3:]:
                try:
                    patterns.append(re.compile(entry[3:]))
                except re.error as error:
                    raise RedactionError(
                        f"TRACEBRIDGE_REDACT: {entry!r} is not a valid regular expression ({error})"
                    ) from None
            else:
                raise RedactionError(
                    f"TRACEBRIDGE_REDACT: {entry!r} is not key:GLOB, re:REGEX, none, or one of "
                    f"{', '.join(BUILTIN_RULES)} (a leading '-' turns one off)"
                )
        if rules["headers"]:
            globs.extend(_HEADER_GLOBS)
        return cls(
            key_globs=tuple(globs),
            patterns=tuple(patterns),
            card=rules["card"],
            email=rules["email"],
            url_query=rules["url-query"],
        )

    @property
    def empty(self) -> bool:
        return not (self.key_globs or self.patterns or self.card or self.email or self.url_query)

    def key_is_secret(self, key: str) -> bool:
        """Whether an attribute with this key is replaced whole."""
        if key in self._exact_keys:
            return True
        return any(fnmatch.fnmatchcase(key, glob) for glob in self._wild_keys)

    def text(self, value: str) -> str:
        """``value`` with every pattern's matches replaced."""
        if self.card and len(value) >= 13:
            value = _CARD.sub(_redact_card, value)
        if self.email and "@" in value:
            value = _EMAIL.sub(REDACTED, value)
        if self.url_query and "?" in value:
            value = _QUERY_VALUE.sub(r"\1" + REDACTED, value)
        for pattern in self.patterns:
            value = pattern.sub(REDACTED, value)
        return value


class Redactor:
    """Applies a :class:`RedactionPolicy` to finished spans, caching what it has seen."""

    def __init__(self, policy: RedactionPolicy) -> None:
        self.policy = policy
        self._texts: dict[str, str] = {}
        self._keys: dict[str, bool] = {}
        # Per tuple of keys (spans of one kind share it): which are secret, and whether one of
        # them holds a whole query string.
        self._key_sets: dict[tuple[str, ...], tuple[frozenset[str], bool]] = {}

    def _text(self, value: str) -> str:
        cached = self._texts.get(value)
        if cached is not None:
            return cached
        redacted = self.policy.text(value)
        self._remember(value, redacted)
        return redacted

    def _remember(self, text: str, redacted: str) -> None:
        """Keep a string's redaction (itself, for a clean one), within the cache's bounds."""
        if len(text) <= _CACHEABLE_LENGTH:
            if len(self._texts) >= _CACHE_LIMIT:
                self._texts.clear()
            self._texts[text] = redacted

    def _secret_key(self, key: str) -> bool:
        secret = self._keys.get(key)
        if secret is None:
            secret = self.policy.key_is_secret(key)
            if len(self._keys) < _CACHE_LIMIT:
                self._keys[key] = secret
        return secret

    def _value(self, key: str, value: Any, secret: bool) -> Any:
        if secret:
            if isinstance(value, list | tuple):
                return tuple(REDACTED for _ in value)
            return REDACTED
        if isinstance(value, str):
            if key in _QUERY_KEYS and self.policy.url_query:
                return self._text("?" + value)[1:]
            return self._text(value)
        if isinstance(value, list | tuple) and value and isinstance(value[0], str):
            return tuple(self._text(item) if isinstance(item, str) else item for item in value)
        return value

    def attributes(self, attributes: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
        """The attributes with secrets replaced; the same object when nothing changed.

        Most spans carry nothing to redact, so that is decided first in one pass: the keys
        (their secret ones, and whether one holds a query string, cached per key tuple) and each
        string value looked up among those seen; only a span that may hold a secret is walked
        value by value."""
        if not attributes:
            return attributes
        plain = attributes if type(attributes) is dict else _plain(attributes)
        keys = tuple(plain)
        known = self._key_sets.get(keys)
        if known is None:
            known = (
                frozenset(key for key in keys if self._secret_key(key)),
                self.policy.url_query and not _QUERY_KEYS.isdisjoint(keys),
            )
            if len(self._key_sets) >= _CACHE_LIMIT:
                self._key_sets.clear()
            self._key_sets[keys] = known
        secret, has_query = known
        if not secret and not has_query and not self._may_hold_secret(plain):
            return attributes
        changed: dict[str, Any] | None = None
        for key, value in plain.items():
            if isinstance(value, int | float) and key not in secret:
                continue
            new = self._value(key, value, key in secret)
            if new is not value and new != value:
                if changed is None:
                    changed = dict(plain)
                changed[key] = new
        return attributes if changed is None else changed

    def _may_hold_secret(self, plain: Mapping[str, Any]) -> bool:
        # Value by value, each string first looked up among those already seen: most repeat from
        # span to span (the system, the topic, the address), so only a new one is examined.
        seen = self._texts
        for value in plain.values():
            kind = type(value)
            if kind is str:
                redacted = seen.get(value)  # inline: this runs for every string of every span
                if redacted != value if redacted is not None else self._new_text_suspect(value):
                    return True
            elif (kind is tuple or kind is list) and any(
                type(item) is str and self._text_suspect(item) for item in value
            ):
                return True
        return False

    def _text_suspect(self, text: str) -> bool:
        redacted = self._texts.get(text)
        return redacted != text if redacted is not None else self._new_text_suspect(text)

    def _new_text_suspect(self, text: str) -> bool:
        """Whether a string not seen before may hold a secret; one that cannot is remembered
        as its own redaction (which it is: every rule needs what ``_suspect`` looks for)."""
        if self._suspect(text):
            return True
        self._remember(text, text)
        return False

    def _suspect(self, text: str) -> bool:
        policy = self.policy
        if policy.email and "@" in text:
            return True
        if policy.url_query and "?" in text:
            return True
        # 13 digits in a row once spaces and dashes are gone: a C-speed test the regex (slow on
        # the many digits of ids and addresses) only has to confirm.
        if policy.card and _THIRTEEN_DIGITS in text.translate(_DIGITS_ONLY):
            return True
        return any(pattern.search(text) is not None for pattern in policy.patterns)

    def span(self, span: ReadableSpan) -> ReadableSpan:
        """``span``, or a copy of it with every secret replaced."""
        # Each field read once; for the SDK's spans and ours straight from the object (their
        # properties return the same values, each through a Python call).
        if type(span) in PLAIN_SPAN_TYPES:
            original_name, original_status = span._name, span._status
            original_attributes = span._attributes
            original_events, original_links = span._events, span._links
        else:
            original_name, original_status = span.name, span.status
            original_attributes = getattr(span, "_attributes", None)
            if original_attributes is None:
                original_attributes = span.attributes
            original_events, original_links = span.events, span.links
        name = self._texts.get(original_name) or (original_name and self._text(original_name))
        attributes = self.attributes(original_attributes)
        events = _each(original_events, self._event) if original_events else original_events
        links = _each(original_links, self._link) if original_links else original_links
        status = original_status
        if status.description:
            description = self._text(status.description)
            if description != status.description:
                status = Status(status.status_code, description)
        if (
            name == original_name
            and attributes is original_attributes
            and events is original_events
            and links is original_links
            and status is original_status
        ):
            return span
        return replaced(span, name=name, attributes=attributes, events=events, links=links, status=status)

    def _event(self, event: Event) -> Event:
        attributes = self.attributes(event.attributes)
        name = self._text(event.name)
        if attributes is event.attributes and name == event.name:
            return event
        return Event(name, attributes, event.timestamp)

    def _link(self, link: Link) -> Link:
        attributes = self.attributes(link.attributes)
        return link if attributes is link.attributes else Link(link.context, attributes)


def _plain(attributes: Mapping[str, Any]) -> Mapping[str, Any]:
    """The dict behind the SDK's attribute views (a mappingproxy of BoundedAttributes), which
    iterate in Python; anything else as it is."""
    inner = getattr(attributes, "_dict", None)
    return inner if isinstance(inner, dict) else attributes


def _each(items: Sequence[Any], redact: Callable[[Any], Any]) -> Sequence[Any]:
    """``items`` redacted one by one; the same sequence when none of them changed."""
    if not items:
        return items
    redacted = [redact(item) for item in items]
    if all(new is old for new, old in zip(redacted, items, strict=True)):
        return items
    return tuple(redacted)


class RedactingExporter(SpanExporter):
    """Redacts every span, then hands the batch to the exporter behind it."""

    def __init__(self, inner: SpanExporter, policy: RedactionPolicy) -> None:
        self.inner = inner
        self.redactor = Redactor(policy)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        redact = self.redactor.span
        return self.inner.export([redact(span) for span in spans])

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)

    def __getattr__(self, name: str) -> Any:
        # dropped_spans and other counters of the exporter behind us stay visible.
        return getattr(self.inner, name)


__all__ = ["REDACTED", "RedactingExporter", "RedactionError", "RedactionPolicy", "Redactor"]
