"""Gifts (the time bank, part 2): relations from the policy, the yearly limit, lots that keep
their origin and expiry, permissions, idempotent retries; every refusal checked to change
nothing. On SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from tests.bankworld import POLICY, PROGRAMME, World, fresh, refused
from tests.clocks import Clock
from tests.dbdump import dump
from timebank import (
    BankObjectNotFoundError,
    IdempotencyConflictError,
    InvalidAmountError,
    InvalidInputError,
    LimitExceededError,
    MemberStateError,
    PermissionDeniedError,
    PolicyViolationError,
)
from timebank.bank import GiftView


@pytest.fixture
def world(db_url: str) -> Iterator[World]:
    w = fresh(db_url, Clock())
    m = w.members
    w.bank.relate(m["wang"], m["grandma"], "child", operator="rec-sw")  # grandma: his mother
    w.bank.relate(m["wang"], m["li"], "friend", operator="rec-sw")
    for key, hours, minutes in (("s1", 30, 60), ("s2", 3, 90)):
        service = w.serve(key, "wang", "zhao", minutes=minutes, ago=timedelta(hours=hours))
        w.bank.confirm_service(service, operator="conf-sw")
    try:
        yield w
    finally:
        w.bank.dispose()


def give(world: World, key: str, to: str, minutes: object, **kw: object) -> GiftView:
    fields: dict[str, object] = {
        "programme": PROGRAMME,
        "giver_id": world.members["wang"],
        "receiver_id": world.members[to],
        "minutes": minutes,
        "operator": "rec-sw",
    }
    fields.update(kw)
    return world.bank.give(key, **fields)  # type: ignore[arg-type]


def test_a_gift_to_a_mother_moves_lots_with_their_origin(world: World) -> None:
    wang, grandma = world.members["wang"], world.members["grandma"]
    older, newer = world.bank.lots(wang)
    gift = give(world, "g1", "grandma", 100)
    assert gift.lots == ((older.id, 60), (newer.id, 40))
    assert world.balance("wang") == 50 == world.bank.lots_total(wang)
    assert world.balance("grandma") == 100 == world.bank.lots_total(grandma)
    received = world.bank.lots(grandma)
    assert [(lot.minutes, lot.origin_site, lot.earned_on, lot.expires_on) for lot in received] == [
        (60, older.origin_site, older.earned_on, older.expires_on),
        (40, newer.origin_site, newer.earned_on, newer.expires_on),
    ]
    entry = world.bank.ledger.entry(gift.entry_id)
    assert (entry.code, entry.operator) == ("gift", "rec-sw")


def test_giving_again_is_a_replay_and_other_content_a_conflict(world: World) -> None:
    first = give(world, "g1", "grandma", 30)
    before = dump(world.engine)
    assert give(world, "g1", "grandma", 30) == first
    assert dump(world.engine) == before
    err = refused(world, IdempotencyConflictError, lambda: give(world, "g1", "grandma", 31))
    assert err.fields == ("minutes",)


def test_direct_relatives_only_by_default(world: World) -> None:
    refused(world, PolicyViolationError, lambda: give(world, "g1", "li", 10),
            match="is their friend")
    refused(world, PolicyViolationError, lambda: give(world, "g1", "zhao", 10),
            match="no relation")
    shanghai = POLICY.model_copy(update={"gift_relations": frozenset(
        {"spouse", "parent", "child", "sibling", "other_relative", "friend"})})
    world.bank.set_policy(PROGRAMME, shanghai, effective_from=world.clock.now, operator="admin")
    world.clock.advance(minutes=1)
    assert give(world, "g1", "li", 10).minutes == 10


def test_the_yearly_limit(world: World) -> None:
    limited = POLICY.model_copy(update={"gift_yearly_limit_minutes": 100})
    world.bank.set_policy(PROGRAMME, limited, effective_from=world.clock.now, operator="admin")
    world.clock.advance(minutes=1)
    give(world, "g1", "grandma", 70)
    refused(world, PolicyViolationError, lambda: give(world, "g2", "grandma", 31),
            match="30 remain, 31 asked")
    give(world, "g2", "grandma", 30)
    world.clock.now = world.clock.now.replace(year=world.clock.now.year + 1, month=1, day=2)
    give(world, "g3", "grandma", 10)  # a new year, a new allowance


def test_gift_refusals(world: World) -> None:
    refused(world, LimitExceededError, lambda: give(world, "g1", "grandma", 151))
    refused(world, InvalidInputError, lambda: give(world, "g1", "wang", 10))
    refused(world, InvalidAmountError, lambda: give(world, "g1", "grandma", 0))
    refused(world, InvalidAmountError, lambda: give(world, "g1", "grandma", 2.0))
    refused(world, PermissionDeniedError, lambda: give(world, "g1", "grandma", 10,
                                                       operator="rec-anci"))
    refused(world, BankObjectNotFoundError, lambda: world.bank.give(
        "g1", programme=PROGRAMME, giver_id=world.members["wang"], receiver_id=10_000,
        minutes=10, operator="rec-sw"))
    world.bank.set_member_status(world.members["grandma"], "deceased", reason="passed away",
                                 operator="gy-admin")
    refused(world, MemberStateError, lambda: give(world, "g1", "grandma", 10))


def test_a_gift_dated_in_the_past(world: World) -> None:
    """``occurred_at``: the policy of that day judges the gift and its year's limit counts
    it; today's storage cap applies; never later than now, never before this calendar
    year; a replay with another date is a conflict."""
    clock = world.clock
    capped = POLICY.model_copy(update={"storage_cap_minutes": 40, "gift_relations":
                                       frozenset({"child", "parent", "friend"})})
    world.bank.set_policy(PROGRAMME, capped, effective_from=clock.now, operator="admin")
    clock.advance(hours=1)
    yesterday = clock.now - timedelta(days=1)  # under version 1: no cap, no friends
    refused(world, LimitExceededError, lambda: give(world, "g1", "grandma", 41,
                                                    occurred_at=yesterday),
            match="storage cap")  # today's cap
    gift = give(world, "g1", "grandma", 40, occurred_at=yesterday)
    assert gift.occurred_at == yesterday
    # The same gift again is a replay; with another date, a conflict naming it.
    assert give(world, "g1", "grandma", 40, occurred_at=yesterday).id == gift.id
    assert give(world, "g1", "grandma", 40).id == gift.id  # no date given: not compared
    refused(world, IdempotencyConflictError,
            lambda: give(world, "g1", "grandma", 40, occurred_at=yesterday - timedelta(hours=1)),
            match="occurred_at")
    # Yesterday's policy let wang give to relatives only; today's to his friend li too.
    refused(world, PolicyViolationError, lambda: give(world, "g2", "li", 1,
                                                      occurred_at=yesterday))
    give(world, "g2", "li", 1)
    refused(world, InvalidInputError, lambda: give(world, "g3", "li", 1,
                                                   occurred_at=clock.now + timedelta(minutes=1)),
            match="when it was given")
    last_year = clock.now.replace(year=clock.now.year - 1, month=12, day=30)
    refused(world, InvalidInputError, lambda: give(world, "g3", "li", 1, occurred_at=last_year),
            match="before this calendar year is brought in by a history import")
    refused(world, InvalidInputError, lambda: give(world, "g3", "li", 1,
                                                   occurred_at=yesterday.replace(tzinfo=None)),
            match="timezone-aware")
