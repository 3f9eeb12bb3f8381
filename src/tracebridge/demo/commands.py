"""``tracebridge demo``, ``up`` and ``down``: the eshop stack from the command line."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tracebridge.demo.stack import SERVICE_NAMES, Faults

if TYPE_CHECKING:
    from tracebridge.demo.stack import Stack

console = Console()
errors = Console(stderr=True)
DEFAULT_STATE_DIR = Path(".tracebridge")

SlowOption = Annotated[
    list[str] | None,
    typer.Option("--slow", metavar="SERVICE=MS", help="Add latency to a service (repeatable)."),
]
FailOption = Annotated[
    list[str] | None,
    typer.Option("--fail", metavar="SERVICE=RATE", help="Make a service fail at a rate 0..1 (repeatable)."),
]
NetworkOption = Annotated[
    list[str] | None,
    typer.Option(
        "--slow-network",
        metavar="CALLER:CALLEE=MS",
        help="Add latency on the wire between two services, e.g. order:inventory=300 (repeatable).",
    ),
]
BreakOption = Annotated[
    list[str] | None,
    typer.Option(
        "--break-context", metavar="SERVICE", help="The service publishes events without trace context."
    ),
]


def parse_faults(
    slow: list[str] | None,
    fail: list[str] | None,
    broken: list[str] | None,
    network: list[str] | None = None,
) -> Faults:
    """``--slow logistics-worker=800 --fail notification=0.3 --break-context inventory-worker
    --slow-network order:inventory=300``."""

    def pairs(option: str, items: list[str] | None) -> dict[str, float]:
        parsed: dict[str, float] = {}
        for item in items or []:
            name, sep, value = item.partition("=")
            try:
                parsed[name.strip()] = float(value)
            except ValueError:
                raise typer.BadParameter(f"{option} {item!r}: expected SERVICE=NUMBER") from None
            if not sep:
                raise typer.BadParameter(f"{option} {item!r}: expected SERVICE=NUMBER")
        return parsed

    faults = Faults(
        pairs("--slow", slow),
        pairs("--fail", fail),
        {name.strip() for name in broken or []},
        pairs("--slow-network", network),
    )
    try:
        faults.validate()
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    return faults


def _fault_args(faults: Faults) -> list[str]:
    args: list[str] = []
    for name, ms in faults.slow.items():
        args += ["--slow", f"{name}={ms:g}"]
    for name, rate in faults.fail.items():
        args += ["--fail", f"{name}={rate:g}"]
    for name in sorted(faults.break_context):
        args += ["--break-context", name]
    for link, ms in faults.slow_network.items():
        args += ["--slow-network", f"{link}={ms:g}"]
    return args


def _raise_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so every child process is stopped on the way out."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def demo(
    orders: Annotated[int, typer.Option(min=1, max=1000, help="How many orders to place.")] = 20,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for start-up, and for the orders.")] = 90.0,
    db: Annotated[str | None, typer.Option(help="Trace store (default: the one `trace` reads).")] = None,
    slow: SlowOption = None,
    fail: FailOption = None,
    break_context: BreakOption = None,
    slow_network: NetworkOption = None,
    keep: Annotated[bool, typer.Option(help="Leave everything running until Ctrl-C.")] = False,
    logs: Annotated[
        str | None, typer.Option(help="Folder for the services' logs (default: a new one).")
    ] = None,
    stuck_behind: Annotated[
        str | None,
        typer.Option(
            "--stuck-behind",
            metavar="SERVICE",
            help="Then stop this consumer (e.g. logistics-worker), place one more order and show "
            "where it is stuck — the consumer group, partition and lag, asked of the broker — "
            "then let the consumer go on and show the order finish.",
        ),
    ] = None,
) -> None:
    """Start broker, collector and the eshop services, place orders through GraphQL, wait until
    every order is final, and show the slowest order's end-to-end trace and diagnosis (and,
    with --stuck-behind, an order in flight behind a stopped consumer)."""
    from tracebridge.analysis.diagnosis import diagnose
    from tracebridge.analysis.doctor import doctor
    from tracebridge.broker import BrokerNotFound, BrokerStartError
    from tracebridge.collector.source import StoreSource
    from tracebridge.collector.store import DEFAULT_DB, SpanStore
    from tracebridge.demo import runner, stuck
    from tracebridge.demo.shop import ShopError
    from tracebridge.demo.stack import Stack, StackError
    from tracebridge.render.report import diagnosis_view, doctor_view
    from tracebridge.render.waterfall import waterfall

    faults = parse_faults(slow, fail, break_context, slow_network)
    if stuck_behind is not None:
        try:
            stuck.validate(stuck_behind)
        except ValueError as error:
            raise typer.BadParameter(str(error)) from None
    directory = Path(logs).expanduser() if logs else Path(tempfile.mkdtemp(prefix="tracebridge-demo-"))
    store_path = Path(db).expanduser() if db else DEFAULT_DB
    stack = Stack(directory, faults, db=store_path)
    _raise_on_sigterm()
    started = time.monotonic()
    try:
        with console.status(f"starting broker, collector and {len(SERVICE_NAMES)} services..."):
            stack.start(timeout)
        console.print(
            f"[green]✓[/] broker, collector and {len(SERVICE_NAMES)} services up in "
            f"{time.monotonic() - started:.1f}s"
        )
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            placing = progress.add_task("placing orders via GraphQL", total=orders)
            order_ids = asyncio.run(
                runner.place_orders(stack.gateway_url, orders, on_placed=lambda _: progress.advance(placing))
            )
            final_task = progress.add_task("waiting for final states", total=orders)
            statuses = asyncio.run(runner.wait_final(stack.gateway_url, order_ids, timeout))
            progress.update(final_task, completed=len(statuses))
        shipped = sum(1 for status in statuses.values() if status == "SHIPPED")
        console.print(f"[green]✓[/] {shipped} shipped, {orders - shipped} cancelled")
        with console.status("collecting the traces..."):
            traces = runner.wait_traces(stack.db, order_ids, timeout=10 if not faults.break_context else 3)
        stack.check_alive()
    except KeyboardInterrupt:
        stack.stop()
        errors.print("[yellow]interrupted; every process stopped[/]")
        raise typer.Exit(130) from None
    except (StackError, ShopError, BrokerNotFound, BrokerStartError, RuntimeError) as error:
        stack.stop()
        errors.print(
            f"[red]tracebridge demo failed:[/] {escape(str(error))}\n[dim]service logs: {directory}[/]"
        )
        raise typer.Exit(1) from None
    except BaseException:
        stack.stop()
        raise
    try:
        if not traces:
            errors.print(f"[red]tracebridge demo: no trace arrived at the collector[/] (logs: {directory})")
            raise typer.Exit(1)
        diagnoses = {order_id: diagnose(trace) for order_id, trace in traces.items()}
        order_id = max(diagnoses, key=lambda o: diagnoses[o].end_to_end_ns)
        # the one shown gets its causes, with the store to see what the consumers were doing
        around = SpanStore(stack.db)
        trace = traces[order_id]
        try:
            diagnosis = diagnose(trace, nearby=StoreSource(store=around).spans_between)
        finally:
            around.close()
        console.print(
            f"\n[bold]slowest order {order_id}[/] ({statuses.get(order_id, '?')}): one trace of "
            f"{diagnosis.span_count} spans across {len(diagnosis.services)} services\n"
        )
        console.print(waterfall(trace, diagnosis, console.width))
        console.print()
        console.print(diagnosis_view(diagnosis))
        if faults.break_context:
            reader = SpanStore(stack.db)
            now = time.time_ns()
            chains = doctor(reader.spans_between(now - int(600e9)), now)
            reader.close()
            console.print()
            console.print(doctor_view(chains, "10m"))
        source = "" if store_path == DEFAULT_DB else f" --source {store_path}"
        console.print(
            f"\ntry: [bold]tracebridge trace --order {order_id}{source}[/]   "
            f"[bold]tracebridge diagnose --order {order_id}{source}[/]   [bold]tracebridge doctor{source}[/]"
            f"\nstore: {store_path}   service logs: {directory}"
        )
        trace_path = f"/trace/{trace.spans[0].trace_id}"
        if stuck_behind is not None:
            trace_path = _show_stuck_order(stack, stuck_behind, timeout, keep)
        if keep:
            console.print(f"web UI: [bold]{stack.collector_url}{trace_path}[/]")
        else:
            db_option = "" if store_path == DEFAULT_DB else f" --db {store_path}"
            console.print(
                f"web UI: run [bold]tracebridge collector{db_option}[/] and open "
                f"[bold]http://127.0.0.1:4318{trace_path}[/]  (or rerun with --keep to leave it all running)"
            )
        if keep:
            console.print(
                f"\n[bold]still running[/]: gateway {stack.gateway_url}/graphql, collector and web UI "
                f"{stack.collector_url}/ — Ctrl-C stops everything"
            )
            while True:
                time.sleep(1)
                stack.check_alive()
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()


def _show_stuck_order(stack: Stack, service: str, timeout: float, keep: bool) -> str:
    """Stop ``service``, place an order, show where it is stuck; then (unless ``keep``: it
    stays stuck for the UI until Ctrl-C) let the service go on and show the order finish.
    Returns the stuck order's trace page."""
    from tracebridge.demo import stuck
    from tracebridge.render.report import diagnosis_view
    from tracebridge.render.waterfall import waterfall

    with console.status(f"stopping {service} and placing one more order..."):
        held = stuck.place_stuck_order(stack, service, timeout)
    console.print(
        f"\n[bold]order {held.order_id} with {service} stopped[/]: its trace has "
        f"{held.diagnosis.span_count} spans so far, and the broker says\n"
    )
    console.print(waterfall(held.trace, held.diagnosis, console.width))
    console.print()
    console.print(diagnosis_view(held.diagnosis))
    if keep:  # it stays stuck, and the broker is there to ask, until Ctrl-C
        bootstrap = stack.broker.bootstrap_servers if stack.broker is not None else "BROKER"
        console.print(
            f"\n[dim]the same answer: tracebridge diagnose --order {held.order_id} --source {stack.db} "
            f"--kafka {bootstrap}[/]"
        )
    else:
        with console.status(f"letting {service} go on..."):
            status, after = stuck.release(stack, service, held, timeout)
        console.print(f"\n[green]✓[/] {service} resumed: order {held.order_id} {status} — {after.headline}")
    return f"/trace/{held.trace.spans[0].trace_id}"


def up(
    state_dir: Annotated[Path, typer.Option("--dir", help="Where the stack keeps its state and logs.")] = (
        DEFAULT_STATE_DIR
    ),
    slow: SlowOption = None,
    fail: FailOption = None,
    break_context: BreakOption = None,
    slow_network: NetworkOption = None,
    collector_port: Annotated[int, typer.Option(help="Collector and UI port (0: any free one).")] = 0,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for start-up.")] = 90.0,
) -> None:
    """Start the eshop stack in the background and leave it running (stop with `down`)."""
    faults = parse_faults(slow, fail, break_context, slow_network)
    state_dir = state_dir.expanduser().resolve()
    state_file = state_dir / "stack.json"
    if state_file.exists():
        state = json.loads(state_file.read_text())
        if _alive(int(state.get("pid", 0))):
            console.print(f"already running (pid {state['pid']}): gateway {state['gateway']}/graphql")
            return
        state_file.unlink()
    state_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "tracebridge.demo.supervisor", "--dir", str(state_dir)]
    command += ["--collector-port", str(collector_port), *_fault_args(faults)]
    log = state_dir / "supervisor.log"
    with open(log, "wb") as output:  # a fresh run, fresh logs
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + timeout
    with console.status("starting broker, collector and services..."):
        while not state_file.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                if process.poll() is None:
                    process.terminate()
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
                errors.print(f"[red]tracebridge up failed:[/]\n{tail}")
                raise typer.Exit(1)
            time.sleep(0.1)
    state = json.loads(state_file.read_text())
    console.print(
        f"[green]✓[/] eshop is up (pid {state['pid']})\n  gateway   {state['gateway']}/graphql\n"
        f"  collector {state['collector']}/\n  logs      {state_dir}\nstop it with: tracebridge down"
        + (f" --dir {state_dir}" if state_dir != DEFAULT_STATE_DIR.resolve() else "")
    )


def down(
    state_dir: Annotated[Path, typer.Option("--dir", help="The folder `up` used.")] = DEFAULT_STATE_DIR,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for a clean stop.")] = 30.0,
) -> None:
    """Stop the stack `up` started."""
    state_file = state_dir.expanduser().resolve() / "stack.json"
    if not state_file.exists():
        console.print("nothing is running")
        return
    pid = int(json.loads(state_file.read_text()).get("pid", 0))
    if _alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)  # its children still go: they die with their parent
    state_file.unlink(missing_ok=True)
    console.print("[green]✓[/] stopped")


def running_stack_store(state_dir: Path = DEFAULT_STATE_DIR) -> Path | None:
    """The trace store of a stack `up` started in ``state_dir`` that is still running, if any."""
    state_file = state_dir / "stack.json"
    try:
        state = json.loads(state_file.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or not _alive(int(state.get("pid", 0) or 0)) or not state.get("db"):
        return None
    return Path(state["db"])


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (our own finished child) counts as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (OSError, IndexError):
        return True
