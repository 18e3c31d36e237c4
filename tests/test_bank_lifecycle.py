"""A member's end and the programme's promise (the time bank, part 2): on death the balance
passes to a beneficiary (up to their cap) or to the pool, bookings are released, the
account closes when empty; the guarantee exposure of a programme or region at a moment.
Every refusal checked to change nothing. On SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import pytest

from tests.bankworld import POLICY, PROGRAMME, World, fresh, refused
from tests.clocks import Clock
from tests.dbdump import dump
from timebank import (
    AccountStateError,
    BankObjectNotFoundError,
    InvalidInputError,
    MemberStateError,
    PermissionDeniedError,
)
from timebank.bank import Policy


@pytest.fixture
def world(db_url: str) -> Iterator[World]:
    w = fresh(db_url, Clock())
    for key, hours, name in (("s1", 30, "wang"), ("s2", 3, "wang"), ("s3", 5, "li")):
        service = w.serve(key, name, "zhao", minutes=60, ago=timedelta(hours=hours))
        w.bank.confirm_service(service, operator="conf-sw")
    try:
        yield w
    finally:
        w.bank.dispose()


def use(world: World, **update: object) -> None:
    policy = Policy.model_validate({**POLICY.model_dump(), **update})
    world.bank.set_policy(PROGRAMME, policy, effective_from=world.clock.now, operator="admin")
    world.clock.advance(minutes=1)


def die(world: World, name: str) -> None:
    world.bank.set_member_status(world.members[name], "deceased", reason="passed away",
                                 operator="gy-admin")


def pool(world: World, region: str = "xinyuan") -> int:
    code = world.bank.region(PROGRAMME, region).pool_account
    balance = world.bank.ledger.balance(code).posted_minutes
    assert balance == world.bank.pool_lots_total(PROGRAMME, region)
    return balance


def test_the_balance_passes_to_the_beneficiary(world: World) -> None:
    wang, li = world.members["wang"], world.members["li"]
    lots = world.bank.lots(wang)
    assert world.bank.set_beneficiary(wang, li, operator="rec-sw").beneficiary_id == li
    die(world, "wang")
    member = world.bank.member(wang)
    assert (member.status, member.balance_minutes) == ("deceased", 0)
    assert world.bank.ledger.account(member.account).status == "frozen"
    assert world.balance("li") == 180 == world.bank.lots_total(li)
    estate = world.bank.pool_move(1)
    assert (estate.kind, estate.beneficiary_id, estate.pool_minutes) == ("estate", li, 0)
    inherited = [lot for lot in world.bank.lots(li) if lot.source_entry_id == estate.entry_id]
    assert sorted((lot.minutes, lot.earned_on) for lot in inherited) == sorted(
        (lot.minutes, lot.earned_on) for lot in lots)
    world.bank.set_member_status(wang, "closed", reason="estate settled", operator="gy-admin")
    assert world.bank.ledger.account(member.account).status == "closed"


def test_the_beneficiary_receives_up_to_their_cap_and_the_pool_the_rest(world: World) -> None:
    use(world, storage_cap_minutes=100)
    wang, li = world.members["wang"], world.members["li"]
    world.bank.set_beneficiary(wang, li, operator="rec-sw")
    die(world, "wang")
    assert world.balance("li") == 100 == world.bank.lots_total(li)
    assert pool(world) == 80
    move = world.bank.pool_move(1)
    assert (move.kind, move.member_id, move.beneficiary_id, move.minutes, move.pool_minutes) == (
        "estate", wang, li, 120, 80)


def test_without_a_beneficiary_or_by_policy_the_pool_inherits(world: World) -> None:
    die(world, "wang")
    assert pool(world) == 120
    use(world, estate_to="pool")
    world.bank.set_beneficiary(world.members["li"], world.members["zhao"], operator="rec-sw")
    die(world, "li")
    assert pool(world) == 180
    assert world.balance("zhao") == 0


def test_an_heir_who_is_not_active_inherits_nothing(world: World) -> None:
    wang, li = world.members["wang"], world.members["li"]
    world.bank.set_beneficiary(wang, li, operator="rec-sw")
    world.bank.set_member_status(li, "frozen", reason="audit", operator="gy-admin")
    die(world, "wang")
    assert pool(world) == 120


def test_death_releases_bookings_and_settles_a_frozen_account(world: World) -> None:
    wang = world.members["wang"]
    booking = world.bank.book("b1", programme=PROGRAMME, member_id=wang, site="sunrise",
                              service_type="body_care", minutes=50,
                              scheduled_at=world.clock.now + timedelta(days=1),
                              operator="sunrise-op")
    world.bank.set_member_status(wang, "frozen", reason="in hospital", operator="gy-admin")
    die(world, "wang")
    assert world.bank.booking(booking.id).status == "cancelled"
    assert pool(world) == 120
    assert world.bank.member(wang).held_minutes == 0


def test_beneficiary_refusals(world: World) -> None:
    wang, li = world.members["wang"], world.members["li"]
    refused(world, InvalidInputError, lambda: world.bank.set_beneficiary(
        wang, wang, operator="rec-sw"))
    refused(world, BankObjectNotFoundError, lambda: world.bank.set_beneficiary(
        wang, 999, operator="rec-sw"))
    refused(world, PermissionDeniedError, lambda: world.bank.set_beneficiary(
        wang, li, operator="rec-anci"))
    world.bank.set_member_status(li, "frozen", reason="audit", operator="gy-admin")
    refused(world, MemberStateError, lambda: world.bank.set_beneficiary(
        wang, li, operator="rec-sw"))
    world.bank.set_member_status(li, "active", reason="ok", operator="gy-admin")
    world.bank.set_beneficiary(wang, li, operator="rec-sw")
    before = dump(world.engine)
    world.clock.advance(minutes=5)
    assert world.bank.set_beneficiary(wang, li, operator="rec-sw").beneficiary_id == li
    assert dump(world.engine) == before  # a retry writes nothing
    assert world.bank.set_beneficiary(wang, None, operator="rec-sw").beneficiary_id is None
    die(world, "wang")
    refused(world, MemberStateError, lambda: world.bank.set_beneficiary(
        wang, li, operator="rec-sw"))
    refused(world, AccountStateError, lambda: world.bank.set_member_status(
        li, "closed", reason="moved", operator="gy-admin"))  # not empty


def test_guarantee_exposure_of_a_programme_and_a_region(world: World) -> None:
    t1 = world.clock.now
    world.clock.advance(days=1)
    world.bank.add_region(PROGRAMME, "anci-town", "Anci town", level="township", parent="anci",
                          operator="admin")
    world.register("anci-vol", home_site="anci-sw", operator="rec-anci")
    service = world.serve("s9", "anci-vol", "zhao", minutes=45, site="anci-sw",
                          operator="rec-anci")
    world.bank.confirm_service(service, operator="rec-anci")
    world.bank.donate("d1", programme=PROGRAMME, member_id=world.members["wang"], minutes=20,
                      operator="rec-sw")
    everything = world.bank.guarantee_exposure(PROGRAMME)
    assert (everything.member_minutes, everything.pool_minutes) == (100 + 60 + 45, 20)
    assert everything.total_minutes == 225
    assert everything.members_with_balance == 3
    assert everything.region == "hebei"
    xinyuan = world.bank.guarantee_exposure(PROGRAMME, region="xinyuan")
    assert (xinyuan.member_minutes, xinyuan.pool_minutes) == (160, 20)
    anci = world.bank.guarantee_exposure(PROGRAMME, region="anci")
    assert (anci.member_minutes, anci.pool_minutes, anci.members_with_balance) == (45, 0, 1)
    before = world.bank.guarantee_exposure(PROGRAMME, at=t1)
    assert (before.member_minutes, before.pool_minutes) == (180, 0)
    # A date is the end of that day in the programme's calendar (UTC here); what counts is
    # when the ledger recorded a deposit (all on 2 November), not when the service was.
    assert world.bank.guarantee_exposure(PROGRAMME, at=date(2026, 11, 2)).total_minutes == 180
    assert world.bank.guarantee_exposure(PROGRAMME, at=date(2026, 11, 1)).total_minutes == 0
    # Redeemed and expired minutes are no longer owed.
    world.bank.redeem("r1", programme=PROGRAMME, member_id=world.members["li"], site="sunrise",
                      service_type="body_care", minutes=60, operator="sunrise-op")
    assert world.bank.guarantee_exposure(PROGRAMME).total_minutes == 165
    with pytest.raises(InvalidInputError):
        world.bank.guarantee_exposure(PROGRAMME, at=datetime(2026, 11, 1))  # naive
    with pytest.raises(BankObjectNotFoundError):
        world.bank.guarantee_exposure(PROGRAMME, region="atlantis")


def test_a_date_ends_in_the_time_zone_of_the_policy_of_that_day(world: World) -> None:
    use(world, timezone="Asia/Shanghai")
    view = world.bank.guarantee_exposure(PROGRAMME, at=date(2026, 11, 2))
    assert view.at == datetime(2026, 11, 2, 15, 59, 59, 999999, tzinfo=UTC)
    assert view.total_minutes == 180  # recorded at 09:00 UTC, 17:00 in Shanghai
