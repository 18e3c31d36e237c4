"""THE refusal contract: every refusal raises its exact typed error, which also subclasses the
builtin a plain ``except`` expects, says clearly why, and leaves the database exactly as it was
(a full dump of every table, before and after).

Refusals only ever compare a database with itself, so the tests of one backend share one
database (created and migrated once per backend, which keeps the module fast); each test
opens its own accounts and uses its own idempotency keys, under a prefix of its own.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine, event

from tests._databases import MARIADB, POSTGRES, SQLITE, FreshDatabases, backend_params
from tests.clocks import T0, Clock
from tests.dbdump import dump
from timebank import (
    ENTRIES_PER_BATCH_MAX,
    PAGE_SIZE_MAX,
    POSTINGS_PER_ENTRY_MAX,
    AccountExistsError,
    AccountNotFoundError,
    AccountSpec,
    AccountStateError,
    AlreadyReversedError,
    ConflictError,
    EntryCommand,
    EntryNotFoundError,
    HoldExpiredError,
    HoldNotFoundError,
    HoldResolvedError,
    IdempotencyConflictError,
    InvalidAmountError,
    InvalidInputError,
    Ledger,
    LimitExceededError,
    NotFoundError,
    PostingCountError,
    PostingSpec,
    RefusedError,
    TimebankError,
    UnbalancedEntryError,
)
from timebank.schema import entries, postings

OP = "op:gulou-1"
E = TypeVar("E", bound=TimebankError)


@pytest.fixture(scope="module", params=backend_params(SQLITE, POSTGRES, MARIADB))
def engine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Engine]:
    databases = FreshDatabases(tmp_path_factory.mktemp("refusals"))
    try:
        url = databases.create(request.param)
        with Ledger.open(url) as ledger:  # migrates the new database to head
            yield ledger.engine
    finally:
        databases.close()


_prefixes = itertools.count()


@dataclass
class World:
    """One test's corner of the shared database: its ledger, clock, accounts and keys.

    ``issuer`` (no floor) has issued 100 minutes to ``alice``; ``bob`` and ``care`` (no floor)
    are at zero; ``empty`` is a member account with nothing on it; ``ghost`` does not exist.
    """

    ledger: Ledger
    clock: Clock
    engine: Engine
    prefix: str
    issuer: str = field(init=False)
    alice: str = field(init=False)
    bob: str = field(init=False)
    care: str = field(init=False)
    empty: str = field(init=False)
    ghost: str = field(init=False)

    def __post_init__(self) -> None:
        for name in ("issuer", "alice", "bob", "care", "empty", "ghost"):
            setattr(self, name, self.key(name))

    def key(self, name: str) -> str:
        return f"{self.prefix}:{name}"

    def give(self, key: str, debit: str, credit: str, minutes: Any) -> object:
        return self.ledger.transfer(self.key(key), debit=debit, credit=credit,
                                    amount_minutes=minutes, code="redemption", operator=OP)

    def hold(self, key: str, debit: str, credit: str, minutes: Any, **kw: Any) -> int:
        return self.ledger.hold(self.key(key), debit=debit, credit=credit,
                                amount_minutes=minutes, code="redemption", operator=OP,
                                **kw).id

    def command(self, key: str, *pairs: tuple[str, int]) -> EntryCommand:
        return EntryCommand(
            idempotency_key=self.key(key), code="deposit", operator=OP,
            postings=tuple(PostingSpec(account=a, amount_minutes=m) for a, m in pairs))


@pytest.fixture
def world(engine: Engine) -> World:
    clock = Clock()
    w = World(Ledger(engine, clock=clock), clock, engine, f"t{next(_prefixes)}")
    w.ledger.open_accounts([
        AccountSpec(code=w.issuer, type="station_issued", floor_minutes=None),
        AccountSpec(code=w.alice, type="member"),
        AccountSpec(code=w.bob, type="member"),
        AccountSpec(code=w.care, type="institution", floor_minutes=None),
        AccountSpec(code=w.empty, type="member"),
    ])
    w.give("seed", w.issuer, w.alice, 100)
    return w


def refused(
    world: World,
    cls: type[E],
    builtin: type[Exception],
    act: Callable[[], object],
    match: str | None = None,
    *,
    before_sql: bool = False,
) -> E:
    """Run ``act``: it must raise exactly ``cls`` (also a ``builtin``) and change nothing.
    With ``before_sql``, it must not even send one statement to the database."""
    before = dump(world.engine)
    with no_sql(world.engine) as statements, pytest.raises(cls, match=match) as info:
        act()
    assert type(info.value) is cls, f"expected exactly {cls.__name__}, got {info.value!r}"
    assert isinstance(info.value, builtin)
    assert isinstance(info.value, TimebankError)
    if before_sql:
        assert statements == []
    assert dump(world.engine) == before
    return info.value


@contextmanager
def no_sql(engine: Engine) -> Iterator[list[str]]:
    """Record every statement sent through ``engine`` inside the block."""
    statements: list[str] = []

    def record(*args: Any) -> None:
        statements.append(args[2])

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


def refused_before_sql(
    world: World, cls: type[E], act: Callable[[], object], match: str | None = None
) -> E:
    """A malformed command: refused by validation, before the database is even asked."""
    return refused(world, cls, ValueError, act, match, before_sql=True)


# --- not found --------------------------------------------------------------------------------


def test_unknown_account(world: World) -> None:
    w = world
    err = refused(w, AccountNotFoundError, LookupError,
                  lambda: w.give("t-1", w.alice, w.ghost, 5),
                  match=rf"^unknown account\(s\): {w.ghost}$")
    assert err.codes == (w.ghost,)
    assert isinstance(err, NotFoundError)
    err = refused(w, AccountNotFoundError, LookupError,
                  lambda: w.give("t-2", w.key("zz"), w.key("aa"), 5))
    assert err.codes == (w.key("aa"), w.key("zz"))
    refused(w, AccountNotFoundError, LookupError, lambda: w.hold("h-1", w.alice, w.ghost, 5))
    refused(w, AccountNotFoundError, LookupError,
            lambda: w.ledger.freeze(w.ghost, reason="x"))
    refused(w, AccountNotFoundError, LookupError,
            lambda: w.ledger.set_limits(w.ghost, floor_minutes=0, ceiling_minutes=None))


def test_unknown_entry_and_hold(world: World) -> None:
    w = world
    refused(w, EntryNotFoundError, LookupError,
            lambda: w.ledger.reverse(999_999, idempotency_key=w.key("r"), operator=OP,
                                     reason="x"),
            match="no entry with id 999999")
    refused(w, HoldNotFoundError, LookupError,
            lambda: w.ledger.post_hold(999_999, idempotency_key=w.key("p"), operator=OP),
            match="no hold with id 999999")
    refused(w, HoldNotFoundError, LookupError,
            lambda: w.ledger.void_hold(999_999, idempotency_key=w.key("v"), operator=OP))


# --- the account's state ----------------------------------------------------------------------


def test_closed_account(world: World) -> None:
    w = world
    w.ledger.close(w.empty, reason="left")
    message = f"account {w.empty!r} is closed"
    refused(w, AccountStateError, ValueError, lambda: w.give("t-1", w.alice, w.empty, 5),
            match=message)
    refused(w, AccountStateError, ValueError, lambda: w.give("t-2", w.empty, w.care, 5),
            match=message)
    refused(w, AccountStateError, ValueError, lambda: w.hold("h-1", w.alice, w.empty, 5),
            match=message)
    refused(w, AccountStateError, ValueError,
            lambda: w.ledger.unfreeze(w.empty, reason="back"),
            match="is closed; cannot make it open")
    refused(w, AccountStateError, ValueError,
            lambda: w.ledger.set_limits(w.empty, floor_minutes=0, ceiling_minutes=10),
            match=message)


def test_frozen_account(world: World) -> None:
    w = world
    held = w.hold("h-0", w.alice, w.care, 10)
    w.ledger.freeze(w.alice, reason="audit")
    message = f"account {w.alice!r} is frozen"
    attempts: list[Callable[[], object]] = [
        lambda: w.give("t-1", w.alice, w.bob, 5),
        lambda: w.give("t-2", w.issuer, w.alice, 5),
        lambda: w.hold("h-1", w.alice, w.bob, 5),
        lambda: w.hold("h-2", w.bob, w.alice, 5),
        lambda: w.ledger.post_hold(held, idempotency_key=w.key("p-1"), operator=OP),
    ]
    for attempt in attempts:
        refused(w, AccountStateError, ValueError, attempt, match=message)


def test_close_non_empty_account(world: World) -> None:
    w = world
    refused(w, AccountStateError, ValueError, lambda: w.ledger.close(w.alice, reason="left"),
            match=f"account {w.alice!r} cannot close: 100 minutes posted, 0 held")
    w.hold("h-1", w.alice, w.bob, 10)
    refused(w, AccountStateError, ValueError, lambda: w.ledger.close(w.bob, reason="left"),
            match=f"account {w.bob!r} cannot close: 0 minutes posted, 10 held")


def test_account_exists_with_another_definition(world: World) -> None:
    w = world
    err = refused(w, AccountExistsError, ValueError,
                  lambda: w.ledger.open_account(w.alice, "institution"),
                  match=f"account {w.alice!r} already exists with different type")
    assert isinstance(err, ConflictError)
    assert (err.code, err.fields) == (w.alice, ("type",))


# --- limits -----------------------------------------------------------------------------------


def test_floor_exceeded(world: World) -> None:
    w = world
    err = refused(w, LimitExceededError, ValueError, lambda: w.give("t-1", w.alice, w.bob, 101))
    assert isinstance(err, RefusedError)
    assert (err.account, err.limit, err.limit_minutes, err.available_minutes,
            err.requested_minutes) == (w.alice, "floor", 0, 100, 101)
    assert str(err) == (f"account {w.alice!r} needs 101 minutes but only 100 are available "
                        "above its floor of 0")


def test_ceiling_exceeded(world: World) -> None:
    w = world
    w.ledger.set_limits(w.care, floor_minutes=None, ceiling_minutes=50)
    w.hold("h-1", w.alice, w.care, 20)  # the ceiling counts held, incoming minutes
    err = refused(w, LimitExceededError, ValueError, lambda: w.give("t-1", w.issuer, w.care, 31))
    assert (err.account, err.limit, err.limit_minutes, err.available_minutes,
            err.requested_minutes) == (w.care, "ceiling", 50, 30, 31)
    assert str(err) == (f"account {w.care!r} would receive 31 minutes but only 30 fit under "
                        "its ceiling of 50")
    refused(w, LimitExceededError, ValueError, lambda: w.hold("h-2", w.alice, w.care, 31))


def test_hold_beyond_available(world: World) -> None:
    w = world
    w.hold("h-1", w.alice, w.care, 60)
    err = refused(w, LimitExceededError, ValueError, lambda: w.hold("h-2", w.alice, w.bob, 41),
                  match="needs 41 minutes but only 40 are available")
    assert (err.account, err.available_minutes, err.requested_minutes) == (w.alice, 40, 41)
    refused(w, LimitExceededError, ValueError, lambda: w.give("t-1", w.alice, w.bob, 41))


def test_limits_the_balance_already_breaks(world: World) -> None:
    w = world
    err = refused(w, LimitExceededError, ValueError,
                  lambda: w.ledger.set_limits(w.alice, floor_minutes=0, ceiling_minutes=99))
    assert (err.limit, err.limit_minutes) == ("ceiling", 99)
    err = refused(w, LimitExceededError, ValueError,
                  lambda: w.ledger.set_limits(w.alice, floor_minutes=101, ceiling_minutes=None))
    assert (err.limit, err.limit_minutes) == ("floor", 101)


def test_reversal_that_would_overdraw(world: World) -> None:
    w = world
    entry = w.ledger.transfer(w.key("t-1"), debit=w.alice, credit=w.bob, amount_minutes=40,
                              code="c", operator=OP)
    w.give("t-2", w.bob, w.care, 30)  # bob now has 10 of the 40 the reversal takes back
    err = refused(w, LimitExceededError, ValueError,
                  lambda: w.ledger.reverse(entry.id, idempotency_key=w.key("r-1"),
                                           operator=OP, reason="x"))
    assert (err.account, err.available_minutes, err.requested_minutes) == (w.bob, 10, 40)


# --- malformed commands: refused before any database access -----------------------------------


def test_unbalanced_entry(world: World) -> None:
    w = world
    refused_before_sql(
        w, UnbalancedEntryError,
        lambda: w.ledger.post(w.command("e-1", (w.issuer, -30), (w.alice, 31))),
        match="postings sum to 1 minutes, not zero")
    refused_before_sql(
        w, UnbalancedEntryError,
        lambda: w.ledger.post_many([w.command("e-2", (w.issuer, -5), (w.alice, 5)),
                                    w.command("e-3", (w.issuer, -5), (w.alice, 6))]))


def test_too_many_or_too_few_postings(world: World) -> None:
    w = world
    many = [(w.key(f"a{i}"), 1) for i in range(POSTINGS_PER_ENTRY_MAX)]
    refused_before_sql(
        w, PostingCountError,
        lambda: w.ledger.post(w.command("e-1", (w.issuer, -POSTINGS_PER_ENTRY_MAX), *many)),
        match=f"between 2 and {POSTINGS_PER_ENTRY_MAX} postings, got "
              f"{POSTINGS_PER_ENTRY_MAX + 1}")
    refused_before_sql(w, PostingCountError,
                       lambda: w.ledger.post(w.command("e-2", (w.issuer, 5))),
                       match="got 1$")
    refused_before_sql(w, PostingCountError,
                       lambda: w.give("t-1", w.alice, w.alice, 5),
                       match="different accounts|each account at most once")


@pytest.mark.parametrize("amount", [5.0, -5, 0, True, "5", None])
def test_bad_transfer_amounts(world: World, amount: object) -> None:
    w = world
    refused_before_sql(w, InvalidAmountError, lambda: w.give("t-1", w.alice, w.bob, amount))


def test_other_malformed_requests(world: World) -> None:
    w = world
    held = w.hold("h-1", w.alice, w.care, 10)
    amounts: tuple[Any, ...] = (-1, 0, 1.5)
    for amount in amounts:
        post = partial(w.ledger.post_hold, held, idempotency_key=w.key("p-1"), operator=OP,
                       amount_minutes=amount)
        refused_before_sql(w, InvalidAmountError, post)
    refused_before_sql(w, InvalidAmountError, lambda: w.hold("h-2", w.alice, w.care, -10),
                       match="must be positive")
    refused_before_sql(w, PostingCountError, lambda: w.hold("h-3", w.alice, w.alice, 10),
                       match="different accounts")
    refused_before_sql(
        w, InvalidAmountError,
        lambda: w.ledger.set_limits(w.alice, floor_minutes=2.5,  # type: ignore[arg-type]
                                    ceiling_minutes=None))
    refused_before_sql(
        w, InvalidInputError,
        lambda: w.ledger.set_limits(w.alice, floor_minutes=10, ceiling_minutes=5),
        match="floor 10 is above ceiling 5")
    refused_before_sql(w, InvalidInputError, lambda: w.ledger.statement(w.alice, limit=0),
                       match=f"between 1 and {PAGE_SIZE_MAX}")
    refused_before_sql(
        w, InvalidInputError,
        lambda: w.ledger.open_account(w.key("new"), "member", floor_minutes=10,
                                      ceiling_minutes=5))


def test_batch_past_the_maximum(world: World) -> None:
    w = world
    command = w.command("b", (w.issuer, -1), (w.bob, 1))
    refused_before_sql(
        w, InvalidInputError,
        lambda: w.ledger.post_many([command] * (ENTRIES_PER_BATCH_MAX + 1)),
        match=f"{ENTRIES_PER_BATCH_MAX + 1} entries in one batch; at most "
              f"{ENTRIES_PER_BATCH_MAX}")


# --- conflicts with what is recorded ----------------------------------------------------------


def test_key_reused_with_other_content(world: World) -> None:
    w = world
    w.give("t-1", w.alice, w.bob, 10)
    err = refused(w, IdempotencyConflictError, ValueError,
                  lambda: w.give("t-1", w.alice, w.bob, 11),
                  match=f"idempotency key {w.key('t-1')!r} was already used with different "
                        "postings")
    assert isinstance(err, ConflictError)
    assert (err.key, err.fields) == (w.key("t-1"), ("postings",))

    w.hold("h-1", w.alice, w.care, 10)
    err = refused(w, IdempotencyConflictError, ValueError,
                  lambda: w.hold("h-1", w.alice, w.care, 12))
    assert (err.key, err.fields) == (w.key("h-1"), ("amount_minutes",))


def test_double_reversal(world: World) -> None:
    w = world
    entry = w.ledger.transfer(w.key("t-1"), debit=w.alice, credit=w.bob, amount_minutes=10,
                              code="c", operator=OP)
    w.ledger.reverse(entry.id, idempotency_key=w.key("r-1"), operator=OP, reason="x")
    err = refused(w, AlreadyReversedError, ValueError,
                  lambda: w.ledger.reverse(entry.id, idempotency_key=w.key("r-2"),
                                           operator=OP, reason="again"),
                  match=f"entry {entry.id} was already reversed by entry with key "
                        f"{w.key('r-1')!r}")
    assert isinstance(err, ConflictError)


def test_hold_resolved_twice(world: World) -> None:
    w = world
    posted = w.hold("h-1", w.alice, w.care, 10)
    voided = w.hold("h-2", w.alice, w.care, 10)
    w.ledger.post_hold(posted, idempotency_key=w.key("p-1"), operator=OP)
    w.ledger.void_hold(voided, idempotency_key=w.key("v-1"), operator=OP)
    err = refused(w, HoldResolvedError, ValueError,
                  lambda: w.ledger.post_hold(posted, idempotency_key=w.key("p-2"), operator=OP),
                  match=f"hold {posted} is already posted")
    assert isinstance(err, ConflictError)
    refused(w, HoldResolvedError, ValueError,
            lambda: w.ledger.void_hold(posted, idempotency_key=w.key("v-2"), operator=OP),
            match=f"hold {posted} is already posted")
    refused(w, HoldResolvedError, ValueError,
            lambda: w.ledger.post_hold(voided, idempotency_key=w.key("p-3"), operator=OP),
            match=f"hold {voided} is already voided")


def test_post_more_than_held(world: World) -> None:
    w = world
    held = w.hold("h-1", w.alice, w.care, 10)
    refused(w, InvalidAmountError, ValueError,
            lambda: w.ledger.post_hold(held, idempotency_key=w.key("p-1"), operator=OP,
                                       amount_minutes=11),
            match=f"cannot post 11 minutes from hold {held} of 10")


def test_expired_hold(world: World) -> None:
    w = world
    expires = T0 + timedelta(minutes=10)
    held = w.hold("h-1", w.alice, w.care, 10, expires_at=expires)
    w.clock.now = expires
    err = refused(w, HoldExpiredError, ValueError,
                  lambda: w.ledger.post_hold(held, idempotency_key=w.key("p-1"), operator=OP),
                  match=f"hold {held} expired at 2026-11-02T09:10:00")
    assert isinstance(err, RefusedError)
    refused(w, HoldExpiredError, ValueError,
            lambda: w.ledger.void_hold(held, idempotency_key=w.key("v-1"), operator=OP))


# --- a batch is all or nothing ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["floor", "frozen", "closed", "unknown"])
def test_batch_refused_at_entry_n_writes_nothing(world: World, kind: str) -> None:
    w = world
    if kind == "frozen":
        w.ledger.freeze(w.bob, reason="audit")
    if kind == "closed":
        w.ledger.close(w.bob, reason="left")
    target = w.ghost if kind == "unknown" else w.bob
    bad = (w.command("b-2", (w.alice, -61), (target, 61)) if kind == "floor"
           else w.command("b-2", (w.issuer, -1), (target, 1)))
    batch = [
        w.command("b-0", (w.alice, -20), (w.care, 20)),
        w.command("b-1", (w.alice, -20), (w.care, 20)),
        bad,  # after b-0 and b-1, alice has 60 left
        w.command("b-3", (w.issuer, -5), (w.care, 5)),
    ]
    expected: type[TimebankError] = {
        "floor": LimitExceededError, "frozen": AccountStateError,
        "closed": AccountStateError, "unknown": AccountNotFoundError}[kind]
    builtin = LookupError if kind == "unknown" else ValueError
    err = refused(w, expected, builtin, lambda: w.ledger.post_many(batch))
    if isinstance(err, LimitExceededError):
        assert (err.available_minutes, err.requested_minutes) == (60, 61)
    notes = getattr(err, "__notes__", [])
    assert any(repr(w.key("b-2")) in note and "nothing of the batch was written" in note
               for note in notes), notes
    for key in ("b-0", "b-1", "b-3"):
        with pytest.raises(EntryNotFoundError):
            w.ledger.entry_by_key(w.key(key))


# --- the database's own refusals (raw SQL, behind the library's back) -------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE tb_entries SET memo = 'edited' WHERE id = :entry",
        "DELETE FROM tb_entries WHERE id = :entry",
        "UPDATE tb_postings SET amount_minutes = amount_minutes * 2 WHERE entry_id = :entry",
        "DELETE FROM tb_postings WHERE entry_id = :entry",
    ],
    ids=["update-entry", "delete-entry", "update-posting", "delete-posting"],
)
def test_database_refuses_changing_entries_and_postings(world: World, statement: str) -> None:
    w = world
    entry_id = w.ledger.entry_by_key(w.key("seed")).id
    before = dump(w.engine)
    with pytest.raises(sa.exc.DBAPIError, match="immutable"), w.engine.begin() as conn:
        conn.execute(sa.text(statement), {"entry": entry_id})
    assert dump(w.engine) == before


@pytest.mark.parametrize("engine", backend_params(POSTGRES), indirect=True)
@pytest.mark.parametrize("table", ["tb_entries", "tb_postings"])
def test_postgres_refuses_truncate(world: World, table: str) -> None:
    before = dump(world.engine)
    with pytest.raises(sa.exc.DBAPIError, match="immutable"), world.engine.begin() as conn:
        conn.exec_driver_sql(f"TRUNCATE {table} CASCADE")
    assert dump(world.engine) == before


@pytest.mark.parametrize(
    "change",
    ["posted_minutes = posted_minutes - 1", "posted_minutes = posted_minutes + 1",
     "held_out_minutes = held_out_minutes + 1", "held_in_minutes = held_in_minutes + 1"],
)
def test_database_refuses_moving_minutes_on_a_frozen_account(world: World, change: str) -> None:
    w = world
    w.ledger.freeze(w.alice, reason="audit")
    before = dump(w.engine)
    with pytest.raises(sa.exc.DBAPIError, match="not open"), w.engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE tb_accounts SET {change} WHERE code = :code"),
                     {"code": w.alice})
    assert dump(w.engine) == before
    # The trigger is about minutes: other columns of a frozen account may change.
    with w.engine.connect() as conn, conn.begin() as tx:
        done = conn.execute(sa.text("UPDATE tb_accounts SET status_reason = 'x' "
                                    "WHERE code = :code"), {"code": w.alice})
        assert done.rowcount == 1
        tx.rollback()


@pytest.mark.parametrize("engine", backend_params(POSTGRES), indirect=True)
@pytest.mark.parametrize("legs", [0, 1], ids=["no-postings", "one-posting"])
def test_postgres_refuses_an_unbalanced_entry_at_commit(world: World, legs: int) -> None:
    w = world
    account_id = w.ledger.account(w.alice).id
    before = dump(w.engine)
    with w.engine.connect() as conn:
        conn.begin()
        entry_id = conn.execute(
            sa.insert(entries).values(
                idempotency_key=w.key("raw"), code="raw", occurred_at=T0, recorded_at=T0,
                operator=OP, memo="", metadata=None, reverses_entry_id=None)
            .returning(entries.c.id)
        ).scalar_one()
        if legs:
            conn.execute(sa.insert(postings).values(
                entry_id=entry_id, account_id=account_id, amount_minutes=5,
                balance_after_minutes=105, recorded_at=T0))
        # Each statement was accepted: the check is deferred to COMMIT.
        with pytest.raises(sa.exc.IntegrityError,
                           match=f"entry {entry_id} has {legs} postings summing to "
                                 f"{5 * legs}"):
            conn.commit()
    assert dump(w.engine) == before


@pytest.mark.parametrize("missing", ["entry", "account"])
def test_database_refuses_a_posting_that_names_nothing(world: World, missing: str) -> None:
    """A foreign key on SQLite and MariaDB, a statement-level trigger on PostgreSQL: the
    same refusal, and the whole statement is refused with the one bad row."""
    w = world
    entry_id = w.ledger.entry_by_key(w.key("seed")).id
    alice_id, empty_id = w.ledger.account(w.alice).id, w.ledger.account(w.empty).id
    ghost_entry, ghost_account = entry_id + 1_000_000, empty_id + 1_000_000
    good = {"entry_id": entry_id, "account_id": empty_id}
    bad = (
        {"entry_id": ghost_entry, "account_id": alice_id}
        if missing == "entry"
        else {"entry_id": entry_id, "account_id": ghost_account}
    )
    rows = [
        {**row, "amount_minutes": 5, "balance_after_minutes": 5, "recorded_at": T0}
        for row in (good, bad)
    ]
    before = dump(w.engine)
    with pytest.raises(sa.exc.IntegrityError), w.engine.begin() as conn:
        conn.execute(sa.insert(postings), rows)
    assert dump(w.engine) == before


@pytest.mark.parametrize("engine", backend_params(POSTGRES), indirect=True)
@pytest.mark.parametrize(
    "statement",
    [
        "DELETE FROM tb_accounts WHERE code = :code",
        "UPDATE tb_accounts SET id = id + 1000000 WHERE code = :code",
        "TRUNCATE tb_accounts CASCADE",
    ],
    ids=["delete", "renumber", "truncate"],
)
def test_postgres_keeps_accounts_that_postings_name(world: World, statement: str) -> None:
    """Without foreign keys on tb_postings (migration 0002), PostgreSQL guards the accounts
    they name: an account is closed, never deleted, renumbered or truncated away."""
    before = dump(world.engine)
    refusal = pytest.raises(sa.exc.DBAPIError, match="never deleted or renumbered")
    with refusal, world.engine.begin() as conn:
        conn.execute(sa.text(statement), {"code": world.alice})
    assert dump(world.engine) == before
