"""The façade: :class:`Ledger` runs each operation in its own database transaction (with
bounded retries); :class:`LedgerTransaction` runs operations inside a transaction the caller
owns, each under a savepoint so that a refusal leaves the caller's transaction as it was."""

from __future__ import annotations

import random
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from timebank import _admin, _entries, _holds, _reads, errors, migrate
from timebank._accounts import EXTRA_LOCKS, LockMore
from timebank._checked import checked
from timebank._db import WRITE_OPTION, HeldConnections, KeyRace, is_retryable, make_engine
from timebank._entries import Clock, Draft
from timebank._minutes import as_limit, as_minutes
from timebank.limits import (
    ACCOUNTS_PER_BATCH_MAX,
    ATTEMPTS_MAX,
    ENTRIES_PER_BATCH_MAX,
    HOLDS_PER_SWEEP_MAX,
    PAGE_SIZE_MAX,
)
from timebank.models import (
    AccountSpec,
    AccountView,
    BalanceAsOf,
    BalanceView,
    BatchReceipt,
    EntryCommand,
    EntryView,
    HoldCommand,
    HoldView,
    IntegrityReport,
    StatementLine,
    StatementPage,
    TransferCommand,
    TrialBalance,
)
from timebank.schema import holds

T = TypeVar("T")
#: A write: given a connection in a transaction and whether to look idempotency keys up first.
Op = Callable[[Connection, bool], T]


def utc_now() -> datetime:
    return datetime.now(UTC)


class _Operations:
    """Every operation of the ledger, written once; subclasses say how it is run."""

    _clock: Clock

    @property
    def clock(self) -> Clock:
        """The clock that stamps ``recorded_at`` (injectable, for tests and simulations)."""
        return self._clock

    def _write(self, op: Op[T]) -> T:
        raise NotImplementedError

    def _read(self, fn: Callable[[Connection], T], *, snapshot: bool = False) -> T:
        raise NotImplementedError

    # --- accounts ---------------------------------------------------------------------

    def open_account(
        self,
        code: str,
        type: str,
        *,
        owner_ref: str | None = None,
        floor_minutes: int | None = 0,
        ceiling_minutes: int | None = None,
    ) -> AccountView:
        """Open an account (floor 0 by default: never overdrawn). Opening again with the
        same definition returns the account; another definition raises AccountExistsError."""
        spec = AccountSpec(
            code=code,
            type=type,
            owner_ref=owner_ref,
            floor_minutes=floor_minutes,
            ceiling_minutes=ceiling_minutes,
        )
        self.open_accounts([spec])
        return self.account(code)

    def open_accounts(self, specs: Iterable[AccountSpec]) -> int:
        """Open many accounts in one transaction; returns how many were new."""
        batch = list(specs)
        if len(batch) > ACCOUNTS_PER_BATCH_MAX:
            raise errors.InvalidInputError(
                f"{len(batch)} accounts in one call; at most {ACCOUNTS_PER_BATCH_MAX}"
            )
        return self._write(lambda conn, _replays: _admin.open_accounts(conn, batch, self._clock()))

    def freeze(self, code: str, *, reason: str) -> AccountView:
        """Nothing moves on a frozen account until it is unfrozen."""
        return self._set_status(code, "frozen", reason)

    def unfreeze(self, code: str, *, reason: str) -> AccountView:
        return self._set_status(code, "open", reason)

    def close(self, code: str, *, reason: str) -> AccountView:
        """Close an empty account (no minutes, no pending holds), for good."""
        return self._set_status(code, "closed", reason)

    def _set_status(self, code: str, status: str, reason: str) -> AccountView:
        self._write(lambda conn, _r: _admin.set_status(conn, code, status, reason, self._clock()))
        return self.account(code)

    def set_limits(
        self, code: str, *, floor_minutes: int | None, ceiling_minutes: int | None
    ) -> AccountView:
        floor = as_limit(floor_minutes, what="floor_minutes")
        ceiling = as_limit(ceiling_minutes, what="ceiling_minutes")
        if floor is not None and ceiling is not None and floor > ceiling:
            raise errors.InvalidInputError(f"floor {floor} is above ceiling {ceiling}")
        self._write(lambda conn, _r: _admin.set_limits(conn, code, floor, ceiling, self._clock()))
        return self.account(code)

    # --- entries ----------------------------------------------------------------------

    def post(self, command: EntryCommand | TransferCommand) -> EntryView:
        """Post one balanced entry. Repeating a command returns the original entry."""
        draft = Draft(command)
        return self._write(
            lambda conn, replays: _entries.post_one(conn, draft, self._clock, check_replays=replays)
        )

    def transfer(
        self,
        idempotency_key: str,
        *,
        debit: str,
        credit: str,
        amount_minutes: int,
        code: str,
        operator: str,
        occurred_at: datetime | None = None,
        memo: str = "",
        metadata: Mapping[str, Any] | None = None,
    ) -> EntryView:
        """Move ``amount_minutes`` from ``debit`` to ``credit``: a two-posting entry."""
        return self.post(
            TransferCommand(
                idempotency_key=idempotency_key,
                code=code,
                debit=debit,
                credit=credit,
                amount_minutes=amount_minutes,
                operator=operator,
                occurred_at=occurred_at,
                memo=memo,
                metadata=dict(metadata) if metadata is not None else None,
            )
        )

    def post_many(self, commands: Iterable[EntryCommand | TransferCommand]) -> BatchReceipt:
        """Post a batch in ONE database transaction, with every check: all or nothing."""
        drafts = [Draft(c) for c in commands]
        if len(drafts) > ENTRIES_PER_BATCH_MAX:
            raise errors.InvalidInputError(
                f"{len(drafts)} entries in one batch; at most {ENTRIES_PER_BATCH_MAX}"
            )
        if not drafts:
            return BatchReceipt(entry_ids=(), created_count=0, replayed_count=0)
        ids, created = self._post(drafts)
        return BatchReceipt(
            entry_ids=tuple(ids), created_count=created, replayed_count=len(drafts) - created
        )

    def _post(self, drafts: Sequence[Draft]) -> tuple[list[int], int]:
        return self._write(
            lambda conn, replays: _entries.post(conn, drafts, self._clock, check_replays=replays)
        )

    def reverse(
        self,
        entry_id: int,
        *,
        idempotency_key: str,
        operator: str,
        reason: str,
        occurred_at: datetime | None = None,
    ) -> EntryView:
        """Post the mirror of an entry, linked to it. An entry is reversed at most once."""

        def op(conn: Connection, replays: bool) -> EntryView:
            draft = _entries.reversal_draft(
                conn,
                entry_id,
                key=idempotency_key,
                operator=operator,
                reason=reason,
                occurred_at=occurred_at,
            )
            return _entries.post_one(conn, draft, self._clock, check_replays=replays)

        return self._write(op)

    # --- holds ------------------------------------------------------------------------

    def hold(
        self,
        idempotency_key: str,
        *,
        debit: str,
        credit: str,
        amount_minutes: int,
        code: str,
        operator: str,
        expires_at: datetime | None = None,
        memo: str = "",
        metadata: Mapping[str, Any] | None = None,
    ) -> HoldView:
        """Reserve minutes from ``debit`` towards ``credit``, to post or void later."""
        command = HoldCommand(
            idempotency_key=idempotency_key,
            debit=debit,
            credit=credit,
            amount_minutes=amount_minutes,
            code=code,
            operator=operator,
            expires_at=expires_at,
            memo=memo,
            metadata=dict(metadata) if metadata is not None else None,
        )
        hold_id = self._write(
            lambda conn, replays: _holds.create(conn, command, self._clock, check_replays=replays)
        )
        return self.get_hold(hold_id)

    def post_hold(
        self,
        hold_id: int,
        *,
        idempotency_key: str,
        operator: str,
        amount_minutes: int | None = None,
        occurred_at: datetime | None = None,
        memo: str = "",
    ) -> EntryView:
        """Post at most the held minutes (all of them by default); the rest is released."""
        amount = None if amount_minutes is None else as_minutes(amount_minutes)
        if amount is not None and amount < 0:
            raise errors.InvalidAmountError("amount_minutes to post must be positive")
        entry_id = self._write(
            lambda conn, _r: _holds.resolve(
                conn,
                hold_id,
                key=idempotency_key,
                post_minutes=amount,
                void=False,
                operator=operator,
                memo=memo,
                occurred_at=occurred_at,
                clock=self._clock,
            )
        )
        assert entry_id is not None
        return self.entry(entry_id)

    def void_hold(
        self, hold_id: int, *, idempotency_key: str, operator: str, reason: str = ""
    ) -> HoldView:
        """Release a pending hold without posting anything."""
        self._write(
            lambda conn, _r: _holds.resolve(
                conn,
                hold_id,
                key=idempotency_key,
                post_minutes=None,
                void=True,
                operator=operator,
                memo=reason,
                occurred_at=None,
                clock=self._clock,
            )
        )
        return self.get_hold(hold_id)

    def expire_holds(self, *, limit: int = 1_000) -> int:
        """Expire up to about ``limit`` holds past their expiry; returns how many expired."""
        if not 1 <= limit <= HOLDS_PER_SWEEP_MAX:
            raise errors.InvalidInputError(f"limit must be between 1 and {HOLDS_PER_SWEEP_MAX}")
        return self._write(lambda conn, _r: _holds.expire_all(conn, self._clock, limit=limit))

    # --- reads ------------------------------------------------------------------------

    def account(self, code: str) -> AccountView:
        return self._read(lambda conn: _reads.account(conn, code))

    def balance(self, code: str) -> BalanceView:
        """Posted and held minutes, from the materialised row: constant time."""
        return self._read(lambda conn: _reads.balance(conn, code, self._clock()))

    def balance_as_of(self, code: str, recorded_at: datetime) -> BalanceAsOf:
        """The posted balance as recorded at ``recorded_at`` (recording time, not service
        time: a backdated entry shows from when it was recorded)."""
        return self._read(lambda conn: _reads.balance_as_of(conn, code, recorded_at))

    def statement(self, code: str, *, after: int | None = None, limit: int = 100) -> StatementPage:
        """One page of postings in recording order; ``after`` is the previous ``next_cursor``."""
        if not 1 <= limit <= PAGE_SIZE_MAX:
            raise errors.InvalidInputError(f"limit must be between 1 and {PAGE_SIZE_MAX}")
        return self._read(lambda conn: _reads.statement(conn, code, after, limit))

    def iter_statement(
        self, code: str, *, page_size: int = PAGE_SIZE_MAX
    ) -> Iterator[StatementLine]:
        """Every posting of an account, page by page (each page its own bounded query)."""
        after: int | None = None
        while True:
            page = self.statement(code, after=after, limit=page_size)
            yield from page.lines
            if page.next_cursor is None:
                return
            after = page.next_cursor

    def trial_balance(self) -> TrialBalance:
        return self._read(_reads.trial_balance)

    def entry(self, entry_id: int) -> EntryView:
        found = self._read(lambda conn: _entries.load(conn, [entry_id]))
        if not found:
            raise errors.EntryNotFoundError(f"no entry with id {entry_id}")
        return found[0]

    def entry_by_key(self, idempotency_key: str) -> EntryView:
        found = self._read(lambda conn: _entries.load_by_keys(conn, [idempotency_key]))
        if idempotency_key not in found:
            raise errors.EntryNotFoundError(f"no entry with key {idempotency_key!r}")
        return found[idempotency_key]

    def get_hold(self, hold_id: int) -> HoldView:
        found = self._read(lambda conn: _holds.load(conn, holds.c.id == hold_id))
        if not found:
            raise errors.HoldNotFoundError(f"no hold with id {hold_id}")
        return found[0]

    def verify(self) -> IntegrityReport:
        """Audit: replay every posting and hold against the materialised balances."""
        return self._read(_reads.verify, snapshot=True)


@checked
class Ledger(_Operations):
    """A ledger on an SQLAlchemy engine. Each method is one database transaction.

    >>> ledger = Ledger.open("sqlite:///bank.db")      # doctest: +SKIP
    """

    def __init__(
        self, engine: Engine, *, clock: Clock = utc_now, check_schema: bool = True
    ) -> None:
        self.engine = engine
        self._clock = clock
        # SQLite begins its transactions itself (see configure_sqlite): keep its reads in one.
        self._autocommit_reads = engine.dialect.name != "sqlite"
        if check_schema:
            migrate.require_current(engine)
        self._held = HeldConnections.of(engine)
        # A ledger dropped without dispose() still hands its kept connections back.
        weakref.finalize(self, self._held.close)

    @classmethod
    def open(cls, url: str, *, clock: Clock = utc_now, **engine_kwargs: Any) -> Ledger:
        """Open (and, when the database is new and empty, create) a ledger at ``url``.
        An existing database whose schema is behind raises SchemaError naming the fix."""
        engine = make_engine(url, **engine_kwargs)
        try:
            if migrate.is_empty(engine):
                migrate.upgrade(engine)
            return cls(engine, clock=clock)
        except BaseException:
            engine.dispose()  # the caller never got the engine, so it cannot close it
            raise

    def dispose(self) -> None:
        self._held.close()
        self.engine.dispose()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.dispose()

    @contextmanager
    def transaction(self) -> Iterator[LedgerTransaction]:
        """Several operations in one database transaction, committed at the end of the
        block and rolled back if it raises. No retries: the block is yours."""
        # A fresh connection, closed with the block: the transaction object must stop
        # working once its block is over (a kept connection would let it write on).
        with self.engine.connect() as raw:
            conn = raw.execution_options(**{WRITE_OPTION: True})
            with conn.begin():
                yield LedgerTransaction(conn, clock=self._clock)

    def bind(self, target: Connection | Session) -> LedgerTransaction:
        """Operations inside a transaction the caller owns (a Connection or an ORM Session);
        the caller commits."""
        conn = target.connection() if isinstance(target, Session) else target
        return LedgerTransaction(conn, clock=self._clock)

    def _write(self, op: Op[T]) -> T:
        check_replays = False
        extra: frozenset[str] = frozenset()
        # One attempt more than the contention budget: a refusal on a pass that did not
        # look keys up first is re-checked once as a possible replay (see _entries).
        for attempt in range(ATTEMPTS_MAX + 1):
            token = EXTRA_LOCKS.set(extra)
            try:
                with self._held.connection(write=True) as conn, conn.begin():
                    return op(conn, check_replays)
            except KeyRace:
                check_replays = True  # the key exists now: look it up on the next attempt
            except LockMore as more:
                extra |= more.codes  # lock those too, in order, on the next attempt
            except sa_exc.DBAPIError as exc:
                if not is_retryable(exc):
                    raise _translate(exc) from exc
                time.sleep(random.uniform(0, 0.005 * 2**attempt))
            finally:
                EXTRA_LOCKS.reset(token)
        raise errors.ConcurrencyError(
            f"gave up after {ATTEMPTS_MAX} attempts under contention; retry later"
        )

    def _read(self, fn: Callable[[Connection], T], *, snapshot: bool = False) -> T:
        try:
            with self._held.connection(write=False) as conn:
                if snapshot and self._autocommit_reads:
                    # Several statements that must see one state of the ledger.
                    conn.execution_options(isolation_level="REPEATABLE READ")
                    with conn.begin():
                        return fn(conn)
                if self._autocommit_reads:
                    # A one-statement read needs no transaction: this saves two round
                    # trips (BEGIN and ROLLBACK). Multi-statement reads ask for a snapshot.
                    conn.execution_options(isolation_level="AUTOCOMMIT")
                    return fn(conn)
                with conn.begin():
                    return fn(conn)
        except sa_exc.DBAPIError as exc:
            raise _translate(exc) from exc


@checked
class LedgerTransaction(_Operations):
    """Ledger operations on a connection whose transaction the caller owns."""

    def __init__(self, conn: Connection, *, clock: Clock = utc_now) -> None:
        self.connection = conn
        self._clock = clock

    def _write(self, op: Op[T]) -> T:
        check_replays = False
        extra: frozenset[str] = frozenset()
        for _attempt in range(ATTEMPTS_MAX + 1):
            token = EXTRA_LOCKS.set(extra)
            try:
                with self.connection.begin_nested():
                    return op(self.connection, check_replays)
            except KeyRace:
                check_replays = True
            except LockMore as more:
                extra |= more.codes
            except sa_exc.DBAPIError as exc:
                if is_retryable(exc):
                    raise errors.ConcurrencyError(
                        "lock conflict inside a caller-owned transaction: roll it back and retry"
                    ) from exc
                raise _translate(exc) from exc
            finally:
                EXTRA_LOCKS.reset(token)
        raise errors.ConcurrencyError("conflicts persisted inside the transaction; retry it")

    def _read(self, fn: Callable[[Connection], T], *, snapshot: bool = False) -> T:
        try:  # the caller's transaction decides what the reads see
            return fn(self.connection)
        except sa_exc.DBAPIError as exc:
            raise _translate(exc) from exc


# MariaDB reports a failed CHECK (4025) and a trigger's SIGNAL (1644) as operational errors.
_MYSQL_INTEGRITY_CODES = {1644, 4025}


def _translate(exc: sa_exc.DBAPIError) -> errors.StorageError:
    args = getattr(exc.orig, "args", ())
    mysql_code = args[0] if args and isinstance(args[0], int) else None
    if isinstance(exc, sa_exc.IntegrityError) or mysql_code in _MYSQL_INTEGRITY_CODES:
        return errors.IntegrityViolationError(f"the database refused the write: {exc.orig}")
    return errors.StorageError(f"database error: {exc.orig}")
