"""Redaction in front of the exporter: what each rule takes out of real SDK spans, what it
leaves alone, and how TRACEBRIDGE_REDACT is read."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanContext, Status, StatusCode, TraceFlags

from tracebridge.config import Settings
from tracebridge.redaction import REDACTED, RedactingExporter, RedactionError, RedactionPolicy

CARD = "4111111111111111"  # passes the Luhn check
NOT_A_CARD = "4111111111111112"  # 16 digits that don't


def exported(spec: str | None, build) -> dict:  # type: ignore[no-untyped-def]
    """Make one span with ``build(tracer)`` and return it as the exporter behind the policy saw it."""
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(RedactingExporter(memory, RedactionPolicy.parse(spec))))
    build(provider.get_tracer("test"))
    (span,) = memory.get_finished_spans()
    return {
        "name": span.name,
        "attributes": dict(span.attributes or {}),
        "events": [(e.name, dict(e.attributes or {})) for e in span.events],
        "links": [dict(link.attributes or {}) for link in span.links],
        "status": span.status.description,
    }


def with_attributes(**attributes: object):  # type: ignore[no-untyped-def]
    def build(tracer) -> None:  # type: ignore[no-untyped-def]
        with tracer.start_as_current_span(
            "span", attributes={k.replace("__", "."): v for k, v in attributes.items()}
        ):
            pass

    return build


def test_card_numbers_that_pass_the_luhn_check_are_redacted_in_any_grouping() -> None:
    span = exported(
        None,
        with_attributes(
            a=f"card {CARD} declined", b="4111 1111 1111 1111", c="4111-1111-1111-1111", d=NOT_A_CARD
        ),
    )
    assert span["attributes"] == {
        "a": f"card {REDACTED} declined",
        "b": REDACTED,
        "c": REDACTED,
        "d": NOT_A_CARD,  # an order number that merely looks long stays readable
    }


def test_email_addresses_are_redacted_inside_any_text() -> None:
    span = exported(None, with_attributes(msg="no recipient for Jane.Doe+shop@mail.example.co.uk, retrying"))
    assert span["attributes"]["msg"] == f"no recipient for {REDACTED}, retrying"


def test_url_query_values_are_redacted_and_names_kept() -> None:
    span = exported(
        None,
        with_attributes(
            http__url="http://billing:8080/charges?token=s3cr3t&amount=5#frag",
            http__target="/stock/MUG-7?api_key=abc",
            url__query="q=hello&flag",
            url__path="/stock/MUG-7",
        ),
    )
    assert span["attributes"] == {
        "http.url": f"http://billing:8080/charges?token={REDACTED}&amount={REDACTED}#frag",
        "http.target": f"/stock/MUG-7?api_key={REDACTED}",
        "url.query": f"q={REDACTED}&flag",
        "url.path": "/stock/MUG-7",
    }


def test_captured_credential_headers_are_replaced_whole() -> None:
    span = exported(
        None,
        with_attributes(
            http__request__header__authorization=("Bearer eyJhbGciOi",),
            http__request__header__cookie=("session=1", "theme=dark"),
            http__request__header__user_agent=("curl/8",),
        ),
    )
    assert span["attributes"] == {
        "http.request.header.authorization": (REDACTED,),
        "http.request.header.cookie": (REDACTED, REDACTED),
        "http.request.header.user_agent": ("curl/8",),
    }


def test_names_status_events_and_links_are_redacted_too() -> None:
    link_context = SpanContext(1, 2, is_remote=True, trace_flags=TraceFlags(1))

    def build(tracer) -> None:  # type: ignore[no-untyped-def]
        span = tracer.start_span(
            "GET /users/bob@example.com", links=[Link(link_context, {"who": "bob@example.com"})]
        )
        try:
            raise ValueError(f"card {CARD} refused for bob@example.com")
        except ValueError as error:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, str(error)))
        span.end()

    span = exported(None, build)
    assert span["name"] == f"GET /users/{REDACTED}"
    assert span["status"] == f"card {REDACTED} refused for {REDACTED}"
    assert span["links"] == [{"who": REDACTED}]
    ((name, attributes),) = span["events"]
    assert name == "exception"
    assert attributes["exception.message"] == f"card {REDACTED} refused for {REDACTED}"
    assert (
        CARD not in attributes["exception.stacktrace"]
        and "bob@example.com" not in attributes["exception.stacktrace"]
    )


def test_own_keys_and_patterns_extend_the_defaults() -> None:
    span = exported(
        r"key:enduser.*; re:SSN-\d{3}-\d{2}-\d{4}; key:customer.pin",
        with_attributes(
            enduser__id="u-17",
            customer__pin=1234,
            note="SSN-123-45-6789 on file",
            mail="a@b.example.org",
            count=3,
        ),
    )
    assert span["attributes"] == {
        "enduser.id": REDACTED,
        "customer.pin": REDACTED,  # a secret key is replaced whatever its type
        "note": f"{REDACTED} on file",
        "mail": REDACTED,  # the defaults still apply
        "count": 3,
    }


def test_built_in_rules_can_be_turned_off_one_by_one_or_all() -> None:
    values = with_attributes(mail="a@b.example.org", card=CARD, url="/x?k=v")
    assert exported("-email", values)["attributes"] == {
        "mail": "a@b.example.org",
        "card": REDACTED,
        "url": f"/x?k={REDACTED}",
    }
    assert exported("none", values)["attributes"] == {
        "mail": "a@b.example.org",
        "card": CARD,
        "url": "/x?k=v",
    }
    assert RedactionPolicy.parse("none").empty


def test_a_span_without_secrets_is_exported_as_it_is() -> None:
    handed_on: list = []

    class Recording(InMemorySpanExporter):
        def export(self, spans):  # type: ignore[no-untyped-def]
            handed_on.extend(spans)
            return super().export(spans)

    received: list = []

    class Redacting(RedactingExporter):
        def export(self, spans):  # type: ignore[no-untyped-def]
            received.extend(spans)
            return super().export(spans)

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(Redacting(Recording(), RedactionPolicy.parse(None))))
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("send orders", attributes={"messaging.system": "kafka", "n": 1}):
        pass
    with tracer.start_as_current_span("send orders", attributes={"who": "a@b.example.org"}):
        pass
    assert handed_on[0] is received[0]  # nothing to take out: not copied
    assert handed_on[1] is not received[1] and handed_on[1].attributes["who"] == REDACTED


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("re:([", "not a valid regular expression"),
        ("keys:x", "is not key:GLOB, re:REGEX"),
        ("-everything", "is not key:GLOB, re:REGEX"),
    ],
)
def test_a_bad_spec_is_a_clear_error(spec: str, message: str) -> None:
    with pytest.raises(RedactionError, match=message):
        RedactionPolicy.parse(spec)


def test_a_bad_setting_is_reported_and_the_built_in_rules_still_apply() -> None:
    settings = Settings.from_env({"TRACEBRIDGE_REDACT": "re:(["})
    assert settings.redact == ""
    assert any("TRACEBRIDGE_REDACT" in p and "built-in rules" in p for p in settings.problems)
    assert Settings.from_env({"TRACEBRIDGE_REDACT": "key:x.*"}).redact == "key:x.*"


def test_values_seen_before_are_judged_as_the_first_time() -> None:
    """Strings are looked up among those already examined (most repeat from span to span):
    a remembered clean value stays untouched, a remembered secret is redacted every time, and a
    new secret in a span of the same shape, or inside a list, is still found."""
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(RedactingExporter(memory, RedactionPolicy.parse(None))))
    tracer = provider.get_tracer("t")
    for who in ("kafka", "kafka", "a@b.example.org", "a@b.example.org", "kafka", f"card {CARD}"):
        with tracer.start_as_current_span("send", attributes={"messaging.system": "kafka", "who": who}):
            pass
    with tracer.start_as_current_span("send", attributes={"tags": ["kafka", "c@d.example.org"]}):
        pass
    with tracer.start_as_current_span("send", attributes={"tags": ["kafka", "orders"]}):
        pass
    attributes = [dict(span.attributes or {}) for span in memory.get_finished_spans()]
    assert [a.get("who") for a in attributes[:6]] == [
        "kafka",
        "kafka",
        REDACTED,
        REDACTED,
        "kafka",
        f"card {REDACTED}",
    ]
    assert all(a.get("messaging.system", "kafka") == "kafka" for a in attributes)
    assert attributes[6]["tags"] == ("kafka", REDACTED)
    assert attributes[7]["tags"] == ("kafka", "orders")
