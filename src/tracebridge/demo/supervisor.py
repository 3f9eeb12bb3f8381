"""The long-lived parent of a stack started by ``tracebridge up``.

Children die with their parent (``PR_SET_PDEATHSIG``), so something must stay alive for the
stack to keep running: this process.  It writes ``stack.json`` once everything is healthy and
removes it when it stops (SIGTERM from ``tracebridge down``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

from tracebridge.demo.commands import parse_faults
from tracebridge.demo.stack import SERVICE_NAMES, Stack, StackError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tracebridge.demo.supervisor")
    parser.add_argument("--dir", required=True, type=Path)
    parser.add_argument("--collector-port", type=int, default=0)
    parser.add_argument("--slow", action="append")
    parser.add_argument("--slow-network", action="append")
    parser.add_argument("--fail", action="append")
    parser.add_argument("--break-context", action="append")
    args = parser.parse_args(argv)
    faults = parse_faults(args.slow, args.fail, args.break_context, args.slow_network)
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    state_file = args.dir / "stack.json"
    stack = Stack(args.dir, faults, collector_port=args.collector_port or None)
    try:
        removed = stack.clear_previous_run()  # fresh, like the broker's topics
        if removed:
            print(f"cleared the previous run: {', '.join(p.name for p in removed)}", flush=True)
        stack.start()
        state = {
            "pid": os.getpid(),
            "gateway": stack.gateway_url,
            "collector": stack.collector_url,
            "db": str(stack.db),
            "services": {name: stack.url(name) for name in SERVICE_NAMES},
        }
        temporary = state_file.with_suffix(".tmp")
        temporary.write_text(json.dumps(state, indent=2))
        temporary.replace(state_file)
        print(f"stack up: {json.dumps(state)}", flush=True)
        while not stopping:
            time.sleep(0.2)
            stack.check_alive()
    except StackError as error:
        print(f"stack failed: {error}", file=sys.stderr, flush=True)
        return 1
    finally:
        stack.stop()
        state_file.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
