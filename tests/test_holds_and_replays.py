"""Edge cases of hold expiry and of replays, each with its database dump checked."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import timedelta
from itertools import pairwise

import pytest
from sqlalchemy import select

import timebank
from tests._databases import MARIADB, POSTGRES, SQLITE, backends
from tests.clocks import T0, Clock
from tests.dbdump import dump
from timebank.schema import accounts

# The tests start from a migrated database (a copy of one migrated once per process).
db_url = backends(SQLITE, POSTGRES, MARIADB, migrated=True)

OP = "op"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ledger(db_url: str, clock: Clock) -> Iterator[timebank.Ledger]:
    opened = timebank.Ledger.open(db_url, clock=clock)
    opened.open_account("sys", "system", floor_minutes=None)
    yield opened
    opened.dispose()


def _fund(ledger: timebank.Ledger, code: str, minutes: int) -> None:
    ledger.open_account(code, "member")
    ledger.transfer(
        f"fund-{code}",
        debit="sys",
        credit=code,
        amount_minutes=minutes,
        code="deposit",
        operator=OP,
    )


def test_replaying_a_resolution_keeps_the_expiry_it_triggered(
    ledger: timebank.Ledger, clock: Clock
) -> None:
    _fund(ledger, "a", 100)
    ledger.open_account("b", "member")
    voided = ledger.hold("h1", debit="a", credit="b", amount_minutes=10, code="c", operator=OP)
    ledger.void_hold(voided.id, idempotency_key="v1", operator=OP)
    ledger.hold(
        "h2",
        debit="a",
        credit="b",
        amount_minutes=30,
        code="c",
        operator=OP,
        expires_at=T0 + timedelta(minutes=1),
    )
    clock.advance(minutes=2)
    again = ledger.void_hold(voided.id, idempotency_key="v1", operator=OP)
    assert again.status == "voided"
    assert ledger.verify().ok, ledger.verify().problems
    assert ledger.balance("a").available_minutes == 100
    ledger.transfer("t", debit="a", credit="b", amount_minutes=90, code="c", operator=OP)


def _hints(ledger: timebank.Ledger) -> set[object]:
    """Accounts a and b's next-expiry hints, as the ledger's column type reads them."""
    query = select(accounts.c.next_hold_expiry_at).where(accounts.c.code.in_(["a", "b"]))
    with ledger.engine.connect() as conn:
        return set(conn.execute(query).scalars())


@pytest.mark.parametrize("resolution", ["void", "post"])
def test_a_resolved_holds_expiry_leaves_the_accounts_so_a_late_replay_changes_nothing(
    ledger: timebank.Ledger, clock: Clock, resolution: str
) -> None:
    """Found by the ledger's state machine: the accounts kept a resolved hold's expiry as
    their next-expiry hint, and a replay after that instant rewrote them."""
    _fund(ledger, "a", 100)
    ledger.open_account("b", "member")
    held = ledger.hold("h1", debit="a", credit="b", amount_minutes=10, code="c", operator=OP,
                       expires_at=T0 + timedelta(minutes=10))

    def resolve() -> object:
        if resolution == "void":
            return ledger.void_hold(held.id, idempotency_key="r1", operator=OP)
        return ledger.post_hold(held.id, idempotency_key="r1", operator=OP)

    resolve()
    assert _hints(ledger) == {None}
    clock.advance(minutes=30)
    before = dump(ledger.engine)
    resolve()
    assert dump(ledger.engine) == before


def test_resolving_the_soonest_hold_moves_the_hint_to_the_next_one(
    ledger: timebank.Ledger, clock: Clock
) -> None:
    _fund(ledger, "a", 100)
    ledger.open_account("b", "member")
    later = T0 + timedelta(minutes=20)
    soonest = ledger.hold("h1", debit="a", credit="b", amount_minutes=10, code="c",
                          operator=OP, expires_at=T0 + timedelta(minutes=10))
    ledger.hold("h2", debit="a", credit="b", amount_minutes=10, code="c", operator=OP,
                expires_at=later)
    ledger.post_hold(soonest.id, idempotency_key="r1", operator=OP, amount_minutes=4)
    assert _hints(ledger) == {later}
    clock.advance(minutes=15)  # past the first hold's expiry, before the second's
    before = dump(ledger.engine)
    ledger.post_hold(soonest.id, idempotency_key="r1", operator=OP, amount_minutes=4)
    assert dump(ledger.engine) == before


def test_a_chain_of_expired_holds_does_not_exhaust_the_retries(
    ledger: timebank.Ledger, clock: Clock
) -> None:
    codes = [f"m{i}" for i in range(9)]
    for code in codes:
        _fund(ledger, code, 50)
    for i, (debit, credit) in enumerate(pairwise(codes)):
        ledger.hold(
            f"h{i}",
            debit=debit,
            credit=credit,
            amount_minutes=20,
            code="c",
            operator=OP,
            expires_at=T0 + timedelta(minutes=1),
        )
    clock.advance(minutes=5)
    ledger.transfer("t", debit="m0", credit="sys", amount_minutes=50, code="c", operator=OP)
    assert ledger.verify().ok, ledger.verify().problems
    assert ledger.balance("m8").held_in_minutes == 0


def test_a_hold_already_past_its_expiry_is_refused(ledger: timebank.Ledger) -> None:
    _fund(ledger, "a", 100)
    before = dump(ledger.engine)
    with pytest.raises(timebank.HoldExpiredError, match="not after now"):
        ledger.hold(
            "h", debit="a", credit="sys", amount_minutes=5, code="c", operator=OP, expires_at=T0
        )
    assert dump(ledger.engine) == before


def test_a_void_replayed_with_other_operator_or_reason_is_a_conflict(
    ledger: timebank.Ledger,
) -> None:
    _fund(ledger, "a", 100)
    hold = ledger.hold("h", debit="a", credit="sys", amount_minutes=5, code="c", operator=OP)
    voided = ledger.void_hold(hold.id, idempotency_key="v", operator=OP, reason="cancelled")
    assert (voided.resolved_by, voided.resolution_memo) == (OP, "cancelled")
    before = dump(ledger.engine)
    with pytest.raises(timebank.IdempotencyConflictError) as info:
        ledger.void_hold(hold.id, idempotency_key="v", operator="other", reason="typo")
    assert info.value.fields == ("operator", "reason")
    assert dump(ledger.engine) == before
    assert ledger.void_hold(hold.id, idempotency_key="v", operator=OP, reason="cancelled") == voided


def test_unset_occurred_at_does_not_replay_a_backdated_entry(ledger: timebank.Ledger) -> None:
    ledger.open_account("a", "member")
    ledger.transfer(
        "k",
        debit="sys",
        credit="a",
        amount_minutes=5,
        code="c",
        operator=OP,
        occurred_at=T0 - timedelta(days=30),
    )
    before = dump(ledger.engine)
    with pytest.raises(timebank.IdempotencyConflictError) as info:
        ledger.transfer("k", debit="sys", credit="a", amount_minutes=5, code="c", operator=OP)
    assert info.value.fields == ("occurred_at",)
    assert dump(ledger.engine) == before
    ledger.transfer("k2", debit="sys", credit="a", amount_minutes=5, code="c", operator=OP)
    replay = ledger.transfer("k2", debit="sys", credit="a", amount_minutes=5, code="c", operator=OP)
    assert replay.occurred_at == replay.recorded_at


@pytest.mark.parametrize("metadata", [{"x": math.nan}, {"x": math.inf}, {"x": object()}])
def test_metadata_must_be_plain_json(ledger: timebank.Ledger, metadata: dict[str, object]) -> None:
    ledger.open_account("a", "member")
    with pytest.raises(timebank.InvalidInputError, match="plain JSON"):
        ledger.transfer(
            "k", debit="sys", credit="a", amount_minutes=5, code="c", operator=OP, metadata=metadata
        )


class _Label(str):
    """A str subclass: JSON writes it as a plain string, and reads back a plain str."""


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ({"n": 1, "s": "x", "f": 1.5, "b": True, "none": None}, None),
        ({"pair": (1, 2)}, {"pair": [1, 2]}),
        ({"deep": {"pair": (1,)}}, {"deep": {"pair": [1]}}),
        ({_Label("k"): _Label("v")}, {"k": "v"}),
    ],
)
def test_a_commands_metadata_is_kept_as_it_will_read_back(
    given: dict[str, object], kept: dict[str, object] | None
) -> None:
    command = timebank.TransferCommand(
        idempotency_key="k", debit="sys", credit="a", amount_minutes=5, code="c", operator=OP,
        metadata=given,
    )
    assert command.metadata is not None
    assert command.metadata == (given if kept is None else kept)
    assert command.metadata is not given  # a copy: the caller's dict may change later
    assert all(type(k) is str and type(v) is not _Label for k, v in command.metadata.items())
    given.clear()
    assert command.metadata


def test_metadata_with_a_tuple_replays_as_it_reads_back(ledger: timebank.Ledger) -> None:
    ledger.open_account("a", "member")
    first = ledger.transfer(
        "k",
        debit="sys",
        credit="a",
        amount_minutes=5,
        code="c",
        operator=OP,
        metadata={"pair": (1, 2)},
    )
    before = dump(ledger.engine)
    again = ledger.transfer(
        "k",
        debit="sys",
        credit="a",
        amount_minutes=5,
        code="c",
        operator=OP,
        metadata={"pair": (1, 2)},
    )
    assert again == first
    assert again.metadata == {"pair": [1, 2]}
    assert dump(ledger.engine) == before
