"""Time-bank commands as plain data, and a :class:`Runner` that plays them on a world.

A command names members by their name in the :class:`~timebank.testing.world.World`
(``"ann"``), and earlier services and bookings by ``pick``: an index, taken modulo the
number of them recorded so far by the runner (so any integer is usable). The union
:data:`Command` is tagged by ``kind``. :mod:`timebank.testing.strategies` generates them;
you can also write sequences by hand::

    runner = Runner(world)
    runner.run(Record("ann", "dora", "station-a", "care", 90))   # 180 minutes, pending
    runner.run(Confirm(0))                                       # ann: 180 minutes
    runner.run(Redeem("ann", 60))                                # ann: 120 minutes

This module needs neither Hypothesis nor pytest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Literal

from timebank.bank import TimeBank
from timebank.bank.models import BookingView, GiftView, PoolMoveView, RedemptionView, ServiceView
from timebank.testing.world import CONFIRMER, INSTITUTION, RECORDER, REDEEMER, World

__all__ = [
    "CANCEL_REASON",
    "Book",
    "Cancel",
    "Command",
    "Complete",
    "Confirm",
    "Donate",
    "Give",
    "Record",
    "Redeem",
    "Runner",
]

CANCEL_REASON = "cancelled by the test"


@dataclass(frozen=True)
class Record:
    """Record a service of ``minutes`` by ``volunteer`` for ``recipient`` at ``station``,
    ending now: the runner first moves the world's clock forward by ``minutes``, so the
    services of a sequence never overlap. It stays pending until confirmed."""

    volunteer: str
    recipient: str
    station: str
    service_type: str
    minutes: int
    kind: Literal["record"] = field(default="record", init=False, repr=False)


@dataclass(frozen=True)
class Confirm:
    """A confirmer of its station confirms the ``pick``-th recorded service (a replay when
    it is confirmed already). Credits the volunteer."""

    pick: int
    kind: Literal["confirm"] = field(default="confirm", init=False, repr=False)


@dataclass(frozen=True)
class Redeem:
    """``member`` pays ``minutes`` for their own care at the institution."""

    member: str
    minutes: int
    kind: Literal["redeem"] = field(default="redeem", init=False, repr=False)


@dataclass(frozen=True)
class Give:
    """``giver`` gives ``minutes`` to ``receiver`` (allowed between spouses, parents and
    children by the default policy: in the world, ann and bob)."""

    giver: str
    receiver: str
    minutes: int
    kind: Literal["give"] = field(default="give", init=False, repr=False)


@dataclass(frozen=True)
class Donate:
    """``member`` donates ``minutes`` to the pool of their home region."""

    member: str
    minutes: int
    kind: Literal["donate"] = field(default="donate", init=False, repr=False)


@dataclass(frozen=True)
class Book:
    """Book care at the institution ``hours_ahead`` hours from now, holding ``minutes`` of
    ``member``'s until completed, cancelled, or a day after the scheduled time."""

    member: str
    minutes: int
    hours_ahead: int
    kind: Literal["book"] = field(default="book", init=False, repr=False)


@dataclass(frozen=True)
class Complete:
    """Complete the ``pick``-th booking: redeem all its held minutes."""

    pick: int
    kind: Literal["complete"] = field(default="complete", init=False, repr=False)


@dataclass(frozen=True)
class Cancel:
    """Cancel the ``pick``-th booking (reason :data:`CANCEL_REASON`), releasing its hold."""

    pick: int
    kind: Literal["cancel"] = field(default="cancel", init=False, repr=False)


Command = Record | Confirm | Redeem | Give | Donate | Book | Complete | Cancel
Result = ServiceView | RedemptionView | GiftView | PoolMoveView | BookingView


class Runner:
    """Plays commands on ``world`` through ``bank`` (default ``world.bank``; pass your own
    wrapper of the same API to drive your code). Keeps the ids of the services and bookings
    it made, for ``pick``; makes a new idempotency key for every command."""

    def __init__(self, world: World, bank: TimeBank | None = None) -> None:
        self.world = world
        self.bank = world.bank if bank is None else bank
        self.services: list[int] = []
        self.bookings: list[int] = []
        self._keys = 0

    def key(self, kind: str) -> str:
        self._keys += 1
        return f"t-{kind}-{self._keys}"

    def service_id(self, pick: int) -> int | None:
        return self.services[pick % len(self.services)] if self.services else None

    def booking_id(self, pick: int) -> int | None:
        return self.bookings[pick % len(self.bookings)] if self.bookings else None

    def run(self, command: Command) -> Result | None:  # noqa: PLR0911 - one per kind
        """Run one command and return the bank's view of what it made; None when it has
        nothing to act on (a pick before any service or booking exists). A refusal raises
        the bank's :class:`~timebank.TimebankError`."""
        world, bank, programme = self.world, self.bank, self.world.programme
        ids = world.members
        match command:
            case Record():
                world.clock.advance(minutes=command.minutes)
                end = world.clock.now
                service = bank.record_service(
                    self.key("record"),
                    programme=programme,
                    volunteer_id=ids[command.volunteer],
                    recipient_ids=[ids[command.recipient]],
                    site=command.station,
                    service_type=command.service_type,
                    started_at=end - timedelta(minutes=command.minutes),
                    ended_at=end,
                    operator=RECORDER[command.station],
                )
                self.services.append(service.id)
                return service
            case Confirm():
                service_id = self.service_id(command.pick)
                if service_id is None:
                    return None
                site = world.bank.service(service_id).site
                return bank.confirm_service(service_id, operator=CONFIRMER[site])
            case Redeem():
                return bank.redeem(
                    self.key("redeem"),
                    programme=programme,
                    member_id=ids[command.member],
                    site=INSTITUTION,
                    service_type=next(iter(world.policy.service_types)),
                    minutes=command.minutes,
                    operator=REDEEMER,
                )
            case Give():
                return bank.give(
                    self.key("give"),
                    programme=programme,
                    giver_id=ids[command.giver],
                    receiver_id=ids[command.receiver],
                    minutes=command.minutes,
                    operator=self._home_recorder(command.giver),
                )
            case Donate():
                return bank.donate(
                    self.key("donate"),
                    programme=programme,
                    member_id=ids[command.member],
                    minutes=command.minutes,
                    operator=self._home_recorder(command.member),
                )
            case Book():
                booking = bank.book(
                    self.key("book"),
                    programme=programme,
                    member_id=ids[command.member],
                    site=INSTITUTION,
                    service_type=next(iter(world.policy.service_types)),
                    minutes=command.minutes,
                    scheduled_at=world.clock.now + timedelta(hours=command.hours_ahead),
                    operator=REDEEMER,
                )
                self.bookings.append(booking.id)
                return booking
            case Complete():
                booking_id = self.booking_id(command.pick)
                if booking_id is None:
                    return None
                return bank.complete_booking(booking_id, operator=REDEEMER)
            case Cancel():
                booking_id = self.booking_id(command.pick)
                if booking_id is None:
                    return None
                return bank.cancel_booking(booking_id, reason=CANCEL_REASON, operator=REDEEMER)

    def _home_recorder(self, name: str) -> str:
        return RECORDER[self.world.member(name).home_site]
