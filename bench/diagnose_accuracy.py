"""How often the answer names the injected cause: one fault per run of the eshop stack.

    python bench/diagnose_accuracy.py [--rounds 2] [--kind "slow worker" ...]

Kinds (tracebridge/demo/fault_runs.py): a slow synchronous service (billing +600 ms), a slow
worker (inventory-worker +700 ms a record, 8 orders at once), a failing dependency with retries
(notification fails 50 %), a broken context chain (inventory-worker publishes without context),
a stopped consumer (logistics-worker paused 6 s), and a slow network on one call (order →
inventory +300 ms on the wire).  A run scores when ``diagnose`` on the slowest order names the
injected cause and service — ``doctor`` the producer, for the broken chain.  Target: >= 95 %
over at least 12 runs covering every kind.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from tracebridge.demo.fault_runs import BY_KIND, SCENARIOS, run

TARGET = 0.95


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--kind", action="append", choices=sorted(BY_KIND), help="only these kinds")
    args = parser.parse_args()
    chosen = [BY_KIND[kind] for kind in args.kind] if args.kind else list(SCENARIOS)
    root = Path(tempfile.mkdtemp(prefix="diagnose-accuracy-"))
    outcomes = []
    for round_number in range(args.rounds):
        for number, scenario in enumerate(chosen):
            directory = root / f"{round_number}-{number}"
            outcome = run(scenario, directory, seed=11 + round_number)
            outcomes.append(outcome)
            mark = "✓" if outcome.named else "✗"
            print(f"{mark} {scenario.kind:<33} {outcome.seconds:5.1f} s  {outcome.said}", flush=True)
    named = sum(outcome.named for outcome in outcomes)
    score = named / len(outcomes)
    print(
        f"\ndiagnosis names the injected cause: {named} of {len(outcomes)} runs = {score:.0%} "
        f"(target >= {TARGET:.0%}: {'met' if score >= TARGET else 'NOT met'}), {len(chosen)} kinds"
    )


if __name__ == "__main__":
    main()
