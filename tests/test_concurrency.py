"""Many threads, one ledger: no lost update, no limit overrun, one entry per idempotency key.

Each thread runs its operations through the same :class:`Ledger`; the engine's pool hands
every thread a connection of its own for each operation, so the threads really are separate
database sessions that contend for the same account rows.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import pytest
import sqlalchemy as sa

from tests._databases import MARIADB, POSTGRES, SQLITE, backends
from timebank import (
    AlreadyReversedError,
    EntryView,
    HoldExpiredError,
    HoldResolvedError,
    HoldView,
    IdempotencyConflictError,
    Ledger,
    LimitExceededError,
    TimebankError,
    TransferCommand,
)

pytestmark = pytest.mark.slow

db_url = backends(SQLITE, POSTGRES, MARIADB, migrated=True)

T = TypeVar("T")

THREADS = 8
OPS_PER_THREAD = 150
#: Three members that may never go below zero (one of them also has a ceiling), and the
#: station, the time bank's own account, which may.
MEMBERS = ("m1", "m2", "m3")
STATION = "station"
ACCOUNTS = (*MEMBERS, STATION)
CEILINGS = {"m3": 400}
SEED_MINUTES = 120
#: Share of holds that expire within 1-100 ms, so that expiry races the writers.
EXPIRING_HOLDS = 0.04
JOIN_TIMEOUT_S = 300


@pytest.fixture
def ledger(db_url: str) -> Iterator[Ledger]:
    # One connection per thread plus a few spare; reads and writes check out their own.
    with Ledger.open(db_url, pool_size=THREADS + 2, max_overflow=10) as opened:
        yield opened


def run_threads(count: int, target: Callable[[int], T]) -> list[T]:
    """Run ``target(i)`` in ``count`` threads; re-raise the first exception any of them hit."""
    results: list[T | None] = [None] * count
    failures: list[tuple[int, BaseException]] = []

    def runner(index: int) -> None:
        try:
            results[index] = target(index)
        except BaseException as exc:  # noqa: BLE001 - re-raised below, in the test's thread
            failures.append((index, exc))

    threads = [threading.Thread(target=runner, args=(i,), name=f"tb-worker-{i}")
               for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_TIMEOUT_S)
    assert not any(t.is_alive() for t in threads), "a worker thread hung"
    if failures:
        index, exc = failures[0]
        raise AssertionError(f"worker {index} failed: {type(exc).__name__}: {exc}") from exc
    return [r for r in results if r is not None]


def count_entries(ledger: Ledger) -> int:
    with ledger.engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT COUNT(*) FROM tb_entries")).scalar_one())


# --- hot accounts --------------------------------------------------------------------------


@dataclass
class Tally:
    """What one thread saw: entries it created, refusals, and the minutes it moved."""

    entries: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    operations: Counter[str] = field(default_factory=Counter)
    moved: Counter[str] = field(default_factory=Counter)
    swept: int = 0

    def posted(self, view: EntryView) -> None:
        self.entries += 1
        for leg in view.postings:
            self.moved[leg.account] += leg.amount_minutes


def open_hot_accounts(ledger: Ledger) -> None:
    ledger.open_account(STATION, "system", floor_minutes=None)
    for code in MEMBERS:
        ledger.open_account(code, "member", floor_minutes=0, ceiling_minutes=CEILINGS.get(code))
        ledger.transfer(f"seed-{code}", debit=STATION, credit=code,
                        amount_minutes=SEED_MINUTES, code="seed", operator="test")


class Worker:
    """One thread's random workload on the hot accounts: transfers (overdrafts included),
    batches, reversals of its own entries, holds (some expiring within milliseconds) that it
    posts, posts in part or voids, and now and then a sweep of expired holds."""

    def __init__(self, ledger: Ledger, number: int) -> None:
        self.ledger = ledger
        self.number = number
        self.rng = random.Random(number)
        self.tally = Tally()
        self.pending: list[HoldView] = []
        self.reversible: list[int] = []
        self.step = 0

    def key(self, suffix: str = "") -> str:
        return f"w{self.number}-{self.step}{suffix}"

    def posted(self, view: EntryView) -> None:
        self.tally.posted(view)
        if view.reverses_entry_id is None:
            self.reversible.append(view.id)

    def run(self) -> Tally:
        operations: dict[str, tuple[float, Callable[[], None]]] = {
            "transfer": (45, self.transfer), "post_many": (10, self.post_many),
            "reverse": (8, self.reverse), "hold": (20, self.hold),
            "resolve": (15, self.resolve), "expire_holds": (2, self.expire_holds)}
        names = list(operations)
        weights = [operations[n][0] for n in names]
        for self.step in range(OPS_PER_THREAD):
            name = self.rng.choices(names, weights)[0]
            self.tally.operations[name] += 1
            try:
                operations[name][1]()
            except LimitExceededError as exc:
                if exc.requested_minutes <= exc.available_minutes:  # a refusal adds up
                    raise AssertionError(f"refused though the minutes were there: {exc}") from exc
                self.tally.refused[exc.limit] += 1
        for hold in self.pending:  # leave nothing held
            self.step += 1
            self.resolve_one(hold, void=True)
        return self.tally

    def accounts(self) -> list[str]:
        return self.rng.sample(ACCOUNTS, 2)

    def transfer(self) -> None:
        debit, credit = self.accounts()
        self.posted(self.ledger.transfer(self.key(), debit=debit, credit=credit,
                                         amount_minutes=self.rng.randint(1, 90), code="svc",
                                         operator="t"))

    def post_many(self) -> None:
        batch = []
        for leg in range(self.rng.randint(2, 3)):
            debit, credit = self.accounts()
            batch.append(TransferCommand(
                idempotency_key=self.key(f"/{leg}"), debit=debit, credit=credit,
                amount_minutes=self.rng.randint(1, 40), code="svc", operator="t"))
        receipt = self.ledger.post_many(batch)
        assert receipt.created_count == len(batch)
        for entry_id in receipt.entry_ids:
            self.posted(self.ledger.entry(entry_id))

    def reverse(self) -> None:
        if not self.reversible:
            return
        entry_id = self.reversible.pop(self.rng.randrange(len(self.reversible)))
        self.posted(self.ledger.reverse(entry_id, idempotency_key=self.key(), operator="t",
                                        reason="undo"))

    def hold(self) -> None:
        debit, credit = self.accounts()
        expires_at = None
        if self.rng.random() < EXPIRING_HOLDS:
            expires_at = datetime.now(UTC) + timedelta(milliseconds=self.rng.randint(1, 100))
        try:
            self.pending.append(self.ledger.hold(
                self.key(), debit=debit, credit=credit, amount_minutes=self.rng.randint(1, 90),
                code="svc", operator="t", expires_at=expires_at))
        except HoldExpiredError:
            # Refused: its expiry passed while it queued for the account locks.
            if expires_at is None:
                raise
            self.tally.refused["expired"] += 1

    def resolve(self) -> None:
        if self.pending:
            hold = self.pending.pop(self.rng.randrange(len(self.pending)))
            self.resolve_one(hold, void=self.rng.random() < 0.4)

    def resolve_one(self, hold: HoldView, *, void: bool) -> None:
        try:
            if void:
                voided = self.ledger.void_hold(hold.id, idempotency_key=self.key(), operator="t")
                assert voided.status == "voided"
            else:
                part = self.rng.choice([None, self.rng.randint(1, hold.amount_minutes)])
                self.posted(self.ledger.post_hold(hold.id, idempotency_key=self.key(),
                                                  operator="t", amount_minutes=part))
        except HoldExpiredError:
            if hold.expires_at is None:
                raise
            self.tally.refused["expired"] += 1

    def expire_holds(self) -> None:
        self.tally.swept += self.ledger.expire_holds()


def test_hot_accounts_under_many_threads(ledger: Ledger) -> None:
    open_hot_accounts(ledger)
    seeded = {code: ledger.balance(code).posted_minutes for code in ACCOUNTS}
    entries_before = count_entries(ledger)

    started = time.monotonic()
    tallies = run_threads(THREADS, lambda number: Worker(ledger, number).run())
    elapsed = time.monotonic() - started
    while ledger.expire_holds():  # holds that expired after their thread last looked
        pass

    moved: Counter[str] = Counter()
    for tally in tallies:
        moved.update(tally.moved)
    created = sum(t.entries for t in tallies)
    refused = sum(sum(t.refused.values()) for t in tallies)
    operations: Counter[str] = Counter()
    for tally in tallies:
        operations.update(tally.operations)
    assert created > 0
    assert refused > 0, "the workload should try to overdraw (and be refused) now and then"

    # Every success is one entry; nothing else wrote one.
    assert count_entries(ledger) == entries_before + created
    report = ledger.verify()
    assert report.ok, report.problems
    assert report.entries == entries_before + created
    # No lost update: each balance moved by exactly what the threads say they posted.
    trial = ledger.trial_balance()
    assert trial.total_minutes == 0
    for code in ACCOUNTS:
        balance = ledger.balance(code)
        assert balance.posted_minutes == seeded[code] + moved[code], code
        assert (balance.held_out_minutes, balance.held_in_minutes) == (0, 0), code
        account = ledger.account(code)
        if account.floor_minutes is not None:
            assert balance.posted_minutes >= account.floor_minutes, code
        if account.ceiling_minutes is not None:
            assert balance.posted_minutes <= account.ceiling_minutes, code
    print(f"{THREADS} threads, {operations.total()} operations in {elapsed:.1f}s "
          f"({dict(operations)}): {created} entries, {refused} refused")


# --- idempotency races ---------------------------------------------------------------------

RACES = 6


def race(
    count: int,
    attempt: Callable[[int], T],
    refusals: tuple[type[TimebankError], ...] = (IdempotencyConflictError,),
) -> list[T | TimebankError]:
    """All threads call ``attempt`` at once (a barrier); each one's result or expected
    refusal. Any other exception fails the test."""
    barrier = threading.Barrier(count, timeout=60)

    def one(index: int) -> T | TimebankError:
        barrier.wait()
        try:
            return attempt(index)
        except refusals as exc:
            return exc

    return run_threads(count, one)


def test_same_command_raced_is_posted_once(ledger: Ledger) -> None:
    ledger.open_account(STATION, "system", floor_minutes=None)
    ledger.open_account("m1", "member")
    for round_ in range(RACES):
        key = f"same-{round_}"

        def post(_thread: int, key: str = key) -> EntryView:
            return ledger.transfer(key, debit=STATION, credit="m1", amount_minutes=15,
                                   code="svc", operator="t", memo="raced")

        results = race(THREADS, post)
        views = [r for r in results if isinstance(r, EntryView)]
        assert len(views) == THREADS, [r for r in results if not isinstance(r, EntryView)]
        assert all(v == views[0] for v in views), "threads got different entries for one key"
        assert ledger.entry_by_key(key) == views[0]
    assert count_entries(ledger) == RACES
    assert ledger.balance("m1").posted_minutes == 15 * RACES
    report = ledger.verify()
    assert report.ok, report.problems


def test_same_hold_raced_is_held_once(ledger: Ledger) -> None:
    ledger.open_account(STATION, "system", floor_minutes=None)
    ledger.open_account("m1", "member")
    for round_ in range(RACES):
        key = f"hold-{round_}"

        def hold(_thread: int, key: str = key) -> HoldView:
            return ledger.hold(key, debit=STATION, credit="m1", amount_minutes=10, code="svc",
                               operator="t")

        results = race(THREADS, hold)
        holds = [r for r in results if isinstance(r, HoldView)]
        assert len(holds) == THREADS, [r for r in results if not isinstance(r, HoldView)]
        assert {h.id for h in holds} == {holds[0].id}
    assert ledger.balance("m1").held_in_minutes == 10 * RACES
    report = ledger.verify()
    assert report.ok, report.problems


def test_a_raced_command_that_empties_an_account_is_replayed_not_refused(
    ledger: Ledger,
) -> None:
    """Once the first writer commits, the others find the account empty: the same command
    must still answer the committed entry (a replay), never a limit refusal. On PostgreSQL
    the checks of a one-entry write run before its key is claimed, so this is the case
    where a refusal must look the key up before it is believed."""
    ledger.open_account(STATION, "system", floor_minutes=None)
    ledger.open_account("m1", "member")  # floor 0
    for round_ in range(RACES):
        ledger.transfer(f"fill-{round_}", debit=STATION, credit="m1", amount_minutes=25,
                        code="svc", operator="t")
        key = f"empty-{round_}"

        def take(_thread: int, key: str = key) -> EntryView:
            return ledger.transfer(key, debit="m1", credit=STATION, amount_minutes=25,
                                   code="svc", operator="t")

        results = race(THREADS, take, ())
        assert {r.id for r in results if isinstance(r, EntryView)} == {
            ledger.entry_by_key(key).id
        }, results
        assert ledger.balance("m1").posted_minutes == 0
    assert count_entries(ledger) == 2 * RACES
    report = ledger.verify()
    assert report.ok, report.problems


def test_one_key_with_different_content_has_one_winner(ledger: Ledger) -> None:
    ledger.open_account(STATION, "system", floor_minutes=None)
    ledger.open_account("m1", "member")
    total = 0
    for round_ in range(RACES):
        key = f"differ-{round_}"

        def post(thread: int, key: str = key) -> EntryView:
            # Each thread asks for another amount under the same key.
            return ledger.transfer(key, debit=STATION, credit="m1", amount_minutes=thread + 1,
                                   code="svc", operator="t")

        results = race(THREADS, post)
        winners = [r for r in results if isinstance(r, EntryView)]
        losers = [r for r in results if isinstance(r, IdempotencyConflictError)]
        assert len(winners) == 1, results
        assert len(losers) == THREADS - 1, results
        assert all(exc.key == key and "postings" in exc.fields for exc in losers)
        assert ledger.entry_by_key(key) == winners[0]
        total += next(p.amount_minutes for p in winners[0].postings if p.account == "m1")
    assert count_entries(ledger) == RACES
    assert ledger.balance("m1").posted_minutes == total
    report = ledger.verify()
    assert report.ok, report.problems


def test_one_entry_raced_to_reversal_is_reversed_once(ledger: Ledger) -> None:
    ledger.open_account(STATION, "system", floor_minutes=None)
    ledger.open_account("m1", "member")
    for round_ in range(RACES):
        original = ledger.transfer(f"orig-{round_}", debit=STATION, credit="m1",
                                   amount_minutes=20, code="svc", operator="t")

        def reverse(thread: int, entry_id: int = original.id, round_: int = round_
                    ) -> EntryView:
            # Half of the threads share one key (a replay among themselves), half their own.
            key = f"rev-{round_}" if thread % 2 == 0 else f"rev-{round_}-{thread}"
            return ledger.reverse(entry_id, idempotency_key=key, operator="t", reason="race")

        results = race(THREADS, reverse, (AlreadyReversedError,))
        reversals = [r for r in results if isinstance(r, EntryView)]
        refused = [r for r in results if isinstance(r, AlreadyReversedError)]
        assert len(reversals) + len(refused) == THREADS, results
        assert {r.id for r in reversals} == {reversals[0].id}, "an entry reversed twice"
        assert reversals[0].reverses_entry_id == original.id
    assert ledger.balance("m1").posted_minutes == 0
    assert count_entries(ledger) == 2 * RACES
    report = ledger.verify()
    assert report.ok, report.problems


def test_one_hold_raced_to_resolution_resolves_once(ledger: Ledger) -> None:
    ledger.open_account(STATION, "system", floor_minutes=None)
    ledger.open_account("m1", "member")
    posted = 0
    for round_ in range(RACES):
        hold = ledger.hold(f"h-{round_}", debit=STATION, credit="m1", amount_minutes=30,
                           code="svc", operator="t")

        def resolve(thread: int, hold_id: int = hold.id, round_: int = round_
                    ) -> EntryView | HoldView:
            # Threads 0-3 post with one key (a replay among themselves); 4-5 post with keys
            # of their own; 6-7 void.
            if thread < 4:
                return ledger.post_hold(hold_id, idempotency_key=f"post-{round_}", operator="t")
            if thread < 6:
                return ledger.post_hold(hold_id, idempotency_key=f"post-{round_}-{thread}",
                                        operator="t")
            return ledger.void_hold(hold_id, idempotency_key=f"void-{round_}-{thread}",
                                    operator="t")

        results = race(THREADS, resolve, (HoldResolvedError,))
        entries = {r.id for r in results if isinstance(r, EntryView)}
        voided = [r for r in results if isinstance(r, HoldView)]
        final = ledger.get_hold(hold.id)
        if final.status == "posted":  # by one key: its other callers replayed it
            assert entries == {final.posted_entry_id}, results
            assert not voided, results
            posted += 30
        else:
            assert final.status == "voided", final
            assert not entries, results
            assert len(voided) == 1, results
    assert ledger.balance("m1").posted_minutes == posted
    assert ledger.balance("m1").held_in_minutes == 0
    report = ledger.verify()
    assert report.ok, report.problems


# --- a hold racing its own expiry ----------------------------------------------------------


class TickingClock:
    """A clock one second further on at every reading: whatever instants an operation reads,
    a hold's expiry can fall between any two of them."""

    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


def test_hold_expiring_while_it_is_posted_is_released_once(db_url: str) -> None:
    """post_hold either posts a hold that was live when checked or refuses it as expired;
    the hold's minutes are released exactly once either way."""
    clock = TickingClock()
    with Ledger.open(db_url, clock=clock) as ledger:
        ledger.open_account(STATION, "system", floor_minutes=None)
        ledger.open_account("m1", "member")
        outcomes: Counter[str] = Counter()
        for offset in range(1, 13):
            expires_at = clock.now + timedelta(seconds=offset, milliseconds=500)
            try:
                hold = ledger.hold(f"h{offset}", debit=STATION, credit="m1", amount_minutes=30,
                                   code="svc", operator="t", expires_at=expires_at)
            except HoldExpiredError:  # its expiry passed before it could be created
                outcomes["expired"] += 1
                continue
            try:
                ledger.post_hold(hold.id, idempotency_key=f"p{offset}", operator="t")
                outcomes["posted"] += 1
            except HoldExpiredError:
                outcomes["expired"] += 1
            report = ledger.verify()
            assert report.ok, (offset, report.problems)
            balance = ledger.balance("m1")
            assert (balance.held_in_minutes, balance.posted_minutes) == (
                0, 30 * outcomes["posted"]), (offset, outcomes)
        assert outcomes["posted"], outcomes
        assert outcomes["expired"], outcomes
