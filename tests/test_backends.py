"""The answer over the backends teams already run: Tempo and Jaeger v2, from their recorded
answers (tests/data/backends), a link-only .NET consumer included — through the analysis
sources, the CLI, and the collector's UI and API served with ``tracebridge ui --source``."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.backend_replay import replay
from tracebridge.analysis.diagnosis import diagnose
from tracebridge.analysis.doctor import doctor
from tracebridge.analysis.sources import JaegerSource, SearchQuery, TempoSource, open_source
from tracebridge.analysis.story import story
from tracebridge.broker import free_port

ORDER = "7c0a5b2e9d3f41a8b6e2c4d1f0a9e837"  # checkout (Go): POST /orders → orders send
BILLING = "0e41d2c3b4a5968778695a4b3c2d1e0f"  # billing (.NET): process orders, linked only
SEND, PROCESS = "b2c3d4e5f6071829", "c3d4e5f60718293a"
CHROMIUM = "/usr/bin/chromium"
VERDICT = "87% of 1.6 s: queue wait on `orders` before billing"
# With the backend to look around in, the cause: billing processed nothing before this record.
CAUSE = (
    "no consumer activity at billing for 1.4 s on `orders` "
    "(not yet started: no record processed before this one)"
)
FAILURE = (
    "failed at ledger (POST /entries: HTTP 503) → billing (process orders from `orders`: "
    "System.Net.Http.HttpRequestException)"
)


@pytest.fixture(params=["tempo", "jaeger"])
def backend(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    with replay(request.param) as url:
        yield request.param, url


def test_a_bare_url_is_probed_and_a_prefix_is_obeyed(backend) -> None:  # type: ignore[no-untyped-def]
    name, url = backend
    expected = TempoSource if name == "tempo" else JaegerSource
    assert isinstance(open_source(url), expected)
    assert isinstance(open_source(f"{name}:{url}"), expected)


def test_the_orders_story_follows_the_link_both_ways(backend) -> None:  # type: ignore[no-untyped-def]
    name, url = backend
    source = open_source(f"{name}:{url}")
    assert [(s.service, s.name) for s in source.trace(ORDER).spans] == [
        ("checkout", "POST /orders"),
        ("checkout", "orders send"),
    ]
    assert [s.span_id for s in source.linked_to(ORDER)] == [PROCESS]  # what neither UI can show
    for entry in (ORDER, BILLING):
        whole = story(source, entry)
        assert whole.trace_ids == {ORDER, BILLING}
        assert whole.linked_parents == {PROCESS: SEND}
        diagnosis = diagnose(whole)
        assert diagnosis.trace_id == ORDER and diagnosis.linked_trace_ids == (BILLING,)
        [hop] = diagnosis.hops
        assert (hop.topic, hop.producer, hop.consumer, hop.linked) == ("orders", "checkout", "billing", True)
        assert hop.queue_wait_ns == 1400 * 10**6 and hop.processing_ns == 188 * 10**6 and hop.failed
        assert diagnosis.verdict is not None
        assert diagnosis.headline == VERDICT  # no nearby spans given: no cause guessed
        assert diagnosis.failure_cause is not None and diagnosis.failure_cause.text == FAILURE
        failed = {(f.service, f.error_type) for f in diagnosis.failures}
        assert ("billing", "System.Net.Http.HttpRequestException") in failed
        assert ("ledger", "HTTP 503") in failed


def test_find_services_search_and_doctor(backend) -> None:  # type: ignore[no-untyped-def]
    name, url = backend
    source = open_source(f"{name}:{url}")
    assert source.find("order.id", "o-7731") == [ORDER]
    assert source.services() == ["billing", "checkout", "ledger"]
    found = {summary.trace_id: summary for summary in source.search(SearchQuery(limit=10))}
    assert set(found) == {ORDER, BILLING}
    assert found[BILLING].links_to == (ORDER,) and not found[BILLING].broken
    assert found[BILLING].error_count == 3 and found[ORDER].services == ("checkout",)
    spans = source.recent_spans(0)
    assert {s.trace_id for s in spans} == {ORDER, BILLING}
    assert doctor(spans, now_ns=time.time_ns()) == []  # a link-only consumer is not a broken chain


@pytest.fixture
def ui_over(backend) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """``tracebridge ui --source tempo:…`` / ``jaeger:…`` as a real process."""
    name, url = backend
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tracebridge", "ui", "--source", f"{name}:{url}", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        assert process.poll() is None, process.communicate()[1]
        try:
            if httpx.get(f"{base}/api/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "tracebridge ui did not start"
        time.sleep(0.1)
    try:
        yield base
    finally:
        process.terminate()
        process.communicate(timeout=20)


def test_the_collectors_api_runs_over_the_backend(backend, ui_over: str) -> None:  # type: ignore[no-untyped-def]
    name, _url = backend
    health = httpx.get(f"{ui_over}/api/health").json()
    assert health["status"] == "ok" and health["source"].lower().startswith(name)
    trace = httpx.get(f"{ui_over}/api/traces/{ORDER}").json()
    assert [s["name"] for s in trace["spans"]] == ["POST /orders", "orders send"]
    assert [t["trace_id"] for t in trace["linked_traces"]] == [BILLING]
    assert trace["linked_parents"] == {PROCESS: SEND}
    diagnosis = httpx.get(f"{ui_over}/api/traces/{BILLING}/diagnosis").json()
    assert diagnosis["headline"] == f"{VERDICT} — {CAUSE}"
    assert diagnosis["cause"]["kind"] == "no consumer activity"
    assert diagnosis["failure_cause"]["text"] == FAILURE
    assert [h["consumer"] for h in diagnosis["hops"]] == ["billing"]
    found = httpx.get(f"{ui_over}/api/traces", params={"attr": "order.id=o-7731"}).json()["traces"]
    assert [t["trace_id"] for t in found] == [ORDER]
    assert httpx.get(f"{ui_over}/api/services").json()["services"] == ["billing", "checkout", "ledger"]
    assert httpx.get(f"{ui_over}/api/doctor", params={"since_s": "1e9"}).json()["broken"] == []
    edges = httpx.get(f"{ui_over}/api/service-map").json()["edges"]
    assert {(e["source"], e["target"], e["type"]) for e in edges} >= {
        ("checkout", "billing", "async"),
        ("billing", "ledger", "sync"),
    }
    refused = httpx.post(f"{ui_over}/v1/traces", content=b"{}", headers={"content-type": "application/json"})
    assert refused.status_code == 404 and "export spans there" in refused.text
    assert httpx.get(f"{ui_over}/api/traces/{'ab' * 16}").status_code == 404


def test_the_trace_page_over_tempo_shows_the_linked_consumer_inline(backend, ui_over: str) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), f"no Chromium at {CHROMIUM}: run `make test`, which installs it"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(f"{ui_over}/trace/{ORDER}")
            page.wait_for_selector(".row")
            assert page.locator("#verdict").inner_text() == f"{VERDICT} — {CAUSE}"
            assert page.locator("#failure-cause").inner_text() == f"✖ {FAILURE}"
            ids = page.locator(".row").evaluate_all("rows => rows.map(r => r.dataset.spanId)")
            assert ids.index(PROCESS) == ids.index(SEND) + 1  # the linked consumer, under its send
            assert page.locator(f'.row[data-span-id="{PROCESS}"] button.fold').count() == 1
            assert page.locator(".row.linked").count() == 3  # billing's and ledger's spans
            assert errors == []
        finally:
            browser.close()
