"""Expiry of lots (the time bank, part 2): due lots give their minutes up to the programme's
expired account or a region's pool; a second run posts nothing; frozen members wait;
permissions; every refusal checked to change nothing. On SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from tests.bankworld import POLICY, PROGRAMME, World, fresh, refused
from tests.clocks import Clock
from tests.dbdump import dump
from timebank import InvalidInputError, PermissionDeniedError


@pytest.fixture
def world(db_url: str) -> Iterator[World]:
    w = fresh(db_url, Clock())
    try:
        yield w
    finally:
        w.bank.dispose()


def expiring(world: World, days: int = 30, **update: object) -> None:
    policy = POLICY.model_copy(update={"lot_expiry_days": days, **update})
    world.bank.set_policy(PROGRAMME, policy, effective_from=world.clock.now, operator="admin")
    world.clock.advance(hours=3)


def earn(world: World, key: str, name: str, minutes: int) -> None:
    service = world.serve(key, name, "grandma", minutes=minutes, ago=timedelta(hours=2))
    world.bank.confirm_service(service, operator="conf-sw")


def test_due_lots_expire_once(world: World) -> None:
    expiring(world)
    earn(world, "s1", "wang", 60)
    earn(world, "s3", "li", 45)
    world.clock.advance(days=10)
    earn(world, "s2", "wang", 30)
    wang = world.members["wang"]
    first = world.bank.lots(wang)[0]
    assert first.expires_on == first.earned_on + timedelta(days=30)
    world.clock.advance(days=19)  # day 29 of the first lot: nothing due yet
    assert world.bank.expire(PROGRAMME, as_of=world.clock.now, operator="gy-admin") == 0
    world.clock.advance(days=2)
    assert world.bank.expire(PROGRAMME, as_of=world.clock.now, operator="gy-admin") == 2
    assert world.balance("wang") == 30 == world.bank.lots_total(wang)
    assert world.balance("li") == 0
    expired = world.bank.ledger.balance("langfang:expired").posted_minutes
    assert expired == 105
    before = dump(world.engine)
    assert world.bank.expire(PROGRAMME, as_of=world.clock.now, operator="gy-admin") == 0
    assert dump(world.engine) == before  # running it twice posts nothing new


def test_expired_minutes_may_go_to_the_pool(world: World) -> None:
    expiring(world, days=1, expired_to="pool")
    earn(world, "s1", "wang", 60)
    world.clock.advance(days=2)
    assert world.bank.expire(PROGRAMME, as_of=world.clock.now, operator="admin") == 1
    assert world.bank.ledger.balance("langfang:xinyuan:pool").posted_minutes == 60
    assert world.bank.pool_lots_total(PROGRAMME, "xinyuan") == 60  # the pool keeps the lot
    assert world.bank.ledger.balance("langfang:expired").posted_minutes == 0
    # A pool's lots never expire: the next sweep finds nothing.
    world.clock.advance(days=5)
    assert world.bank.expire(PROGRAMME, as_of=world.clock.now, operator="admin") == 0


def test_a_frozen_members_lots_wait(world: World) -> None:
    expiring(world, days=1)
    earn(world, "s1", "wang", 60)
    wang = world.members["wang"]
    world.bank.set_member_status(wang, "frozen", reason="audit", operator="gy-admin")
    world.clock.advance(days=2)
    assert world.bank.expire(PROGRAMME, as_of=world.clock.now, operator="gy-admin") == 0
    world.bank.set_member_status(wang, "active", reason="cleared", operator="gy-admin")
    assert world.bank.expire(PROGRAMME, as_of=world.clock.now, operator="gy-admin") == 1


def test_expiry_refusals(world: World) -> None:
    expiring(world, days=1)
    earn(world, "s1", "wang", 60)
    world.clock.advance(days=2)
    for operator in ("rec-sw", "conf-sw", "audit"):
        refused(world, PermissionDeniedError, lambda op=operator: world.bank.expire(  # type: ignore[misc]
            PROGRAMME, as_of=world.clock.now, operator=op))
    refused(world, InvalidInputError, lambda: world.bank.expire(
        PROGRAMME, as_of=world.clock.now + timedelta(seconds=1), operator="gy-admin"))
    # Another county's administrator sees none of Xinyuan's members.
    world.bank.add_operator(PROGRAMME, "anci-admin", "Anci administrator",
                            roles=["administrator"], region="anci", by="admin")
    assert world.bank.expire(PROGRAMME, as_of=world.clock.now, operator="anci-admin") == 0
    assert world.balance("wang") == 60


def test_sweeps_never_repeat_an_entry_key(world: World) -> None:
    """A booking holds part of a member's due lots; a gift then brings an older, due lot
    between them: every sweep still posts under a key of its own."""
    expiring(world, days=30)
    sun = world.register("sun", home_site="anci-sw", operator="rec-anci")
    wang = world.members["wang"]
    earn(world, "a", "wang", 100)
    world.clock.advance(days=2)
    service = world.serve("c", "sun", "zhao", minutes=50, site="anci-sw", operator="rec-anci")
    world.bank.confirm_service(service, operator="rec-anci")
    world.clock.advance(days=2)
    earn(world, "b", "wang", 50)
    world.clock.advance(days=40)
    world.bank.relate(sun, wang, "parent", operator="rec-anci")
    world.bank.book("bk1", programme=PROGRAMME, member_id=wang, site="sunrise",
                    service_type="shopping", minutes=100,
                    scheduled_at=world.clock.now + timedelta(days=3), operator="sunrise-op")
    as_of = world.clock.now
    world.bank.expire(PROGRAMME, as_of=as_of, operator="gy-admin")
    assert world.balance("wang") == 100  # the booking's 100 wait
    world.bank.give("g1", programme=PROGRAMME, giver_id=sun, receiver_id=wang, minutes=50,
                    operator="rec-anci")
    world.bank.expire(PROGRAMME, as_of=as_of, operator="gy-admin")
    assert world.balance("wang") == 100 == world.bank.lots_total(wang)
    assert world.bank.ledger.balance("langfang:expired").posted_minutes == 100
