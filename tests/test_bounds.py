"""Named bounds: inputs past them are refused before the database is touched."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import timebank
from tests.dbdump import dump
from timebank.limits import ACCOUNTS_PER_BATCH_MAX, ENTRIES_PER_BATCH_MAX, HOLDS_PER_SWEEP_MAX


@pytest.fixture
def ledger(sqlite_url: str) -> Iterator[timebank.Ledger]:
    opened = timebank.Ledger.open(sqlite_url)
    opened.open_account("s", "station", floor_minutes=None)
    opened.open_account("m", "member")
    yield opened
    opened.dispose()


def test_batch_past_the_maximum_is_refused(ledger: timebank.Ledger) -> None:
    commands = [
        timebank.TransferCommand(
            idempotency_key=f"k{i}",
            code="deposit",
            debit="s",
            credit="m",
            amount_minutes=1,
            operator="op",
        )
        for i in range(ENTRIES_PER_BATCH_MAX + 1)
    ]
    before = dump(ledger.engine)
    with pytest.raises(timebank.InvalidInputError, match=str(ENTRIES_PER_BATCH_MAX)):
        ledger.post_many(commands)
    assert dump(ledger.engine) == before
    assert ledger.post_many(commands[:ENTRIES_PER_BATCH_MAX]).created_count == (
        ENTRIES_PER_BATCH_MAX
    )


def test_empty_batch_writes_nothing(ledger: timebank.Ledger) -> None:
    before = dump(ledger.engine)
    receipt = ledger.post_many([])
    assert (receipt.entry_ids, receipt.created_count, receipt.replayed_count) == ((), 0, 0)
    assert dump(ledger.engine) == before


def test_too_many_accounts_in_one_call_is_refused(ledger: timebank.Ledger) -> None:
    specs = (
        timebank.AccountSpec(code=f"a{i}", type="member") for i in range(ACCOUNTS_PER_BATCH_MAX + 1)
    )
    before = dump(ledger.engine)
    with pytest.raises(timebank.InvalidInputError, match=str(ACCOUNTS_PER_BATCH_MAX)):
        ledger.open_accounts(specs)
    assert dump(ledger.engine) == before


@pytest.mark.parametrize("limit", [0, -1, HOLDS_PER_SWEEP_MAX + 1])
def test_expire_holds_limit_is_bounded(ledger: timebank.Ledger, limit: int) -> None:
    with pytest.raises(timebank.InvalidInputError, match="limit"):
        ledger.expire_holds(limit=limit)


def test_transfer_command_refuses_one_account_and_negative_minutes() -> None:
    with pytest.raises(timebank.PostingCountError):
        timebank.TransferCommand(
            idempotency_key="k", code="c", debit="a", credit="a", amount_minutes=5, operator="op"
        )
    with pytest.raises(timebank.InvalidAmountError):
        timebank.TransferCommand(
            idempotency_key="k", code="c", debit="a", credit="b", amount_minutes=-5, operator="op"
        )
    legs = timebank.TransferCommand(
        idempotency_key="k", code="c", debit="a", credit="b", amount_minutes=5, operator="op"
    ).postings
    assert [(p.account, p.amount_minutes) for p in legs] == [("a", -5), ("b", 5)]
