"""Tamper evidence: the sealed hash chain and the audit, against changes made with plain SQL
behind the library's back (its immutability triggers and foreign keys switched off first, as
an attacker with the database's owner rights would)."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Connection, create_engine, delete, func, insert, select, update
from sqlalchemy.engine import make_url

from tests._databases import MARIADB, POSTGRES, SQLITE, backends
from tests.bankworld import PROGRAMME, _admin, _recreate_from, fresh
from tests.clocks import Clock
from timebank import errors
from timebank.bank.schema import lots, members, redemption_origins
from timebank.ledger import Ledger
from timebank.schema import accounts, entries, postings, sealed_entries, seals
from timebank.sealing import (
    ENTRIES_PER_BLOCK,
    Digest,
    audit,
    chain_hash,
    digest,
    entry_hashes,
    seal,
)
from timebank.simulation import Scenario, simulate

db_url = backends(SQLITE, POSTGRES)

SCENARIO = Scenario.small_province().model_copy(update={"members": 150, "days": 4})
BLOCK = 10


@dataclass
class Sealed:
    ledger: Ledger
    kept: Digest

    def report(self, *, kept: bool = True) -> list[tuple[str, str]]:
        result = audit(self.ledger, kept=self.kept if kept else None)
        assert result.ok == (result.problem_count == 0)
        return [(p.kind, p.ref) for p in result.problems]


#: backend -> the template (an SQLite file, or a PostgreSQL database) of a sealed bank.
_TEMPLATES: dict[str, str] = {}


def _build_sealed(url: str) -> None:
    """Simulate a few days and seal them in blocks of ``BLOCK``, checking the result."""
    simulate(url, SCENARIO, seed=5)
    with Ledger.open(url) as ledger:
        blocks = seal(ledger, entries_per_block=BLOCK)
        assert len(blocks) >= 3
        assert [b.block for b in blocks] == list(range(1, len(blocks) + 1))


def _copy_of_sealed(url: str) -> None:
    """Fill the empty database at ``url`` with the sealed bank, built once per backend and
    process and then copied (the SQLite file; PostgreSQL: CREATE DATABASE ... TEMPLATE)."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend not in _TEMPLATES:
        if backend == "sqlite":
            directory = Path(tempfile.mkdtemp(prefix="tb_sealed_"))
            atexit.register(shutil.rmtree, directory, ignore_errors=True)
            _TEMPLATES[backend] = str(directory / "sealed.db")
            _build_sealed(f"sqlite:///{_TEMPLATES[backend]}")
        else:
            name = f"tb_sealed_template_{os.getpid()}"
            _admin(parsed, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
                   f'CREATE DATABASE "{name}"')
            atexit.register(_admin, parsed, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            _build_sealed(parsed.set(database=name).render_as_string(hide_password=False))
            _TEMPLATES[backend] = name
    if backend == "sqlite":
        shutil.copyfile(_TEMPLATES[backend], str(parsed.database))
    else:
        _recreate_from(parsed, _TEMPLATES[backend])


@pytest.fixture
def sealed(db_url: str) -> Iterator[Sealed]:
    _copy_of_sealed(db_url)
    ledger = Ledger.open(db_url)
    try:
        kept = digest(ledger)
        assert kept is not None
        report = audit(ledger, kept=kept)
        assert report.ok, report.render()
        assert report.entries_sealed == report.entries == kept.entries_sealed
        yield Sealed(ledger, kept)
    finally:
        ledger.dispose()


@contextmanager
def behind_its_back(ledger: Ledger) -> Iterator[Connection]:
    """A connection with the library's triggers and foreign keys off: what an attacker with
    the owner's rights (or a careless administrator) can do with plain SQL."""
    # A plain engine: none of the library's connection settings (foreign keys, BEGIN).
    engine = create_engine(ledger.engine.url)
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("PRAGMA foreign_keys = OFF")  # outside any transaction
            names = conn.exec_driver_sql(
                "SELECT name FROM sqlite_master WHERE type = 'trigger'"
            ).scalars().all()
            for name in names:
                conn.exec_driver_sql(f"DROP TRIGGER {name}")
        elif engine.dialect.name == "postgresql":
            conn.exec_driver_sql("SET session_replication_role = replica")
        else:  # MariaDB: foreign keys off (its triggers cannot be, and are not in the way)
            conn.exec_driver_sql("SET FOREIGN_KEY_CHECKS = 0")
        yield conn
        conn.commit()
    engine.dispose()


def two_legged(conn: Connection) -> tuple[int, list[tuple[int, int]]]:
    """The latest entry: its id and its (account, amount) postings."""
    entry_id = conn.execute(select(func.max(entries.c.id))).scalar_one()
    legs = conn.execute(
        select(postings.c.account_id, postings.c.amount_minutes)
        .where(postings.c.entry_id == entry_id)
    ).all()
    return int(entry_id), [(int(a), int(m)) for a, m in legs]


def shift(conn: Connection, entry_id: int, minutes: int, *, balances: bool) -> None:
    """Add ``minutes`` to the entry's credit leg and take them from its debit leg (the zero
    sum holds); with ``balances``, edit the running and materialised balances to match."""
    for account_id, amount in conn.execute(
        select(postings.c.account_id, postings.c.amount_minutes)
        .where(postings.c.entry_id == entry_id)
    ).all():
        delta = minutes if amount > 0 else -minutes
        values: dict[str, object] = {"amount_minutes": postings.c.amount_minutes + delta}
        if balances:
            values["balance_after_minutes"] = postings.c.balance_after_minutes + delta
            conn.execute(update(accounts).where(accounts.c.id == account_id)
                         .values(posted_minutes=accounts.c.posted_minutes + delta))
        conn.execute(update(postings).where(postings.c.entry_id == entry_id,
                                            postings.c.account_id == account_id).values(values))


def test_a_changed_amount_is_found(sealed: Sealed) -> None:
    with behind_its_back(sealed.ledger) as conn:
        entry_id, _ = two_legged(conn)
        shift(conn, entry_id, 7, balances=False)
    found = sealed.report()
    assert ("entry", str(entry_id)) in found
    assert any(kind == "account" for kind, _ in found)  # the replay disagrees too


def test_a_balance_edited_to_match_is_found_by_the_chain(sealed: Sealed) -> None:
    with behind_its_back(sealed.ledger) as conn:
        entry_id, _ = two_legged(conn)
        shift(conn, entry_id, 7, balances=True)
    found = sealed.report()
    assert ("entry", str(entry_id)) in found
    assert not any(kind == "account" for kind, _ in found)  # the replay alone is fooled


def test_a_removed_posting_is_found(sealed: Sealed) -> None:
    with behind_its_back(sealed.ledger) as conn:
        entry_id, legs = two_legged(conn)
        debit = next(account for account, amount in legs if amount < 0)
        conn.execute(delete(postings).where(postings.c.entry_id == entry_id,
                                            postings.c.account_id == debit))
    found = sealed.report()
    assert ("entry", str(entry_id)) in found
    assert audit(sealed.ledger).problem_count >= 2


def test_a_deleted_entry_is_found(sealed: Sealed) -> None:
    with behind_its_back(sealed.ledger) as conn:
        entry_id, _ = two_legged(conn)
        conn.execute(delete(postings).where(postings.c.entry_id == entry_id))
        conn.execute(delete(entries).where(entries.c.id == entry_id))
    found = audit(sealed.ledger, kept=sealed.kept)
    assert ("entry", str(entry_id)) in [(p.kind, p.ref) for p in found.problems]
    assert any("missing (deleted)" in p.detail for p in found.problems)


def test_a_forged_entry_is_found(sealed: Sealed) -> None:
    with behind_its_back(sealed.ledger) as conn:
        _, legs = two_legged(conn)
        (debit, _), (credit, _) = sorted(legs, key=lambda leg: leg[1])
        old = datetime(2026, 3, 3, 10, tzinfo=UTC)  # inside the sealed history
        inserted = conn.execute(insert(entries).values(
            idempotency_key="forged-1", code="deposit", occurred_at=old, recorded_at=old,
            operator="nobody", memo="",
        )).inserted_primary_key
        assert inserted is not None
        forged = inserted[0]
        for account_id, amount in ((debit, -30), (credit, 30)):
            balance = conn.execute(select(accounts.c.posted_minutes)
                                   .where(accounts.c.id == account_id)).scalar_one()
            conn.execute(insert(postings).values(
                entry_id=forged, account_id=account_id, amount_minutes=amount,
                balance_after_minutes=balance + amount, recorded_at=old,
            ))
            conn.execute(update(accounts).where(accounts.c.id == account_id)
                         .values(posted_minutes=balance + amount))
    report = audit(sealed.ledger, kept=sealed.kept)
    problems = {(p.kind, p.ref): p.detail for p in report.problems}
    assert "yet in no block" in problems[("entry", str(forged))]
    assert report.entries_unsealed == 1
    # Hidden behind a seal record that names a block that does not exist: still found.
    with behind_its_back(sealed.ledger) as conn:
        conn.execute(insert(sealed_entries).values(entry_id=forged, seal_id=999,
                                                   entry_hash="0" * 64))
    hidden = [p.detail for p in audit(sealed.ledger).problems if p.ref == str(forged)]
    assert any("block 999, which does not exist" in detail for detail in hidden), hidden
    assert any("yet in no block" in detail for detail in hidden), hidden


def test_a_consistent_rewrite_is_found_only_against_a_kept_digest(sealed: Sealed) -> None:
    """Rewrite an early entry and recompute its hash, its block's and every later block's:
    the chain is consistent again, and only the digest kept elsewhere tells."""
    with behind_its_back(sealed.ledger) as conn:
        entry_id = conn.execute(select(func.min(entries.c.id))).scalar_one()
        conn.execute(update(entries).where(entries.c.id == entry_id).values(memo="rewritten"))
        [new_hash] = entry_hashes(conn, [entry_id]).values()
        conn.execute(update(sealed_entries).where(sealed_entries.c.entry_id == entry_id)
                     .values(entry_hash=new_hash))
        previous = "0" * 64
        for block in conn.execute(select(seals).order_by(seals.c.id)).all():
            hashes = conn.execute(
                select(sealed_entries.c.entry_hash).where(sealed_entries.c.seal_id == block.id)
                .order_by(sealed_entries.c.entry_id)
            ).scalars().all()
            block_hash = chain_hash(block.id, previous, hashes)
            conn.execute(update(seals).where(seals.c.id == block.id)
                         .values(previous_hash=previous, block_hash=block_hash))
            previous = block_hash
    assert sealed.report(kept=False) == []  # a rewrite the chain alone cannot see
    assert sealed.report() == [("digest", str(sealed.kept.block))]


def test_a_removed_seal_record_is_found(sealed: Sealed) -> None:
    with behind_its_back(sealed.ledger) as conn:
        entry_id, _ = two_legged(conn)
        conn.execute(delete(sealed_entries).where(sealed_entries.c.entry_id == entry_id))
    found = sealed.report()
    assert ("entry", str(entry_id)) in found  # recorded long before the seal, in no block
    assert any(kind == "block" for kind, _ in found)


def test_an_account_given_to_another_member_is_found(sealed: Sealed) -> None:
    with behind_its_back(sealed.ledger) as conn:
        first, second = conn.execute(
            select(members.c.id, members.c.account_id)
            .join(accounts, accounts.c.id == members.c.account_id)
            .where(accounts.c.posted_minutes > 0).order_by(members.c.id).limit(2)
        ).all()
        conn.execute(update(members).where(members.c.id == first.id).values(account_id=-1))
        conn.execute(update(members).where(members.c.id == second.id)
                     .values(account_id=first.account_id))
        conn.execute(update(members).where(members.c.id == first.id)
                     .values(account_id=second.account_id))
    kinds = {kind for kind, _ in sealed.report()}
    assert "entry" in kinds  # postings now name another member as their account's owner


def test_a_lot_edited_is_found(sealed: Sealed) -> None:
    with behind_its_back(sealed.ledger) as conn:
        lot = conn.execute(select(lots).where(lots.c.remaining_minutes > 0)
                           .order_by(lots.c.id).limit(1)).one()
        conn.execute(update(lots).where(lots.c.id == lot.id)
                     .values(remaining_minutes=lot.remaining_minutes - 1))
    found = sealed.report()
    assert ("lot", f"lot {lot.id}") in found
    assert ("holder", f"member {lot.member_id}") in found


#: The clearing rows' check runs on every backend (MariaDB's EXCEPT too).
any_url = backends(SQLITE, POSTGRES, MARIADB, name="any_url")


def test_a_redemptions_clearing_rows_edited_or_lost_are_found(any_url: str) -> None:
    world = fresh(any_url, Clock())
    try:
        for key, minutes, hours in (("s1", 60, 30), ("s2", 90, 3)):
            service = world.serve(key, "wang", "grandma", minutes=minutes,
                                  ago=timedelta(hours=hours))
            world.bank.confirm_service(service, operator="conf-sw")
        redeemed = [
            world.bank.redeem(f"r{n}", programme=PROGRAMME, member_id=world.members["wang"],
                              site="sunrise", service_type="shopping", minutes=40,
                              operator="sunrise-op").entry_id
            for n in (1, 2)
        ]
        ledger = world.bank.ledger
        assert audit(ledger).ok
        o = redemption_origins
        with behind_its_back(ledger) as conn:
            conn.execute(update(o).where(o.c.entry_id == redeemed[0]).values(minutes=41))
            conn.execute(delete(o).where(o.c.entry_id == redeemed[1]))
        report = audit(ledger)
        found = {(p.kind, p.ref) for p in report.problems}
        assert found == {("clearing", f"redemption entry {e}") for e in redeemed}
    finally:
        world.bank.dispose()


def test_the_database_itself_refuses_to_change_a_seal(sealed: Sealed) -> None:
    for statement in (update(seals).values(block_hash="0" * 64),
                      delete(sealed_entries)):
        with pytest.raises(Exception, match="seals are immutable"), \
                sealed.ledger.engine.begin() as conn:
            conn.execute(statement)
    assert sealed.report() == []


def test_sealing_again_seals_only_what_is_new(sealed: Sealed) -> None:
    assert seal(sealed.ledger) == []
    ledger = sealed.ledger
    ledger.open_account("audit:a", type="test", floor_minutes=None)
    ledger.open_account("audit:b", type="test", floor_minutes=None)
    ledger.transfer("audit-1", debit="audit:a", credit="audit:b", amount_minutes=5,
                    code="test", operator="op")
    [block] = seal(ledger)
    assert (block.block, block.entries) == (sealed.kept.block + 1, 1)
    assert block.previous_hash == sealed.kept.block_hash
    assert audit(ledger, kept=sealed.kept).ok


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(errors.InvalidInputError, match="not a timebank digest"):
        Digest.from_json('{"block": "x"}')
    digest_text = Digest(block=1, block_hash="a" * 64, entries_sealed=3,
                         sealed_at=datetime(2026, 1, 1, tzinfo=UTC)).to_json()
    assert Digest.from_json(digest_text).block == 1


def test_bad_block_sizes_are_refused(sqlite_url: str) -> None:
    with Ledger.open(sqlite_url) as ledger:
        for size in (0, ENTRIES_PER_BLOCK + 1, True, 2.0):
            with pytest.raises(errors.InvalidInputError, match="entries_per_block"):
                seal(ledger, entries_per_block=size)  # type: ignore[arg-type]
        assert seal(ledger) == []
        assert digest(ledger) is None
        assert audit(ledger).ok


@pytest.mark.postgres
def test_concurrent_sealers_build_one_chain(postgres_url: str) -> None:
    simulate(postgres_url, SCENARIO, seed=6)
    with Ledger.open(postgres_url) as ledger:
        made: list[int] = []
        failures: list[BaseException] = []

        def sealer() -> None:
            try:
                made.extend(b.block for b in seal(ledger, entries_per_block=5))
            except BaseException as error:  # noqa: BLE001 - reported by the assertion below
                failures.append(error)

        threads = [threading.Thread(target=sealer) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert failures == []
        assert sorted(made) == list(range(1, len(made) + 1))
        report = audit(ledger, kept=digest(ledger))
        assert report.ok, report.render()
        assert report.entries_unsealed == 0

