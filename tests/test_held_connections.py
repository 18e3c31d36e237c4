"""The connections a ledger keeps between operations on an SQLite file (HeldConnections)."""

from __future__ import annotations

import gc
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool, QueuePool

from timebank import Ledger, LimitExceededError, make_engine, upgrade
from timebank._db import SQLITE_BUSY_TIMEOUT_MS, SQLITE_CACHE_KIB, HeldConnections


@pytest.fixture
def file_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'held.db'}"


@pytest.fixture
def ledger(file_url: str) -> Iterator[Ledger]:
    with Ledger.open(file_url) as ledger:
        ledger.open_account("A", "member", floor_minutes=0)
        ledger.open_account("B", "member", floor_minutes=None)
        yield ledger


def _checked_out(engine: sa.Engine) -> int:
    pool = engine.pool
    assert isinstance(pool, QueuePool)
    return pool.checkedout()


def test_one_connection_serves_consecutive_operations(ledger: Ledger) -> None:
    ledger.transfer("k1", debit="B", credit="A", amount_minutes=5, code="c", operator="o")
    kept = _checked_out(ledger.engine)
    for n in range(2, 20):
        ledger.transfer(f"k{n}", debit="B", credit="A", amount_minutes=5, code="c", operator="o")
        ledger.balance("A")
    assert kept == 1
    assert _checked_out(ledger.engine) == kept


def test_after_a_refusal_the_pool_takes_the_connection_back(ledger: Ledger) -> None:
    ledger.balance("A")
    assert _checked_out(ledger.engine) == 1
    with pytest.raises(LimitExceededError):
        ledger.transfer("k1", debit="A", credit="B", amount_minutes=5, code="c", operator="o")
    assert _checked_out(ledger.engine) == 0  # reset by the pool, not kept
    # Nothing is left open: another connection can write at once.
    other = sa.create_engine(ledger.engine.url, poolclass=NullPool)
    try:
        with other.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE scratch (x INTEGER)")
    finally:
        other.dispose()
    ledger.transfer("k2", debit="B", credit="A", amount_minutes=5, code="c", operator="o")
    assert ledger.balance("A").posted_minutes == 5


def test_a_connection_the_driver_left_in_a_transaction_is_not_kept(ledger: Ledger) -> None:
    """SQLAlchemy may believe a transaction is over when SQLite does not (a failed COMMIT):
    such a connection must not be kept, or every later writer would be locked out."""
    held = HeldConnections.of(ledger.engine)
    with held.connection(write=True) as conn:
        driver = conn.connection.driver_connection
        driver.execute("BEGIN IMMEDIATE")  # type: ignore[union-attr]
        driver.execute("CREATE TABLE stray (x INTEGER)")  # type: ignore[union-attr]
    assert _checked_out(ledger.engine) == 0
    ledger.transfer("k1", debit="B", credit="A", amount_minutes=5, code="c", operator="o")
    assert ledger.balance("A").posted_minutes == 5
    with ledger.engine.connect() as conn:  # the stray transaction was rolled back
        assert "stray" not in sa.inspect(conn).get_table_names()


def test_a_transaction_object_stops_working_after_its_block(ledger: Ledger) -> None:
    with ledger.transaction() as tx:
        tx.transfer("in", debit="B", credit="A", amount_minutes=5, code="c", operator="o")
    with pytest.raises(sa.exc.ResourceClosedError):
        tx.transfer("out", debit="B", credit="A", amount_minutes=5, code="c", operator="o")
    assert ledger.balance("A").posted_minutes == 5
    ledger.transfer("next", debit="B", credit="A", amount_minutes=1, code="c", operator="o")
    assert ledger.balance("A").posted_minutes == 6


def test_ledgers_on_one_engine_share_what_is_kept(file_url: str) -> None:
    engine = make_engine(file_url, poolclass=QueuePool, pool_size=2, max_overflow=0)
    upgrade(engine)
    first, second = Ledger(engine), Ledger(engine)
    first.open_account("A", "member")
    second.balance("A")
    assert _checked_out(engine) == HeldConnections.keep_for(engine) == 1
    with engine.connect() as conn:  # the application still gets a connection
        assert conn.exec_driver_sql("SELECT count(*) FROM tb_accounts").scalar_one() == 1
    first.dispose()


def test_a_forked_child_opens_its_own_connection(ledger: Ledger) -> None:
    ledger.balance("A")
    assert _checked_out(ledger.engine) == 1
    pid = os.fork()
    if pid == 0:  # the child: must not reuse the parent's SQLite connection
        code = 1
        try:
            held = HeldConnections.of(ledger.engine)
            with held.connection(write=False) as conn:
                parents = held._pid != os.getpid()
                code = 0 if not parents and conn.exec_driver_sql("SELECT 1").scalar() else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    ledger.transfer("k1", debit="B", credit="A", amount_minutes=5, code="c", operator="o")


def test_a_lock_timeout_at_begin_is_retried(file_url: str) -> None:
    """BEGIN IMMEDIATE that times out is a "database is locked" like any other: retried."""
    engine = make_engine(file_url)

    @sa.event.listens_for(engine, "connect")
    def _short_timeout(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute("PRAGMA busy_timeout = 20")

    upgrade(engine)
    ledger = Ledger(engine)
    ledger.open_account("A", "member")
    ledger.open_account("B", "member", floor_minutes=None)
    blocker = sa.create_engine(file_url, poolclass=NullPool)
    locked = threading.Event()

    def hold_the_write_lock() -> None:
        with blocker.connect() as conn:
            driver = conn.connection.driver_connection
            driver.isolation_level = None  # type: ignore[union-attr]
            driver.execute("BEGIN IMMEDIATE")  # type: ignore[union-attr]
            locked.set()
            time.sleep(0.15)
            driver.execute("ROLLBACK")  # type: ignore[union-attr]

    thread = threading.Thread(target=hold_the_write_lock)
    thread.start()
    locked.wait(5)
    try:
        ledger.transfer("k1", debit="B", credit="A", amount_minutes=5, code="c", operator="o")
    finally:
        thread.join()
        blocker.dispose()
    assert ledger.balance("A").posted_minutes == 5
    ledger.dispose()


def test_reads_do_not_take_the_write_lock(ledger: Ledger) -> None:
    """A kept connection used for a write and then for a read begins a plain (deferred)
    transaction for the read: a read must not queue behind another writer."""
    ledger.transfer("k1", debit="B", credit="A", amount_minutes=5, code="c", operator="o")
    blocker = sa.create_engine(ledger.engine.url, poolclass=NullPool)
    try:
        with blocker.connect() as conn:
            conn.connection.driver_connection.isolation_level = None  # type: ignore[union-attr]
            conn.exec_driver_sql("BEGIN IMMEDIATE")  # another writer holds the write lock
            try:
                assert ledger.balance("A").posted_minutes == 5
            finally:
                conn.exec_driver_sql("ROLLBACK")
    finally:
        blocker.dispose()


def test_threads_share_the_kept_connections_safely(ledger: Ledger) -> None:
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for n in range(25):
                ledger.transfer(
                    f"t{worker}-{n}", debit="B", credit="A", amount_minutes=1,
                    code="c", operator="o",
                )
                ledger.balance("A")
        except BaseException as exc:  # noqa: BLE001 - reported to the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert ledger.balance("A").posted_minutes == 150
    assert _checked_out(ledger.engine) <= HeldConnections.keep_for(ledger.engine)
    assert ledger.verify().ok


def test_dispose_hands_every_kept_connection_back(ledger: Ledger) -> None:
    ledger.balance("A")
    ledger.dispose()
    assert _checked_out(ledger.engine) == 0


def test_a_ledger_dropped_without_dispose_returns_its_connections(file_url: str) -> None:
    engine = make_engine(file_url)
    upgrade(engine)
    ledger = Ledger(engine)
    ledger.open_account("A", "member")
    assert _checked_out(engine) == 1
    del ledger
    gc.collect()
    assert _checked_out(engine) == 0
    engine.dispose()


def test_nothing_is_kept_when_the_pool_cannot_spare_it(file_url: str) -> None:
    engine = make_engine(file_url, poolclass=QueuePool, pool_size=1, max_overflow=0)
    upgrade(engine)
    assert HeldConnections.keep_for(engine) == 0
    ledger = Ledger(engine)
    ledger.open_account("A", "member")
    # The application's own connection is not kept waiting by the ledger.
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM tb_accounts").scalar_one() == 1
    ledger.dispose()


def test_server_and_memory_databases_keep_nothing(tmp_path: Path) -> None:
    assert HeldConnections.keep_for(sa.create_engine("sqlite://")) == 0
    assert HeldConnections.keep_for(
        sa.create_engine(f"sqlite:///{tmp_path / 'n.db'}", poolclass=NullPool)
    ) == 0
    assert HeldConnections.keep_for(sa.create_engine(f"sqlite:///{tmp_path / 'q.db'}")) == 5


def test_every_connection_to_a_file_has_the_librarys_settings(ledger: Ledger) -> None:
    """WAL, NORMAL sync, the page cache, and SQLite's own checkpoint of the log every 1,000
    pages (under NORMAL the only sync, so what a power loss can take back): on each
    connection the engine opens, not only the first."""
    expected = {
        "journal_mode": "wal",
        "synchronous": 1,  # NORMAL
        "cache_size": -SQLITE_CACHE_KIB,
        "wal_autocheckpoint": 1_000,
        "foreign_keys": 1,
        "busy_timeout": SQLITE_BUSY_TIMEOUT_MS,
    }
    engine = ledger.engine
    with engine.connect() as first, engine.connect() as second:
        for conn in (first, second):
            found = {
                name: conn.exec_driver_sql(f"PRAGMA {name}").scalar_one() for name in expected
            }
            assert found == expected
