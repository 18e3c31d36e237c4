"""timebank.testing.plans: every SELECT an action ran, with the database's plan of it."""

from __future__ import annotations

import pytest
from sqlalchemy import event

from tests._databases import MARIADB, POSTGRES, SQLITE, backends
from timebank import AccountNotFoundError, Ledger
from timebank.testing.plans import query_plans

# The tests start from a migrated database (a copy of one migrated once per process).
db_url = backends(SQLITE, POSTGRES, MARIADB, migrated=True)


def test_each_select_comes_back_in_order_with_its_plan(db_url: str, db_backend: str) -> None:
    with Ledger.open(db_url) as ledger:
        ledger.open_account("member:1", "member")
        ledger.open_account("member:2", "member")
        found = query_plans(
            ledger.engine,
            lambda: (ledger.balance("member:1"), ledger.statement("member:2")),
        )
    assert found, "the balance and the statement page ran no SELECT"
    assert all(q.plan for q in found), "a SELECT came back without a plan"
    # In order: the balance reads the account first, the page reads postings last, and
    # each plan is the database's own words about the table it reads.
    words = {"sqlite": "SEARCH tb_accounts", "postgres": " on tb_accounts",
             "mariadb": "table=tb_accounts"}
    assert words[db_backend] in found[0].plan
    assert "tb_postings" in found[-1].plan


def test_writes_are_not_planned_and_the_action_runs_as_it_would(sqlite_url: str) -> None:
    ran: list[str] = []
    with Ledger.open(sqlite_url) as ledger:
        def seen(*args: object) -> None:
            ran.append(str(args[2]))
        event.listen(ledger.engine, "before_cursor_execute", seen)
        found = query_plans(ledger.engine, lambda: ledger.open_account("member:1", "member"))
        event.remove(ledger.engine, "before_cursor_execute", seen)
        assert ledger.account("member:1").code == "member:1"  # the action ran for real
    assert any(s.lstrip().upper().startswith("INSERT") for s in ran), "no write to check"
    assert not any("INSERT" in q.statement.upper() for q in found)


def test_the_listener_is_removed_even_when_the_action_fails(sqlite_url: str) -> None:
    with Ledger.open(sqlite_url) as ledger:
        listeners = len(ledger.engine.dispatch.before_cursor_execute)
        with pytest.raises(AccountNotFoundError):
            query_plans(ledger.engine, lambda: ledger.balance("member:1"))
        assert len(ledger.engine.dispatch.before_cursor_execute) == listeners
