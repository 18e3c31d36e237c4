"""Region pools (the time bank, part 2): donations, grants to elders the policy gives
priority, the storage cap (refused or diverted to the pool), groups that may only donate;
pools keep their minutes as lots; idempotent retries; every refusal checked to change
nothing. On SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta

import pytest

from tests.bankworld import POLICY, PROGRAMME, World, fresh, race, refused
from tests.clocks import Clock
from tests.dbdump import dump
from timebank import (
    BankObjectNotFoundError,
    CapExceededError,
    ConcurrencyError,
    IdempotencyConflictError,
    InvalidInputError,
    LimitExceededError,
    MemberStateError,
    PermissionDeniedError,
    PolicyViolationError,
)
from timebank.bank import GrantRule, Policy, PoolMoveView


@pytest.fixture
def world(db_url: str) -> Iterator[World]:
    w = fresh(db_url, Clock())
    try:
        yield w
    finally:
        w.bank.dispose()


def use(world: World, **update: object) -> Policy:
    policy = Policy.model_validate({**POLICY.model_dump(), **update})
    world.bank.set_policy(PROGRAMME, policy, effective_from=world.clock.now, operator="admin")
    world.clock.advance(hours=3)
    return policy


def earn(world: World, key: str, name: str, minutes: int, *,
         ago_hours: float | None = None) -> int:
    hours = minutes / 60 + 1 if ago_hours is None else ago_hours
    service = world.serve(key, name, "zhao" if name != "zhao" else "li", minutes=minutes,
                          ago=timedelta(hours=hours))
    return world.bank.confirm_service(service, operator="conf-sw").id


def donate(world: World, key: str, name: str, minutes: object, **kw: object) -> PoolMoveView:
    fields: dict[str, object] = {
        "programme": PROGRAMME,
        "member_id": world.members[name],
        "minutes": minutes,
        "operator": "rec-sw",
    }
    fields.update(kw)
    return world.bank.donate(key, **fields)  # type: ignore[arg-type]


def grant(world: World, key: str, name: str, minutes: object, **kw: object) -> PoolMoveView:
    fields: dict[str, object] = {
        "programme": PROGRAMME,
        "region": "xinyuan",
        "member_id": world.members[name],
        "minutes": minutes,
        "operator": "gy-admin",
    }
    fields.update(kw)
    return world.bank.grant(key, **fields)  # type: ignore[arg-type]


def pool(world: World, region: str) -> int:
    code = world.bank.region(PROGRAMME, region).pool_account
    balance = world.bank.ledger.balance(code).posted_minutes
    assert balance == world.bank.pool_lots_total(PROGRAMME, region)
    return balance


def test_a_donation_moves_lots_into_the_pool_and_a_grant_out_to_an_elder(world: World) -> None:
    earn(world, "s1", "wang", 60, ago_hours=30)
    earn(world, "s2", "wang", 90)
    wang, grandma = world.members["wang"], world.members["grandma"]
    older, newer = world.bank.lots(wang)
    gift = donate(world, "d1", "wang", 100)
    assert (gift.kind, gift.region, gift.minutes, gift.pool_minutes) == (
        "donation", "xinyuan", 100, 100)
    assert gift.lots == ((older.id, 60), (newer.id, 40))
    assert world.balance("wang") == 50 == world.bank.lots_total(wang)
    assert pool(world, "xinyuan") == 100
    assert world.bank.ledger.entry(gift.entry_id).code == "donation"
    given = grant(world, "g1", "grandma", 70)
    assert (given.kind, given.member_id, given.minutes) == ("grant", grandma, 70)
    assert pool(world, "xinyuan") == 30
    assert world.balance("grandma") == 70 == world.bank.lots_total(grandma)
    lots = world.bank.lots(grandma)
    assert [(lot.minutes, lot.origin_site, lot.earned_on) for lot in lots] == [
        (60, "xinyuan-sw", older.earned_on), (10, "xinyuan-sw", newer.earned_on)]
    assert all(lot.expires_on is None for lot in lots)  # no expiry in the policy


def test_a_donation_to_another_region_and_retries(world: World) -> None:
    earn(world, "s1", "wang", 60)
    first = donate(world, "d1", "wang", 20, region="anci")
    assert first.region == "anci"
    assert pool(world, "anci") == 20
    before = dump(world.engine)
    assert donate(world, "d1", "wang", 20, region="anci") == first
    assert dump(world.engine) == before
    err = refused(world, IdempotencyConflictError, lambda: donate(world, "d1", "wang", 21,
                                                                  region="anci"))
    assert err.fields == ("minutes",)
    refused(world, BankObjectNotFoundError, lambda: donate(world, "d2", "wang", 5,
                                                           region="atlantis"))
    err2 = refused(world, LimitExceededError, lambda: donate(world, "d2", "wang", 41))
    assert err2.available_minutes == 40
    refused(world, PermissionDeniedError, lambda: donate(world, "d2", "wang", 5,
                                                         operator="rec-anci"))
    refused(world, InvalidInputError, lambda: donate(world, "", "wang", 5))


def test_grants_follow_the_policys_rules_in_priority_order(world: World) -> None:
    earn(world, "s1", "wang", 300)
    donate(world, "d1", "wang", 300)
    grandma, li = world.members["grandma"], world.members["li"]
    refused(world, PolicyViolationError, lambda: grant(world, "g1", "li", 10),
            match="matches none of the policy's grant rules")
    use(world, grant_rules=[
        {"min_age": 80, "attributes": ["living_alone"]},
        {"min_age": 60, "attributes": ["disabled", "low_income"]},
    ])
    refused(world, PolicyViolationError, lambda: grant(world, "g1", "grandma", 10))
    world.bank.set_member_attributes(grandma, ["living_alone"], operator="gy-admin")
    world.bank.set_member_attributes(li, ["disabled", "low_income"], operator="gy-admin")
    assert world.bank.member(li).attributes == ("disabled", "low_income")
    before = dump(world.engine)
    world.bank.set_member_attributes(li, ["low_income", "disabled"], operator="gy-admin")
    assert dump(world.engine) == before  # the same attributes again write nothing
    ranked = world.bank.grant_candidates(PROGRAMME, "xinyuan")
    assert [(c.member_id, c.priority) for c in ranked] == [(grandma, 0), (li, 1)]
    assert grant(world, "g1", "grandma", 10).minutes == 10
    assert grant(world, "g2", "li", 10).minutes == 10
    refused(world, PermissionDeniedError, lambda: world.bank.set_member_attributes(
        li, [], operator="rec-sw"))
    refused(world, InvalidInputError, lambda: world.bank.set_member_attributes(
        li, ["not allowed!"], operator="gy-admin"))


def test_grant_refusals(world: World) -> None:
    earn(world, "s1", "wang", 60)
    donate(world, "d1", "wang", 60)
    err = refused(world, LimitExceededError, lambda: grant(world, "g1", "grandma", 61))
    assert err.available_minutes == 60
    refused(world, PermissionDeniedError, lambda: grant(world, "g1", "grandma", 10,
                                                        operator="rec-sw"))
    # A pool grants to its own elders: grandma lives in xinyuan, not in anci.
    world.bank.add_operator(PROGRAMME, "anci-admin", "Anci administrator",
                            roles=["administrator"], region="anci", by="admin")
    refused(world, PolicyViolationError, lambda: grant(world, "g1", "grandma", 10,
                                                       region="anci", operator="anci-admin"))
    world.bank.set_member_status(world.members["grandma"], "frozen", reason="audit",
                                 operator="gy-admin")
    refused(world, MemberStateError, lambda: grant(world, "g1", "grandma", 10))
    world.bank.set_member_status(world.members["grandma"], "active", reason="ok",
                                 operator="gy-admin")
    first = grant(world, "g1", "grandma", 10)
    before = dump(world.engine)
    assert grant(world, "g1", "grandma", 10) == first
    assert dump(world.engine) == before
    refused(world, IdempotencyConflictError, lambda: grant(world, "g1", "grandma", 11))


def test_granted_lots_expire_from_the_day_of_the_grant(world: World) -> None:
    earn(world, "s1", "wang", 60, ago_hours=30)
    donate(world, "d1", "wang", 60)
    use(world, lot_expiry_days=30)
    grant(world, "g1", "grandma", 60)
    (lot,) = world.bank.lots(world.members["grandma"])
    assert lot.earned_on == date(2026, 11, 1)
    assert lot.expires_on == date(2026, 11, 2) + timedelta(days=30)


def test_a_cap_refuses_deposits_gifts_and_grants_over_it(world: World) -> None:
    use(world, storage_cap_minutes=100)
    earn(world, "s1", "wang", 80, ago_hours=2)
    service = world.serve("s2", "wang", "zhao", minutes=30, ago=timedelta(minutes=40))
    err = refused(world, CapExceededError, lambda: world.bank.confirm_service(
        service, operator="conf-sw"))
    assert (err.limit_minutes, err.available_minutes, err.requested_minutes) == (100, 20, 30)
    world.clock.advance(days=2)
    before = dump(world.engine)
    assert world.bank.confirm_due(PROGRAMME, as_of=world.clock.now, operator="conf-sw") == 0
    assert dump(world.engine) == before  # stays pending until the volunteer has room
    assert world.bank.service(service).status == "pending"
    world.bank.redeem("r1", programme=PROGRAMME, member_id=world.members["wang"],
                      site="sunrise", service_type="body_care", minutes=10,
                      operator="sunrise-op")
    assert world.bank.confirm_due(PROGRAMME, as_of=world.clock.now, operator="conf-sw") == 1
    assert world.balance("wang") == 100
    world.bank.relate(world.members["li"], world.members["wang"], "child", operator="rec-sw")
    earn(world, "s3", "li", 30)
    refused(world, CapExceededError, lambda: world.bank.give(
        "gift1", programme=PROGRAMME, giver_id=world.members["li"],
        receiver_id=world.members["wang"], minutes=1, operator="rec-sw"))
    donate(world, "d1", "li", 30)
    earn(world, "s4", "zhao", 90)
    donate(world, "d2", "zhao", 90)
    err = refused(world, CapExceededError, lambda: grant(world, "g1", "grandma", 101))
    assert err.available_minutes == 100
    assert grant(world, "g1", "grandma", 100).minutes == 100


def test_a_cap_may_divert_the_excess_to_the_pool(world: World) -> None:
    use(world, storage_cap_minutes=100, cap_excess="pool")
    earn(world, "s1", "wang", 80, ago_hours=2)
    service = world.serve("s2", "wang", "zhao", minutes=30, ago=timedelta(minutes=40))
    done = world.bank.confirm_service(service, operator="conf-sw")
    assert (done.credited_minutes, done.diverted_minutes) == (30, 10)
    assert world.balance("wang") == 100 == world.bank.lots_total(world.members["wang"])
    assert pool(world, "xinyuan") == 10
    entry = world.bank.ledger.entry(done.deposit_entry_id)  # type: ignore[arg-type]
    assert (entry.metadata or {}).get("diverted_minutes") == 10
    # Reversing the service takes back both parts: the member's lot and the pool's.
    world.bank.reverse_service(service, reason="entered twice", operator="gy-admin")
    assert world.balance("wang") == 80
    assert pool(world, "xinyuan") == 0


def test_a_group_only_donates_where_the_policy_says_so(world: World) -> None:
    use(world, groups_donate_only=True)
    group = world.register("choir", kind="group", born=date(2001, 1, 1))
    world.bank.set_assessed_need(group, in_need=True, operator="gy-admin")
    earn(world, "s1", "choir", 120)
    refused(world, PolicyViolationError, lambda: world.bank.redeem(
        "r1", programme=PROGRAMME, member_id=group, site="sunrise", service_type="body_care",
        minutes=10, operator="sunrise-op"), match="groups only donate")
    world.bank.relate(group, world.members["wang"], "friend", operator="rec-sw")
    refused(world, PolicyViolationError, lambda: world.bank.give(
        "gift1", programme=PROGRAMME, giver_id=group, receiver_id=world.members["wang"],
        minutes=10, operator="rec-sw"), match="groups only donate")
    refused(world, PolicyViolationError, lambda: world.bank.book(
        "b1", programme=PROGRAMME, member_id=group, site="sunrise", service_type="body_care",
        minutes=10, scheduled_at=world.clock.now + timedelta(days=1), operator="sunrise-op"))
    assert donate(world, "d1", "choir", 120).pool_minutes == 120
    refused(world, PolicyViolationError, lambda: grant(world, "g1", "choir", 10))


def test_pool_reads_refuse_unknown_regions(world: World) -> None:
    with pytest.raises(BankObjectNotFoundError):
        world.bank.pool_lots_total(PROGRAMME, "atlantis")
    with pytest.raises(BankObjectNotFoundError):
        world.bank.pool_move(999)


def test_grant_rules_are_validated() -> None:
    with pytest.raises(InvalidInputError):
        GrantRule(min_age=-1)
    with pytest.raises(InvalidInputError):
        Policy(**{**POLICY.model_dump(), "storage_cap_minutes": 0})


def test_concurrent_grants_never_pass_the_cap(world: World) -> None:
    """Threads grant to one elder at once: the elder's row lock makes each see the others'
    minutes, so exactly as many grants as fit under the cap succeed."""
    use(world, storage_cap_minutes=100)
    earn(world, "s1", "wang", 100)
    earn(world, "s2", "li", 100)
    donate(world, "d1", "wang", 100)
    donate(world, "d2", "li", 100)
    outcomes = race(4, lambda n: grant(world, f"g{n}", "grandma", 40).minutes,
                    (CapExceededError, ConcurrencyError))
    assert sum(1 for o in outcomes if isinstance(o, CapExceededError)) >= 2, outcomes
    granted = [o for o in outcomes if isinstance(o, int)]
    assert world.balance("grandma") == 40 * len(granted) <= 100
    assert pool(world, "xinyuan") == 200 - 40 * len(granted)


def test_a_retry_finds_its_donation_after_a_freeze_and_library_keys_are_reserved(
    world: World,
) -> None:
    earn(world, "s1", "wang", 60)
    first = donate(world, "d1", "wang", 20)
    world.bank.set_member_status(world.members["wang"], "frozen", reason="audit",
                                 operator="gy-admin")
    before = dump(world.engine)
    assert donate(world, "d1", "wang", 20) == first
    assert dump(world.engine) == before
    refused(world, MemberStateError, lambda: donate(world, "d2", "wang", 20))
    for key in ("estate:member-1", "booking:x"):
        refused(world, InvalidInputError, lambda k=key: donate(world, k, "wang", 5))  # type: ignore[misc]
        refused(world, InvalidInputError, lambda k=key: grant(world, k, "grandma", 5))  # type: ignore[misc]
