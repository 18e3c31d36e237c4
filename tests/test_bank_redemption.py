"""Redemption (the time bank, part 2, first piece): eligibility from the policy, insufficient
minutes, permissions, lots first in first out, and idempotent retries; every refusal checked
to change nothing. On SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from decimal import Decimal

import pytest

from tests.bankworld import POLICY, PROGRAMME, World, fresh, refused
from tests.clocks import Clock
from tests.dbdump import dump
from timebank import (
    IdempotencyConflictError,
    InvalidAmountError,
    InvalidInputError,
    LimitExceededError,
    MemberStateError,
    PermissionDeniedError,
    PolicyViolationError,
)
from timebank.bank import Policy, RedemptionView


@pytest.fixture
def world(db_url: str) -> Iterator[World]:
    w = fresh(db_url, Clock())
    try:
        yield w
    finally:
        w.bank.dispose()


def earn(world: World, name: str, minutes: int, *, key: str, hours_ago: int = 3) -> None:
    service = world.serve(key, name, "grandma" if name != "grandma" else "li",
                          minutes=minutes, ago=timedelta(hours=hours_ago))
    world.bank.confirm_service(service, operator="conf-sw")


def redeem(world: World, key: str, name: str, minutes: object, **kw: object) -> RedemptionView:
    fields: dict[str, object] = {
        "programme": PROGRAMME,
        "member_id": world.members[name],
        "site": "sunrise",
        "service_type": "body_care",
        "minutes": minutes,
        "operator": "sunrise-op",
    }
    fields.update(kw)
    return world.bank.redeem(key, **fields)  # type: ignore[arg-type]


def test_redeeming_takes_minutes_from_the_oldest_lots(world: World) -> None:
    earn(world, "wang", 60, key="s1", hours_ago=30)
    earn(world, "wang", 90, key="s2", hours_ago=3)
    older, newer = world.bank.lots(world.members["wang"])
    done = redeem(world, "r1", "wang", 100)
    assert (done.minutes, done.site, done.recipient_id) == (100, "sunrise", world.members["wang"])
    assert done.lots == ((older.id, 60), (newer.id, 40))
    assert world.balance("wang") == 50 == world.bank.lots_total(world.members["wang"])
    assert world.bank.ledger.balance("langfang:sunrise:redeemed").posted_minutes == 100
    entry = world.bank.ledger.entry(done.entry_id)
    assert (entry.code, entry.operator) == ("redemption", "sunrise-op")


def test_redeeming_again_is_a_replay_and_other_content_a_conflict(world: World) -> None:
    earn(world, "wang", 60, key="s1")
    first = redeem(world, "r1", "wang", 30)
    before = dump(world.engine)
    assert redeem(world, "r1", "wang", 30) == first
    assert dump(world.engine) == before
    err = refused(world, IdempotencyConflictError, lambda: redeem(world, "r1", "wang", 31))
    assert err.fields == ("minutes",)


def test_insufficient_minutes_say_how_many_are_available(world: World) -> None:
    earn(world, "wang", 60, key="s1")
    err = refused(world, LimitExceededError, lambda: redeem(world, "r1", "wang", 61))
    assert (err.available_minutes, err.requested_minutes) == (60, 61)


def test_eligibility_by_age_or_assessed_need(world: World) -> None:
    young = world.register("young", born=date(1995, 1, 1))
    earn(world, "young", 60, key="s1")
    refused(world, PolicyViolationError, lambda: redeem(world, "r1", "young", 10),
            match="care is redeemed from age 60")
    world.bank.set_assessed_need(young, in_need=True, operator="gy-admin")
    assert world.bank.member(young).assessed_need
    assert redeem(world, "r1", "young", 10).minutes == 10
    refused(world, PermissionDeniedError, lambda: world.bank.set_assessed_need(
        young, in_need=False, operator="rec-sw"))


def test_a_spouse_redeems_only_where_the_policy_allows(world: World) -> None:
    earn(world, "wang", 120, key="s1")
    wang, grandma, li = world.members["wang"], world.members["grandma"], world.members["li"]
    world.bank.relate(wang, grandma, "spouse", operator="rec-sw")
    world.bank.relate(wang, li, "sibling", operator="rec-sw")
    refused(world, PolicyViolationError, lambda: redeem(world, "r1", "wang", 30,
                                                        recipient_id=grandma))
    beijing = POLICY.model_copy(update={"spouse_redeems": True})
    world.bank.set_policy(PROGRAMME, beijing, effective_from=world.clock.now, operator="admin")
    world.clock.advance(minutes=1)
    assert redeem(world, "r1", "wang", 30, recipient_id=grandma).recipient_id == grandma
    refused(world, PolicyViolationError, lambda: redeem(world, "r2", "wang", 30,
                                                        recipient_id=li))


@pytest.mark.parametrize(
    ("operator", "site"),
    [
        ("rec-sw", "sunrise"),  # a recorder does not redeem
        ("conf-sw", "xinyuan-sw"),  # nor does a confirmer
        ("sunrise-op", "harmony"),  # an institution's redeemer at another institution
        ("audit", "sunrise"),  # auditors never write
    ],
)
def test_nobody_redeems_where_they_do_not_belong(world: World, operator: str, site: str) -> None:
    world.bank.add_site(PROGRAMME, "harmony", "Harmony care home", kind="institution",
                        region="guangyang", operator="admin")
    earn(world, "wang", 60, key="s1")
    refused(world, PermissionDeniedError, lambda: redeem(world, "r1", "wang", 10, site=site,
                                                         operator=operator))


def test_a_region_administrator_redeems_at_a_station(world: World) -> None:
    earn(world, "wang", 60, key="s1")
    done = redeem(world, "r1", "wang", 20, site="xinyuan-sw", operator="gy-admin")
    assert done.site == "xinyuan-sw"
    assert world.bank.ledger.balance("langfang:xinyuan-sw:redeemed").posted_minutes == 20


def test_a_frozen_member_redeems_nothing(world: World) -> None:
    earn(world, "wang", 60, key="s1")
    world.bank.set_member_status(world.members["wang"], "frozen", reason="audit",
                                 operator="gy-admin")
    refused(world, MemberStateError, lambda: redeem(world, "r1", "wang", 10))


@pytest.mark.parametrize("minutes", [0, -5, 1.5, True, Decimal("2.5"), "10"])
def test_minutes_are_a_positive_integer(world: World, minutes: object) -> None:
    earn(world, "wang", 60, key="s1")
    refused(world, InvalidAmountError, lambda: redeem(world, "r1", "wang", minutes))


def test_other_refusals(world: World) -> None:
    earn(world, "wang", 60, key="s1")
    refused(world, PolicyViolationError, lambda: redeem(world, "r1", "wang", 10,
                                                        service_type="gardening"))
    refused(world, InvalidInputError, lambda: redeem(
        world, "r1", "wang", 10, occurred_at=world.clock.now + timedelta(hours=1)))
    refused(world, InvalidInputError, lambda: redeem(world, "k" * 113, "wang", 10))


def test_age_and_need_together_where_the_policy_says_so(world: World) -> None:
    beijing = POLICY.model_copy(update={"redemption_rule": "age_and_need"})
    world.bank.set_policy(PROGRAMME, beijing, effective_from=world.clock.now, operator="admin")
    world.clock.advance(minutes=1)
    young = world.register("young", born=date(1995, 1, 1))
    earn(world, "wang", 60, key="s1")
    earn(world, "young", 60, key="s2", hours_ago=6)
    refused(world, PolicyViolationError, lambda: redeem(world, "r1", "wang", 10),
            match="not assessed in need")
    world.bank.set_assessed_need(young, in_need=True, operator="gy-admin")
    refused(world, PolicyViolationError, lambda: redeem(world, "r1", "young", 10),
            match="from age 60 with an assessed need")
    world.bank.set_assessed_need(world.members["wang"], in_need=True, operator="gy-admin")
    assert redeem(world, "r1", "wang", 10).minutes == 10
    with pytest.raises(InvalidInputError, match="needs a minimum age"):
        Policy(**{**POLICY.model_dump(), "redemption_rule": "age_and_need",
                  "redemption_min_age": None})
