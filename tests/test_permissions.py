"""Every role, operation and scope: who may do what where, as a table, each cell proven.

The target is the station ``xinyuan-sw`` (in township ``xinyuan``, county ``guangyang``) and
members living there. Each role is given to four operators: one at that station ("own
station"), one at its sibling station ("other station"), one acting for its township
("parent region") and one for another county ("other region"). Each operation is tried by
each of them on a fresh copy of the bank: a permitted one must succeed, a refused one must
raise PermissionDeniedError and leave every table as it was.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import pytest

from tests.bankworld import PROGRAMME, SECRET, World, fresh, refused
from tests.clocks import Clock
from timebank import Ledger, errors
from timebank.bank import Policy, ServiceType, TimeBank
from timebank.bank.models import Role

ROLES: tuple[Role, ...] = ("recorder", "confirmer", "redeemer", "administrator", "auditor")
SCOPES = {  # scope: (site, region) of its operators
    "own station": ("xinyuan-sw", None),
    "other station": ("xinyuan-vol", None),
    "parent region": (None, "xinyuan"),
    "other region": (None, "anci"),
}
HOME = "xinyuan-sw"


@dataclass
class Case:
    world: World
    operator: str

    def member(self, name: str) -> int:
        return self.world.members[name]

    def service(self, name: str) -> int:
        """A service the template recorded (kept with the members, by name)."""
        return self.world.members[name]


def _record(case: Case) -> None:
    case.world.serve("p-record", "zhao", "grandma", operator=case.operator,
                     ago=timedelta(hours=20))


def _confirm(case: Case) -> None:
    case.world.bank.confirm_service(case.service("to-confirm"), operator=case.operator)


def _reject(case: Case) -> None:
    case.world.bank.reject_service(case.service("to-reject"), reason="not done",
                                   operator=case.operator)


def _redeem(case: Case) -> None:
    case.world.bank.redeem("p-redeem", programme=PROGRAMME, member_id=case.member("wang"),
                           site=HOME, service_type="chat", minutes=30, operator=case.operator)


def _book(case: Case) -> None:
    case.world.bank.book("p-book", programme=PROGRAMME, member_id=case.member("wang"),
                         site=HOME, service_type="chat", minutes=30,
                         scheduled_at=case.world.clock.now + timedelta(days=1),
                         operator=case.operator)


def _gift(case: Case) -> None:
    case.world.bank.give("p-gift", programme=PROGRAMME, giver_id=case.member("wang"),
                         receiver_id=case.member("zhao"), minutes=20, operator=case.operator)


def _donate(case: Case) -> None:
    case.world.bank.donate("p-donate", programme=PROGRAMME, member_id=case.member("wang"),
                           minutes=20, operator=case.operator)


def _register(case: Case) -> None:
    case.world.register("newcomer", operator=case.operator)


def _freeze(case: Case) -> None:
    case.world.bank.set_member_status(case.member("li"), "frozen", reason="review",
                                      operator=case.operator)


def _reverse(case: Case) -> None:
    case.world.bank.reverse_service(case.service("to-reverse"), reason="twice",
                                    operator=case.operator)


def _grant(case: Case) -> None:
    case.world.bank.grant("p-grant", programme=PROGRAMME, region="xinyuan",
                          member_id=case.member("grandma"), minutes=20, operator=case.operator)


def _add_site(case: Case) -> None:
    case.world.bank.add_site(PROGRAMME, "xinyuan-new", "New station",
                             kind="community_station", region="xinyuan",
                             operator=case.operator)


def _set_policy(case: Case) -> None:
    policy = Policy(service_types={"chat": ServiceType(name="Chat")})
    case.world.bank.set_policy(PROGRAMME, policy, effective_from=case.world.clock.now,
                               operator=case.operator)


def _settle(case: Case) -> None:
    case.world.bank.settle("p-settle", programme=PROGRAMME, start=date(2026, 10, 1),
                           end=date(2026, 11, 1), operator=case.operator)


#: operation: (what it needs, how to do it). A role: that role at the station, or a region
#: operator above it with that role or "administrator". "region admin": an administrator of
#: a region at or above the target. "root admin": an administrator of the programme's root.
OPERATIONS: dict[str, tuple[str, Callable[[Case], None]]] = {
    "record a service": ("recorder", _record),
    "confirm a service": ("confirmer", _confirm),
    "reject a service": ("confirmer", _reject),
    "redeem": ("redeemer", _redeem),
    "book": ("redeemer", _book),
    "give to a relative": ("recorder", _gift),
    "donate to a pool": ("recorder", _donate),
    "register a member": ("recorder", _register),
    "freeze a member": ("region admin", _freeze),
    "reverse a service": ("region admin", _reverse),
    "grant from a pool": ("region admin", _grant),
    "add a site": ("region admin", _add_site),
    "set the policy": ("root admin", _set_policy),
    "settle clearing": ("root admin", _settle),
}


def permitted(role: str, scope: str, needs: str) -> bool:
    """The rule the table proves, written down once."""
    if role == "auditor" or scope in ("other station", "other region"):
        return False  # auditors never write; nobody acts outside their station or region
    if needs == "root admin":
        return False  # only the root's administrators (not in this table's scopes)
    if needs == "region admin":
        return scope == "parent region" and role == "administrator"
    if scope == "own station":
        return role == needs  # a station's operators act with their own roles only
    return role in (needs, "administrator")  # a region's administrators act with every role


def prepared(url: str) -> World:
    world = fresh(url, Clock())
    bank, now = world.bank, world.clock.now
    for role in ROLES:
        for scope, (site, region) in SCOPES.items():
            bank.add_operator(PROGRAMME, _code(role, scope), f"{role} ({scope})", roles=[role],
                              site=site, region=region, by="admin")
    world.register("newcomer-0", operator="admin")
    bank.relate(world.members["wang"], world.members["zhao"], "spouse", operator="admin")
    for n in range(3):  # minutes for wang to redeem, book, give and donate
        service = world.serve(f"earn-{n}", "wang", "grandma", minutes=480, operator="admin",
                              service_type="body_care", ago=timedelta(days=3 + n))
        bank.confirm_service(service, operator="admin")
    served = world.serve("served", "zhao", "li", operator="admin", ago=timedelta(days=2))
    bank.confirm_service(served, operator="admin")
    world.members["to-reverse"] = served
    for name, hours in (("to-confirm", 30), ("to-reject", 31)):
        world.members[name] = world.serve(name, "li", "grandma", operator="admin", minutes=30,
                                          ago=timedelta(hours=hours))
    bank.donate("fill-pool", programme=PROGRAMME, member_id=world.members["wang"], minutes=100,
                operator="admin")
    assert now == world.clock.now
    return world


PREFIX = {"own station": "own", "other station": "sib", "parent region": "up",
          "other region": "far"}


def _code(role: str, scope: str) -> str:
    """``own-rec``, ``up-adm``...: operator codes are short."""
    return f"{PREFIX[scope]}-{role[:3]}"


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    """The prepared bank, built once; each cell works on a copy of its file."""
    path = tmp_path_factory.mktemp("permissions") / "bank.db"
    world = prepared(f"sqlite:///{path}")
    members = dict(world.members)
    world.bank.dispose()
    return path, members


@pytest.fixture
def world(template: tuple[Path, dict[str, int]], tmp_path: Path) -> Iterator[World]:
    path, members = template
    copy = tmp_path / "bank.db"
    shutil.copyfile(path, copy)
    clock = Clock()
    bank = TimeBank(Ledger.open(f"sqlite:///{copy}", clock=clock),
                    identity_secrets={PROGRAMME: SECRET})
    try:
        yield World(bank, clock, dict(members))
    finally:
        bank.dispose()


CELLS = [(role, scope, name) for name in OPERATIONS for role in ROLES for scope in SCOPES]


@pytest.mark.parametrize(("role", "scope", "operation"), CELLS,
                         ids=[f"{o}|{r}|{s}" for r, s, o in CELLS])
def test_permission_table(role: str, scope: str, operation: str, world: World) -> None:
    needs, act = OPERATIONS[operation]
    case = Case(world, _code(role, scope))
    if permitted(role, scope, needs):
        act(case)
    else:
        refused(world, errors.PermissionDeniedError, lambda: act(case))


@pytest.mark.parametrize("operation", list(OPERATIONS))
def test_the_roots_administrator_may_do_everything(operation: str, world: World) -> None:
    OPERATIONS[operation][1](Case(world, "admin"))


def test_the_table_covers_every_cell() -> None:
    assert len(CELLS) == len(ROLES) * len(SCOPES) * len(OPERATIONS) == 280
    allowed = [cell for cell in CELLS if permitted(cell[0], cell[1], OPERATIONS[cell[2]][0])]
    assert 0 < len(allowed) < len(CELLS)
