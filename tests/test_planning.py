"""Bulk statements are planned at each execution on PostgreSQL, never from a prepared plan.

psycopg prepares a statement after its fifth execution on a connection; the server may then
keep one generic plan, made while a table was small, for as long as the table's statistics
stay as they were (with autovacuum off: for ever). A look-up of a thousand codes planned as a
scan of an empty table compared every row with every code once the table had grown: opening
20,000 accounts beside 60,000 took 41 s instead of 1.3 (``benchmarks/planning.py``)."""

from __future__ import annotations

import random
from typing import Any

import pytest
import sqlalchemy as sa

from tests._databases import UrlFactory
from tests.bankworld import POLICY, build
from tests.clocks import Clock
from tests.test_bank_import_bulk import history, imported, populate, watch_batch_writes
from timebank import Ledger, _entries
from timebank._db import PLANNED_EACH_TIME_MIN, planned_each_time
from timebank.bank._io_api import BulkEngine
from timebank.models import AccountSpec, TransferCommand


def _threshold(conn: sa.Connection) -> Any:
    driver: Any = conn.connection.driver_connection
    return driver.prepare_threshold


def _prepared(conn: sa.Connection, table: str) -> list[str]:
    query = sa.text("SELECT statement FROM pg_prepared_statements WHERE statement LIKE :t")
    return list(conn.execute(query, {"t": f"%{table}%"}).scalars())


@pytest.mark.postgres
def test_the_block_plans_each_time_and_hands_the_setting_back(postgres_url: str) -> None:
    engine = sa.create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            before = _threshold(conn)
            assert before is not None, "psycopg prepares by default"
            with planned_each_time(conn):
                assert _threshold(conn) is None
                with planned_each_time(conn):
                    assert _threshold(conn) is None
                assert _threshold(conn) is None, "a nested block leaves the outer one alone"
            assert _threshold(conn) == before
            with pytest.raises(RuntimeError), planned_each_time(conn):
                raise RuntimeError("boom")
            assert _threshold(conn) == before, "handed back when the block raises"
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_opening_accounts_never_prepares_its_look_up(postgres_url: str) -> None:
    """Twelve look-ups of one statement on one connection: psycopg would have prepared it at
    the sixth, when the table was still empty."""
    ledger = Ledger.open(postgres_url)
    try:
        with ledger.engine.connect() as conn:
            tx = ledger.bind(conn)
            for start in (0, 6_000):
                with conn.begin():
                    created = tx.open_accounts(
                        AccountSpec(code=f"m:{n:06d}", type="member")
                        for n in range(start, start + 6_000)
                    )
                assert created == 6_000
            assert _prepared(conn, "FROM tb_accounts") == []
            assert _threshold(conn) is not None, "the connection prepares again afterwards"
            # The small statements of single operations still are prepared.
            for _ in range(7):
                conn.execute(sa.text("SELECT count(*) FROM tb_accounts WHERE id > :i"), {"i": 0})
            assert _prepared(conn, "FROM tb_accounts WHERE id >")
            conn.rollback()
            assert ledger.account("m:011999").status == "open"
    finally:
        ledger.dispose()


@pytest.mark.postgres
def test_a_batch_of_postings_is_planned_each_time_and_a_few_are_not(postgres_url: str) -> None:
    ledger = Ledger.open(postgres_url)
    seen: list[tuple[int, Any]] = []
    inner = _entries._post

    def watched(conn: sa.Connection, drafts: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append((len(drafts), _threshold(conn)))
        return inner(conn, drafts, *args, **kwargs)

    try:
        ledger.open_accounts(AccountSpec(code=c, type="member", floor_minutes=None) for c in "ab")
        commands = [
            TransferCommand(
                idempotency_key=f"k{n}", debit="a", credit="b", amount_minutes=1,
                code="test", operator="op",
            )
            for n in range(PLANNED_EACH_TIME_MIN + 1)
        ]
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(_entries, "_post", watched)
            ledger.post_many(commands[: PLANNED_EACH_TIME_MIN - 1])
            ledger.post_many(commands)
        assert seen[0] == (PLANNED_EACH_TIME_MIN - 1, 5)
        assert seen[1] == (PLANNED_EACH_TIME_MIN + 1, None)
        assert ledger.balance("b").posted_minutes == PLANNED_EACH_TIME_MIN + 1
    finally:
        ledger.dispose()


@pytest.mark.postgres
def test_a_bulk_import_batch_is_planned_each_time(
    fresh_db_url_factory: UrlFactory, monkeypatch: pytest.MonkeyPatch,
    bulk_engine: BulkEngine,
) -> None:
    world = build(fresh_db_url_factory("postgres", migrated=True), Clock(), POLICY)
    populate(world)
    seen: list[Any] = []
    drivers: list[Any] = []

    def record(conn: sa.Connection) -> None:
        seen.append(_threshold(conn))
        drivers.append(conn.connection.driver_connection)

    watch_batch_writes(monkeypatch, record)
    try:
        report = imported(world.bank, history(random.Random(3), world, 40, []), "bulk", 10, True)
        assert report.batches_committed == report.batches == len(seen) == 4
        assert seen == [None] * 4
        assert [d.prepare_threshold for d in drivers] == [5] * 4, "each prepares again after"
    finally:
        world.bank.dispose()
