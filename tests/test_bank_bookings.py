"""Bookings (the time bank, part 2): a hold on the member's minutes; completed for at most
the held minutes, cancelled, or left to expire; held minutes are spent once only; idempotent
retries; every refusal checked to change nothing. On SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta

import pytest

from tests.bankworld import POLICY, PROGRAMME, World, fresh, race, refused
from tests.clocks import Clock
from tests.dbdump import dump
from timebank import (
    ConcurrencyError,
    IdempotencyConflictError,
    InvalidAmountError,
    InvalidInputError,
    LimitExceededError,
    MemberStateError,
    PermissionDeniedError,
    PolicyViolationError,
    ServiceStateError,
)
from timebank.bank import BookingView


@pytest.fixture
def world(db_url: str) -> Iterator[World]:
    w = fresh(db_url, Clock())
    for key, hours, minutes in (("s1", 30, 60), ("s2", 3, 90)):
        service = w.serve(key, "wang", "zhao", minutes=minutes, ago=timedelta(hours=hours))
        w.bank.confirm_service(service, operator="conf-sw")
    try:
        yield w
    finally:
        w.bank.dispose()


def book(world: World, key: str, minutes: object, *, name: str = "wang",
         **kw: object) -> BookingView:
    fields: dict[str, object] = {
        "programme": PROGRAMME,
        "member_id": world.members[name],
        "site": "sunrise",
        "service_type": "body_care",
        "minutes": minutes,
        "scheduled_at": world.clock.now + timedelta(days=2),
        "operator": "sunrise-op",
    }
    fields.update(kw)
    return world.bank.book(key, **fields)  # type: ignore[arg-type]


def test_a_booking_holds_minutes_and_completes_for_fewer(world: World) -> None:
    wang = world.members["wang"]
    older, newer = world.bank.lots(wang)
    booking = book(world, "b1", 100)
    assert (booking.status, booking.minutes, booking.redemption_id) == ("booked", 100, None)
    assert booking.expires_at == booking.scheduled_at + timedelta(days=1)
    member = world.bank.member(wang)
    assert (member.balance_minutes, member.held_minutes) == (150, 100)
    world.clock.advance(days=2, hours=2)
    done = world.bank.complete_booking(booking.id, operator="sunrise-op", minutes=70)
    assert (done.status, done.redeemed_minutes) == ("completed", 70)
    assert done.redemption_id is not None
    member = world.bank.member(wang)
    assert (member.balance_minutes, member.held_minutes) == (80, 0)
    assert world.bank.lots_total(wang) == 80
    redemption = world.bank.redemption(done.redemption_id)
    assert redemption.lots == ((older.id, 60), (newer.id, 10))
    assert redemption.idempotency_key == "booking:b1"
    assert world.bank.ledger.balance("langfang:sunrise:redeemed").posted_minutes == 70


def test_held_minutes_are_spent_once(world: World) -> None:
    book(world, "b1", 100)
    err = refused(world, LimitExceededError, lambda: book(world, "b2", 51))
    assert (err.available_minutes, err.requested_minutes) == (50, 51)
    err = refused(world, LimitExceededError, lambda: world.bank.redeem(
        "r1", programme=PROGRAMME, member_id=world.members["wang"], site="sunrise",
        service_type="body_care", minutes=51, operator="sunrise-op"))
    assert err.available_minutes == 50
    world.bank.relate(world.members["wang"], world.members["grandma"], "child",
                      operator="rec-sw")
    refused(world, LimitExceededError, lambda: world.bank.give(
        "g1", programme=PROGRAMME, giver_id=world.members["wang"],
        receiver_id=world.members["grandma"], minutes=51, operator="rec-sw"))
    refused(world, LimitExceededError, lambda: world.bank.donate(
        "d1", programme=PROGRAMME, member_id=world.members["wang"], minutes=51,
        operator="rec-sw"))
    assert book(world, "b2", 50).status == "booked"


def test_cancelling_releases_the_minutes(world: World) -> None:
    booking = book(world, "b1", 150)
    cancelled = world.bank.cancel_booking(booking.id, reason="moved away", operator="sunrise-op")
    assert cancelled.status == "cancelled"
    assert world.bank.member(world.members["wang"]).held_minutes == 0
    before = dump(world.engine)
    world.bank.cancel_booking(booking.id, reason="moved away", operator="sunrise-op")
    assert dump(world.engine) == before  # a replay
    refused(world, ServiceStateError, lambda: world.bank.complete_booking(
        booking.id, operator="sunrise-op"))
    assert book(world, "b2", 150).status == "booked"


def test_a_booking_left_alone_expires(world: World) -> None:
    booking = book(world, "b1", 150, expires_at=world.clock.now + timedelta(days=3))
    world.clock.advance(days=3)
    assert world.bank.booking(booking.id).status == "expired"
    assert world.bank.member(world.members["wang"]).held_minutes == 0
    refused(world, ServiceStateError, lambda: world.bank.complete_booking(
        booking.id, operator="sunrise-op"))
    refused(world, ServiceStateError, lambda: world.bank.cancel_booking(
        booking.id, reason="late", operator="sunrise-op"))
    refused(world, PermissionDeniedError, lambda: world.bank.expire_bookings(
        PROGRAMME, operator="rec-sw"))
    assert world.bank.expire_bookings(PROGRAMME, operator="gy-admin") == 1
    assert world.bank.expire_bookings(PROGRAMME, operator="gy-admin") == 0
    assert world.bank.booking(booking.id).status == "expired"
    assert book(world, "b2", 150).status == "booked"


def test_completing_again_is_a_replay_and_more_than_held_refused(world: World) -> None:
    booking = book(world, "b1", 100)
    refused(world, InvalidAmountError, lambda: world.bank.complete_booking(
        booking.id, operator="sunrise-op", minutes=101))
    refused(world, InvalidInputError, lambda: world.bank.complete_booking(
        booking.id, operator="sunrise-op", occurred_at=world.clock.now + timedelta(hours=1)))
    done = world.bank.complete_booking(booking.id, operator="sunrise-op")
    before = dump(world.engine)
    assert world.bank.complete_booking(booking.id, operator="sunrise-op") == done
    assert dump(world.engine) == before
    refused(world, IdempotencyConflictError, lambda: world.bank.complete_booking(
        booking.id, operator="sunrise-op", minutes=99))
    refused(world, ServiceStateError, lambda: world.bank.cancel_booking(
        booking.id, reason="too late", operator="sunrise-op"))


def test_booking_again_is_a_replay_and_other_content_a_conflict(world: World) -> None:
    first = book(world, "b1", 30)
    before = dump(world.engine)
    assert book(world, "b1", 30, scheduled_at=first.scheduled_at) == first
    assert dump(world.engine) == before
    err = refused(world, IdempotencyConflictError, lambda: book(
        world, "b1", 31, scheduled_at=first.scheduled_at))
    assert err.fields == ("minutes",)
    err = refused(world, IdempotencyConflictError, lambda: book(
        world, "b1", 30, scheduled_at=first.scheduled_at,
        expires_at=first.expires_at + timedelta(days=30)))
    assert err.fields == ("expires_at",)


def test_booking_eligibility_is_the_redemptions(world: World) -> None:
    world.register("young", born=date(1995, 1, 1))
    service = world.serve("s9", "young", "zhao", minutes=60)
    world.bank.confirm_service(service, operator="conf-sw")
    refused(world, PolicyViolationError, lambda: book(world, "b1", 10, name="young"),
            match="care is redeemed from age 60")
    refused(world, PolicyViolationError, lambda: book(
        world, "b1", 10, recipient_id=world.members["li"]))
    refused(world, PolicyViolationError, lambda: book(world, "b1", 10, service_type="golf"))
    world.bank.set_member_status(world.members["wang"], "frozen", reason="audit",
                                 operator="gy-admin")
    refused(world, MemberStateError, lambda: book(world, "b1", 10))


def test_bookings_refuse_bad_times_and_strangers(world: World) -> None:
    refused(world, InvalidInputError, lambda: book(
        world, "b1", 10, expires_at=world.clock.now - timedelta(minutes=1)))
    refused(world, InvalidInputError, lambda: book(
        world, "b1", 10, expires_at=world.clock.now + timedelta(days=1)))  # before scheduled
    refused(world, InvalidInputError, lambda: book(
        world, "b1", 10, scheduled_at=world.clock.now.replace(tzinfo=None)))
    refused(world, PermissionDeniedError, lambda: book(world, "b1", 10, operator="rec-sw"))
    booking = book(world, "b1", 10)
    refused(world, PermissionDeniedError, lambda: world.bank.complete_booking(
        booking.id, operator="rec-sw"))
    refused(world, PermissionDeniedError, lambda: world.bank.cancel_booking(
        booking.id, reason="no", operator="audit"))
    refused(world, InvalidInputError, lambda: world.bank.redeem(
        "booking:b1", programme=PROGRAMME, member_id=world.members["wang"], site="sunrise",
        service_type="body_care", minutes=5, operator="sunrise-op"))


def test_expiry_of_lots_leaves_held_minutes_until_the_booking_resolves(world: World) -> None:
    policy = POLICY.model_copy(update={"lot_expiry_days": 10})
    world.bank.set_policy(PROGRAMME, policy, effective_from=world.clock.now, operator="admin")
    world.clock.advance(hours=4)  # the service starts under the expiring policy
    service = world.serve("s3", "li", "zhao", minutes=100, ago=timedelta(hours=3))
    world.bank.confirm_service(service, operator="conf-sw")
    li = world.members["li"]
    booking = book(world, "b1", 70, name="li",
                   scheduled_at=world.clock.now + timedelta(days=10),
                   expires_at=world.clock.now + timedelta(days=12))
    world.clock.advance(days=11)
    assert world.bank.expire(PROGRAMME, as_of=world.clock.now, operator="gy-admin") == 0
    assert world.bank.member(li).balance_minutes == 70 == world.bank.lots_total(li)
    assert world.bank.ledger.balance("langfang:expired").posted_minutes == 30
    before = dump(world.engine)
    assert world.bank.expire(PROGRAMME, as_of=world.clock.now, operator="gy-admin") == 0
    assert dump(world.engine) == before  # nothing new while the booking holds the rest
    done = world.bank.complete_booking(booking.id, operator="sunrise-op", minutes=50)
    assert done.redeemed_minutes == 50
    assert world.bank.expire(PROGRAMME, as_of=world.clock.now, operator="gy-admin") == 1
    assert world.bank.member(li).balance_minutes == 0 == world.bank.lots_total(li)
    assert world.bank.ledger.balance("langfang:expired").posted_minutes == 50


def test_concurrent_bookings_never_hold_more_than_the_balance(world: World) -> None:
    outcomes = race(4, lambda n: book(world, f"b{n}", 50).id,
                    (LimitExceededError, ConcurrencyError))
    assert sum(1 for o in outcomes if isinstance(o, LimitExceededError)) >= 1, outcomes
    booked = [o for o in outcomes if isinstance(o, int)]
    member = world.bank.member(world.members["wang"])
    assert member.held_minutes == 50 * len(booked) <= member.balance_minutes == 150


def test_a_booking_for_a_spouse_who_dies_is_released(world: World) -> None:
    wang, li = world.members["wang"], world.members["li"]
    world.bank.relate(wang, li, "spouse", operator="rec-sw")
    policy = POLICY.model_copy(update={"spouse_redeems": True})
    world.bank.set_policy(PROGRAMME, policy, effective_from=world.clock.now, operator="admin")
    world.clock.advance(minutes=1)
    booking = book(world, "b1", 60, recipient_id=li)
    world.bank.set_member_status(li, "deceased", reason="passed away", operator="gy-admin")
    assert world.bank.booking(booking.id).status == "cancelled"
    assert world.bank.member(wang).held_minutes == 0
    refused(world, ServiceStateError, lambda: world.bank.complete_booking(
        booking.id, operator="sunrise-op"))
