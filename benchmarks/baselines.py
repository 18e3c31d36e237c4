"""The two baselines every figure of workload W is set against (see /work/shared/BENCHMARK.md).

* ``CoreCeiling``: plain SQLAlchemy Core executemany into a minimal journal / postings /
  balances schema with no checks at all. No ledger on the same stack can beat it by much.
* ``NaiveOrm``: the "first version" design: ORM objects, one ``session.add()`` per posting,
  one ``flush()`` per entry, balances kept by read-modify-write of an ORM attribute.

Both have the same interface (the ``Contender`` protocol of ``run_w.py``): ``setup`` (untimed)
builds their own tables and the 10,030 accounts at balance 0; ``phase_b``, ``phase_o`` and
``phase_q`` are the phases of W. The runner times ``phase_b`` and ``phase_o`` as a whole, and
phase Q by its three parts ``q_lookups``, ``q_trial_balance`` and ``q_statement`` (``phase_q``
is exactly those three in order). The query parts return a small checksum the runner compares
with the reference computed from the workload, so a baseline that silently lost rows is caught:
``q_lookups`` the sum of the balances it read, ``q_trial_balance`` the sum of all balances
(0 in double entry), ``q_statement`` the number of statement lines.

Balances are credits minus debits: the account that gains minutes goes up.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Engine,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship
from workload import ACCOUNT_CODES, Transfer, Workload

PHASE_B_COMMIT_EVERY = 1_000  # transfers per transaction in phase B (W's specification)

# --------------------------------------------------------------------------------------------
# Core ceiling
# --------------------------------------------------------------------------------------------

ceiling_metadata = MetaData()

# No foreign keys, no CHECKs, no UNIQUE beyond the primary keys: the ceiling checks nothing.
ceil_journal = Table(
    "ceil_journal",
    ceiling_metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("kind", String(16), nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
)
ceil_postings = Table(
    "ceil_postings",
    ceiling_metadata,
    Column("id", Integer, primary_key=True),
    Column("journal_id", Integer, nullable=False),
    Column("account_id", Integer, nullable=False),
    Column("amount_minutes", BigInteger, nullable=False),
    # Not a check: any ledger needs it for statements, and leaving it out would make the
    # ceiling's phase Q a full scan and its phase B cheaper than any real ledger can be.
    Index("ix_ceil_postings_account_id", "account_id"),
)
ceil_balances = Table(
    "ceil_balances",
    ceiling_metadata,
    Column("account_id", Integer, primary_key=True, autoincrement=False),
    Column("code", String(8), nullable=False),
    Column("balance", BigInteger, nullable=False),
)

_ceil_add_to_balance = (
    update(ceil_balances)
    .where(ceil_balances.c.account_id == bindparam("b_account_id"))
    .values(balance=ceil_balances.c.balance + bindparam("b_delta"))
)
_ceil_balance_of = select(ceil_balances.c.balance).where(
    ceil_balances.c.account_id == bindparam("b_account_id")
)


class CoreCeiling:
    """Plain Core executemany, no checks: one journal row, two postings, two balance updates."""

    name = "ceiling"

    def __init__(self) -> None:
        # The ceiling numbers its accounts itself: the code at index i has id i + 1.
        self._account_ids: dict[str, int] = {code: i + 1 for i, code in enumerate(ACCOUNT_CODES)}

    def setup(self, engine: Engine) -> None:
        ceiling_metadata.drop_all(engine)
        ceiling_metadata.create_all(engine)
        rows = [
            {"account_id": account_id, "code": code, "balance": 0}
            for code, account_id in self._account_ids.items()
        ]
        with engine.begin() as conn:
            conn.execute(insert(ceil_balances), rows)

    def phase_b(self, engine: Engine, transfers: Sequence[Transfer]) -> None:
        with engine.connect() as conn:
            next_id = _ceil_next_journal_id(conn)
            for start in range(0, len(transfers), PHASE_B_COMMIT_EVERY):
                chunk = transfers[start : start + PHASE_B_COMMIT_EVERY]
                with conn.begin():
                    self._post(conn, chunk, next_id)
                next_id += len(chunk)

    def phase_o(self, engine: Engine, transfers: Sequence[Transfer]) -> None:
        with engine.connect() as conn:
            next_id = _ceil_next_journal_id(conn)
            for transfer in transfers:
                with conn.begin():
                    self._post(conn, (transfer,), next_id)
                next_id += 1

    def _post(self, conn: Connection, transfers: Sequence[Transfer], first_id: int) -> None:
        # Journal ids are assigned client-side (the ceiling has no checks and no concurrent
        # writer, so it may number its own rows): postings can then reference their journal row
        # without a RETURNING round trip, and every insert stays a plain executemany.
        journal: list[dict[str, object]] = []
        postings: list[dict[str, object]] = []
        deltas: list[dict[str, object]] = []
        for journal_id, t in enumerate(transfers, start=first_id):
            debit_id = self._account_ids[t.debit]
            credit_id = self._account_ids[t.credit]
            journal.append({"id": journal_id, "kind": t.kind, "occurred_at": t.occurred_at})
            postings.append(
                {
                    "journal_id": journal_id,
                    "account_id": debit_id,
                    "amount_minutes": -t.amount_minutes,
                }
            )
            postings.append(
                {
                    "journal_id": journal_id,
                    "account_id": credit_id,
                    "amount_minutes": t.amount_minutes,
                }
            )
            deltas.append({"b_account_id": debit_id, "b_delta": -t.amount_minutes})
            deltas.append({"b_account_id": credit_id, "b_delta": t.amount_minutes})
        conn.execute(insert(ceil_journal), journal)
        conn.execute(insert(ceil_postings), postings)
        conn.execute(_ceil_add_to_balance, deltas)

    def phase_q(self, engine: Engine, workload: Workload) -> None:
        self.q_lookups(engine, workload.lookups)
        self.q_trial_balance(engine)
        self.q_statement(engine, workload.busiest_volunteer())

    def q_lookups(self, engine: Engine, codes: Sequence[str]) -> int:
        """One SELECT per look-up; returns the sum of the balances read."""
        total = 0
        with engine.connect() as conn:
            for code in codes:
                balance = conn.execute(
                    _ceil_balance_of, {"b_account_id": self._account_ids[code]}
                ).scalar_one()
                total += balance
        return total

    def q_trial_balance(self, engine: Engine) -> int:
        """All balances in one SELECT; returns their sum."""
        with engine.connect() as conn:
            rows = conn.execute(
                select(
                    ceil_balances.c.account_id, ceil_balances.c.code, ceil_balances.c.balance
                ).order_by(ceil_balances.c.account_id)
            ).all()
        return sum(row.balance for row in rows)

    def q_statement(self, engine: Engine, code: str) -> int:
        """Every posting of one account joined with its journal row, in time order."""
        stmt = (
            select(
                ceil_journal.c.id,
                ceil_journal.c.occurred_at,
                ceil_journal.c.kind,
                ceil_postings.c.amount_minutes,
            )
            .join(ceil_journal, ceil_journal.c.id == ceil_postings.c.journal_id)
            .where(ceil_postings.c.account_id == self._account_ids[code])
            .order_by(ceil_journal.c.occurred_at, ceil_journal.c.id)
        )
        with engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return len(rows)


def _ceil_next_journal_id(conn: Connection) -> int:
    last = conn.execute(select(func.coalesce(func.max(ceil_journal.c.id), 0))).scalar_one()
    conn.rollback()  # end the implicit read transaction before the timed ones begin
    return int(last) + 1


# --------------------------------------------------------------------------------------------
# Naive ORM
# --------------------------------------------------------------------------------------------


class NaiveBase(DeclarativeBase):
    metadata = MetaData()


class NaiveAccount(NaiveBase):
    __tablename__ = "naive_accounts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(8), unique=True)
    balance_minutes: Mapped[int] = mapped_column(BigInteger, default=0)


class NaiveEntry(NaiveBase):
    __tablename__ = "naive_entries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    postings: Mapped[list[NaivePosting]] = relationship(back_populates="entry")


class NaivePosting(NaiveBase):
    __tablename__ = "naive_postings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    entry_id: Mapped[int] = mapped_column(ForeignKey("naive_entries.id"))
    account_id: Mapped[int] = mapped_column(ForeignKey("naive_accounts.id"), index=True)
    amount_minutes: Mapped[int] = mapped_column(BigInteger)
    entry: Mapped[NaiveEntry] = relationship(back_populates="postings")
    account: Mapped[NaiveAccount] = relationship()


class NaiveOrm:
    """What a first version usually does: the ORM all the way, a flush per entry."""

    name = "naive"

    def __init__(self) -> None:
        self._account_ids: dict[str, int] = {}  # filled by setup from the database

    def setup(self, engine: Engine) -> None:
        NaiveBase.metadata.drop_all(engine)
        NaiveBase.metadata.create_all(engine)
        with Session(engine) as session:
            session.add_all(NaiveAccount(code=code, balance_minutes=0) for code in ACCOUNT_CODES)
            session.commit()
            rows = session.execute(select(NaiveAccount.code, NaiveAccount.id)).all()
        self._account_ids = {row.code: row.id for row in rows}

    def phase_b(self, engine: Engine, transfers: Sequence[Transfer]) -> None:
        with Session(engine) as session:
            for done, transfer in enumerate(transfers, start=1):
                self._post(session, transfer)
                if done % PHASE_B_COMMIT_EVERY == 0:
                    session.commit()
            session.commit()

    def phase_o(self, engine: Engine, transfers: Sequence[Transfer]) -> None:
        with Session(engine) as session:
            for transfer in transfers:
                self._post(session, transfer)
                session.commit()

    def _post(self, session: Session, t: Transfer) -> None:
        entry = NaiveEntry(kind=t.kind, occurred_at=t.occurred_at)
        session.add(entry)
        debit = session.get(NaiveAccount, self._account_ids[t.debit])
        credit = session.get(NaiveAccount, self._account_ids[t.credit])
        assert debit is not None, "setup created every account"
        assert credit is not None, "setup created every account"
        session.add(NaivePosting(entry=entry, account=debit, amount_minutes=-t.amount_minutes))
        session.add(NaivePosting(entry=entry, account=credit, amount_minutes=t.amount_minutes))
        # Read-modify-write of the attribute, as first versions do (and lose updates under
        # concurrency; W is single-threaded, so only its cost shows here).
        debit.balance_minutes -= t.amount_minutes
        credit.balance_minutes += t.amount_minutes
        session.flush()

    def phase_q(self, engine: Engine, workload: Workload) -> None:
        self.q_lookups(engine, workload.lookups)
        self.q_trial_balance(engine)
        self.q_statement(engine, workload.busiest_volunteer())

    def q_lookups(self, engine: Engine, codes: Sequence[str]) -> int:
        """``session.get`` per look-up (repeats are served by the identity map, as in real code)."""
        total = 0
        with Session(engine) as session:
            for code in codes:
                account = session.get(NaiveAccount, self._account_ids[code])
                assert account is not None, "setup created every account"
                total += account.balance_minutes
        return total

    def q_trial_balance(self, engine: Engine) -> int:
        with Session(engine) as session:
            accounts = session.scalars(select(NaiveAccount).order_by(NaiveAccount.id)).all()
            return sum(account.balance_minutes for account in accounts)

    def q_statement(self, engine: Engine, code: str) -> int:
        stmt = (
            select(NaivePosting, NaiveEntry)
            .join(NaivePosting.entry)
            .where(NaivePosting.account_id == self._account_ids[code])
            .order_by(NaiveEntry.occurred_at, NaiveEntry.id)
        )
        with Session(engine) as session:
            rows = session.execute(stmt).all()
        return len(rows)
