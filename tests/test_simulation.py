"""timebank.simulation: seeded, deterministic province runs and their invariants."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from tests._databases import POSTGRES, SQLITE, backend_of, backends
from tests.dbdump import dump
from timebank import InvalidInputError
from timebank.bank.api import TimeBank
from timebank.errors import TimebankError
from timebank.ledger import Ledger
from timebank.schema import accounts, entries, postings
from timebank.simulation import (
    SIMULATION_SECRET,
    DatabaseNotEmptyError,
    Progress,
    Rates,
    Regions,
    Scenario,
    SimulationClock,
    check_invariants,
    simulate,
)

concurrent_url = backends(SQLITE, POSTGRES, name="concurrent_url")

#: Small enough for a second or two: 3 stations, 2 care homes, 45 members, 10 days,
#: lots expiring after a week so that the sweeps move minutes.
SMALL = Scenario(
    regions=Regions(cities=1, counties_per_city=2, townships_per_county=1,
                    stations_per_township=1, institutions_per_county=1),
    members=45,
    days=10,
    policy=Scenario().policy.model_copy(update={"lot_expiry_days": 5}),
    rates=Rates(services_per_volunteer=0.3, redemptions_per_elder=0.08, bookings_per_elder=0.04,
                gifts_per_member=0.04, donations_per_member=0.02, grants_per_pool=0.5,
                expiry_sweep_every_days=3, bad_input_rate=0.1, duplicate_rate=0.1),
)


def ledger_rows(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Entries (key, code, times, operator), their postings by account code, and balances,
    read through the library's column types (so instants compare across databases)."""
    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            found = {
                "entries": [tuple(r) for r in conn.execute(
                    sa.select(entries.c.idempotency_key, entries.c.code, entries.c.occurred_at,
                              entries.c.recorded_at, entries.c.operator)
                    .order_by(entries.c.id))],
                "postings": [tuple(r) for r in conn.execute(
                    sa.select(entries.c.idempotency_key, accounts.c.code,
                              postings.c.amount_minutes, postings.c.balance_after_minutes)
                    .join(entries, entries.c.id == postings.c.entry_id)
                    .join(accounts, accounts.c.id == postings.c.account_id)
                    .order_by(postings.c.entry_id, accounts.c.code))],
                "balances": [tuple(r) for r in conn.execute(
                    sa.select(accounts.c.code, accounts.c.posted_minutes,
                              accounts.c.held_out_minutes).order_by(accounts.c.code))],
            }
    finally:
        engine.dispose()
    return found


def test_same_seed_writes_the_identical_database(
    fresh_db_url_factory: Callable[[str], str],
) -> None:
    first, second = fresh_db_url_factory(SQLITE), fresh_db_url_factory(SQLITE)
    one = simulate(first, SMALL, seed=11)
    two = simulate(second, SMALL, seed=11)
    assert one.ok, one.render()
    assert one.services_recorded > 0
    assert one.redemptions > 0
    assert one.lots_expired > 0
    assert one.model_dump(exclude={"seconds"}) == two.model_dump(exclude={"seconds"})
    # Every table, row for row: the simulation's clock stamps every time.
    assert dump(first) == dump(second)


def test_another_seed_writes_another_ledger(fresh_db_url_factory: Callable[[str], str]) -> None:
    first, second = fresh_db_url_factory(SQLITE), fresh_db_url_factory(SQLITE)
    simulate(first, SMALL, seed=1)
    simulate(second, SMALL, seed=2)
    assert ledger_rows(first)["entries"] != ledger_rows(second)["entries"]


@pytest.mark.postgres
def test_sqlite_and_postgres_write_the_same_ledger(
    sqlite_url: str, postgres_url: str,
) -> None:
    on_sqlite = simulate(sqlite_url, SMALL, seed=5)
    on_postgres = simulate(postgres_url, SMALL, seed=5)
    assert on_sqlite.ok
    assert on_postgres.ok, on_postgres.render()
    assert on_sqlite.model_dump(exclude={"seconds", "database"}) == on_postgres.model_dump(
        exclude={"seconds", "database"})
    assert ledger_rows(sqlite_url) == ledger_rows(postgres_url)


def test_concurrent_stations_keep_every_invariant(concurrent_url: str) -> None:
    scenario = SMALL.model_copy(update={"regions": Regions(
        cities=1, counties_per_city=2, townships_per_county=2, stations_per_township=1,
        institutions_per_county=1), "members": 60, "days": 6})
    if backend_of(concurrent_url) == SQLITE:
        with pytest.raises(InvalidInputError, match="PostgreSQL or MariaDB"):
            simulate(concurrent_url, scenario, seed=3, workers=4)
        pytest.skip("SQLite writes one at a time: concurrent workers need PostgreSQL/MariaDB")
    summary = simulate(concurrent_url, scenario, seed=3, workers=4)
    assert not summary.deterministic
    assert summary.services_recorded > 0
    assert summary.invariants.ok, summary.render()
    assert summary.ok, summary.render()


def test_refusals_are_counted_by_reason_and_bad_input_is_always_typed(sqlite_url: str) -> None:
    scenario = SMALL.model_copy(update={
        "days": 6, "rates": SMALL.rates.model_copy(update={"bad_input_rate": 0.8,
                                                           "duplicate_rate": 0.5})})
    summary = simulate(sqlite_url, scenario, seed=9)  # an untyped error would escape here
    assert summary.bad_inputs >= 20
    assert summary.bad_inputs_accepted == 0
    assert summary.problems == ()
    assert summary.duplicates_replayed > 0
    assert sum(summary.refusals.values()) >= summary.bad_inputs
    assert {"InvalidAmountError", "PolicyViolationError"} <= set(summary.refusals)
    errors = {cls.__name__ for cls in _subclasses(TimebankError)}
    assert set(summary.refusals) <= errors
    assert "refusals: " in summary.render()


def test_a_database_already_in_use_is_refused(sqlite_url: str) -> None:
    tiny = SMALL.model_copy(update={"members": 10, "days": 1})
    simulate(sqlite_url, tiny, seed=1)
    with pytest.raises(DatabaseNotEmptyError, match="already holds a ledger"):
        simulate(sqlite_url, tiny, seed=1)


def test_a_timebank_target_gets_its_programme_and_is_checked(sqlite_url: str) -> None:
    tiny = SMALL.model_copy(update={"members": 12, "days": 2})
    clock = SimulationClock(tiny.first_moment)
    bank = TimeBank(Ledger.open(sqlite_url, clock=clock),
                    identity_secrets={tiny.programme: SIMULATION_SECRET})
    with bank:
        summary = simulate(bank, tiny, seed=4)
        assert summary.ok
        report = check_invariants(bank, tiny.programme)
        assert report.ok
        assert report.members_checked == 12
        with pytest.raises(DatabaseNotEmptyError, match="already exists"):
            simulate(bank, tiny, seed=4)
    with TimeBank.open(sqlite_url, identity_secrets={}) as plain, pytest.raises(
            InvalidInputError, match="SimulationClock"):
        simulate(plain, tiny.model_copy(update={"programme": "other"}), seed=4)


def test_progress_is_written_when_asked(sqlite_url: str) -> None:
    stream = io.StringIO()
    simulate(sqlite_url, SMALL.model_copy(update={"members": 10, "days": 5}), seed=1,
             progress=stream)
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    registered = [line for line in lines if "members registered" in line]
    days = [line for line in lines if " days, " in line]
    assert len(registered) == 10  # 10% steps of 10 members: a line each
    assert registered[-1].startswith("[" + "#" * 30 + "] 100% 10/10 members registered")
    assert len(days) == 5  # 20% steps of 5 days: a line each (every 10% at most)
    assert days[-1].startswith("[" + "#" * 30 + "] 100% 5/5 days")
    assert lines == registered + days


def test_progress_redraws_in_place_on_a_terminal() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    bar = Progress(40, stream)
    for day in range(1, 41):
        bar.update(day, operations=day * 10)
    bar.close()
    text = stream.getvalue()
    assert text.count("\r") == 40
    assert text.endswith("400 operations, " + text.rsplit("operations, ", 1)[1])
    assert text.endswith("\n")
    quiet = io.StringIO()
    log = Progress(40, quiet)
    for day in range(1, 41):
        log.update(day, operations=day)
    assert len(quiet.getvalue().splitlines()) == 11  # the first day, then every 10%


def _subclasses(cls: type) -> list[type]:
    found = [cls]
    sub: type
    for sub in cls.__subclasses__():
        found += _subclasses(sub)
    return found


def test_check_invariants_finds_lots_and_balances_that_disagree(sqlite_url: str) -> None:
    """The checks can fail: a member lot and a pool lot edited behind the library's back,
    then a balance, are each reported (any bank, not only a simulated one)."""
    from sqlalchemy import update  # noqa: PLC0415

    from tests.bankworld import PROGRAMME, fresh  # noqa: PLC0415
    from tests.clocks import Clock  # noqa: PLC0415
    from timebank.bank.schema import lots, pool_lots  # noqa: PLC0415
    from timebank.schema import accounts  # noqa: PLC0415

    world = fresh(sqlite_url, Clock())
    try:
        bank = world.bank
        service = world.serve("inv-1", "wang", "grandma", minutes=60)
        bank.confirm_service(service, operator="conf-sw")
        bank.donate("inv-d", programme=PROGRAMME, member_id=world.members["wang"], minutes=20,
                    operator="rec-sw")
        assert check_invariants(bank, PROGRAMME).ok
        with world.engine.begin() as conn:
            conn.execute(update(lots).values(remaining_minutes=lots.c.remaining_minutes - 1))
            conn.execute(
                update(pool_lots).values(remaining_minutes=pool_lots.c.remaining_minutes - 1))
        report = check_invariants(bank, PROGRAMME)
        assert not report.ok
        assert (report.member_lot_mismatches, report.pool_lot_mismatches) == (1, 1)
        assert any(p.startswith("member ") for p in report.problems)
        with world.engine.begin() as conn:
            conn.execute(update(accounts).where(accounts.c.code == bank.member(
                world.members["li"]).account).values(posted_minutes=5))
        report = check_invariants(bank, PROGRAMME)
        assert report.trial_balance_total == 5
        assert not report.verify_ok
    finally:
        bank.dispose()


def test_check_invariants_finds_clearing_rows_that_disagree_with_lot_uses(sqlite_url: str) -> None:
    """A redemption's clearing rows edited behind the library's back are reported."""
    from sqlalchemy import update  # noqa: PLC0415

    from tests.bankworld import PROGRAMME, fresh  # noqa: PLC0415
    from tests.clocks import Clock  # noqa: PLC0415
    from timebank.bank.schema import redemption_origins  # noqa: PLC0415

    world = fresh(sqlite_url, Clock())
    try:
        bank = world.bank
        service = world.serve("inv-1", "wang", "grandma", minutes=60)
        bank.confirm_service(service, operator="conf-sw")
        done = bank.redeem("inv-r", programme=PROGRAMME, member_id=world.members["wang"],
                           site="sunrise", service_type="shopping", minutes=25,
                           operator="sunrise-op")
        report = check_invariants(bank, PROGRAMME)
        assert report.ok
        assert report.clearing_row_mismatches == 0
        o = redemption_origins
        with world.engine.begin() as conn:
            conn.execute(update(o).where(o.c.entry_id == done.entry_id).values(minutes=24))
        report = check_invariants(bank, PROGRAMME)
        assert not report.ok
        assert report.clearing_row_mismatches == 1
        assert f"redemption entry {done.entry_id}: clearing rows differ" in report.problems
        assert report.verify_ok  # the ledger itself is untouched
    finally:
        bank.dispose()
