"""One station's day, and the evening's sweeps: the commands a time bank receives."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import date, datetime, timedelta
from functools import partial
from typing import Any

from timebank.bank.api import TimeBank
from timebank.bank.limits import SERVICES_PER_SWEEP_MAX
from timebank.simulation._world import ADMIN, Member, Station, Tally, World

#: Kinds of deliberately bad commands; each must be refused with a typed error.
BAD_KINDS = (
    "overdraft",
    "negative_minutes",
    "unknown_site",
    "stranger_gift",
    "naive_time",
    "wrong_operator",
    "key_conflict",
    "overlap",
    "ends_before_start",
    "zero_gift",
)


def stochastic_round(value: float, rng: random.Random) -> int:
    """``value`` rounded down or up, up with the chance of its fraction."""
    whole = int(value)
    return whole + (rng.random() < value - whole)


class StationDay:
    """The commands of one station on one day, with their own generator and tally (so
    stations can run in threads)."""

    def __init__(
        self, bank: TimeBank, world: World, station: Station, day: date, rng: random.Random
    ) -> None:
        self.bank, self.world, self.station, self.day, self.rng = bank, world, station, day, rng
        self.rates = world.scenario.rates
        self.tally = Tally()
        self.types = sorted(world.scenario.policy.service_types)
        self.successes = 0
        #: Today's services that were not rejected: (volunteer, start, end, key, recipient).
        self.today: list[tuple[Member, datetime, datetime, str, Member]] = []

    def key(self, kind: str, number: int) -> str:
        return f"{self.world.code}-{kind}-{self.day:%Y%m%d}-{self.station.index}-{number}"

    def run(self) -> Tally:
        self.settle_bookings()
        self.services()
        self.redemptions()
        self.bookings()
        self.gifts()
        self.donations()
        bad = sum(self.rng.random() < self.rates.bad_input_rate for _ in range(self.successes))
        for number in range(bad):
            self.bad_input(number)
        return self.tally

    # --- helpers --------------------------------------------------------------------------

    def keyed(self, kind: str, command: Callable[[], Any]) -> Any:
        """A command with an idempotency key; sometimes sent twice (the replay must answer
        the same object)."""
        done = self.tally.attempt(kind, command)
        if done is None:
            return None
        self.successes += 1
        if self.rng.random() < self.rates.duplicate_rate:
            again = self.tally.attempt("duplicates_replayed", command)
            if again is None or again.id != done.id:
                self.tally.problem(f"{kind} {done.idempotency_key}: the replay answered {again!r}")
        return done

    def available(self, member: Member) -> int:
        return self.bank.ledger.balance(member.account).available_minutes

    def pick(self, population: list[int], rate: float) -> list[Member]:
        count = min(len(population), stochastic_round(rate * len(population), self.rng))
        return [self.world.members[i] for i in self.rng.sample(population, count)]

    # --- the day's work ---------------------------------------------------------------------

    def settle_bookings(self) -> None:
        """Yesterday's bookings: completed (for at most what they hold), cancelled, or left
        to lapse."""
        open_bookings, self.station.bookings = self.station.bookings, []
        complete = self.rates.booking_complete_share
        cancel = complete + self.rates.booking_cancel_share
        for booking_id, held, desk in open_bookings:
            roll = self.rng.random()
            if roll < complete:
                self.tally.attempt(
                    "bookings_completed",
                    partial(
                        self.bank.complete_booking,
                        booking_id,
                        operator=desk,
                        minutes=self.rng.randint(1, held),
                    ),
                )
            elif roll < cancel:
                self.tally.attempt(
                    "bookings_cancelled",
                    partial(
                        self.bank.cancel_booking,
                        booking_id,
                        reason="no longer needed",
                        operator=desk,
                    ),
                )
            else:
                self.tally.counts["bookings_lapsed"] += 1

    def services(self) -> None:
        station, rng, members = self.station, self.rng, self.world.members
        if not station.receivers:
            return
        reject = self.rates.reject_share
        confirm = reject + self.rates.confirm_share
        for number, volunteer in enumerate(
            self.pick(station.volunteers, self.rates.services_per_volunteer)
        ):
            recipient = members[rng.choice(station.receivers)]
            if recipient.index == volunteer.index:
                continue
            start = self.world.moment(self.day, 8) + timedelta(minutes=15 * rng.randrange(29))
            end = start + timedelta(minutes=rng.randrange(30, 151, 5))
            key = self.key("s", number)
            view = self.keyed(
                "services_recorded",
                partial(
                    self.bank.record_service,
                    key,
                    programme=self.world.code,
                    volunteer_id=volunteer.id,
                    recipient_ids=[recipient.id],
                    site=station.code,
                    service_type=rng.choice(self.types),
                    started_at=start,
                    ended_at=end,
                    operator=station.desk,
                    rating=rng.choice((4, 5, 5, None)),
                ),
            )
            if view is None:
                continue
            roll = rng.random()
            if roll < reject:
                self.tally.attempt(
                    "services_rejected",
                    partial(
                        self.bank.reject_service,
                        view.id,
                        reason="not confirmed by the family",
                        operator=station.desk,
                    ),
                )
                continue
            self.today.append((volunteer, start, end, key, recipient))
            if roll < confirm:
                by_recipient = recipient.id if rng.random() < 0.5 else None
                self.tally.attempt(
                    "services_confirmed",
                    partial(
                        self.bank.confirm_service,
                        view.id,
                        operator=station.desk,
                        recipient_id=by_recipient,
                    ),
                )

    def redemptions(self) -> None:
        rng, members = self.rng, self.world.members
        for number, member in enumerate(
            self.pick(self.station.elders, self.rates.redemptions_per_elder)
        ):
            balance = self.available(member)
            if balance < 30:
                continue
            minutes = min(balance, rng.choice((60, 90, 120, 180)))
            recipient = None
            if member.spouse >= 0 and members[member.spouse].age >= 60 and rng.random() < 0.2:
                recipient = members[member.spouse].id
            if member.acts_as == "recipient" or rng.random() < 0.4:
                site, desk = rng.choice(self.station.institutions)
            else:
                site, desk = self.station.code, self.station.desk
            self.keyed(
                "redemptions",
                partial(
                    self.bank.redeem,
                    self.key("r", number),
                    programme=self.world.code,
                    member_id=member.id,
                    site=site,
                    service_type=rng.choice(self.types),
                    minutes=minutes,
                    operator=desk,
                    recipient_id=recipient,
                ),
            )

    def bookings(self) -> None:
        rng = self.rng
        tomorrow = self.day + timedelta(days=1)
        for number, member in enumerate(
            self.pick(self.station.elders, self.rates.bookings_per_elder)
        ):
            balance = self.available(member)
            if balance < 60:
                continue
            site, desk = rng.choice(self.station.institutions)
            view = self.keyed(
                "bookings",
                partial(
                    self.bank.book,
                    self.key("b", number),
                    programme=self.world.code,
                    member_id=member.id,
                    site=site,
                    service_type=rng.choice(self.types),
                    minutes=min(balance, rng.choice((60, 90, 120))),
                    scheduled_at=self.world.moment(tomorrow, 10),
                    expires_at=self.world.moment(tomorrow, 22),
                    operator=desk,
                ),
            )
            if view is not None:
                self.station.bookings.append((view.id, view.minutes, desk))

    def gifts(self) -> None:
        rng, members, station = self.rng, self.world.members, self.station
        rate = self.rates.gifts_per_member * len(station.members) / max(1, len(station.givers))
        for number, giver in enumerate(self.pick(station.givers, min(1.0, rate))):
            to_parent = giver.parent >= 0 and (giver.spouse < 0 or rng.random() < 0.7)
            receiver = members[giver.parent if to_parent else giver.spouse]
            balance = self.available(giver)
            if balance < 60:
                continue
            self.keyed(
                "gifts",
                partial(
                    self.bank.give,
                    self.key("g", number),
                    programme=self.world.code,
                    giver_id=giver.id,
                    receiver_id=receiver.id,
                    minutes=min(balance // 2, rng.choice((60, 120, 300))),
                    operator=station.desk,
                ),
            )

    def donations(self) -> None:
        station = self.station
        rate = (
            self.rates.donations_per_member * len(station.members) / max(1, len(station.volunteers))
        )
        for number, member in enumerate(self.pick(station.volunteers, min(1.0, rate))):
            if self.available(member) < 120:
                continue
            self.keyed(
                "donations",
                partial(
                    self.bank.donate,
                    self.key("d", number),
                    programme=self.world.code,
                    member_id=member.id,
                    minutes=self.rng.choice((30, 60, 90)),
                    operator=station.desk,
                ),
            )

    # --- bad input ----------------------------------------------------------------------------

    def bad_input(self, number: int) -> None:
        """A command that must be refused; if the library accepts it, that is a problem."""
        kind = self.rng.choice(BAD_KINDS)
        command = self.bad_command(kind, self.key("x", number))
        self.tally.counts["bad_inputs"] += 1
        if self.tally.attempt(f"bad_{kind}", command) is not None:
            self.tally.counts["bad_inputs_accepted"] += 1
            self.tally.problem(
                f"bad input {kind!r} on {self.day} at {self.station.code} was accepted"
            )

    def bad_command(self, kind: str, key: str) -> Callable[[], Any]:  # noqa: PLR0911
        rng, bank, station, members = self.rng, self.bank, self.station, self.world.members
        member = members[rng.choice(station.members)]
        code, site_type = self.world.code, rng.choice(self.types)
        redeem = partial(
            bank.redeem,
            key,
            programme=code,
            member_id=member.id,
            service_type=site_type,
            operator=station.desk,
        )
        record = partial(
            bank.record_service, key, programme=code, site=station.code, service_type=site_type
        )
        start = self.world.moment(self.day, 7)
        if kind == "overdraft":
            return partial(
                redeem, site=station.code, minutes=self.available(member) + rng.randint(1, 600)
            )
        if kind == "unknown_site":
            return partial(redeem, site=f"{code}-nowhere", minutes=30)
        if kind == "stranger_gift":
            stranger = members[rng.choice(station.members)]
            if stranger.index in (member.index, member.spouse, member.parent) or (
                stranger.parent == member.index
            ):
                return partial(redeem, site=station.code, minutes=0)
            return partial(
                bank.give,
                key,
                programme=code,
                giver_id=member.id,
                receiver_id=stranger.id,
                minutes=30,
                operator=station.desk,
            )
        if kind in ("naive_time", "wrong_operator", "ends_before_start") and station.receivers:
            volunteer, other = member, members[rng.choice(station.receivers)]
            naive = kind == "naive_time"
            begin = start.replace(tzinfo=None) if naive else start
            finish = begin + timedelta(minutes=-30 if kind == "ends_before_start" else 30)
            operator = station.desk
            if kind == "wrong_operator":
                others = [s for s in self.world.stations if s.index != station.index]
                operator = rng.choice(others).desk if others else f"{code}-nobody"
            return partial(
                record,
                volunteer_id=volunteer.id,
                recipient_ids=[other.id],
                started_at=begin,
                ended_at=finish,
                operator=operator,
            )
        if kind in ("key_conflict", "overlap") and self.today:
            volunteer, begin, finish, old_key, other = rng.choice(self.today)
            if kind == "key_conflict":
                return partial(
                    bank.record_service,
                    old_key,
                    programme=code,
                    site=station.code,
                    service_type=site_type,
                    volunteer_id=volunteer.id,
                    recipient_ids=[other.id],
                    started_at=begin,
                    ended_at=finish + timedelta(minutes=5),
                    operator=station.desk,
                    note="changed",
                )
            return partial(
                record,
                volunteer_id=volunteer.id,
                recipient_ids=[other.id],
                started_at=begin + timedelta(minutes=10),
                ended_at=finish + timedelta(minutes=10),
                operator=station.desk,
            )
        if kind == "zero_gift":
            return partial(
                bank.give,
                key,
                programme=code,
                giver_id=member.id,
                receiver_id=member.id,
                minutes=0,
                operator=station.desk,
            )
        return partial(redeem, site=station.code, minutes=-rng.randint(1, 60))


def evening(
    bank: TimeBank, world: World, day: date, *, rng: random.Random, now: Callable[[], datetime]
) -> Tally:
    """20:00: the sweep confirms services due, pools grant to elders; every few days at
    21:00 (the caller moves the clock) the expiry sweeps run."""
    tally, code = Tally(), world.code
    # confirm_due confirms at most SERVICES_PER_SWEEP_MAX a call: a province's scheduler
    # calls it again until a call confirms fewer.
    while True:
        confirmed = tally.attempt(
            "confirm_due", partial(bank.confirm_due, code, as_of=now(), operator=ADMIN)
        )
        tally.counts["services_auto_confirmed"] += confirmed or 0
        if (confirmed or 0) < SERVICES_PER_SWEEP_MAX:
            break
    for township in world.townships:
        if rng.random() >= world.scenario.rates.grants_per_pool:
            continue
        left = bank.pool_lots_total(code, township)
        for candidate in bank.grant_candidates(code, township, limit=3):
            minutes = min(left, 120)
            if minutes < 30:
                break
            key = f"{code}-gr-{day:%Y%m%d}-{township}-{world.by_id[candidate.member_id]}"
            if tally.attempt(
                "grants",
                partial(
                    bank.grant,
                    key,
                    programme=code,
                    region=township,
                    member_id=candidate.member_id,
                    minutes=minutes,
                    operator=ADMIN,
                ),
            ):
                left -= minutes
    return tally


def sweeps(bank: TimeBank, world: World, now: Callable[[], datetime]) -> Tally:
    tally = Tally()
    expired = tally.attempt(
        "expiry_sweeps", partial(bank.expire, world.code, as_of=now(), operator=ADMIN)
    )
    tally.counts["lots_expired"] += expired or 0
    tally.attempt("booking_sweeps", partial(bank.expire_bookings, world.code, operator=ADMIN))
    return tally
