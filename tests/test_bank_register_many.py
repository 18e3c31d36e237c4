"""Registering many members in one call: the same members, accounts and personal data as one
call each; replays give the same ids; every refusal registers nobody (the whole database is
as it was). On SQLite, PostgreSQL and MariaDB (where ids come from the driver, one by one)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date

import pytest

from tests.bankworld import PROGRAMME, World, fresh
from tests.clocks import Clock
from tests.dbdump import dump
from timebank import (
    BankObjectNotFoundError,
    ExistsError,
    InvalidInputError,
    PermissionDeniedError,
    TimebankError,
)
from timebank.bank import NewMember
from timebank.bank.limits import MEMBERS_PER_CALL_MAX


@pytest.fixture
def world(db_url: str) -> Iterator[World]:
    built = fresh(db_url, Clock())
    try:
        yield built
    finally:
        built.bank.dispose()


def person(n: int, **kw: object) -> NewMember:
    fields: dict[str, object] = {
        "identity": f"ID-MANY-{n}",
        "display_name": f"Member {n}",
        "birth_date": date(1950, 1, 1 + n % 28),
        "home_site": "xinyuan-sw" if n % 2 else "xinyuan-vol",
        "phone": None if n % 3 else f"555-{n:04d}",
        "sex": (None, "female", "male")[n % 3],
        "acts_as": ("both", "volunteer", "recipient")[n % 3],
    }
    fields.update(kw)
    return NewMember(**fields)


def test_many_at_once_are_what_one_at_a_time_makes(world: World) -> None:
    bank = world.bank
    people = [person(n) for n in range(40)]
    ids = bank.register_members(PROGRAMME, people, operator="gy-admin")
    assert len(set(ids)) == 40
    for member_id, p in zip(ids, people, strict=True):
        view = bank.member(member_id)
        assert (view.home_site, view.acts_as, view.kind, view.status, view.balance_minutes) == (
            p.home_site, p.acts_as, "person", "active", 0)
        data = bank.personal_data(member_id)
        assert (data.display_name, data.birth_date, data.phone, data.sex) == (
            p.display_name, p.birth_date, p.phone, p.sex)
        assert bank.find_member(PROGRAMME, identity=p.identity).id == member_id
    # One at a time after, with the same data: the same member.
    one = people[7]
    again = bank.register_member(
        PROGRAMME, identity=one.identity, display_name=one.display_name,
        birth_date=one.birth_date, home_site=one.home_site, operator="gy-admin",
        acts_as=one.acts_as, phone=one.phone, sex=one.sex,
    )
    assert again.id == ids[7]
    assert bank.ledger.verify().ok


def test_a_second_call_and_repeats_in_one_call_give_the_same_ids(world: World) -> None:
    bank = world.bank
    first = bank.register_members(PROGRAMME, [person(n) for n in range(5)], operator="gy-admin")
    before = dump(world.engine)
    assert bank.register_members(PROGRAMME, [person(n) for n in range(5)],
                                 operator="gy-admin") == first
    assert dump(world.engine) == before
    mixed = bank.register_members(PROGRAMME, [person(9), person(2), person(9)],
                                  operator="gy-admin")
    assert mixed[0] == mixed[2] != mixed[1] == first[2]
    assert bank.register_members(PROGRAMME, [], operator="gy-admin") == []


def test_every_refusal_registers_nobody(world: World) -> None:
    bank = world.bank
    bank.register_members(PROGRAMME, [person(1)], operator="gy-admin")
    cases: list[tuple[list[NewMember], str, type[TimebankError], str]] = [
        ([person(50), person(1, display_name="Changed")], "gy-admin", ExistsError,
         "already exists with different display_name"),
        ([person(51), person(52), person(51, birth_date=date(1970, 1, 1))], "gy-admin",
         InvalidInputError, "one identity twice with different birth_date"),
        ([person(53), person(54, home_site="sunrise")], "gy-admin", InvalidInputError,
         "home is a station, not an institution"),
        ([person(55), person(56, home_site="nowhere")], "gy-admin", BankObjectNotFoundError,
         "no site 'nowhere'"),
        ([person(57), person(58, home_site="anci-sw")], "gy-admin", PermissionDeniedError,
         "may not act as recorder at site 'anci-sw'"),
        ([person(59)], "audit", PermissionDeniedError, "auditors never write"),
        ([person(60)], "nobody", BankObjectNotFoundError, "no operator 'nobody'"),
    ]
    for people, operator, error, match in cases:
        before = dump(world.engine)
        with pytest.raises(error, match=match):
            bank.register_members(PROGRAMME, people, operator=operator)
        assert dump(world.engine) == before, match


def test_bad_arguments_are_refused_before_the_database(world: World) -> None:
    bank = world.bank
    before = dump(world.engine)
    with pytest.raises(InvalidInputError, match="display_name"):
        NewMember(identity="X1", display_name="", birth_date=date(1950, 1, 1),
                  home_site="xinyuan-sw")
    with pytest.raises(InvalidInputError, match="phone"):
        NewMember(identity="X1", display_name="A", birth_date=date(1950, 1, 1),
                  home_site="xinyuan-sw", phone="5\x00")
    with pytest.raises(InvalidInputError, match="birth_date"):
        NewMember(identity="X1", display_name="A", birth_date="1950-01-01",
                  home_site="xinyuan-sw")
    with pytest.raises(InvalidInputError, match="people"):
        bank.register_members(PROGRAMME, [{"identity": "X"}], operator="gy-admin")  # type: ignore[list-item]
    with pytest.raises(InvalidInputError, match="identity"):
        bank.register_members(PROGRAMME, [person(1, identity="   ")], operator="gy-admin")
    too_many = [person(n) for n in range(MEMBERS_PER_CALL_MAX + 1)]
    with pytest.raises(InvalidInputError, match="at most 10,000 members a call"):
        bank.register_members(PROGRAMME, too_many, operator="gy-admin")
    with pytest.raises(InvalidInputError, match="no identity secret for programme"):
        bank.register_members("no-such-programme", [person(1)], operator="gy-admin")
    assert dump(world.engine) == before
