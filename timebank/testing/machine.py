"""A reusable Hypothesis state machine for the time bank, with a reference model.

:class:`TimeBankMachine` plays random sequences of :mod:`timebank.testing.commands`
(record and confirm services, redeem, give, donate, book, complete and cancel bookings),
moves the clock, and expires lots, in the world of :mod:`timebank.testing.world` (whose
lots expire two days after they are earned, so that expiry happens). Before each command
a small model predicts success or the refusal (too few free minutes: LimitExceededError; a
gift to somebody who is not a spouse: PolicyViolationError; a booking already resolved or
lapsed: ServiceStateError). After every step it checks:

* each member's balance == the model's == the total of their open lots, and their held
  minutes == what their live bookings hold;
* the ledger sums to zero (trial balance), the home region's pool and the programme's
  expired account hold what the model says;
* a refusal raised the predicted error type and changed no row of any table.

Run it as a test::

    from hypothesis import settings
    from timebank.testing.machine import TimeBankMachine

    TestTimeBank = TimeBankMachine.TestCase
    TestTimeBank.settings = settings(max_examples=20, stateful_step_count=30, deadline=None)

or ``hypothesis.stateful.run_state_machine_as_test(TimeBankMachine, settings=...)``.

Subclass it to test your own code:

* override :meth:`TimeBankMachine.make_bank` to return your wrapper of the bank (any object
  with the ``TimeBank`` methods the commands call: station software usually has a service
  layer in front of it). Commands go through it; the checks read the real bank, so a
  wrapper that loses or double-posts minutes is caught;
* override :meth:`TimeBankMachine.make_world` to build the world elsewhere (PostgreSQL:
  ``make_world(url, clock=self.clock, policy=self.policy)`` in a fresh database);
* add ``@rule`` methods: call ``self.execute(command)`` to run a command with its
  prediction and model update, or ``self.refused(errors, call)`` for a call that must be
  refused without changing anything; add ``@invariant`` methods for your own state.

::

    from hypothesis.stateful import rule
    from hypothesis import event
from hypothesis import strategies as st
    from timebank.testing.commands import Redeem

    class StationMachine(TimeBankMachine):
        def make_bank(self):
            return MyStationService(self.world.bank)   # your code, same method names

        @rule(minutes=st.integers(1, 30))
        def small_redemption(self, minutes):
            self.execute(Redeem("dora", minutes))

    TestStation = StationMachine.TestCase

The model assumes the machine's own policy (:attr:`TimeBankMachine.policy`): no storage cap,
no gift limit, everybody old enough to redeem. Change those and extend the model too.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import sqlalchemy as sa
from hypothesis import event
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from timebank.bank import Policy, TimeBank
from timebank.bank.models import BookingView, ServiceView, credited_minutes
from timebank.errors import (
    LimitExceededError,
    PolicyViolationError,
    ServiceStateError,
    TimebankError,
)
from timebank.schema import metadata
from timebank.testing import commands as cmd
from timebank.testing.strategies import commands
from timebank.testing.world import (
    ADMIN,
    HOME_REGION,
    POLICY,
    SPOUSES,
    ManualClock,
    World,
    sqlite_world,
)

__all__ = ["Model", "TimeBankMachine"]

Refusal = frozenset[type[TimebankError]]
_NONE: Refusal = frozenset()


@dataclass
class Lot:
    """A member's lot in the model: what remains, when it was earned and expires."""

    seq: int
    earned_on: date
    expires_on: date | None
    remaining: int


@dataclass
class Booking:
    member: int
    minutes: int
    expires_at: datetime
    state: str = "booked"  # or "completed", "cancelled"

    def live(self, now: datetime) -> bool:
        return self.state == "booked" and self.expires_at > now


@dataclass
class Model:
    """The expected state: lots per member, services, bookings, the pool, expired minutes."""

    lots: dict[int, list[Lot]] = field(default_factory=dict)
    services: dict[int, tuple[int, int, datetime, str]] = field(default_factory=dict)
    bookings: dict[int, Booking] = field(default_factory=dict)
    pool: int = 0
    expired: int = 0
    _seq: int = 0

    def balance(self, member: int) -> int:
        return sum(lot.remaining for lot in self.lots.get(member, []))

    def held(self, member: int, now: datetime) -> int:
        return sum(b.minutes for b in self.bookings.values() if b.member == member and b.live(now))

    def free(self, member: int, now: datetime) -> int:
        return self.balance(member) - self.held(member, now)

    def add_lot(self, member: int, minutes: int, earned_on: date, expires_on: date | None) -> None:
        self._seq += 1
        self.lots.setdefault(member, []).append(Lot(self._seq, earned_on, expires_on, minutes))

    def take(self, member: int, minutes: int) -> list[Lot]:
        """Consume ``minutes`` first in, first out; returns the slices taken."""
        taken: list[Lot] = []
        for lot in sorted(self.lots.get(member, []), key=lambda x: (x.earned_on, x.seq)):
            if minutes == 0:
                break
            part = min(lot.remaining, minutes)
            if part:
                lot.remaining -= part
                minutes -= part
                taken.append(Lot(lot.seq, lot.earned_on, lot.expires_on, part))
        assert minutes == 0, "the model took more minutes than the member has"
        return taken


class TimeBankMachine(RuleBasedStateMachine):
    """Random time-bank command sequences against a reference model; see the module."""

    #: The world's policy: lots expire two days after the day they are earned.
    policy: ClassVar[Policy] = POLICY.model_copy(update={"lot_expiry_days": 2})

    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock()
        self._directory: Path | None = None
        self.world = self.make_world()
        #: What the commands go through (``make_bank``); checks read ``self.world.bank``.
        self.bank = self.make_bank()
        self.runner = cmd.Runner(self.world, self.bank)
        self.model = Model()
        self.expired_account = self.world.bank.programme(self.world.programme).expired_account
        self.pool_account = self.world.bank.region(self.world.programme, HOME_REGION).pool_account
        ids = self.world.members
        self.spouses = frozenset(
            {(ids[SPOUSES[0]], ids[SPOUSES[1]]), (ids[SPOUSES[1]], ids[SPOUSES[0]])}
        )

    # -- hooks ------------------------------------------------------------------------------

    def make_world(self) -> World:
        """A fresh world on a temporary SQLite file (a copy of a per-process template).
        Override to use another database; use ``self.clock`` and ``self.policy``."""
        self._directory = Path(tempfile.mkdtemp(prefix="timebank_machine_"))
        return sqlite_world(self._directory / "bank.db", clock=self.clock, policy=self.policy)

    def make_bank(self) -> TimeBank:
        """What commands are sent to: the world's bank, or your wrapper of it."""
        return self.world.bank

    def teardown(self) -> None:
        self.world.bank.dispose()
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)

    # -- helpers ----------------------------------------------------------------------------

    @property
    def now(self) -> datetime:
        return self.clock.now

    def rows(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every row of the library's tables, to compare before and after a refusal."""
        with self.world.engine.connect() as conn:
            return {
                table.name: [
                    tuple(row)
                    for row in conn.execute(sa.select(table).order_by(*table.primary_key.columns))
                ]
                for table in metadata.sorted_tables
            }

    def refused(
        self, expected: Iterable[type[TimebankError]], call: Callable[[], object]
    ) -> TimebankError:
        """``call`` must raise one of ``expected`` and change no row."""
        allowed = frozenset(expected)
        names = sorted(c.__name__ for c in allowed)
        before = self.rows()
        caught: TimebankError | None = None
        try:
            call()
        except TimebankError as exc:
            caught = exc
        if caught is None:
            raise AssertionError(f"expected a refusal ({' or '.join(names)}), it succeeded")
        assert isinstance(caught, tuple(allowed)), (
            f"expected {' or '.join(names)}, got {type(caught).__name__}: {caught}"
        )
        assert self.rows() == before, f"a refusal ({type(caught).__name__}) changed the database"
        return caught

    def predict(self, command: cmd.Command) -> Refusal:  # noqa: PLR0911 - one per kind
        """The errors the bank must raise for ``command`` now (empty: it must succeed)."""
        ids, now = self.world.members, self.now
        match command:
            case cmd.Redeem() | cmd.Donate() | cmd.Book():
                short = command.minutes > self.model.free(ids[command.member], now)
                return frozenset({LimitExceededError}) if short else _NONE
            case cmd.Give():
                giver, receiver = ids[command.giver], ids[command.receiver]
                if (giver, receiver) not in self.spouses:
                    return frozenset({PolicyViolationError})
                if command.minutes > self.model.free(giver, now):
                    return frozenset({LimitExceededError})
                return _NONE
            case cmd.Complete() | cmd.Cancel():
                booking_id = self.runner.booking_id(command.pick)
                if booking_id is None:
                    return _NONE
                booking = self.model.bookings[booking_id]
                replay = booking.state == (
                    "completed" if isinstance(command, cmd.Complete) else "cancelled"
                )
                if replay or booking.live(now):
                    return _NONE
                return frozenset({ServiceStateError})
            case _:
                return _NONE

    def execute(self, command: cmd.Command) -> object:
        """Run ``command`` through ``self.bank``: refused as predicted, changing nothing, or
        accepted and applied to the model. Returns the bank's view (or the error)."""
        expected = self.predict(command)
        if expected:
            event(f"{command.kind}: refused")
            return self.refused(expected, lambda: self.runner.run(command))
        result = self.runner.run(command)
        event(f"{command.kind}: {'nothing to act on' if result is None else 'accepted'}")
        self.apply(command, result)
        return result

    def apply(self, command: cmd.Command, result: object) -> None:  # noqa: PLR0912 - per kind
        """Update the model after ``command`` succeeded with ``result``."""
        ids, model = self.world.members, self.model
        match command:
            case cmd.Record():
                assert isinstance(result, ServiceView)
                assert result.status == "pending"
                weight = self.policy.service_types[command.service_type].weight_permille
                credited = credited_minutes(command.minutes, weight)
                assert result.credited_minutes == credited
                model.services[result.id] = (
                    ids[command.volunteer],
                    credited,
                    result.ended_at,
                    "pending",
                )
            case cmd.Confirm():
                if result is None:
                    return
                assert isinstance(result, ServiceView)
                assert result.status == "confirmed"
                volunteer, credited, ended_at, status = model.services[result.id]
                if status == "pending":
                    earned = self.policy.local_date(ended_at)
                    days = self.policy.lot_expiry_days
                    expires = None if days is None else earned + timedelta(days=days)
                    model.add_lot(volunteer, credited, earned, expires)
                    model.services[result.id] = (volunteer, credited, ended_at, "confirmed")
            case cmd.Redeem():
                model.take(ids[command.member], command.minutes)
            case cmd.Donate():
                model.take(ids[command.member], command.minutes)
                model.pool += command.minutes
            case cmd.Give():
                for part in model.take(ids[command.giver], command.minutes):
                    model.add_lot(
                        ids[command.receiver], part.remaining, part.earned_on, part.expires_on
                    )
            case cmd.Book():
                assert isinstance(result, BookingView)
                model.bookings[result.id] = Booking(
                    ids[command.member], command.minutes, result.expires_at
                )
            case cmd.Complete():
                if result is None:
                    return
                assert isinstance(result, BookingView)
                assert result.status == "completed"
                booking = model.bookings[result.id]
                if booking.state == "booked":
                    model.take(booking.member, booking.minutes)
                    booking.state = "completed"
            case cmd.Cancel():
                if result is None:
                    return
                assert isinstance(result, BookingView)
                assert result.status == "cancelled"
                model.bookings[result.id].state = "cancelled"

    # -- rules ------------------------------------------------------------------------------

    @rule(command=commands(policy=POLICY, max_minutes=150))
    def run_command(self, command: cmd.Command) -> None:
        self.execute(command)

    @rule(record=commands(policy=POLICY, kinds=("record",)))
    def serve(self, record: cmd.Record) -> None:
        """Record a service and confirm it at once: minutes to spend."""
        self.execute(record)
        self.execute(cmd.Confirm(-1))

    @rule(hours=st.integers(1, 48))
    def advance_clock(self, hours: int) -> None:
        self.clock.advance(hours=hours)

    @rule()
    def expire(self) -> None:
        """Expire due lots (the programme administrator, as of now). Minutes live bookings
        hold stay, oldest lots go first."""
        today = self.policy.local_date(self.now)
        expected = 0
        for member, lots in self.model.lots.items():
            free = self.model.free(member, self.now)
            for lot in sorted(lots, key=lambda x: (x.earned_on, x.seq)):
                if lot.expires_on is None or lot.expires_on > today or not lot.remaining:
                    continue
                part = min(lot.remaining, free)
                if part <= 0:
                    break
                lot.remaining -= part
                free -= part
                expected += part
        self.bank.expire(self.world.programme, as_of=self.now, operator=ADMIN)
        self.model.expired += expected

    # -- invariants -------------------------------------------------------------------------

    @invariant()
    def balances_match_model_and_lots(self) -> None:
        bank = self.world.bank
        for name, member in self.world.members.items():
            view = bank.member(member)
            expected = self.model.balance(member)
            assert view.balance_minutes == expected, (name, view.balance_minutes, expected)
            assert bank.lots_total(member) == expected, (name, bank.lots_total(member))
            assert view.held_minutes == self.model.held(member, self.now), name

    @invariant()
    def ledger_sums_to_zero(self) -> None:
        trial = self.world.bank.ledger.trial_balance()
        assert trial.total_minutes == 0
        posted = {line.account: line.posted_minutes for line in trial.lines}
        assert posted.get(self.pool_account, 0) == self.model.pool
        assert posted.get(self.expired_account, 0) == self.model.expired
        pool_lots = self.world.bank.pool_lots_total(self.world.programme, HOME_REGION)
        assert pool_lots == self.model.pool
