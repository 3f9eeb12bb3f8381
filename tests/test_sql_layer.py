"""eshop's SQL layer on both databases it claims: SQLite (the demo) and a real PostgreSQL
server started by the test — every idempotent operation gives the same answers on both."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy

from eshop import db, events
from eshop.billing import ChargeRequest, charge, refund
from eshop.inventory import seed
from eshop.inventory_worker import reserve
from eshop.logistics_worker import schedule
from eshop.notification import Mail, record
from eshop.order import _load, _store
from eshop.order_status_worker import advance
from tracebridge import processes
from tracebridge.broker import free_port


def _postgres_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    assert found, "no PostgreSQL server: run `make test`, which installs Debian's postgresql"
    return Path(found[-1]).parent


def _as_owner(command: list[str], owner: str | None) -> list[str]:
    # PostgreSQL refuses to run as root; as root we become its system user, without a fork.
    return (
        ["setpriv", f"--reuid={owner}", f"--regid={owner}", "--init-groups", *command] if owner else command
    )


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    binaries = _postgres_bin()
    owner = "postgres" if os.geteuid() == 0 else None
    home = Path(tempfile.mkdtemp(prefix="tracebridge-pg-"))
    if owner:
        shutil.chown(home, owner, owner)
    data = home / "data"
    subprocess.run(
        _as_owner(
            [str(binaries / "initdb"), "-D", str(data), "-U", "eshop", "--auth=trust", "-E", "UTF8"], owner
        ),
        check=True,
        capture_output=True,
    )
    port = free_port()
    log = home / "postgres.log"
    server = processes.spawn(
        _as_owner(
            [
                str(binaries / "postgres"),
                "-D",
                str(data),
                "-p",
                str(port),
                "-k",
                str(home),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
            ],
            owner,
        ),
        dict(os.environ),
        log,
    )
    url = f"postgresql+psycopg://eshop@127.0.0.1:{port}/postgres"
    engine = sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT")
    deadline = time.monotonic() + 30
    while True:
        try:
            with engine.connect() as connection:
                connection.exec_driver_sql("CREATE DATABASE eshop")
            break
        except sqlalchemy.exc.OperationalError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"PostgreSQL did not start:\n{processes.tail(log)}") from None
            time.sleep(0.2)
    engine.dispose()
    yield f"postgresql+psycopg://eshop@127.0.0.1:{port}/eshop"
    processes.stop(server)
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[db.Database]:
    url = (
        f"sqlite:///{tmp_path / 'eshop.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    database = db.Database(url)
    db.metadata.drop_all(database.engine)
    database.create_tables()
    yield database
    database.close()


def order(order_id: str, quantity: int = 2) -> events.OrderCreated:
    return events.OrderCreated.for_order(
        order_id, "a@example.com", [events.Line(sku="MUG-7", quantity=quantity)], 2400
    )


def stock_of(database: db.Database, sku: str) -> int:
    query = sqlalchemy.select(db.stock.c.available).where(db.stock.c.sku == sku)
    return int(database.run_sync(lambda c: c.scalar(query)))


def test_a_reservation_is_made_once_however_often_the_event_arrives(database: db.Database) -> None:
    seed(database, units=5)
    seed(database, units=5)  # a restart keeps the stock it had
    assert database.run_sync(lambda c: reserve(c, order("o-1"))) == ("RESERVED", "")
    assert database.run_sync(lambda c: reserve(c, order("o-1"))) == ("RESERVED", "")
    assert stock_of(database, "MUG-7") == 3
    outcome, reason = database.run_sync(lambda c: reserve(c, order("o-2", quantity=4)))
    assert outcome == "REJECTED" and "3 available, 4 ordered" in reason
    assert stock_of(database, "MUG-7") == 3


def test_charges_mails_and_shipments_are_idempotent(database: db.Database) -> None:
    request = ChargeRequest(order_id="o-1", amount_cents=2400, card_number="4111111111111111")
    first = database.run_sync(lambda c: charge(c, request))
    assert database.run_sync(lambda c: charge(c, request)) == first and first["card_last4"] == "1111"
    assert database.run_sync(lambda c: refund(c, "o-1"))["status"] == "REFUNDED"
    assert database.run_sync(lambda c: refund(c, "o-404")) is None
    mail = Mail(idempotency_key="o-1:created", order_id="o-1", to="a@example.com", subject="hi")
    assert database.run_sync(lambda c: record(c, mail)) is True
    assert database.run_sync(lambda c: record(c, mail)) is False
    assert database.run_sync(lambda c: schedule(c, "o-1")) == database.run_sync(lambda c: schedule(c, "o-1"))


def test_an_order_only_moves_forward(database: db.Database) -> None:
    database.run_sync(lambda c: _store(c, "o-1", "a@example.com", [("MUG-7", 2, 1200)]))
    assert database.run_sync(lambda c: advance(c, "o-1", "SHIPPED")) is True
    assert database.run_sync(lambda c: advance(c, "o-1", "RESERVED")) is False  # overtaken, ignored
    assert database.run_sync(lambda c: advance(c, "o-1", "SHIPPED")) is False  # redelivered
    loaded = database.run_sync(lambda c: _load(c, "o-1"))
    assert loaded is not None and loaded.status == "SHIPPED" and loaded.total_cents == 2400
    statuses = [change.status for change in loaded.history]
    assert statuses[0] == "CREATED" and sorted(statuses[1:]) == ["RESERVED", "SHIPPED"]
    with pytest.raises(LookupError):
        database.run_sync(lambda c: advance(c, "o-404", "SHIPPED"))


def _start_on(path: str, barrier: object) -> str | None:
    """What a service does at start-up, released at the same instant as its siblings."""
    database = db.Database(f"sqlite:///{path}")
    barrier.wait()  # type: ignore[attr-defined]
    try:
        seed(database, units=10)
        return None
    except Exception as error:  # reported, so the test can show it
        return f"{type(error).__name__}: {error}"[:300]
    finally:
        database.close()


def test_services_starting_together_on_one_database_all_come_up(tmp_path: Path) -> None:
    # inventory and inventory-worker share a file; replicas start at once.  Both used to lose
    # the create-table race now and then ("table already exists", "database is locked").
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # never fork a threaded test process
    with context.Manager() as manager, context.Pool(4) as pool:
        failures = []
        for round_number in range(30):
            barrier = manager.Barrier(4)
            path = str(tmp_path / f"race-{round_number}.db")
            failures += [f for f in pool.starmap(_start_on, [(path, barrier)] * 4) if f]
    assert failures == []
