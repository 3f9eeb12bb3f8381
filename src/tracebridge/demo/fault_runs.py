"""One injected fault per run of the eshop stack, and whether the answer names it.

Each scenario starts the whole stack with one fault, places orders through the gateway, and
asks what a user would: ``diagnose`` on the slowest order (its story, with the store to look
around in) — or ``doctor`` for a broken context chain — then checks that the answer names the
injected *cause* and *service*, not only the segment where the time showed.  Used by
``bench/diagnose_accuracy.py`` (the score) and by the real-stack tests.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tracebridge.analysis import causes
from tracebridge.analysis.diagnosis import Diagnosis, diagnose
from tracebridge.analysis.doctor import NO_CONTEXT, BrokenChain, doctor
from tracebridge.analysis.story import story
from tracebridge.collector.source import StoreSource
from tracebridge.demo import runner
from tracebridge.demo.stack import Faults, Stack


@dataclass(frozen=True)
class Scenario:
    kind: str
    faults: Faults
    orders: int
    expected_cause: str  # a causes.* kind, or "doctor" for a broken chain
    expected_service: str
    during: Callable[[Stack], None] | None = None  # done while the orders are in flight
    concurrency: int = 8


@dataclass
class Outcome:
    scenario: str
    named: bool
    said: str
    seconds: float
    details: dict[str, object] = field(default_factory=dict)


def _pause_logistics(stack: Stack) -> None:
    """After one order went through, stop the logistics worker consuming for 6 s while the
    orders' records arrive (so it is a consumer that stopped, not one that never started)."""
    warm_up = asyncio.run(runner.place_orders(stack.gateway_url, 1, seed=3))
    asyncio.run(runner.wait_final(stack.gateway_url, warm_up, timeout=60))
    stack.pause("logistics-worker")
    threading.Timer(6.0, stack.resume, args=("logistics-worker",)).start()


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("slow sync service", Faults(slow={"billing": 600}), 4, causes.SLOW_CALL, "billing"),
    Scenario("slow worker", Faults(slow={"inventory-worker": 700}), 8, causes.BACKLOG, "inventory-worker"),
    Scenario(
        "failing dependency with retries",
        Faults(fail={"notification": 0.5}),
        8,
        causes.RETRIES,
        "notification",
    ),
    Scenario("broken context", Faults(break_context={"inventory-worker"}), 4, "doctor", "inventory-worker"),
    Scenario("stopped consumer", Faults(), 4, causes.IDLE, "logistics-worker", during=_pause_logistics),
    Scenario(
        "slow network on one call",
        Faults(slow_network={"order:inventory": 300}),
        4,
        causes.SLOW_NETWORK,
        "order",
    ),
)
BY_KIND = {scenario.kind: scenario for scenario in SCENARIOS}


def _judge(scenario: Scenario, diagnosis: Diagnosis) -> tuple[bool, str]:
    verdict = diagnosis.verdict
    cause = verdict.cause if verdict is not None else None
    said = diagnosis.headline
    if cause is None or cause.kind != scenario.expected_cause:
        return False, said
    if scenario.expected_cause == causes.RETRIES:
        return cause.facts.get(
            "dependency"
        ) == scenario.expected_service or scenario.expected_service in cause.text, said
    if scenario.expected_cause == causes.SLOW_NETWORK:
        return cause.service == "order" and cause.facts.get("peer") == "inventory", said
    return cause.service == scenario.expected_service, said


def _judge_doctor(scenario: Scenario, chains: list[BrokenChain]) -> tuple[bool, str]:
    broken = [chain for chain in chains if chain.symptom == NO_CONTEXT]
    said = "; ".join(
        f"{c.topic}: {c.producer} ({c.producer_confidence or 'unknown'}) → {c.consumer} ({c.count} records)"
        for c in broken
    )
    return bool(broken) and all(
        c.producer == scenario.expected_service for c in broken
    ), said or "no broken chain"


def run(scenario: Scenario, directory: Path, seed: int = 11) -> Outcome:
    """Start the stack with the scenario's fault, place its orders, and judge the answer."""
    started = time.monotonic()
    with Stack(directory, scenario.faults) as stack:
        if scenario.during is not None:
            scenario.during(stack)
        ids = asyncio.run(
            runner.place_orders(
                stack.gateway_url, scenario.orders, concurrency=scenario.concurrency, seed=seed
            )
        )
        asyncio.run(runner.wait_final(stack.gateway_url, ids, timeout=120))
        if scenario.expected_cause == "doctor":
            time.sleep(1.5)  # the consumers' spans are exported on a 200 ms schedule
            source = StoreSource(stack.db)
            now = time.time_ns()
            named, said = _judge_doctor(scenario, doctor(source.recent_spans(now - int(600e9)), now))
            return Outcome(scenario.kind, named, said, time.monotonic() - started)
        traces = runner.wait_traces(stack.db, ids, timeout=30)
        source = StoreSource(stack.db)
        diagnoses = {}
        for order_id, trace in traces.items():
            whole = story(source, trace.spans[0].trace_id)
            diagnoses[order_id] = diagnose(whole, nearby=source.spans_between)
        slowest = max(diagnoses.values(), key=lambda d: d.end_to_end_ns)
        named, said = _judge(scenario, slowest)
        return Outcome(scenario.kind, named, said, time.monotonic() - started)
