"""A small worked example through the public API, printed as it goes."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from timebank.errors import LimitExceededError
from timebank.ledger import Ledger
from timebank.models import AccountSpec, TransferCommand

Say = Callable[[str], object]


def run_demo(url: str, say: Say) -> int:
    say(f"timebank demo: ledger at {url}")
    with Ledger.open(url) as ledger:
        if ledger.trial_balance().lines:
            say("the database already holds a ledger; pass --db with a new file to start afresh")
            return 1
        _open(ledger)
        _deposits(ledger, say)
        _refusal_and_retry(ledger, say)
        _hold_and_reversal(ledger, say)
        _report(ledger, say)
    return 0


def _open(ledger: Ledger) -> None:
    ledger.open_accounts(
        [
            AccountSpec(code="station:gulou:issued", type="station_issued", floor_minutes=None),
            AccountSpec(
                code="institution:sunrise:redeemed", type="institution_redeemed", floor_minutes=None
            ),
            AccountSpec(code="member:li-wei", type="member", ceiling_minutes=90_000),
            AccountSpec(code="member:zhang-min", type="member", ceiling_minutes=90_000),
        ]
    )


def _deposits(ledger: Ledger, say: Say) -> None:
    served = datetime.now(UTC) - timedelta(days=3)
    for key, member, minutes in (
        ("svc-001", "member:li-wei", 120),
        ("svc-002", "member:li-wei", 90),
        ("svc-003", "member:zhang-min", 60),
    ):
        entry = ledger.transfer(
            key,
            debit="station:gulou:issued",
            credit=member,
            amount_minutes=minutes,
            code="deposit",
            operator="op:gulou-1",
            occurred_at=served,
            memo="companionship visit",
        )
        say(f"  deposit {key}: {minutes} min to {member} (entry {entry.id})")


def _refusal_and_retry(ledger: Ledger, say: Say) -> None:
    try:
        ledger.transfer(
            "red-001",
            debit="member:zhang-min",
            credit="institution:sunrise:redeemed",
            amount_minutes=240,
            code="redemption",
            operator="op:sunrise-1",
        )
    except LimitExceededError as refusal:
        say(f"  refused overdraft: {refusal} (nothing was written)")
    # The same command twice, as a station's retry after a timeout would send it.
    redemption = TransferCommand(
        idempotency_key="red-002",
        debit="member:li-wei",
        credit="institution:sunrise:redeemed",
        amount_minutes=150,
        code="redemption",
        operator="op:sunrise-1",
        memo="day care",
    )
    first, again = ledger.post(redemption), ledger.post(redemption)
    say(
        f"  redemption red-002 posted as entry {first.id}; the retry with the same key "
        f"returned entry {again.id} and wrote nothing"
    )


def _hold_and_reversal(ledger: Ledger, say: Say) -> None:
    hold = ledger.hold(
        "book-001",
        debit="member:zhang-min",
        credit="institution:sunrise:redeemed",
        amount_minutes=45,
        code="redemption",
        operator="op:sunrise-1",
        memo="booked bath help",
    )
    say(
        f"  hold {hold.id}: 45 min reserved; available now "
        f"{ledger.balance('member:zhang-min').available_minutes} min"
    )
    posted = ledger.post_hold(
        hold.id, idempotency_key="book-001-done", operator="op:sunrise-1", amount_minutes=30
    )
    say(f"  hold posted for 30 of 45 min (entry {posted.id}); the other 15 are released")
    wrong = ledger.transfer(
        "svc-004",
        debit="station:gulou:issued",
        credit="member:zhang-min",
        amount_minutes=600,
        code="deposit",
        operator="op:gulou-1",
    )
    ledger.reverse(
        wrong.id,
        idempotency_key="svc-004-fix",
        operator="op:gulou-1",
        reason="recorded 600 instead of 60",
    )
    say(f"  entry {wrong.id} (600 min typed by mistake) reversed by a mirror entry")


def _report(ledger: Ledger, say: Say) -> None:
    say("balances (positive: minutes held by the account; system accounts run negative):")
    for line in ledger.trial_balance().lines:
        balance = ledger.balance(line.account)
        say(
            f"  {line.account:<30} posted {balance.posted_minutes:>6}  "
            f"available {balance.available_minutes:>6}"
        )
    say(f"  {'total':<30} {ledger.trial_balance().total_minutes:>13}")
    say("statement of member:zhang-min (recording order):")
    for item in ledger.iter_statement("member:zhang-min"):
        say(
            f"  #{item.entry_id:<3} {item.code:<11} {item.amount_minutes:>+6}  "
            f"balance {item.balance_after_minutes:>5}  served {item.occurred_at:%Y-%m-%d}"
        )
    report = ledger.verify()
    say(
        f"integrity: {'ok' if report.ok else report.problems} "
        f"({report.entries} entries, {report.postings} postings)"
    )
