"""The ``tracebridge`` command line."""

from __future__ import annotations

import signal
import sys
import time
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(
    name="tracebridge",
    help="One unbroken trace through HTTP, GraphQL and Kafka hops.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
errors = Console(stderr=True)


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def run(
    ctx: typer.Context,
    service_name: Annotated[
        str | None, typer.Option("--service-name", help="Sets OTEL_SERVICE_NAME for the program.")
    ] = None,
) -> None:
    """Run a Python program traced, without changing it: tracebridge run -- python app.py"""
    from tracebridge.instrument.launcher import LaunchError
    from tracebridge.instrument.launcher import run as launch

    command = [arg for arg in ctx.args if arg != "--"] if ctx.args[:1] == ["--"] else list(ctx.args)
    try:
        launch(command, service_name)
    except LaunchError as error:
        errors.print(f"[red]tracebridge run:[/] {error}")
        raise typer.Exit(2) from None


@app.command()
def broker(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1; 0 picks a free one.")] = 9092,
    topics: Annotated[list[str] | None, typer.Option("--topic", help="Topic to create (repeatable).")] = None,
    partitions: Annotated[int, typer.Option(help="Partitions per created topic.")] = 1,
) -> None:
    """Run the embedded Kafka-protocol broker (in memory) until Ctrl-C."""
    from tracebridge.broker import BrokerNotFound, BrokerStartError, EmbeddedBroker

    running = EmbeddedBroker(port=port or None)
    try:
        running.start()
        if topics:
            running.create_topics(topics, partitions=partitions)
    except (BrokerNotFound, BrokerStartError) as error:
        errors.print(f"[red]tracebridge broker:[/] {error}")
        running.stop()
        raise typer.Exit(1) from None
    console.print(
        f"Kafka broker on [bold]{running.bootstrap_servers}[/] (in memory: nothing survives a restart). "
        "Ctrl-C stops it."
    )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while running.process is not None and running.process.poll() is None:
            time.sleep(0.5)
        errors.print("[red]the broker process exited[/]")
        raise typer.Exit(1)
    except KeyboardInterrupt:
        pass
    finally:
        running.stop()


@app.command()
def demo(
    orders: Annotated[int, typer.Option(min=1, max=1000, help="How many orders to place.")] = 3,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the traces.")] = 60.0,
) -> None:
    """Start broker and services, place orders over HTTP, print one order's end-to-end trace."""
    from tracebridge.broker import BrokerNotFound, BrokerStartError
    from tracebridge.demo.runner import DemoError, run_chain
    from tracebridge.render.tree import trace_tree

    with console.status("starting broker, receiver and services (web, mailer, worker, shipper)..."):
        try:
            result = run_chain(orders=orders, timeout=timeout)
        except (DemoError, BrokerNotFound, BrokerStartError) as error:
            errors.print(f"[red]tracebridge demo failed:[/] {error}")
            raise typer.Exit(1) from None
    order_id = result.order_ids[0]
    trace = next(
        (t for t in result.traces.values() if any(s.attributes.get("order.id") == order_id for s in t.spans)),
        next(iter(result.traces.values())),
    )
    services = sorted({span.service for span in trace.spans})
    console.print(
        f"\n[bold green]{len(result.traces)} of {orders} orders traced end to end[/] — "
        f"order [bold]{order_id}[/]: {len(trace.spans)} spans, one trace, {len(services)} services "
        f"({', '.join(services)})\n"
    )
    console.print(trace_tree(trace, title=f"trace {trace.spans[0].trace_id}  (order {order_id})"))
    console.print(f"\nservice logs: {result.log_dir}")


def main() -> None:
    """Entry point of the ``tracebridge`` script."""
    app()


if __name__ == "__main__":
    main()
