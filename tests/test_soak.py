"""The short soak: at least 200 orders through the whole eshop at the rate this machine takes,
while a worker is SIGKILLed and restarted, the collector is down for 30 s, the notification
service fails 30 % of its requests and hostile records go into every topic.  Read from the
services' databases and logs, the broker's dead-letter topics and the trace store (`make soak`
is the long form, 2 000 orders)."""

from __future__ import annotations

import pytest

from tracebridge.demo.soak import Soak, render
from tracebridge.demo.stack import SERVICE_NAMES


@pytest.mark.timeout(900)
def test_soak_under_faults_loses_nothing_and_every_trace_arrives(tmp_path) -> None:
    report = Soak(tmp_path, orders=200, outage_s=30).run(log=lambda text: print(text, flush=True))
    print(render(report))
    assert report.orders_placed >= 200 and report.placement_errors == 0
    assert report.orders_lost == 0
    assert (report.reservations_doubled_units, report.charges_duplicated, report.mails_duplicated) == (
        0,
        0,
        0,
    )
    assert report.charges_missing == 0 and report.mails_missing == 0
    assert report.mails_sent >= 2 * report.orders_placed - report.mails_dead_lettered
    # 100 % of the orders placed while the collector was up (those whose spans were still in
    # the SIGKILLed worker's memory are counted apart, and must be few).
    assert report.incomplete_while_up == []
    assert report.complete_while_up == report.placed_while_up - report.lost_with_killed_worker
    assert report.lost_with_killed_worker <= max(5, report.orders_placed // 50)
    # The outage was bridged: its spans were held and delivered late, none dropped.
    assert report.placed_during_outage > 0 and report.complete_during_outage == report.placed_during_outage
    assert report.spans_delivered_late > 0 and report.spans_dropped == 0
    assert report.outage_s >= 30
    assert report.hostile_produced == 90 and report.hostile_missing == 0
    assert report.hostile_dead_lettered == 180  # every consuming group dead-lettered each one
    assert report.service_deaths == 0
    for name in SERVICE_NAMES:
        phases = report.rss_mb[name]
        assert phases["outage"] - phases["before"] < 100, (name, phases)
    assert report.problems() == []
