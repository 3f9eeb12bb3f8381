"""The web UI in real headless Chromium (Debian's, driven by Playwright), on a collector fed by
the real eshop stack: queue-wait bars, critical path and verdict, links across traces and
back, search by order.id, the service map, the doctor, hostile span text, a 5 000-span trace,
the bearer token and dark mode.

Set TRACEBRIDGE_SCREENSHOTS=docs/screenshots (``make screenshots``) to save each page."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tracebridge.analysis.diagnosis import diagnose
from tracebridge.analysis.model import Trace
from tracebridge.analysis.story import story
from tracebridge.collector.source import StoreSource
from tracebridge.demo import runner
from tracebridge.demo.stack import Faults, Stack

CHROMIUM = os.environ.get("TRACEBRIDGE_CHROMIUM", "/usr/bin/chromium")
SHOTS = os.environ.get("TRACEBRIDGE_SCREENSHOTS")
HOSTILE_NAME = "<img src=x onerror=alert(1)>"
HOSTILE_VALUE = "<script>window.__pwned = 1</script>"
BIG = 5000
DEEP = 10_000
MS = 1_000_000  # the browser holds nanosecond times as doubles: steps of 256 ns near now


def hexid(bits: int) -> str:
    return f"{random.getrandbits(bits):0{bits // 4}x}"


def otlp(spans: list[dict], service: str) -> bytes:
    """An OTLP/JSON export request, as any SDK would send it."""

    def attributes(values: dict) -> list[dict]:
        return [{"key": k, "value": {"stringValue": str(v)}} for k, v in values.items()]

    return json.dumps(
        {
            "resourceSpans": [
                {
                    "resource": {"attributes": attributes({"service.name": service})},
                    "scopeSpans": [
                        {
                            "scope": {"name": "test"},
                            "spans": [
                                {
                                    "traceId": span["trace_id"],
                                    "spanId": span["span_id"],
                                    **({"parentSpanId": span["parent"]} if span.get("parent") else {}),
                                    "name": span["name"],
                                    "kind": span.get("kind", 1),
                                    "startTimeUnixNano": str(span["start"]),
                                    "endTimeUnixNano": str(span["end"]),
                                    "attributes": attributes(span.get("attributes", {})),
                                    "events": [
                                        {"timeUnixNano": str(span["start"]), "name": e, "attributes": []}
                                        for e in span.get("events", [])
                                    ],
                                    "status": {"code": span.get("status", 0)},
                                }
                                for span in spans
                            ],
                        }
                    ],
                }
            ]
        }
    ).encode()


def post(collector: str, body: bytes) -> None:
    response = httpx.post(
        f"{collector}/v1/traces", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 200, response.text


class Data:
    def __init__(self, stack: Stack, order_id: str, main: Trace, hostile: str, big: str, broken: str):
        self.stack, self.order_id, self.main = stack, order_id, main
        self.hostile, self.big, self.broken = hostile, big, broken
        self.deep = self.cyclic = ""
        self.url = stack.collector_url or ""


def main_trace_complete(trace: Trace) -> bool:
    services = {s.service for s in trace.spans}
    notifications = sum(1 for s in trace.spans if s.service == "notification" and s.kind == "SERVER")
    return len(trace.roots) == 1 and notifications >= 2 and "logistics-worker" in services


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Data]:
    # order-status-worker in link mode: its process spans are traces of their own, linked to
    # the order's trace — the links the UI must let you follow, both ways.
    stack = Stack(
        tmp_path_factory.mktemp("ui"),
        Faults(slow={"logistics-worker": 300}),
        service_env={"order-status-worker": {"TRACEBRIDGE_CONSUMER_PARENT": "link"}},
    )
    with stack:
        ids = asyncio.run(runner.place_orders(stack.gateway_url, 2))
        asyncio.run(runner.wait_final(stack.gateway_url, ids, timeout=60))
        traces = runner.wait_traces(stack.db, ids, timeout=30, complete=main_trace_complete)
        order_id = ids[0]
        main = Trace([s for s in traces[order_id].spans if s.service != "order-status-worker"])
        assert main_trace_complete(main)
        now = time.time_ns()
        collector = stack.collector_url or ""
        hostile = hexid(128)
        root = hexid(64)
        post(
            collector,
            otlp(
                [
                    {
                        "trace_id": hostile,
                        "span_id": root,
                        "name": HOSTILE_NAME,
                        "start": now,
                        "end": now + 5_000_000,
                        "kind": 2,
                        "attributes": {"note": HOSTILE_VALUE, HOSTILE_NAME: "key too"},
                        "events": ["<svg onload=alert(2)>"],
                        "status": 2,
                    },
                    {
                        "trace_id": hostile,
                        "span_id": hexid(64),
                        "parent": root,
                        "name": "child \" ' & </td>",
                        "start": now + 1_000_000,
                        "end": now + 2_000_000,
                    },
                ],
                "<b>evil-service</b>",
            ),
        )
        big = hexid(128)
        ids_big = [hexid(64) for _ in range(BIG)]
        spans = [
            {
                "trace_id": big,
                "span_id": ids_big[0],
                "name": "span 0",
                "start": now,
                "end": now + BIG * 1000 + 1000,
            }
        ]
        for index in range(1, BIG):
            parent = ids_big[(index - 1) // 4]  # a tree four wide
            spans.append(
                {
                    "trace_id": big,
                    "span_id": ids_big[index],
                    "parent": parent,
                    "name": f"span {index}",
                    "start": now + index * 1000,
                    "end": now + index * 1000 + 900,
                }
            )
        for chunk in range(0, BIG, 1000):
            post(collector, otlp(spans[chunk : chunk + 1000], "bulk"))
        broken = hexid(128)
        post(
            collector,
            otlp(
                [
                    {
                        "trace_id": broken,
                        "span_id": hexid(64),
                        "name": "process payments",
                        "kind": 5,
                        "start": now,
                        "end": now + 1_000_000,
                        "attributes": {
                            "messaging.destination.name": "payments",
                            "messaging.operation.type": "process",
                            "tracebridge.context.source": "none",
                        },
                    }
                ],
                "ledger-worker",
            ),
        )
        found = Data(stack, order_id, main, hostile, big, broken)
        found.deep = hexid(128)
        chain = [hexid(64) for _ in range(DEEP)]
        deep_spans = [
            {
                "trace_id": found.deep,
                "span_id": chain[n],
                "parent": chain[n - 1] if n else None,
                "name": f"hop {n}",
                "start": now + n * 1000,
                "end": now + 2 * DEEP * 1000 - n,
            }
            for n in range(DEEP)
        ]
        for chunk in range(0, DEEP, 2000):
            post(collector, otlp(deep_spans[chunk : chunk + 2000], "deep"))
        found.cyclic = hexid(128)
        a, b, c, d = (hexid(64) for _ in range(4))
        broken_shapes = [  # (span id, parent, name, start ms, end ms)
            (a, c, "cycle a", 0, 90),  # a → c → b → a
            (b, a, "cycle b", 10, 80),
            (c, b, "cycle c", 20, 70),
            (d, d, "own parent", 30, 60),
            (d, a, "same id", 40, 50),
        ]
        spans = [
            {
                "trace_id": found.cyclic,
                "span_id": span_id,
                "parent": parent,
                "name": name,
                "start": now + start * MS,
                "end": now + end * MS,
            }
            for span_id, parent, name, start, end in broken_shapes
        ]
        post(collector, otlp(spans, "broken-sdk"))
        yield found


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    # Not a skip: `make test` installs Debian's chromium, so a missing browser is a broken setup.
    assert Path(CHROMIUM).exists(), f"no Chromium at {CHROMIUM}: run `make test`, which installs it"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser) -> Iterator[object]:  # type: ignore[no-untyped-def]
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("dialog", lambda dialog: (problems.append(f"dialog: {dialog.message}"), dialog.dismiss()))
    # (Chromium logs the API's 401 as a console error; asking for the token is the UI's answer)
    page.on(
        "console",
        lambda message: (
            problems.append(message.text)
            if message.type == "error" and "status of 401" not in message.text
            else None
        ),
    )
    yield page
    page.close()
    assert problems == []


def shot(page, name: str) -> None:  # type: ignore[no-untyped-def]
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / f"{name}.png"))


def test_trace_page_draws_queue_waits_the_critical_path_and_the_verdict(data: Data, page) -> None:  # type: ignore[no-untyped-def]
    trace_id = data.main.spans[0].trace_id
    source = StoreSource(data.stack.db)
    whole = story(source, trace_id)
    expected = diagnose(whole, nearby=source.spans_between)  # what the collector's API does
    assert expected.verdict is not None and expected.verdict.cause is not None
    page.goto(f"{data.url}/trace/{trace_id}")
    page.wait_for_selector(".row")
    assert page.locator("#verdict").inner_text() == expected.headline
    assert "logistics-worker" in expected.headline  # the service the setup slowed by 300 ms
    rows = page.locator(".row")
    assert rows.count() == expected.span_count  # small enough to be rendered whole
    critical = set(page.locator(".row.critical").evaluate_all("rows => rows.map(r => r.dataset.spanId)"))
    assert critical == set(expected.critical_span_ids) and critical
    waited = {
        s.span_id
        for s in whole.spans
        if s.kind == "CONSUMER" and (s.attributes.get("tracebridge.queue_wait_ms") or 0) > 0
    }
    drawn = set(page.locator(".row:has(.qwait)").evaluate_all("rows => rows.map(r => r.dataset.spanId)"))
    assert drawn == waited and len(waited) >= 3
    # the queue-wait bar ends where the processing bar starts: send → wait → process
    for span_id in waited:
        row = page.locator(f'.row[data-span-id="{span_id}"]')
        wait_box, bar_box = row.locator(".qwait").bounding_box(), row.locator(".bar").bounding_box()
        assert abs(wait_box["x"] + wait_box["width"] - bar_box["x"]) < 2.5
    shot(page, "trace")


def test_linked_consumer_traces_show_inline_under_their_send_and_fold(data: Data, page) -> None:  # type: ignore[no-untyped-def]
    """order-status-worker runs in link mode: each of its process spans is a trace of its own.
    The order's page shows them under the sends they link to, marked, and folds them away."""
    trace_id = data.main.spans[0].trace_id
    whole = story(StoreSource(data.stack.db), trace_id)
    linked = {s.span_id: s for s in whole.spans if s.span_id in whole.linked_parents}
    assert linked and all(s.service == "order-status-worker" for s in linked.values())
    assert all(s.trace_id != trace_id for s in linked.values())
    page.goto(f"{data.url}/trace/{trace_id}")
    page.wait_for_selector(".row")
    ids = page.locator(".row").evaluate_all("rows => rows.map(r => r.dataset.spanId)")
    for span_id, send_id in whole.linked_parents.items():
        assert ids.index(span_id) > ids.index(send_id)  # drawn under the send it links to
    folds = page.locator(".row button.fold")
    assert folds.count() == len(linked)
    assert page.locator(".linked-summary").count() == 1
    before = page.locator(".row").count()
    first = next(iter(linked))
    below = sum(1 for s in whole.spans if s.trace_id == linked[first].trace_id)  # its trace's spans
    page.locator(f'.row[data-span-id="{first}"] button.fold').click()
    assert page.locator(f'.row[data-span-id="{first}"] button.fold').get_attribute("aria-expanded") == "false"
    assert page.locator(".row").count() == before - (below - 1)
    page.locator(f'.row[data-span-id="{first}"] button.fold').click()
    assert page.locator(".row").count() == before


def test_span_details_follow_links_into_another_trace_and_back(data: Data, page) -> None:  # type: ignore[no-untyped-def]
    send = next(s for s in data.main.spans if s.service == "inventory-worker" and s.kind == "PRODUCER")
    page.goto(f"{data.url}/trace/{send.trace_id}?span={send.span_id}")
    page.wait_for_selector('.row[aria-selected="true"]')
    assert page.locator('.row[aria-selected="true"]').get_attribute("data-span-id") == send.span_id
    back_link = page.locator(
        ".details li.link-in", has_text="order-status-worker: process inventory"
    ).locator("a")
    back_link.click()
    page.wait_for_url("**/trace/**")
    other = urlsplit(page.url)
    assert other.path != f"/trace/{send.trace_id}"
    page.wait_for_selector('.row[aria-selected="true"]')
    selected = page.locator('.row[aria-selected="true"]')
    assert "process inventory" in selected.inner_text() and "order-status-worker" in selected.inner_text()
    assert parse_qs(other.query)["span"] == [selected.get_attribute("data-span-id")]
    shot(page, "trace-linked")
    page.locator(".details li.link-out a.other-trace").click()
    page.wait_for_url(f"**/trace/{send.trace_id}?span={send.span_id}")
    page.wait_for_selector('.row[aria-selected="true"]')
    assert page.locator('.row[aria-selected="true"]').get_attribute("data-span-id") == send.span_id


def test_keyboard_moves_the_selection(data: Data, page) -> None:  # type: ignore[no-untyped-def]
    trace_id = data.main.spans[0].trace_id
    page.goto(f"{data.url}/trace/{trace_id}")
    page.wait_for_selector(".row")
    page.keyboard.press("j")
    page.keyboard.press("j")
    assert page.locator('.row[aria-selected="true"]').get_attribute("data-index") == "1"
    page.keyboard.press("k")
    assert page.locator('.row[aria-selected="true"]').get_attribute("data-index") == "0"
    assert page.locator(".details h2").inner_text() == "POST /graphql"
    page.keyboard.press("Escape")
    assert page.locator('.row[aria-selected="true"]').count() == 0


def test_search_by_order_id_is_a_shareable_link(data: Data, page) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{data.url}/")
    page.wait_for_selector("form.filters")
    page.fill('input[name="attr"]', f"order.id={data.order_id}")
    page.click('button[type="submit"]')
    page.wait_for_url("**/?attr=*")
    assert parse_qs(urlsplit(page.url).query)["attr"] == [f"order.id={data.order_id}"]
    page.wait_for_selector("tr.result")
    found = page.locator("tr.result").evaluate_all("rows => rows.map(r => r.dataset.traceId)")
    main_trace = data.main.spans[0].trace_id
    assert main_trace in found
    # order-status-worker's link-only traces carry the order id too: listed as hops of the order,
    # right under its trace, not as orders of their own
    linked = story(StoreSource(data.stack.db), main_trace).trace_ids - {main_trace}
    nested = page.locator("tr.result.linked-result").evaluate_all("rows => rows.map(r => r.dataset.traceId)")
    assert linked and set(nested) == linked
    start = found.index(main_trace)
    assert set(found[start + 1 : start + 1 + len(linked)]) == linked
    assert page.locator(f'tr.linked-result a.story[href="/trace/{main_trace}"]').count() == len(linked)
    shot(page, "search")
    page.reload()  # the URL alone reproduces the search
    page.wait_for_selector("tr.result")
    assert page.locator('input[name="attr"]').input_value() == f"order.id={data.order_id}"
    assert page.locator("tr.result").evaluate_all("rows => rows.map(r => r.dataset.traceId)") == found
    page.locator(f'tr.result[data-trace-id="{data.main.spans[0].trace_id}"] td.root a').first.click()
    page.wait_for_selector("#verdict")


def test_service_map_draws_sync_and_async_edges_and_searches_an_edge(data: Data, page) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{data.url}/map")
    page.wait_for_selector("svg.map")
    nodes = set(page.locator("g.node").evaluate_all("nodes => nodes.map(n => n.dataset.service)"))
    assert {
        "gateway",
        "order",
        "inventory",
        "billing",
        "notification",
        "inventory-worker",
        "logistics-worker",
        "notification-worker",
        "order-status-worker",
    } <= nodes
    sync = page.locator('g.edge[data-source="gateway"][data-target="order"]')
    assert sync.get_attribute("data-type") == "sync" and "async" not in sync.get_attribute("class")
    hop = page.locator('g.edge[data-source="order"][data-target="inventory-worker"][data-topic="orders"]')
    assert hop.get_attribute("class").split() == ["edge", "async"]
    label = page.locator('g.label[data-source="order"][data-target="inventory-worker"][data-topic="orders"]')
    assert "orders · " in (label.text_content() or "")
    shot(page, "map")
    label.click()
    page.wait_for_url("**/?service=order&service=inventory-worker")
    page.wait_for_selector("tr.result")
    assert data.main.spans[0].trace_id in page.locator("tr.result").evaluate_all(
        "r => r.map(x => x.dataset.traceId)"
    )


def test_doctor_lists_broken_chains_with_example_traces(data: Data, page) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{data.url}/doctor")
    row = page.locator("table.doctor tr", has_text="payments")
    row.wait_for()
    assert "ledger-worker" in row.inner_text() and "record carried no trace context" in row.inner_text()
    shot(page, "doctor")
    row.locator("a").click()
    page.wait_for_url(f"**/trace/{data.broken}")
    page.wait_for_selector(".row")
    assert "process payments" in page.locator(".row").first.inner_text()


def test_hostile_span_text_is_shown_and_never_run(data: Data, page) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{data.url}/?service=%3Cb%3Eevil-service%3C%2Fb%3E")
    page.wait_for_selector("tr.result")
    assert HOSTILE_NAME in page.locator("tr.result").first.inner_text()
    assert "<b>evil-service</b>" in page.locator("tr.result").first.inner_text()
    page.goto(f"{data.url}/trace/{data.hostile}")
    page.wait_for_selector(".row")
    page.locator(".row").first.click()
    details = page.locator(".details")
    assert HOSTILE_NAME in details.locator("h2").inner_text()
    assert HOSTILE_VALUE in details.inner_text() and "<svg onload=alert(2)>" in details.inner_text()
    assert "child \" ' & </td>" in page.locator(".row").nth(1).inner_text()
    assert (
        page.evaluate(
            "() => document.querySelectorAll('main img, main script, main b, main svg *[onload]').length"
        )
        == 0
    )
    assert page.evaluate("() => window.__pwned") is None


def test_a_5000_span_trace_renders_only_what_is_on_screen(data: Data, page) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{data.url}/trace/{data.big}")
    page.wait_for_selector(".row")
    assert page.locator(".summary").inner_text().count(f"{BIG} spans") == 1
    assert page.locator(".row").count() < 150  # virtualised: not 5 000 DOM rows
    page.locator(".waterfall").focus()
    page.keyboard.press("End")
    last = page.locator('.row[aria-selected="true"]')
    last.wait_for()
    assert int(last.get_attribute("data-index")) == BIG - 1
    assert last.is_visible() and page.locator(".row").count() < 150
    page.keyboard.press("Home")
    assert page.locator('.row[aria-selected="true"]').inner_text().count("span 0") == 1


def test_a_10000_deep_chain_renders_and_scrolls_to_its_last_hop(data: Data, page) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{data.url}/trace/{data.deep}")
    page.wait_for_selector(".row", timeout=60_000)
    assert page.locator(".summary").inner_text().count(f"{DEEP} spans") == 1
    page.locator(".waterfall").focus()
    page.keyboard.press("End")
    last = page.locator('.row[aria-selected="true"]')
    last.wait_for()
    assert int(last.get_attribute("data-index")) == DEEP - 1
    assert f"hop {DEEP - 1}" in last.inner_text()


def test_parent_cycles_and_duplicated_ids_neither_hang_nor_hide_spans(data: Data, page) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{data.url}/trace/{data.cyclic}")
    page.wait_for_selector(".row")
    names = [row.split("\n") for row in page.locator(".row .label").all_inner_texts()]
    flat = [part.strip() for row in names for part in row if part.strip()]
    assert [n for n in flat if n in ("cycle a", "cycle b", "cycle c", "own parent", "same id")] == [
        "cycle a",
        "cycle b",
        "cycle c",
        "own parent",
    ]  # the duplicated id is shown once (the first, by start)


def test_dark_mode_follows_the_system_setting(data: Data, browser) -> None:  # type: ignore[no-untyped-def]
    page = browser.new_page(viewport={"width": 1440, "height": 900}, color_scheme="dark")
    trace_id = data.main.spans[0].trace_id
    page.goto(f"{data.url}/trace/{trace_id}")
    page.wait_for_selector(".row")
    background = page.evaluate("() => getComputedStyle(document.body).backgroundColor")
    channels = [int(part) for part in background[background.index("(") + 1 : -1].split(",")[:3]]
    assert sum(channels) < 120, background
    page.locator(".row").nth(2).click()
    shot(page, "trace-dark")
    page.close()


def test_a_token_protected_collector_asks_for_the_token(tmp_path, page) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import RunningCollector
    from tracebridge.collector.app import CollectorConfig

    with RunningCollector(tmp_path / "t.db", CollectorConfig(token="s3cret")) as collector:
        assert httpx.get(f"{collector.url}/api/traces").status_code == 401
        page.goto(f"{collector.url}/")  # the page itself holds no data and needs no token
        page.wait_for_selector("form.token-form")
        page.fill('input[name="token"]', "s3cret")
        page.click("form.token-form button")
        page.wait_for_selector("form.filters")
        assert "No trace matches" in page.locator("main").inner_text()


def test_an_order_in_flight_names_the_group_it_waits_for(
    broker, bootstrap, spans, kafka_instrumented, tmp_path, page
) -> None:  # type: ignore[no-untyped-def]
    """A trace that stops at a send: the verdict says which consumer group has not reached the
    record, on which partition, how far behind — asked of the real broker by the collector."""
    from opentelemetry import trace as trace_api

    from tests.conftest import RunningCollector, unique
    from tests.test_pending import consume_and_commit, send_one
    from tracebridge.analysis.kafka_offsets import KafkaOffsets
    from tracebridge.collector.app import CollectorConfig
    from tracebridge.otlp import parse_protobuf
    from tracebridge.otlp_wire import encode_spans

    topic, group = unique("shipments"), unique("logistics")
    broker.create_topics([topic], partitions=1)

    async def scenario() -> str:
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
        await producer.start()
        try:
            await send_one(producer, topic, b"first")
            await consume_and_commit(bootstrap, topic, group, 1)  # then the group stops
            await send_one(producer, topic, b"ahead")
            with trace_api.get_tracer("test").start_as_current_span("createOrder") as root:
                await send_one(producer, topic, b"the order")
        finally:
            await producer.stop()
        return f"{root.get_span_context().trace_id:032x}"

    with concurrent.futures.ThreadPoolExecutor(1) as thread:  # Playwright's loop runs in this one
        trace_id = thread.submit(asyncio.run, scenario()).result(timeout=60)
    config = CollectorConfig(offsets=KafkaOffsets(bootstrap))
    with RunningCollector(tmp_path / "traces.db", config) as collector:
        collector.store.write([parse_protobuf(encode_spans(spans.get_finished_spans()))])
        page.goto(f"{collector.url}/trace/{trace_id}")
        page.wait_for_selector(".row")
        waiting = (
            f"waiting in `{topic}` partition 0 (offset 2) for group `{group}` (tests): "
            "2 records behind, 1 ahead of this one"
        )
        assert page.locator("#verdict").inner_text().startswith(f"in flight: {waiting}")
        assert page.locator(".pending-delivery").count() == 0  # one record: the headline says it all
        shot(page, "in-flight")


def test_a_traces_log_lines_show_under_the_waterfall_and_in_their_spans_details(tmp_path, page) -> None:  # type: ignore[no-untyped-def]
    """Every service's lines on one timeline under the waterfall, errors highlighted; a line's
    span link selects the span, whose details list its own lines."""
    from tests.conftest import RunningCollector

    trace_id, root, child = hexid(128), hexid(64), hexid(64)
    now = time.time_ns()
    with RunningCollector(tmp_path / "traces.db") as collector:
        post(
            collector.url,
            otlp(
                [
                    {
                        "trace_id": trace_id,
                        "span_id": root,
                        "name": "POST /orders",
                        "start": now,
                        "end": now + 50 * MS,
                        "kind": 2,
                    }
                ],
                "order",
            ),
        )
        post(
            collector.url,
            otlp(
                [
                    {
                        "trace_id": trace_id,
                        "span_id": child,
                        "parent": root,
                        "name": "charge card",
                        "start": now + 10 * MS,
                        "end": now + 40 * MS,
                        "status": 2,
                    }
                ],
                "billing",
            ),
        )

        def record(service: str, at_ms: int, severity: int, text: str, span_id: str) -> dict:
            return {
                "resourceLogs": [
                    {
                        "resource": {
                            "attributes": [{"key": "service.name", "value": {"stringValue": service}}]
                        },
                        "scopeLogs": [
                            {
                                "logRecords": [
                                    {
                                        "timeUnixNano": str(now + at_ms * MS),
                                        "severityNumber": severity,
                                        "body": {"stringValue": text},
                                        "traceId": trace_id,
                                        "spanId": span_id,
                                    }
                                ]
                            }
                        ],
                    }
                ]
            }

        for document in (
            record("billing", 30, 17, "card declined <b>by bank</b>", child),
            record("order", 5, 9, "order o-1 received", root),
            record("order", 45, 13, "answering 402", root),
        ):
            assert httpx.post(f"{collector.url}/v1/logs", json=document).status_code == 200
        page.goto(f"{collector.url}/trace/{trace_id}")
        page.wait_for_selector(".log-line")
        assert page.locator(".logs h2").inner_text() == "3 log lines, 1 error"
        lines = page.locator(".logs .log-line")
        assert [lines.nth(n).locator(".log-body").inner_text() for n in range(3)] == [
            "order o-1 received",
            "card declined <b>by bank</b>",  # shown as text, never as markup
            "answering 402",
        ]
        assert [lines.nth(n).locator(".chip").inner_text() for n in range(3)] == [
            "order",
            "billing",
            "order",
        ]
        assert page.locator(".logs .log-line.log-error").count() == 1
        assert page.locator(".log-tick").count() == 3 and page.locator(".log-tick.log-error").count() == 1
        lines.nth(1).locator(".log-span").click()
        details = page.locator(".details")
        assert details.locator("h2").inner_text() == "charge card"
        assert details.locator("h3", has_text="Logs (1)").count() == 1
        assert details.locator(".span-logs .log-body").inner_text() == "card declined <b>by bank</b>"
        shot(page, "trace-logs")


def test_a_fleet_map_of_50_services_and_30_topics_fits_without_overlaps_and_zooms(tmp_path, page) -> None:  # type: ignore[no-untyped-def]
    """ELK's layout at fleet size: after fit every node is inside the view, no edge label
    covers a service or a topic, topics are nodes of their own; wheel zooms, dragging pans."""
    from tests.conftest import RunningCollector

    services = [f"svc-{n:02d}" for n in range(50)]
    now = time.time_ns()
    with RunningCollector(tmp_path / "traces.db") as collector:
        by_service: dict[str, list[dict]] = {}

        def add(service: str, **span: object) -> None:
            by_service.setdefault(service, []).append(span)

        for n in range(19):  # a synchronous chain through the first twenty
            trace_id, caller, callee = hexid(128), hexid(64), hexid(64)
            add(
                services[n],
                trace_id=trace_id,
                span_id=caller,
                name="GET",
                kind=3,
                start=now,
                end=now + 4 * MS,
            )
            add(
                services[n + 1],
                trace_id=trace_id,
                span_id=callee,
                parent=caller,
                name="GET /x",
                kind=2,
                start=now + MS,
                end=now + 3 * MS,
            )
        for n in range(30):  # thirty topics, each from one of the first twenty to one or two of the rest
            topic = f"topic-{n:02d}"
            for consumer in {services[20 + n % 30], services[20 + (n + 7) % 30]}:
                trace_id, send = hexid(128), hexid(64)
                messaging = {"messaging.system": "kafka", "messaging.destination.name": topic}
                add(
                    services[n % 20],
                    trace_id=trace_id,
                    span_id=send,
                    name=f"send {topic}",
                    kind=4,
                    start=now,
                    end=now + MS,
                    attributes={**messaging, "messaging.operation.type": "send"},
                )
                add(
                    consumer,
                    trace_id=trace_id,
                    span_id=hexid(64),
                    parent=send,
                    name=f"process {topic}",
                    kind=5,
                    start=now + 5 * MS,
                    end=now + 6 * MS,
                    attributes={**messaging, "messaging.operation.type": "process"},
                )
        for service, spans in by_service.items():
            post(collector.url, otlp(spans, service))
        page.goto(f"{collector.url}/map?range=all")
        page.wait_for_selector("svg.map g.node")
        assert page.locator("g.node").count() == 50 and page.locator("g.topic").count() == 30
        boxes = page.evaluate(
            """() => {
                const box = (el) => {
                    const r = el.getBoundingClientRect();
                    return [r.left, r.top, r.right, r.bottom];
                };
                return {
                    view: box(document.querySelector("svg.map")),
                    nodes: [...document.querySelectorAll("g.node rect, g.topic rect")].map(box),
                    labels: [...document.querySelectorAll("g.label text")].map(box),
                };
            }"""
        )
        left, top, right, bottom = boxes["view"]
        assert all(
            left - 1 <= a and top - 1 <= b and c <= right + 1 and d <= bottom + 1
            for a, b, c, d in boxes["nodes"]
        )

        def overlap(one: list[float], other: list[float]) -> bool:
            return (
                one[0] < other[2] - 0.5
                and other[0] < one[2] - 0.5
                and one[1] < other[3] - 0.5
                and other[1] < one[3] - 0.5
            )

        assert len(boxes["labels"]) == 19 + len(
            {(n, c) for n in range(30) for c in {20 + n % 30, 20 + (n + 7) % 30}}
        )
        covered = [
            (label, node) for label in boxes["labels"] for node in boxes["nodes"] if overlap(label, node)
        ]
        assert covered == []
        shot(page, "map-fleet")
        before = page.locator("svg.map").get_attribute("viewBox")
        page.mouse.move((left + right) / 2, (top + bottom) / 2)
        page.mouse.wheel(0, -400)
        zoomed = page.locator("svg.map").get_attribute("viewBox")
        assert float(zoomed.split()[2]) < float(before.split()[2])  # narrower: zoomed in
        page.mouse.move(left + 5, top + 5)  # an empty corner
        page.mouse.down()
        page.mouse.move(left + 105, top + 5)
        page.mouse.up()
        panned = page.locator("svg.map").get_attribute("viewBox")
        assert float(panned.split()[0]) < float(zoomed.split()[0])  # dragged right: the view moved left
        page.locator("button.fit").click()
        assert page.locator("svg.map").get_attribute("viewBox") == before


def test_the_vendored_layout_engine_is_the_pinned_package_byte_for_byte() -> None:
    """elkjs is committed as its built file (the UI has no build step); it must be exactly the
    file of the version tests/node/package-lock.json pins (`make ui-vendor` copies it)."""
    root = Path(__file__).parent.parent
    vendored = root / "src" / "tracebridge" / "collector" / "ui" / "vendor" / "elk.bundled.js"
    pinned = Path(__file__).parent / "node" / "node_modules" / "elkjs" / "lib" / "elk.bundled.js"
    lock = json.loads((Path(__file__).parent / "node" / "package-lock.json").read_text())
    assert (
        lock["packages"]["node_modules/elkjs"]["version"]
        == json.loads((pinned.parent.parent / "package.json").read_text())["version"]
    )
    assert vendored.read_bytes() == pinned.read_bytes()
