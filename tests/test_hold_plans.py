"""An account's holds are read through its pending holds only (issue 10): resolving a hold,
releasing expired ones and summing a station's live bookings find the account's *pending*
holds by index, never every hold the account ever had (a station's account holds every
booking made there). Checked on SQLite, whose plans depend on the schema and the query alone
(``timebank.testing.plans``); ``benchmarks/holds.py`` measures the cost as history grows."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest

from tests.clocks import Clock
from timebank import Ledger
from timebank.bank._bookings import held_minutes
from timebank.testing.plans import query_plans

#: A read of tb_holds by account that also narrows by status: (side)_account_id=? AND status=?
_BY_PENDING = re.compile(
    r"SEARCH tb_holds USING (COVERING )?INDEX \w+ \((debit|credit)_account_id=\? AND status=\?"
)


@pytest.fixture
def ledger(sqlite_url: str) -> Iterator[tuple[Ledger, Clock]]:
    clock = Clock()
    with Ledger.open(sqlite_url, clock=clock) as opened:
        for code in ("station", "a", "b"):
            opened.open_account(code, "member", floor_minutes=None)
        # History: resolved holds of the station's account on both sides.
        for n in range(6):
            debit, credit = ("station", "a") if n % 2 else ("a", "station")
            hold = opened.hold(
                f"old{n}", debit=debit, credit=credit, amount_minutes=5, code="booking",
                operator="op", expires_at=clock.now + timedelta(hours=1),
            )
            opened.void_hold(hold.id, idempotency_key=f"old{n}-void", operator="op")
        yield opened, clock


def hold_reads(ledger: Ledger, action: Callable[[], object]) -> list[str]:
    found = query_plans(ledger.engine, action)
    reads = [p.plan for p in found if "tb_holds" in p.plan]
    assert reads, "the action read no hold: nothing was checked"
    return reads


def by_account(plans: list[str]) -> list[str]:
    """The plan lines that read tb_holds through an index by account."""
    return [
        line for plan in plans for line in plan.splitlines()
        if re.search(r"tb_holds USING (COVERING )?INDEX \w+ \((debit|credit)_account_id", line)
    ]


def test_resolving_a_hold_reads_only_the_accounts_pending_holds(
    ledger: tuple[Ledger, Clock],
) -> None:
    opened, clock = ledger
    soon = opened.hold(
        "soon", debit="station", credit="b", amount_minutes=10, code="booking", operator="op",
        expires_at=clock.now + timedelta(hours=2),
    )
    opened.hold(
        "later", debit="station", credit="a", amount_minutes=10, code="booking", operator="op",
        expires_at=clock.now + timedelta(hours=3),
    )
    # Voiding the soonest hold makes both accounts look up their next pending expiry.
    plans = hold_reads(
        opened, lambda: opened.void_hold(soon.id, idempotency_key="v", operator="op")
    )
    lines = by_account(plans)
    assert lines, "the next expiry was not looked up by account"
    assert all(_BY_PENDING.search(line) for line in lines), "\n".join(lines)
    assert opened.balance("station").held_out_minutes == 10


def test_releasing_expired_holds_reads_only_pending_ones(ledger: tuple[Ledger, Clock]) -> None:
    opened, clock = ledger
    opened.hold(
        "due", debit="station", credit="b", amount_minutes=10, code="booking", operator="op",
        expires_at=clock.now + timedelta(minutes=30),
    )
    clock.advance(hours=1)
    plans = hold_reads(opened, lambda: opened.transfer(
        "t", debit="station", credit="a", amount_minutes=1, code="test", operator="op",
    ))
    lines = by_account(plans)
    assert lines, "\n".join(plans)
    assert all(_BY_PENDING.search(line) for line in lines), "\n".join(plans)
    assert not any(re.search(r"\bSCAN tb_holds\b", plan) for plan in plans), "\n".join(plans)
    assert opened.balance("station").held_out_minutes == 0


def test_a_stations_live_bookings_are_summed_from_its_pending_holds(
    ledger: tuple[Ledger, Clock],
) -> None:
    opened, clock = ledger
    station_id = opened.account("station").id
    with opened.engine.connect() as conn:
        plans = hold_reads(opened, lambda: held_minutes(conn, station_id, clock.now))
    assert all(_BY_PENDING.search(line) for line in by_account(plans)), "\n".join(plans)
    assert by_account(plans)
