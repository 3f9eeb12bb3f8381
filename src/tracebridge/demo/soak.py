"""Soak: the whole eshop under load and faults at once, and what it cost — in figures.

Orders are placed through the gateway as fast as this machine takes them (a closed loop of
concurrent clients) while, in turn: hostile records (random bytes, oversized values, duplicated
context headers, invalid UTF-8) are produced into every topic; a worker is SIGKILLed and
restarted; the collector is stopped for ``outage_s`` and restarted on the same port and store;
and the notification service fails a share of its requests throughout.  Then the stack drains
and the report is read from where the truth is — the services' own databases and logs, the
broker's dead-letter topics, the collector's store, ``/proc`` — never from the driver's belief:

- orders lost (placed, but not SHIPPED/CANCELLED in the order database);
- duplicated side effects: stock reserved twice (the stock left against what the reserved
  orders took), charges, and mails sent twice (the notification service logs every send);
- traces complete, for orders placed while the collector was up and for those placed during
  the outage; orders whose spans were still in the killed worker's memory are counted apart
  (a SIGKILL takes the process's unexported spans with it: nothing can deliver those);
- spans held through the outage and delivered late, and spans dropped (each service reports
  both in its log);
- peak RSS of every service before, during and after the outage.

``make soak`` runs the long form (2 000 orders); ``tests/test_soak.py`` the short one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import sqlite3
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tracebridge.collector.process import CollectorProcess
from tracebridge.demo import runner, shop
from tracebridge.demo.stack import SERVICE_NAMES, Faults, Stack

KILLED_WORKER = "inventory-worker"
KILLED_WORKER_PRODUCES = frozenset({"inventory"})
FAILING_SERVICE = "notification"
INITIAL_STOCK = 10_000_000
# Which consumer groups read each topic (one dead letter per group for every hostile record).
CONSUMERS = {
    "orders": ("inventory", "notification"),
    "inventory": ("logistics", "order-status"),
    "shipments": ("notification", "order-status"),
}
_DELIVERED = re.compile(
    r"works again \((\d+) spans held during the outage were delivered late; (\d+) dropped"
)
_SENT = re.compile(r"mail (\S+) for order (\S+) sent$")
# A mail (an event) given up after every retry; undecodable records are logged differently.
_GIVEN_UP = re.compile(r"dead-lettering (\S+) for order (\S+) after \d+ attempts")


@dataclass
class Report:
    """What a soak run measured; :meth:`problems` says which promise it broke."""

    orders_placed: int = 0
    placement_errors: int = 0
    placed_while_up: int = 0
    placed_during_outage: int = 0
    seconds_placing: float = 0.0
    orders_per_s: float = 0.0
    orders_lost: int = 0
    reservations_doubled_units: int = 0
    charges_missing: int = 0
    charges_duplicated: int = 0
    mails_sent: int = 0
    mails_duplicated: int = 0
    mails_dead_lettered: int = 0
    mails_missing: int = 0
    complete_while_up: int = 0
    complete_during_outage: int = 0
    lost_with_killed_worker: int = 0
    incomplete_while_up: list[str] = field(default_factory=list)
    hostile_produced: int = 0
    hostile_dead_lettered: int = 0
    hostile_missing: int = 0
    spans_delivered_late: int = 0
    spans_dropped: int = 0
    service_deaths: int = 0
    rss_mb: dict[str, dict[str, float]] = field(default_factory=dict)
    outage_s: float = 0.0

    @property
    def complete_share_while_up(self) -> float:
        judged = self.placed_while_up - self.lost_with_killed_worker
        return self.complete_while_up / judged if judged else 1.0

    def problems(self, rss_growth_limit_mb: float = 100.0) -> list[str]:
        """Every broken promise, in words; empty when the run passed."""
        found = []
        if self.orders_lost or self.placement_errors:
            found.append(f"{self.orders_lost} orders lost, {self.placement_errors} placements failed")
        if self.reservations_doubled_units or self.charges_duplicated or self.mails_duplicated:
            found.append(
                f"duplicated side effects: {self.reservations_doubled_units} stock units, "
                f"{self.charges_duplicated} charges, {self.mails_duplicated} mails"
            )
        if self.charges_missing or self.mails_missing:
            found.append(f"{self.charges_missing} charges and {self.mails_missing} mails missing")
        if self.complete_share_while_up < 1.0:
            found.append(
                f"{self.complete_share_while_up:.1%} of orders placed while the collector was up have "
                f"a complete trace: {self.incomplete_while_up[:5]}"
            )
        if self.hostile_missing:
            found.append(f"{self.hostile_missing} hostile records neither processed nor dead-lettered")
        if self.service_deaths:
            found.append(f"{self.service_deaths} services died on their own")
        for name, phases in self.rss_mb.items():
            growth = phases.get("outage", 0.0) - phases.get("before", 0.0)
            if growth > rss_growth_limit_mb:
                found.append(f"{name} grew {growth:.0f} MB during the outage")
        return found


class _RssSampler(threading.Thread):
    """Samples every service's resident memory from /proc, tagged with the current phase."""

    def __init__(self, stack: Stack) -> None:
        super().__init__(name="soak-rss", daemon=True)
        self.stack = stack
        self.phase = "before"
        self.peaks: dict[str, dict[str, float]] = defaultdict(dict)
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(0.25):
            for name, process in list(self.stack.children.items()):
                rss = _rss_mb(process.pid)
                if rss is not None:
                    peaks = self.peaks[name]
                    peaks[self.phase] = max(peaks.get(self.phase, 0.0), rss)


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def hostile_headers(rng: random.Random) -> list[tuple[str, bytes]]:
    """Headers no producer should write, all at once."""
    valid = f"00-{rng.getrandbits(128):032x}-{rng.getrandbits(64):016x}-01".encode()
    return [
        ("traceparent", valid),
        ("traceparent", valid),  # duplicated (a producer that appends)
        ("tracestate", b"a=1,A=2," + rng.randbytes(40)),
        ("baggage", b"order.id=" + b"x" * 9000),  # oversized
        ("TraceParent", b"\xff\xfe" + rng.randbytes(30)),  # invalid UTF-8
        ("x-junk", rng.randbytes(64 * 1024)),  # a 64 KB value
        ("tracebridge-attempt", b"-7"),
        ("", b""),
    ]


def hostile_body(rng: random.Random) -> bytes:
    return rng.choice(
        [
            rng.randbytes(rng.randint(0, 300)),
            b'{"trace_context": {"traceparent": 7}, "event": "OrderCreated", "version": 99}',
            b"[" * 10_000,
            json.dumps({"event": "OrderCreated", "version": 1, "order_id": None}).encode(),
        ]
    )


async def _produce_hostile(bootstrap: str, count_per_topic: int, seed: int) -> dict[str, list[int]]:
    from aiokafka import AIOKafkaProducer

    rng = random.Random(seed)
    offsets: dict[str, list[int]] = defaultdict(list)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=4 * 1024 * 1024)
    await producer.start()
    try:
        for topic in CONSUMERS:
            for _ in range(count_per_topic):
                sent = await producer.send_and_wait(
                    topic, hostile_body(rng), key=rng.randbytes(8), headers=hostile_headers(rng)
                )
                offsets[topic].append(sent.offset)
    finally:
        await producer.stop()
    return offsets


async def _dead_letters(bootstrap: str) -> set[tuple[str, int, str]]:
    """(source topic, source offset, group) of every record in the dead-letter topics."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    found: set[tuple[str, int, str]] = set()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(f"{topic}.dlq", 0) for topic in CONSUMERS]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        while [p for p in partitions if await consumer.position(p) < ends[p]]:
            batch = await consumer.getmany(timeout_ms=1000)
            for records in batch.values():
                for record in records:
                    headers = {k: v for k, v in record.headers or ()}
                    try:
                        found.add(
                            (
                                headers["dlq.source.topic"].decode(),
                                int(headers["dlq.source.offset"]),
                                headers["dlq.consumer.group"].decode(),
                            )
                        )
                    except (KeyError, ValueError):
                        continue
    finally:
        await consumer.stop()
    return found


def _rows(database: Path, sql: str) -> list[tuple[Any, ...]]:
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30)
    try:
        return connection.execute(sql).fetchall()
    finally:
        connection.close()


@contextmanager
def _collector_down(stack: Stack) -> Iterator[None]:
    """Stop the collector and start it again on the same port and store."""
    collector = stack.collector
    assert collector is not None
    collector.stop()
    try:
        yield
    finally:
        stack.collector = CollectorProcess(
            collector.db, collector.log_path, collector.env, port=collector.port, args=collector.args
        ).start()


class Soak:
    """One soak run over a fresh stack in ``directory``."""

    def __init__(self, directory: Path, orders: int, outage_s: float = 30.0, concurrency: int = 6) -> None:
        self.directory = directory
        self.target = orders
        self.outage_s = outage_s
        self.concurrency = concurrency
        self.placed: list[tuple[str, float]] = []  # (order id, time.time() when the answer came)
        self.errors = 0
        self.outage: tuple[float, float] | None = None
        self.killed_at = 0.0
        self.hostile: dict[str, list[int]] = defaultdict(list)
        # Children die with the *thread* that started them (PR_SET_PDEATHSIG): the fault thread
        # restarts a worker and the collector, so it lives until the run is over.
        self.finished = threading.Event()
        self.stack = Stack(
            directory,
            Faults(fail={FAILING_SERVICE: 0.3}),
            extra_env={
                "ESHOP_INITIAL_STOCK": str(INITIAL_STOCK),
                "ESHOP_RETRY_BACKOFF_MS": "20",
                "ESHOP_RETRY_BACKOFF_MAX_MS": "200",
            },
        )

    # -- the run -----------------------------------------------------------------------------
    def run(self, log: Any = print) -> Report:
        with self.stack:
            sampler = _RssSampler(self.stack)
            sampler.start()
            started = time.monotonic()
            faults = threading.Thread(target=self._faults, args=(sampler, log), daemon=True)
            faults.start()
            asyncio.run(self._place())
            seconds = time.monotonic() - started
            log(f"placed {len(self.placed)} orders in {seconds:.0f} s; draining")
            sampler.phase = "after"
            ids = [order_id for order_id, _ in self.placed]
            statuses = self._final_statuses(ids)
            traces = runner.wait_traces(self.stack.db, ids, timeout=120)
            sampler.stopping.set()
            report = self._report(ids, statuses, traces, seconds)
            report.rss_mb = {name: dict(phases) for name, phases in sampler.peaks.items()}
            self.finished.set()
            faults.join()
            return report

    async def _place(self) -> None:
        import httpx

        rng = random.Random(11)
        async with httpx.AsyncClient(base_url=self.stack.gateway_url, timeout=60) as client:

            async def client_loop() -> None:
                while not self._enough():
                    try:
                        placed = await shop.place_order(client, shop.sample_order(rng))
                    except (shop.ShopError, httpx.HTTPError):
                        self.errors += 1
                        continue
                    self.placed.append((placed.id, time.time()))

            await asyncio.gather(*(client_loop() for _ in range(self.concurrency)))

    def _enough(self) -> bool:
        if len(self.placed) < self.target or self.outage is None:
            return False
        after = sum(1 for _, at in self.placed if at > self.outage[1])
        return after >= max(20, self.target // 10)

    def _at(self, share: float) -> None:
        while len(self.placed) < self.target * share:
            time.sleep(0.05)

    def _faults(self, sampler: _RssSampler, log: Any) -> None:
        assert self.stack.broker is not None
        bootstrap = self.stack.broker.bootstrap_servers
        self._at(0.1)
        self._hostile(bootstrap, 1, log)
        self._at(0.2)
        log(f"SIGKILL {KILLED_WORKER}")
        self.killed_at = time.time()
        self.stack.kill(KILLED_WORKER)
        time.sleep(1.0)
        self.stack.restart(KILLED_WORKER)
        self._at(0.35)
        log(f"collector down for {self.outage_s:.0f} s")
        down_at = time.time()
        sampler.phase = "outage"
        with _collector_down(self.stack):
            self._hostile(bootstrap, 2, log)
            time.sleep(max(0.0, down_at + self.outage_s - time.time()))
        self.outage = (down_at, time.time())
        sampler.phase = "recovered"
        log("collector up again")
        self._hostile(bootstrap, 3, log)
        self.finished.wait()

    def _hostile(self, bootstrap: str, seed: int, log: Any) -> None:
        for topic, offsets in asyncio.run(_produce_hostile(bootstrap, 10, seed)).items():
            self.hostile[topic] += offsets
        log("hostile records produced into " + ", ".join(CONSUMERS))

    def _final_statuses(self, ids: list[str]) -> dict[str, str]:
        deadline = time.monotonic() + 180
        statuses: dict[str, str] = {}
        while time.monotonic() < deadline:
            statuses = dict(_rows(self.directory / "order.db", "SELECT id, status FROM orders"))
            if all(statuses.get(order_id) in shop.FINAL_STATES for order_id in ids):
                break
            time.sleep(0.5)
        # The notification worker runs last (retries with backoff): wait for its mails too.
        while time.monotonic() < deadline and len(self._sent_mails()) < 2 * len(ids) - self._mails_given_up():
            time.sleep(0.5)
        return statuses

    def _mails_given_up(self) -> int:
        log = self.stack.log("notification-worker")
        return len(_GIVEN_UP.findall(log.read_text(errors="replace"))) if log.exists() else 0

    def _sent_mails(self) -> list[str]:
        log = self.stack.log(FAILING_SERVICE)
        if not log.exists():
            return []
        return [
            m.group(1) for line in log.read_text(errors="replace").splitlines() if (m := _SENT.search(line))
        ]

    # -- the report --------------------------------------------------------------------------
    def _report(
        self, ids: list[str], statuses: dict[str, str], traces: dict[str, Any], seconds: float
    ) -> Report:
        assert self.outage is not None
        down, up = self.outage
        report = Report(orders_placed=len(ids), placement_errors=self.errors, outage_s=up - down)
        report.seconds_placing = seconds
        report.orders_per_s = len(ids) / seconds if seconds else 0.0
        report.orders_lost = sum(1 for order_id in ids if statuses.get(order_id) not in shop.FINAL_STATES)
        self._side_effects(report, ids)
        placed_at = dict(self.placed)
        for order_id in ids:
            during = down <= placed_at[order_id] <= up
            trace = traces.get(order_id)
            complete = trace is not None and runner.is_complete_shipped_trace(trace)
            if during:
                report.placed_during_outage += 1
                report.complete_during_outage += complete
                continue
            report.placed_while_up += 1
            if complete:
                report.complete_while_up += 1
            elif self._lost_with_kill(trace, placed_at[order_id]):
                report.lost_with_killed_worker += 1
            else:
                report.incomplete_while_up.append(f"{order_id}: {_why_incomplete(trace)}")
        self._hostile_outcome(report)
        self._spans(report)
        report.service_deaths = sum(
            1 for name, process in self.stack.children.items() if process.poll() is not None
        )
        return report

    def _lost_with_kill(self, trace: Any, placed_at: float) -> bool:
        """Whether an incomplete trace is what the SIGKILL did, and nothing else: what is missing
        is exactly the killed worker's unexported part.  Either its record's downstream spans
        lost their parent — every extra root consumes a topic only the killed worker produces,
        from a record sent within seconds before the kill — or only the killed worker's own
        spans are short, for an order placed before the kill."""
        if trace is None:
            return False
        orphans = [root for root in trace.roots if not (root.service == "gateway" and root.kind == "SERVER")]
        if orphans:
            for root in orphans:
                topic = root.attributes.get("messaging.destination.name")
                wait_ms = root.attributes.get("tracebridge.queue_wait_ms")
                if root.kind != "CONSUMER" or topic not in KILLED_WORKER_PRODUCES or wait_ms is None:
                    return False
                sent_at = root.start_ns / 1e9 - float(wait_ms) / 1000
                if not self.killed_at - 5.0 <= sent_at <= self.killed_at + 0.5:
                    return False
            return True
        missing = runner.missing_spans(trace)
        return bool(missing) and placed_at <= self.killed_at and {s for s, _ in missing} == {KILLED_WORKER}

    def _side_effects(self, report: Report, ids: list[str]) -> None:
        order_db, inventory_db = self.directory / "order.db", self.directory / "inventory.db"
        reserved = {
            order_id
            for order_id, outcome in _rows(inventory_db, "SELECT order_id, outcome FROM reservations")
            if outcome == "RESERVED"
        }
        taken: Counter[str] = Counter()
        for order_id, sku, quantity in _rows(order_db, "SELECT order_id, sku, quantity FROM order_lines"):
            if order_id in reserved:
                taken[sku] += quantity
        for sku, available in _rows(inventory_db, "SELECT sku, available FROM stock"):
            report.reservations_doubled_units += max(0, INITIAL_STOCK - available - taken[sku])
        charges = Counter(
            order_id for (order_id,) in _rows(self.directory / "billing.db", "SELECT order_id FROM charges")
        )
        report.charges_missing = sum(1 for order_id in ids if charges[order_id] == 0)
        report.charges_duplicated = sum(count - 1 for count in charges.values() if count > 1)
        sent = Counter(self._sent_mails())
        report.mails_sent = sum(sent.values())
        report.mails_duplicated = sum(count - 1 for count in sent.values() if count > 1)
        expected = {f"{order_id}:{kind}" for order_id in ids for kind in ("created", "shipped")}
        dead = self._mails_given_up()
        report.mails_dead_lettered = dead
        report.mails_missing = max(0, len(expected - set(sent)) - dead)

    def _hostile_outcome(self, report: Report) -> None:
        assert self.stack.broker is not None
        letters = asyncio.run(_dead_letters(self.stack.broker.bootstrap_servers))
        for topic, offsets in self.hostile.items():
            for offset in offsets:
                report.hostile_produced += 1
                for group in CONSUMERS[topic]:
                    if (topic, offset, group) in letters:
                        report.hostile_dead_lettered += 1
                    else:
                        report.hostile_missing += 1

    def _spans(self, report: Report) -> None:
        """From every service's log: spans held through the outage and delivered late, and
        spans dropped (the count in a log line is cumulative: the last one of each log counts)."""
        for name in SERVICE_NAMES:
            log = self.stack.log(name)
            if not log.exists():
                continue
            lines = _DELIVERED.findall(log.read_text(errors="replace"))
            report.spans_delivered_late += sum(int(delivered) for delivered, _ in lines)
            if lines:
                report.spans_dropped += int(lines[-1][1])


def _why_incomplete(trace: Any) -> str:
    if trace is None:
        return "no span found"
    parts = []
    extra = [r for r in trace.roots if not (r.service == "gateway" and r.kind == "SERVER")]
    if extra:
        parts.append("parent missing for " + ", ".join(f"{r.service} {r.name!r}" for r in extra[:3]))
    missing = runner.missing_spans(trace)
    if missing:
        parts.append("missing " + ", ".join(f"{service} {kind}" for service, kind in missing))
    return "; ".join(parts) or "incomplete"


def render(report: Report) -> str:
    """The report as a person reads it."""
    lines = [
        f"orders placed              {report.orders_placed} in {report.seconds_placing:.0f} s "
        f"({report.orders_per_s:.1f}/s), {report.placement_errors} placement errors",
        f"orders lost                {report.orders_lost}",
        f"duplicated side effects    {report.reservations_doubled_units} stock units reserved twice, "
        f"{report.charges_duplicated} charges, {report.mails_duplicated} mails "
        f"({report.mails_sent} mails sent, {report.mails_dead_lettered} dead-lettered after every retry, "
        f"{report.mails_missing} missing; {report.charges_missing} charges missing)",
        f"complete traces, up        {report.complete_while_up} of "
        f"{report.placed_while_up - report.lost_with_killed_worker} "
        f"({report.complete_share_while_up:.1%}); {report.lost_with_killed_worker} more had spans "
        f"in the SIGKILLed {KILLED_WORKER}'s memory",
        f"complete traces, outage    {report.complete_during_outage} of {report.placed_during_outage} "
        f"placed during the {report.outage_s:.0f} s outage",
        f"spans                      {report.spans_delivered_late} held through the outage and "
        f"delivered late, {report.spans_dropped} dropped",
        f"hostile records            {report.hostile_produced} produced, {report.hostile_dead_lettered} "
        f"dead letters (one per consuming group), {report.hostile_missing} unaccounted",
        f"services that died         {report.service_deaths} (besides the one killed on purpose)",
        "peak RSS (MB)              before / outage / recovered / after",
    ]
    for name in SERVICE_NAMES:
        phases = report.rss_mb.get(name, {})
        values = " / ".join(f"{phases.get(p, 0.0):5.0f}" for p in ("before", "outage", "recovered", "after"))
        lines.append(f"  {name:<24} {values}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--orders", type=int, default=2000)
    parser.add_argument("--outage", type=float, default=30.0, help="seconds the collector is down")
    parser.add_argument("--concurrency", type=int, default=6)
    parser.add_argument("--dir", type=Path, default=None, help="keep the run's files here")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    import tempfile

    with tempfile.TemporaryDirectory(prefix="tracebridge-soak-") as scratch:
        directory = args.dir or Path(scratch)
        directory.mkdir(parents=True, exist_ok=True)
        soak = Soak(directory, args.orders, args.outage, args.concurrency)
        report = soak.run(log=lambda text: print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr))
    print(json.dumps(asdict(report), indent=2) if args.json else render(report))
    problems = report.problems()
    for problem in problems:
        print(f"FAILED: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
