"""The ledger's behaviour through its public façade, on SQLite, PostgreSQL and MariaDB.

Every test gets a fresh database (``ledger_url``, already migrated; the schema's own tests take
``db_url``, empty) and a ledger whose clock only moves when the test moves it, so recording
times are exact and expiry needs no sleeping.
"""

from __future__ import annotations

import gc
import warnings
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from tests._databases import MARIADB, POSTGRES, SQLITE, backends
from tests.clocks import T0, Clock
from tests.dbdump import dump
from timebank import (
    PAGE_SIZE_MAX,
    AccountExistsError,
    AccountNotFoundError,
    AccountSpec,
    AccountStateError,
    AlreadyReversedError,
    BalanceAsOf,
    BatchReceipt,
    EntryCommand,
    EntryNotFoundError,
    EntryView,
    HoldExpiredError,
    HoldNotFoundError,
    HoldResolvedError,
    IdempotencyConflictError,
    InvalidAmountError,
    InvalidInputError,
    Ledger,
    LedgerTransaction,
    LimitExceededError,
    PostingSpec,
    SchemaError,
    StatementLine,
    TrialBalanceLine,
    current_revision,
    head_revision,
    make_engine,
    upgrade,
)

ISSUER = "station:gulou:issued"
ALICE = "member:alice"
BOB = "member:bob"
CARE = "institution:sunrise"
OP = "op:gulou-1"


@pytest.fixture
def clock() -> Clock:
    return Clock()


# The ledger's tests start from a migrated database (a copy of one migrated once per
# process); the schema's own tests below take ``db_url``, an empty one.
ledger_url = backends(SQLITE, POSTGRES, MARIADB, name="ledger_url", migrated=True)


@pytest.fixture
def ledger(ledger_url: str, clock: Clock) -> Iterator[Ledger]:
    with Ledger.open(ledger_url, clock=clock) as opened:
        yield opened


@pytest.fixture
def seeded(ledger: Ledger) -> Ledger:
    """Four accounts; the station has issued 100 minutes to Alice (entry key "seed")."""
    ledger.open_accounts([
        AccountSpec(code=ISSUER, type="station_issued", floor_minutes=None),
        AccountSpec(code=ALICE, type="member"),
        AccountSpec(code=BOB, type="member"),
        AccountSpec(code=CARE, type="institution", floor_minutes=None),
    ])
    ledger.transfer("seed", debit=ISSUER, credit=ALICE, amount_minutes=100, code="deposit",
                    operator=OP)
    return ledger


def balance(ledger: Ledger, code: str) -> tuple[int, int, int, int]:
    """(posted, held_out, held_in, available) of an account."""
    b = ledger.balance(code)
    assert b.account == code
    return (b.posted_minutes, b.held_out_minutes, b.held_in_minutes, b.available_minutes)


def legs(entry: EntryView) -> dict[str, tuple[int, int]]:
    """{account: (amount_minutes, balance_after_minutes)}: the order of legs is not promised."""
    found = {p.account: (p.amount_minutes, p.balance_after_minutes) for p in entry.postings}
    assert len(found) == len(entry.postings)
    return found


def give(ledger: Ledger, key: str, debit: str, credit: str, minutes: int, **kw: Any) -> EntryView:
    return ledger.transfer(key, debit=debit, credit=credit, amount_minutes=minutes,
                           code=kw.pop("code", "redemption"), operator=kw.pop("operator", OP),
                           **kw)


def command(key: str, *pairs: tuple[str, int], **kw: Any) -> EntryCommand:
    return EntryCommand(idempotency_key=key, code=kw.pop("code", "deposit"),
                        operator=kw.pop("operator", OP),
                        postings=tuple(PostingSpec(account=a, amount_minutes=m) for a, m in pairs),
                        **kw)


def assert_verified(ledger: Ledger) -> None:
    report = ledger.verify()
    assert report.problems == ()
    assert report.ok


# --- accounts ---------------------------------------------------------------------------------


def test_open_account_and_reopen_with_the_same_definition(ledger: Ledger, clock: Clock) -> None:
    view = ledger.open_account(ALICE, "member", owner_ref="person:42", ceiling_minutes=6000)
    assert (view.code, view.type, view.owner_ref, view.status, view.status_reason) == (
        ALICE, "member", "person:42", "open", "")
    assert (view.floor_minutes, view.ceiling_minutes) == (0, 6000)
    assert view.created_at == T0
    assert balance(ledger, ALICE) == (0, 0, 0, 0)

    before = dump(ledger.engine)
    clock.advance(minutes=5)
    again = ledger.open_account(ALICE, "member", owner_ref="person:42", ceiling_minutes=6000)
    assert again == view  # the same account, created_at included
    assert dump(ledger.engine) == before

    specs = [AccountSpec(code=ALICE, type="member", owner_ref="person:42", ceiling_minutes=6000),
             AccountSpec(code=BOB, type="member"),
             AccountSpec(code=BOB, type="member")]
    assert ledger.open_accounts(specs) == 1
    assert ledger.open_accounts(specs) == 0
    assert (ledger.account(BOB).created_at, ledger.account(BOB).floor_minutes) == (clock.now, 0)


def test_reopen_with_another_definition_names_the_fields(ledger: Ledger) -> None:
    ledger.open_account(ALICE, "member")
    before = dump(ledger.engine)

    with pytest.raises(AccountExistsError) as info:
        ledger.open_account(ALICE, "institution", owner_ref="org:7", floor_minutes=None)
    assert info.value.code == ALICE
    assert sorted(info.value.fields) == ["floor_minutes", "owner_ref", "type"]
    assert f"account {ALICE!r} already exists with different" in str(info.value)

    with pytest.raises(AccountExistsError) as info:
        ledger.open_account(ALICE, "member", ceiling_minutes=10)
    assert info.value.fields == ("ceiling_minutes",)

    # Two definitions of one new code in one batch: refused, and the batch writes nothing.
    with pytest.raises(AccountExistsError) as info:
        ledger.open_accounts([AccountSpec(code=CARE, type="institution"),
                              AccountSpec(code=BOB, type="member"),
                              AccountSpec(code=BOB, type="member", owner_ref="x")])
    assert (info.value.code, info.value.fields) == (BOB, ("owner_ref",))
    assert dump(ledger.engine) == before


# --- entries ----------------------------------------------------------------------------------


def test_transfer_moves_minutes(seeded: Ledger, clock: Clock) -> None:
    clock.advance(minutes=1)
    entry = give(seeded, "red-1", ALICE, CARE, 45, memo="lunch", metadata={"shift": "am", "n": 2})
    assert (entry.idempotency_key, entry.code, entry.operator, entry.memo) == (
        "red-1", "redemption", OP, "lunch")
    assert entry.metadata == {"shift": "am", "n": 2}
    assert entry.reverses_entry_id is None
    assert entry.recorded_at == clock.now
    assert entry.occurred_at == clock.now  # defaults to the recording time
    assert legs(entry) == {ALICE: (-45, 55), CARE: (45, 45)}
    assert seeded.entry(entry.id) == entry
    assert seeded.entry_by_key("red-1") == entry
    assert balance(seeded, ALICE) == (55, 0, 0, 55)
    assert balance(seeded, CARE) == (45, 0, 0, 45)
    assert balance(seeded, ISSUER) == (-100, 0, 0, -100)
    assert_verified(seeded)


def test_post_a_multi_leg_entry(seeded: Ledger, clock: Clock) -> None:
    occurred = datetime(2026, 11, 1, 17, 30, tzinfo=timezone(timedelta(hours=8)))
    clock.advance(minutes=1)
    entry = seeded.post(command("split-1", (ALICE, -90), (BOB, 60), (CARE, 30),
                                code="transfer", occurred_at=occurred, memo="family"))
    assert legs(entry) == {ALICE: (-90, 10), BOB: (60, 60), CARE: (30, 30)}
    assert entry.occurred_at == occurred  # the same instant, whatever the zone
    assert seeded.entry(entry.id) == entry
    assert entry.recorded_at == clock.now
    assert (entry.code, entry.memo) == ("transfer", "family")
    assert [balance(seeded, c)[0] for c in (ALICE, BOB, CARE)] == [10, 60, 30]


def test_post_many_writes_a_batch_in_order(seeded: Ledger) -> None:
    commands = [command(f"batch-{i}", (ISSUER, -(i + 1)), (BOB, i + 1)) for i in range(5)]
    receipt = seeded.post_many(commands)
    assert (receipt.created_count, receipt.replayed_count) == (5, 0)
    assert len(receipt.entry_ids) == 5
    assert list(receipt.entry_ids) == sorted(set(receipt.entry_ids))
    running = [legs(seeded.entry(i))[BOB][1] for i in receipt.entry_ids]
    assert running == [1, 3, 6, 10, 15]
    assert [seeded.entry(i).idempotency_key for i in receipt.entry_ids] == [
        f"batch-{i}" for i in range(5)]
    assert seeded.post_many([]) == BatchReceipt(entry_ids=(), created_count=0, replayed_count=0)

    before = dump(seeded.engine)
    assert seeded.post_many(commands) == BatchReceipt(
        entry_ids=receipt.entry_ids, created_count=0, replayed_count=5)
    assert dump(seeded.engine) == before

    mixed = seeded.post_many([commands[2], command("batch-new", (ISSUER, -1), (BOB, 1))])
    assert (mixed.created_count, mixed.replayed_count) == (1, 1)
    assert mixed.entry_ids[0] == receipt.entry_ids[2]
    assert balance(seeded, BOB)[0] == 16


def test_replay_returns_the_original_entry_and_writes_nothing(seeded: Ledger,
                                                               clock: Clock) -> None:
    clock.advance(minutes=1)
    original = give(seeded, "red-1", ALICE, CARE, 45, memo="m", metadata={"visit": [1, 2]})
    before = dump(seeded.engine)

    clock.advance(hours=1)
    assert give(seeded, "red-1", ALICE, CARE, 45, memo="m", metadata={"visit": [1, 2]}) == original
    # The same command through post(), legs in another order, occurred_at spelled out.
    again = seeded.post(command("red-1", (CARE, 45), (ALICE, -45), code="redemption", memo="m",
                                metadata={"visit": [1, 2]}, occurred_at=original.occurred_at))
    assert again == original
    assert seeded.post_many([command("red-1", (ALICE, -45), (CARE, 45), code="redemption",
                                     memo="m", metadata={"visit": [1, 2]})]).entry_ids == (
        original.id,)
    assert dump(seeded.engine) == before
    assert balance(seeded, ALICE) == (55, 0, 0, 55)


def test_same_key_with_other_content_names_exactly_the_differing_fields(
    seeded: Ledger, clock: Clock
) -> None:
    occurred = T0 - timedelta(hours=2)
    base: dict[str, Any] = {"debit": ALICE, "credit": CARE, "amount_minutes": 45,
                            "code": "redemption", "operator": OP, "memo": "m",
                            "metadata": {"visit": 1}, "occurred_at": occurred}
    original = seeded.transfer("red-1", **base)
    before = dump(seeded.engine)
    clock.advance(minutes=1)

    cases: list[tuple[dict[str, Any], set[str]]] = [
        ({"amount_minutes": 46}, {"postings"}),
        ({"credit": BOB}, {"postings"}),
        ({"memo": "other"}, {"memo"}),
        ({"code": "deposit"}, {"code"}),
        ({"operator": "op:other"}, {"operator"}),
        ({"occurred_at": occurred + timedelta(microseconds=1)}, {"occurred_at"}),
        ({"metadata": {"visit": 2}}, {"metadata"}),
        ({"metadata": None}, {"metadata"}),
        ({"memo": "x", "code": "c", "amount_minutes": 1}, {"memo", "code", "postings"}),
    ]
    for changes, expected in cases:
        with pytest.raises(IdempotencyConflictError) as info:
            seeded.transfer("red-1", **{**base, **changes})
        assert type(info.value) is IdempotencyConflictError
        assert info.value.key == "red-1"
        assert set(info.value.fields) == expected, changes
        assert len(info.value.fields) == len(expected), changes
        assert "idempotency key 'red-1' was already used with different" in str(info.value)

    assert seeded.transfer("red-1", **base) == original
    assert dump(seeded.engine) == before


def test_duplicate_keys_within_one_batch(seeded: Ledger) -> None:
    dup = command("dup", (ISSUER, -7), (BOB, 7))
    receipt = seeded.post_many([dup, command("other", (ISSUER, -1), (BOB, 1)), dup])
    assert (receipt.created_count, receipt.replayed_count) == (2, 1)
    assert receipt.entry_ids[0] == receipt.entry_ids[2] != receipt.entry_ids[1]
    assert balance(seeded, BOB)[0] == 8

    before = dump(seeded.engine)
    with pytest.raises(IdempotencyConflictError) as info:
        seeded.post_many([command("z", (ISSUER, -5), (BOB, 5)),
                          command("z", (ISSUER, -6), (BOB, 6))])
    assert (info.value.key, info.value.fields) == ("z", ("postings",))
    assert dump(seeded.engine) == before


# --- reversal ---------------------------------------------------------------------------------


def test_reverse_posts_the_linked_mirror_once(seeded: Ledger, clock: Clock) -> None:
    clock.advance(minutes=1)
    original = give(seeded, "red-1", ALICE, BOB, 45)
    clock.advance(minutes=10)
    occurred = T0 + timedelta(minutes=1)
    reversal = seeded.reverse(original.id, idempotency_key="rev-1", operator="op:2",
                              reason="entered twice", occurred_at=occurred)
    assert reversal.reverses_entry_id == original.id
    assert (reversal.code, reversal.memo, reversal.operator) == ("reversal", "entered twice",
                                                                 "op:2")
    assert (reversal.recorded_at, reversal.occurred_at) == (clock.now, occurred)
    assert legs(reversal) == {ALICE: (45, 100), BOB: (-45, 0)}
    assert seeded.entry(original.id) == original  # the original is never touched
    assert balance(seeded, ALICE) == (100, 0, 0, 100)
    assert balance(seeded, BOB) == (0, 0, 0, 0)
    assert_verified(seeded)

    before = dump(seeded.engine)
    with pytest.raises(AlreadyReversedError, match="already reversed by entry with key 'rev-1'"):
        seeded.reverse(original.id, idempotency_key="rev-2", operator="op:2", reason="again")
    assert dump(seeded.engine) == before


def test_reverse_again_with_the_same_key_is_a_replay(seeded: Ledger, clock: Clock) -> None:
    original = give(seeded, "red-1", ALICE, BOB, 45)
    clock.advance(minutes=10)
    reversal = seeded.reverse(original.id, idempotency_key="rev-1", operator=OP, reason="oops")
    before = dump(seeded.engine)
    clock.advance(minutes=10)
    again = seeded.reverse(original.id, idempotency_key="rev-1", operator=OP, reason="oops")
    assert again == reversal
    assert dump(seeded.engine) == before
    with pytest.raises(IdempotencyConflictError) as info:
        seeded.reverse(original.id, idempotency_key="rev-1", operator=OP, reason="other")
    assert info.value.fields == ("memo",)
    assert dump(seeded.engine) == before


# --- holds ------------------------------------------------------------------------------------


def test_a_hold_reserves_minutes_and_counts_against_the_floor(seeded: Ledger,
                                                              clock: Clock) -> None:
    clock.advance(minutes=1)
    hold = seeded.hold("h-1", debit=ALICE, credit=CARE, amount_minutes=60, code="redemption",
                       operator=OP, memo="visit", metadata={"room": 3})
    assert (hold.status, hold.debit, hold.credit, hold.amount_minutes) == (
        "pending", ALICE, CARE, 60)
    assert (hold.code, hold.operator, hold.memo, hold.metadata) == (
        "redemption", OP, "visit", {"room": 3})
    assert (hold.created_at, hold.expires_at, hold.resolved_at, hold.posted_entry_id) == (
        clock.now, None, None, None)
    assert seeded.get_hold(hold.id) == hold
    assert balance(seeded, ALICE) == (100, 60, 0, 40)
    assert balance(seeded, CARE) == (0, 0, 60, 0)

    with pytest.raises(LimitExceededError) as info:
        give(seeded, "red-1", ALICE, BOB, 41)
    assert (info.value.limit, info.value.available_minutes, info.value.requested_minutes) == (
        "floor", 40, 41)
    with pytest.raises(LimitExceededError) as info:
        seeded.hold("h-2", debit=ALICE, credit=BOB, amount_minutes=41, code="c", operator=OP)
    assert info.value.available_minutes == 40

    assert legs(give(seeded, "red-2", ALICE, BOB, 40)) == {ALICE: (-40, 60), BOB: (40, 40)}
    assert balance(seeded, ALICE) == (60, 60, 0, 0)
    assert_verified(seeded)


def test_hold_replay_and_conflict(seeded: Ledger, clock: Clock) -> None:
    expires = T0 + timedelta(days=1)
    args: dict[str, Any] = {"debit": ALICE, "credit": CARE, "amount_minutes": 60,
                            "code": "redemption", "operator": OP, "expires_at": expires}
    hold = seeded.hold("h-1", **args)
    before = dump(seeded.engine)
    clock.advance(minutes=1)
    assert seeded.hold("h-1", **args) == hold
    with pytest.raises(IdempotencyConflictError) as info:
        seeded.hold("h-1", **{**args, "amount_minutes": 61})
    assert info.value.fields == ("amount_minutes",)
    with pytest.raises(IdempotencyConflictError) as info:
        seeded.hold("h-1", **{**args, "credit": BOB, "memo": "x"})
    assert sorted(info.value.fields) == ["credit", "memo"]
    assert dump(seeded.engine) == before


def test_post_part_of_a_hold_releases_the_rest(seeded: Ledger, clock: Clock) -> None:
    hold = seeded.hold("h-1", debit=ALICE, credit=CARE, amount_minutes=60, code="redemption",
                       operator=OP)
    clock.advance(minutes=5)
    entry = seeded.post_hold(hold.id, idempotency_key="post-1", operator="op:2",
                             amount_minutes=25, memo="visit done")
    assert legs(entry) == {ALICE: (-25, 75), CARE: (25, 25)}
    assert (entry.code, entry.operator, entry.memo, entry.recorded_at) == (
        "redemption", "op:2", "visit done", clock.now)
    resolved = seeded.get_hold(hold.id)
    assert (resolved.status, resolved.posted_entry_id, resolved.resolved_at) == (
        "posted", entry.id, clock.now)
    assert balance(seeded, ALICE) == (75, 0, 0, 75)
    assert balance(seeded, CARE) == (25, 0, 0, 25)
    assert_verified(seeded)

    before = dump(seeded.engine)
    clock.advance(minutes=5)
    assert seeded.post_hold(hold.id, idempotency_key="post-1", operator="op:2",
                            amount_minutes=25, memo="visit done") == entry
    assert dump(seeded.engine) == before


def test_post_a_whole_hold_by_default(seeded: Ledger) -> None:
    hold = seeded.hold("h-1", debit=ALICE, credit=CARE, amount_minutes=60, code="redemption",
                       operator=OP)
    entry = seeded.post_hold(hold.id, idempotency_key="post-1", operator=OP)
    assert legs(entry) == {ALICE: (-60, 40), CARE: (60, 60)}
    assert balance(seeded, ALICE) == (40, 0, 0, 40)


def test_post_more_than_held_is_refused(seeded: Ledger) -> None:
    hold = seeded.hold("h-1", debit=ALICE, credit=CARE, amount_minutes=60, code="redemption",
                       operator=OP)
    before = dump(seeded.engine)
    with pytest.raises(InvalidAmountError, match=f"cannot post 61 minutes from hold {hold.id} "
                                                 "of 60"):
        seeded.post_hold(hold.id, idempotency_key="post-1", operator=OP, amount_minutes=61)
    for bad in (0, -5):
        with pytest.raises(InvalidAmountError):
            seeded.post_hold(hold.id, idempotency_key="post-1", operator=OP, amount_minutes=bad)
    assert dump(seeded.engine) == before
    assert seeded.get_hold(hold.id).status == "pending"


def test_post_hold_replay_with_another_amount_is_a_conflict(seeded: Ledger) -> None:
    hold = seeded.hold("h-1", debit=ALICE, credit=CARE, amount_minutes=60, code="redemption",
                       operator=OP)
    seeded.post_hold(hold.id, idempotency_key="post-1", operator=OP, amount_minutes=25)
    before = dump(seeded.engine)
    with pytest.raises(IdempotencyConflictError) as info:
        seeded.post_hold(hold.id, idempotency_key="post-1", operator=OP, amount_minutes=30)
    assert info.value.key == "post-1"
    assert info.value.fields
    assert dump(seeded.engine) == before


def test_void_a_hold(seeded: Ledger, clock: Clock) -> None:
    hold = seeded.hold("h-1", debit=ALICE, credit=CARE, amount_minutes=60, code="redemption",
                       operator=OP)
    clock.advance(minutes=3)
    voided = seeded.void_hold(hold.id, idempotency_key="void-1", operator=OP, reason="cancelled")
    assert (voided.status, voided.resolved_at, voided.posted_entry_id) == (
        "voided", clock.now, None)
    assert balance(seeded, ALICE) == (100, 0, 0, 100)
    assert balance(seeded, CARE) == (0, 0, 0, 0)
    assert_verified(seeded)

    before = dump(seeded.engine)
    clock.advance(minutes=3)
    assert seeded.void_hold(hold.id, idempotency_key="void-1", operator=OP,
                            reason="cancelled") == voided
    assert dump(seeded.engine) == before


def test_a_hold_resolves_once(seeded: Ledger) -> None:
    posted = seeded.hold("h-1", debit=ALICE, credit=CARE, amount_minutes=10, code="c",
                         operator=OP)
    voided = seeded.hold("h-2", debit=ALICE, credit=CARE, amount_minutes=10, code="c",
                         operator=OP)
    seeded.post_hold(posted.id, idempotency_key="post-1", operator=OP)
    seeded.void_hold(voided.id, idempotency_key="void-1", operator=OP)
    before = dump(seeded.engine)
    attempts: list[Callable[[], object]] = [
        lambda: seeded.post_hold(posted.id, idempotency_key="post-2", operator=OP),
        lambda: seeded.void_hold(posted.id, idempotency_key="void-2", operator=OP),
        lambda: seeded.void_hold(posted.id, idempotency_key="post-1", operator=OP),
        lambda: seeded.post_hold(voided.id, idempotency_key="post-3", operator=OP),
        lambda: seeded.post_hold(voided.id, idempotency_key="void-1", operator=OP),
        lambda: seeded.void_hold(voided.id, idempotency_key="void-3", operator=OP),
    ]
    for attempt in attempts:
        with pytest.raises(HoldResolvedError, match=r"is already (posted|voided)"):
            attempt()
    assert dump(seeded.engine) == before


# --- hold expiry ------------------------------------------------------------------------------


def test_an_expired_hold_no_longer_reserves(seeded: Ledger, clock: Clock) -> None:
    expires = T0 + timedelta(minutes=10)
    hold = seeded.hold("h-1", debit=ALICE, credit=CARE, amount_minutes=60, code="redemption",
                       operator=OP, expires_at=expires)
    clock.now = expires - timedelta(microseconds=1)
    assert balance(seeded, ALICE) == (100, 60, 0, 40)
    with pytest.raises(LimitExceededError):
        give(seeded, "red-early", ALICE, BOB, 100)

    clock.now = expires
    # Reads show the hold released at once ...
    assert balance(seeded, ALICE) == (100, 0, 0, 100)
    assert balance(seeded, CARE) == (0, 0, 0, 0)
    # ... and a transfer that needs the held minutes goes through (to a third account).
    entry = give(seeded, "red-1", ALICE, BOB, 100)
    assert legs(entry) == {ALICE: (-100, 0), BOB: (100, 100)}
    expired = seeded.get_hold(hold.id)
    assert (expired.status, expired.resolved_at) == ("expired", expires)
    assert balance(seeded, CARE) == (0, 0, 0, 0)
    assert_verified(seeded)


def test_an_expired_hold_is_released_by_a_write_to_its_counterparty(seeded: Ledger,
                                                                     clock: Clock) -> None:
    hold = seeded.hold("h-1", debit=ALICE, credit=CARE, amount_minutes=60, code="redemption",
                       operator=OP, expires_at=T0 + timedelta(minutes=10))
    clock.advance(minutes=11)
    entry = give(seeded, "red-1", ALICE, CARE, 100)
    assert legs(entry) == {ALICE: (-100, 0), CARE: (100, 100)}
    assert seeded.get_hold(hold.id).status == "expired"
    assert_verified(seeded)


@pytest.mark.parametrize("change", ["freeze", "unfreeze", "set_limits"])
def test_status_and_limit_changes_release_expired_holds_on_both_sides(
    seeded: Ledger, clock: Clock, change: str
) -> None:
    hold = seeded.hold("h-1", debit=ALICE, credit=CARE, amount_minutes=60, code="redemption",
                       operator=OP, expires_at=T0 + timedelta(minutes=10))
    clock.advance(minutes=11)
    if change == "freeze":
        seeded.freeze(ALICE, reason="audit")
    elif change == "unfreeze":
        seeded.unfreeze(ALICE, reason="already open: a no-op")
    else:
        seeded.set_limits(ALICE, floor_minutes=-10, ceiling_minutes=None)
    assert seeded.get_hold(hold.id).status in ("pending", "expired")
    assert balance(seeded, ALICE)[1:3] == (0, 0)
    assert balance(seeded, CARE)[1:3] == (0, 0)
    assert_verified(seeded)


def test_post_hold_after_expiry_is_refused(seeded: Ledger, clock: Clock) -> None:
    expires = T0 + timedelta(minutes=10)
    late = seeded.hold("h-1", debit=ALICE, credit=CARE, amount_minutes=30, code="c",
                       operator=OP, expires_at=expires)
    on_time = seeded.hold("h-2", debit=ALICE, credit=CARE, amount_minutes=30, code="c",
                          operator=OP, expires_at=expires + timedelta(microseconds=1))
    clock.now = expires
    before = dump(seeded.engine)
    with pytest.raises(HoldExpiredError, match=f"hold {late.id} expired at"):
        seeded.post_hold(late.id, idempotency_key="post-1", operator=OP)
    with pytest.raises(HoldExpiredError):
        seeded.void_hold(late.id, idempotency_key="void-1", operator=OP)
    assert dump(seeded.engine) == before
    entry = seeded.post_hold(on_time.id, idempotency_key="post-2", operator=OP)
    assert legs(entry) == {ALICE: (-30, 70), CARE: (30, 30)}
    assert seeded.get_hold(late.id).status == "expired"  # the write swept it
    with pytest.raises(HoldExpiredError):
        seeded.post_hold(late.id, idempotency_key="post-1", operator=OP)
    assert_verified(seeded)


def test_expire_holds_sweeps_each_hold_once(seeded: Ledger, clock: Clock) -> None:
    def hold(key: str, credit: str, minutes: int, expires: datetime | None) -> int:
        return seeded.hold(key, debit=ALICE, credit=credit, amount_minutes=minutes, code="c",
                           operator=OP, expires_at=expires).id

    h1 = hold("h-1", CARE, 10, T0 + timedelta(minutes=5))
    h2 = hold("h-2", BOB, 20, T0 + timedelta(minutes=6))
    h3 = hold("h-3", CARE, 30, T0 + timedelta(minutes=60))
    h4 = hold("h-4", CARE, 5, None)
    assert seeded.expire_holds() == 0

    clock.advance(minutes=7)
    assert seeded.expire_holds() == 2
    before = dump(seeded.engine)
    assert seeded.expire_holds() == 0
    assert dump(seeded.engine) == before

    statuses = [seeded.get_hold(h) for h in (h1, h2, h3, h4)]
    assert [(h.status, h.resolved_at) for h in statuses] == [
        ("expired", clock.now), ("expired", clock.now), ("pending", None), ("pending", None)]
    assert balance(seeded, ALICE) == (100, 35, 0, 65)
    assert balance(seeded, CARE) == (0, 0, 35, 0)
    assert balance(seeded, BOB) == (0, 0, 0, 0)
    assert_verified(seeded)

    clock.advance(hours=1)
    assert seeded.expire_holds() == 1
    assert balance(seeded, ALICE) == (100, 5, 0, 95)
    assert_verified(seeded)


# --- account status and limits ----------------------------------------------------------------


def test_freeze_stops_everything_until_unfrozen(seeded: Ledger) -> None:
    hold = seeded.hold("h-1", debit=ALICE, credit=CARE, amount_minutes=10, code="c",
                       operator=OP)
    frozen = seeded.freeze(ALICE, reason="audit")
    assert (frozen.status, frozen.status_reason) == ("frozen", "audit")
    before = dump(seeded.engine)
    refused: list[Callable[[], object]] = [
        lambda: give(seeded, "t-1", ALICE, BOB, 1),
        lambda: give(seeded, "t-2", ISSUER, ALICE, 1),
        lambda: seeded.hold("h-2", debit=ALICE, credit=BOB, amount_minutes=1, code="c",
                            operator=OP),
        lambda: seeded.hold("h-3", debit=BOB, credit=ALICE, amount_minutes=1, code="c",
                            operator=OP),
        lambda: seeded.post_hold(hold.id, idempotency_key="post-1", operator=OP),
    ]
    for attempt in refused:
        with pytest.raises(AccountStateError, match=f"account {ALICE!r} is frozen"):
            attempt()
    assert dump(seeded.engine) == before
    assert seeded.freeze(ALICE, reason="again").status == "frozen"

    opened = seeded.unfreeze(ALICE, reason="cleared")
    assert (opened.status, opened.status_reason) == ("open", "cleared")
    assert legs(give(seeded, "t-1", ALICE, BOB, 1)) == {ALICE: (-1, 99), BOB: (1, 1)}


def test_close_only_an_empty_account_and_never_reopen_it(seeded: Ledger) -> None:
    before = dump(seeded.engine)
    with pytest.raises(AccountStateError, match="cannot close: 100 minutes posted, 0 held"):
        seeded.close(ALICE, reason="left")
    assert dump(seeded.engine) == before

    give(seeded, "drain", ALICE, ISSUER, 100)
    closed = seeded.close(ALICE, reason="left")
    assert (closed.status, closed.status_reason) == ("closed", "left")
    assert seeded.close(ALICE, reason="again").status == "closed"
    before = dump(seeded.engine)
    with pytest.raises(AccountStateError, match="is closed; cannot make it open"):
        seeded.unfreeze(ALICE, reason="back")
    with pytest.raises(AccountStateError, match="is closed; cannot make it frozen"):
        seeded.freeze(ALICE, reason="x")
    with pytest.raises(AccountStateError, match=f"account {ALICE!r} is closed"):
        give(seeded, "t-1", ISSUER, ALICE, 1)
    # Opening the code again returns the closed account: it does not come back to life.
    assert seeded.open_account(ALICE, "member").status == "closed"
    assert dump(seeded.engine) == before

    # A frozen, empty account may be closed too.
    seeded.freeze(BOB, reason="x")
    assert seeded.close(BOB, reason="gone").status == "closed"


def test_close_is_refused_while_holds_are_pending(seeded: Ledger) -> None:
    hold = seeded.hold("h-1", debit=ALICE, credit=BOB, amount_minutes=10, code="c", operator=OP)
    with pytest.raises(AccountStateError, match="cannot close: 0 minutes posted, 10 held"):
        seeded.close(BOB, reason="left")
    seeded.void_hold(hold.id, idempotency_key="void-1", operator=OP)
    assert seeded.close(BOB, reason="left").status == "closed"


def test_set_limits_and_the_ceiling_counts_held_minutes(seeded: Ledger) -> None:
    view = seeded.set_limits(BOB, floor_minutes=0, ceiling_minutes=50)
    assert (view.floor_minutes, view.ceiling_minutes) == (0, 50)
    give(seeded, "t-1", ISSUER, BOB, 40)
    hold = seeded.hold("h-1", debit=ALICE, credit=BOB, amount_minutes=10, code="c",
                       operator=OP)
    assert balance(seeded, BOB) == (40, 0, 10, 40)

    with pytest.raises(LimitExceededError) as info:
        give(seeded, "t-2", ISSUER, BOB, 1)
    err = info.value
    assert (err.account, err.limit, err.limit_minutes, err.available_minutes,
            err.requested_minutes) == (BOB, "ceiling", 50, 0, 1)
    assert str(err) == (f"account {BOB!r} would receive 1 minutes but only 0 fit under its "
                        "ceiling of 50")
    with pytest.raises(LimitExceededError):
        seeded.hold("h-2", debit=ALICE, credit=BOB, amount_minutes=1, code="c", operator=OP)

    seeded.void_hold(hold.id, idempotency_key="void-1", operator=OP)
    give(seeded, "t-3", ISSUER, BOB, 10)
    assert balance(seeded, BOB) == (50, 0, 0, 50)

    with pytest.raises(LimitExceededError):
        seeded.set_limits(BOB, floor_minutes=0, ceiling_minutes=49)
    with pytest.raises(LimitExceededError):
        seeded.set_limits(BOB, floor_minutes=51, ceiling_minutes=None)
    with pytest.raises(InvalidInputError, match="floor 10 is above ceiling 5") as bad:
        seeded.set_limits(BOB, floor_minutes=10, ceiling_minutes=5)
    assert type(bad.value) is InvalidInputError
    with pytest.raises(InvalidAmountError):
        seeded.set_limits(BOB, floor_minutes=1.5, ceiling_minutes=None)  # type: ignore[arg-type]
    assert seeded.account(BOB).ceiling_minutes == 50

    seeded.set_limits(BOB, floor_minutes=None, ceiling_minutes=None)
    give(seeded, "t-4", BOB, CARE, 1000)
    assert balance(seeded, BOB) == (-950, 0, 0, -950)


def test_a_negative_floor_allows_that_much_overdraft(seeded: Ledger) -> None:
    seeded.open_account("member:dan", "member", floor_minutes=-50)
    assert legs(give(seeded, "t-1", "member:dan", BOB, 50)) == {"member:dan": (-50, -50),
                                                                BOB: (50, 50)}
    with pytest.raises(LimitExceededError) as info:
        give(seeded, "t-2", "member:dan", BOB, 1)
    assert (info.value.available_minutes, info.value.limit_minutes) == (0, -50)


# --- reads ------------------------------------------------------------------------------------


def test_balance_as_of_follows_recording_time(seeded: Ledger, clock: Clock) -> None:
    # "seed" put 100 minutes on Alice's account, recorded at T0.
    t1 = clock.advance(hours=1)
    give(seeded, "late", ISSUER, ALICE, 30, occurred_at=T0 - timedelta(days=1), code="deposit")
    t2 = clock.advance(hours=1)
    give(seeded, "spend", ALICE, BOB, 20)

    def as_of(code: str, at: datetime) -> int:
        found = seeded.balance_as_of(code, at)
        assert found == BalanceAsOf(account=code, recorded_at=at,
                                    posted_minutes=found.posted_minutes)
        return found.posted_minutes

    # The backdated entry is not visible before it was recorded, even after its service date.
    assert as_of(ALICE, T0 - timedelta(days=2)) == 0
    assert as_of(ALICE, T0 - timedelta(hours=12)) == 0
    assert as_of(ALICE, T0 - timedelta(microseconds=1)) == 0
    assert as_of(ALICE, T0) == 100
    assert as_of(ALICE, t1 - timedelta(microseconds=1)) == 100
    assert as_of(ALICE, t1) == 130
    assert as_of(ALICE, t2) == 110
    assert as_of(ALICE, t2 + timedelta(days=365)) == 110
    assert as_of(ISSUER, t1) == -130
    assert as_of(CARE, t2) == 0

    late = [line for line in seeded.statement(ALICE).lines if line.idempotency_key == "late"]
    assert len(late) == 1
    assert (late[0].occurred_at, late[0].recorded_at) == (T0 - timedelta(days=1), t1)
    assert (late[0].amount_minutes, late[0].balance_after_minutes) == (30, 130)


def test_statement_pages_with_a_keyset_cursor(seeded: Ledger, clock: Clock) -> None:
    for i in range(1, 5):
        clock.advance(minutes=1)
        give(seeded, f"s-{i}", ALICE, BOB, i, memo=f"memo {i}")

    def amounts(lines: tuple[StatementLine, ...]) -> list[tuple[int, int]]:
        return [(line.amount_minutes, line.balance_after_minutes) for line in lines]

    first = seeded.statement(ALICE, limit=2)
    assert first.account == ALICE
    assert amounts(first.lines) == [(100, 100), (-1, 99)]
    assert first.next_cursor is not None
    second = seeded.statement(ALICE, after=first.next_cursor, limit=2)
    assert amounts(second.lines) == [(-2, 97), (-3, 94)]
    assert second.next_cursor is not None
    third = seeded.statement(ALICE, after=second.next_cursor, limit=2)
    assert amounts(third.lines) == [(-4, 90)]
    assert third.next_cursor is None

    whole = seeded.statement(ALICE, limit=5)  # exactly one full page: no next page
    assert whole.lines == first.lines + second.lines + third.lines
    assert whole.next_cursor is None
    assert seeded.statement(ALICE, limit=4).next_cursor is not None
    ids = [line.entry_id for line in whole.lines]
    assert ids == sorted(set(ids))

    line = whole.lines[2]
    entry = seeded.entry_by_key("s-2")
    assert (line.entry_id, line.idempotency_key, line.code, line.memo) == (
        entry.id, "s-2", "redemption", "memo 2")
    assert (line.occurred_at, line.recorded_at) == (T0 + timedelta(minutes=2),) * 2
    assert amounts(seeded.statement(BOB).lines) == [(1, 1), (2, 3), (3, 6), (4, 10)]
    empty = seeded.statement(CARE)
    assert (empty.lines, empty.next_cursor) == ((), None)


def test_statement_page_size_is_bounded(seeded: Ledger) -> None:
    for bad in (0, -1, PAGE_SIZE_MAX + 1):
        with pytest.raises(InvalidInputError, match=f"between 1 and {PAGE_SIZE_MAX}") as info:
            seeded.statement(ALICE, limit=bad)
        assert type(info.value) is InvalidInputError
    assert len(seeded.statement(ISSUER, limit=1).lines) == 1
    assert len(seeded.statement(ISSUER, limit=PAGE_SIZE_MAX).lines) == 1
    with pytest.raises(InvalidInputError):
        list(seeded.iter_statement(ALICE, page_size=0))
    with pytest.raises(AccountNotFoundError):
        seeded.statement("ghost")


def test_iter_statement_walks_every_page(seeded: Ledger) -> None:
    seeded.post_many([command(f"b-{i}", (ISSUER, -(i + 1)), (BOB, i + 1)) for i in range(7)])
    lines = list(seeded.iter_statement(BOB, page_size=3))
    assert [line.amount_minutes for line in lines] == [1, 2, 3, 4, 5, 6, 7]
    assert [line.balance_after_minutes for line in lines] == [1, 3, 6, 10, 15, 21, 28]
    assert tuple(lines) == seeded.statement(BOB, limit=PAGE_SIZE_MAX).lines
    assert list(seeded.iter_statement(BOB, page_size=7)) == lines
    assert list(seeded.iter_statement(CARE)) == []


def test_trial_balance_sums_to_zero(seeded: Ledger) -> None:
    give(seeded, "t-1", ALICE, CARE, 30)
    give(seeded, "t-2", ISSUER, BOB, 20)
    trial = seeded.trial_balance()
    assert trial.total_minutes == 0
    assert trial.by_type_minutes == {"station_issued": -120, "member": 90, "institution": 30}
    assert trial.lines == (
        TrialBalanceLine(account=CARE, type="institution", posted_minutes=30),
        TrialBalanceLine(account=ALICE, type="member", posted_minutes=70),
        TrialBalanceLine(account=BOB, type="member", posted_minutes=20),
        TrialBalanceLine(account=ISSUER, type="station_issued", posted_minutes=-120),
    )


def test_verify_after_a_mixed_history(seeded: Ledger, clock: Clock) -> None:
    entry = give(seeded, "t-1", ALICE, BOB, 30)
    seeded.reverse(entry.id, idempotency_key="r-1", operator=OP, reason="x")
    h1 = seeded.hold("h-1", debit=ALICE, credit=CARE, amount_minutes=20, code="c", operator=OP)
    seeded.post_hold(h1.id, idempotency_key="p-1", operator=OP, amount_minutes=5)
    seeded.hold("h-2", debit=ALICE, credit=CARE, amount_minutes=7, code="c", operator=OP)
    seeded.post_many([command("b-1", (ISSUER, -3), (BOB, 2), (CARE, 1))])
    report = seeded.verify()
    assert (report.ok, report.problems) == (True, ())
    assert (report.entries, report.postings) == (5, 11)
    assert balance(seeded, ALICE) == (95, 7, 0, 88)


def test_lookups_of_missing_things(seeded: Ledger) -> None:
    before = dump(seeded.engine)
    with pytest.raises(EntryNotFoundError):
        seeded.entry(999_999)
    with pytest.raises(EntryNotFoundError):
        seeded.entry_by_key("nope")
    with pytest.raises(HoldNotFoundError):
        seeded.get_hold(999_999)
    with pytest.raises(AccountNotFoundError) as info:
        seeded.account("ghost")
    assert info.value.codes == ("ghost",)
    for read in (seeded.balance, seeded.statement):
        with pytest.raises(AccountNotFoundError):
            read("ghost")
    with pytest.raises(AccountNotFoundError):
        seeded.balance_as_of("ghost", T0)
    with pytest.raises(EntryNotFoundError):
        seeded.reverse(999_999, idempotency_key="r", operator=OP, reason="x")
    with pytest.raises(HoldNotFoundError):
        seeded.post_hold(999_999, idempotency_key="p", operator=OP)
    with pytest.raises(HoldNotFoundError):
        seeded.void_hold(999_999, idempotency_key="v", operator=OP)
    assert dump(seeded.engine) == before


# --- transactions the caller controls ---------------------------------------------------------


def test_transaction_commits_several_operations_together(ledger: Ledger) -> None:
    with ledger.transaction() as tx:
        assert isinstance(tx, LedgerTransaction)
        tx.open_accounts([AccountSpec(code=ISSUER, type="station_issued", floor_minutes=None),
                          AccountSpec(code=ALICE, type="member")])
        entry = tx.transfer("t-1", debit=ISSUER, credit=ALICE, amount_minutes=100,
                            code="deposit", operator=OP)
        hold = tx.hold("h-1", debit=ALICE, credit=ISSUER, amount_minutes=40, code="c",
                       operator=OP)
        assert tx.balance(ALICE).available_minutes == 60  # the block sees its own writes
    assert ledger.entry(entry.id) == entry
    assert ledger.get_hold(hold.id) == hold
    assert balance(ledger, ALICE) == (100, 40, 0, 60)
    assert_verified(ledger)


class Boom(Exception):
    pass


def _fail_inside_a_transaction(ledger: Ledger) -> None:
    with ledger.transaction() as tx:
        tx.open_account("member:new", "member")
        tx.transfer("t-1", debit=ALICE, credit="member:new", amount_minutes=30, code="c",
                    operator=OP)
        tx.hold("h-1", debit=ALICE, credit=BOB, amount_minutes=10, code="c", operator=OP)
        raise Boom


def test_transaction_rolls_everything_back_when_the_block_raises(seeded: Ledger) -> None:
    before = dump(seeded.engine)
    with pytest.raises(Boom):
        _fail_inside_a_transaction(seeded)
    assert dump(seeded.engine) == before


def test_a_refusal_inside_a_transaction_keeps_the_earlier_operations(seeded: Ledger) -> None:
    with seeded.transaction() as tx:
        first = tx.transfer("t-1", debit=ALICE, credit=BOB, amount_minutes=30, code="c",
                            operator=OP)
        inside = dump(tx.connection)
        with pytest.raises(LimitExceededError):
            tx.transfer("t-2", debit=ALICE, credit=BOB, amount_minutes=71, code="c",
                        operator=OP)
        with pytest.raises(IdempotencyConflictError):
            tx.transfer("t-1", debit=ALICE, credit=BOB, amount_minutes=31, code="c",
                        operator=OP)
        assert dump(tx.connection) == inside
        assert tx.transfer("t-1", debit=ALICE, credit=BOB, amount_minutes=30, code="c",
                           operator=OP) == first
        tx.transfer("t-3", debit=ALICE, credit=BOB, amount_minutes=70, code="c", operator=OP)
    assert balance(seeded, ALICE) == (0, 0, 0, 0)
    assert balance(seeded, BOB) == (100, 0, 0, 100)
    with pytest.raises(EntryNotFoundError):
        seeded.entry_by_key("t-2")
    assert_verified(seeded)


def test_bind_a_connection_the_caller_commits(seeded: Ledger) -> None:
    with seeded.engine.connect() as conn:
        tx = seeded.bind(conn)
        entry = tx.transfer("t-1", debit=ALICE, credit=BOB, amount_minutes=30, code="c",
                            operator=OP)
        inside = dump(conn)
        with pytest.raises(AccountNotFoundError):
            tx.transfer("t-2", debit=ALICE, credit="ghost", amount_minutes=1, code="c",
                        operator=OP)
        with pytest.raises(LimitExceededError):
            tx.transfer("t-3", debit=ALICE, credit=BOB, amount_minutes=71, code="c",
                        operator=OP)
        assert dump(conn) == inside
        conn.commit()
    assert seeded.entry(entry.id) == entry
    assert balance(seeded, BOB) == (30, 0, 0, 30)

    before = dump(seeded.engine)
    with seeded.engine.connect() as conn:
        seeded.bind(conn).transfer("t-4", debit=ALICE, credit=BOB, amount_minutes=5, code="c",
                                   operator=OP)
        conn.rollback()
    assert dump(seeded.engine) == before


def test_bind_a_session_keeps_the_callers_own_writes(seeded: Ledger) -> None:
    with seeded.engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE app_visits (id INTEGER PRIMARY KEY, note VARCHAR(50))")
    with Session(seeded.engine) as session:
        session.execute(sa.text("INSERT INTO app_visits (id, note) VALUES (1, 'visit')"))
        tx = seeded.bind(session)
        entry = tx.transfer("red-1", debit=ALICE, credit=CARE, amount_minutes=45,
                            code="redemption", operator=OP)
        inside = dump(session.connection())
        with pytest.raises(LimitExceededError):
            tx.transfer("red-2", debit=ALICE, credit=CARE, amount_minutes=56, code="c",
                        operator=OP)
        with pytest.raises(IdempotencyConflictError):
            tx.transfer("red-1", debit=ALICE, credit=CARE, amount_minutes=44,
                        code="redemption", operator=OP)
        assert dump(session.connection()) == inside
        session.commit()
    after = dump(seeded.engine)
    assert after["app_visits"] == [(1, "visit")]
    assert seeded.entry(entry.id) == entry
    assert balance(seeded, ALICE) == (55, 0, 0, 55)


# --- schema -----------------------------------------------------------------------------------


def test_a_ledger_on_an_unmigrated_database_names_the_fix(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        with pytest.raises(SchemaError) as info:
            Ledger(engine)
        assert type(info.value) is SchemaError
        assert isinstance(info.value, RuntimeError)
        message = str(info.value)
        assert "has no timebank schema" in message
        assert "timebank.upgrade(engine)" in message
        assert "timebank db upgrade --db URL" in message
        assert current_revision(engine) is None
        assert dump(engine) == {}  # the check itself created nothing

        upgrade(engine)
        assert current_revision(engine) == head_revision()
        assert Ledger(engine).trial_balance().total_minutes == 0
    finally:
        engine.dispose()


def test_open_migrates_a_new_database_to_head(db_url: str) -> None:
    with Ledger.open(db_url) as ledger:
        assert current_revision(ledger.engine) == head_revision()
        tables = set(sa.inspect(ledger.engine).get_table_names())
        assert {"tb_accounts", "tb_entries", "tb_postings", "tb_holds",
                "alembic_version"} <= tables
        ledger.open_account(ALICE, "member")
    with Ledger.open(db_url) as again:  # reopening an up-to-date database keeps its data
        assert again.account(ALICE).code == ALICE
        assert current_revision(again.engine) == head_revision()


def test_open_refuses_a_database_at_another_revision(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)")
            conn.exec_driver_sql("INSERT INTO alembic_version (version_num) VALUES ('0000')")
        expected = f"is at schema revision 0000, this timebank needs {head_revision()}"
        with pytest.raises(SchemaError, match=expected):
            Ledger(engine)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(SchemaError, match=r"Fix: run timebank\.upgrade"):
                Ledger.open(db_url)
            gc.collect()
        # Ledger.open made the engine, so only it can dispose of it when it refuses.
        leaked = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
        assert leaked == []
        assert dump(engine) == {"alembic_version": [("0000",)]}
    finally:
        engine.dispose()
