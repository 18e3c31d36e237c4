"""Erasing a member's personal data on request: the ledger, lots, seals and audit stay intact,
and nothing personal is left anywhere in the database, the exports or the simulation's
output."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import date

import pytest

from tests._databases import POSTGRES, SQLITE, backends
from tests.dbdump import dump
from timebank import errors
from timebank.bank import TimeBank
from timebank.bank._people import ERASED_NAME, identity_hash
from timebank.sealing import audit, digest, seal
from timebank.simulation import SIMULATION_SECRET, Scenario, simulate

db_url = backends(SQLITE, POSTGRES, migrated=True)

SCENARIO = Scenario.small_province().model_copy(update={"members": 120, "days": 4})
PROGRAMME = SCENARIO.programme
ADMIN = "admin"  # the simulation's programme administrator


@pytest.fixture
def bank(db_url: str) -> Iterator[TimeBank]:
    summary = simulate(db_url, SCENARIO, seed=11)
    assert summary.ok
    with TimeBank.open(db_url, identity_secrets={PROGRAMME: SIMULATION_SECRET}) as opened:
        yield opened


def busiest(bank: TimeBank) -> int:
    """A member with a balance and a phone-free record: the first with minutes."""
    for member_id in range(1, SCENARIO.members + 1):
        if bank.member(member_id).balance_minutes > 0:
            return member_id
    raise AssertionError("nobody earned minutes")


def test_erasure_leaves_the_ledger_and_removes_every_trace(bank: TimeBank, db_url: str) -> None:
    member_id = busiest(bank)
    number = member_id - 1  # the simulation registers member n as SIM-<programme>-<n>
    identity = f"SIM-{PROGRAMME}-{number:08d}"
    assert bank.find_member(PROGRAMME, identity=identity).id == member_id
    name = bank.personal_data(member_id).display_name
    born = bank.personal_data(member_id).birth_date
    hashed = identity_hash(SIMULATION_SECRET, identity)
    before = bank.member(member_id)
    statement_before = bank.member_statement(member_id, start=SCENARIO.start,
                                             end=SCENARIO.start.replace(year=2027))
    seal(bank.ledger)
    kept = digest(bank.ledger)
    erased = bank.erase_personal_data(member_id, reason="request 2026-113", operator=ADMIN)
    assert erased.balance_minutes == before.balance_minutes
    assert erased.account == f"{PROGRAMME}:member:erased-{member_id}"
    personal = bank.personal_data(member_id)
    assert (personal.display_name, personal.phone) == (ERASED_NAME, None)
    assert personal.erased_at is not None
    assert personal.birth_date == born  # kept: the age rules need it
    with pytest.raises(errors.BankObjectNotFoundError):
        bank.find_member(PROGRAMME, identity=identity)
    statement = bank.member_statement(member_id, start=SCENARIO.start,
                                      end=SCENARIO.start.replace(year=2027))
    assert statement.entries == statement_before.entries
    report = audit(bank.ledger, kept=kept)
    assert report.ok, report.render()  # sealed history never held the name or the hash
    rows = dump(db_url)
    everything = json.dumps(rows, default=str)
    for trace in (hashed, hashed[:20]):
        assert trace not in everything, trace
    # Simulated names repeat: the name is left only on the other members who bear it.
    namesakes = [r for r in rows["tb_member_personal"] if r[1] == name]
    assert member_id not in {r[0] for r in namesakes}
    assert everything.count(json.dumps(name)) == len(namesakes)
    exported = io.StringIO()
    for table in ("entries", "postings", "members", "lots"):
        bank.export(table, exported)
    assert name not in exported.getvalue()
    assert hashed[:20] not in exported.getvalue()
    # Erasing again changes nothing.
    snapshot = dump(db_url)
    assert bank.erase_personal_data(member_id, reason="again", operator=ADMIN) == erased
    assert dump(db_url) == snapshot
    # The same person may register again: a new member, whose account code has nothing in
    # common with the erased one's old code (it is not derived from the identity alone).
    again = bank.register_member(PROGRAMME, identity=identity, display_name=name,
                                 birth_date=born, home_site=before.home_site,
                                 operator=before.home_site + "-desk")
    assert again.id != member_id
    assert again.account != before.account


def test_a_phone_number_is_erased_too(bank: TimeBank, db_url: str) -> None:
    station = bank.member(busiest(bank)).home_site
    member = bank.register_member(PROGRAMME, identity="ID-PHONE-1", display_name="Qian Yue",
                                  birth_date=date(1950, 5, 5), home_site=station,
                                  operator=station + "-desk", phone="+86 138 0013 8000")
    bank.erase_personal_data(member.id, reason="request 7", operator=ADMIN)
    everything = json.dumps(dump(db_url), default=str)
    for trace in ("+86 138 0013 8000", "Qian Yue", member.account):
        assert trace not in everything, trace


def test_erasure_is_refused_to_non_administrators_and_changes_nothing(
    bank: TimeBank, db_url: str
) -> None:
    member_id = busiest(bank)
    desk = bank.operator(PROGRAMME, bank.member(member_id).home_site + "-desk")
    before = dump(db_url)
    with pytest.raises(errors.PermissionDeniedError):
        bank.erase_personal_data(member_id, reason="request", operator=desk.code)
    with pytest.raises(errors.BankObjectNotFoundError):
        bank.erase_personal_data(10_000, reason="request", operator=ADMIN)
    for reason in ("", "x" * 501, "a\x00b"):
        with pytest.raises(errors.InvalidInputError):
            bank.erase_personal_data(member_id, reason=reason, operator=ADMIN)
    assert dump(db_url) == before


def test_the_simulations_output_names_nobody(sqlite_url: str) -> None:
    summary = simulate(sqlite_url, SCENARIO.model_copy(update={"days": 2}), seed=11)
    with TimeBank.open(sqlite_url, identity_secrets={PROGRAMME: SIMULATION_SECRET}) as bank:
        names = {bank.personal_data(m).display_name for m in range(1, SCENARIO.members + 1)}
    text = summary.render() + summary.model_dump_json()
    assert len(names) > 20
    assert not [name for name in names if name in text]
