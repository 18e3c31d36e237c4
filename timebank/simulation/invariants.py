"""The invariants a simulated (or any) time bank must satisfy, checked on the database."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import Connection, func, select

from timebank.bank import _lots, _redeem
from timebank.bank._ctx import programme_row
from timebank.bank.api import TimeBank
from timebank.bank.schema import members, redemptions, regions
from timebank.schema import accounts

#: At most this many problems of one kind are listed (the counts are complete).
LISTED_MAX = 20


class InvariantReport(BaseModel):
    """What :func:`check_invariants` found. ``ok`` when every check holds."""

    model_config = ConfigDict(frozen=True)

    ok: bool
    #: ``ledger.verify()``: every posting and hold replayed against the balances.
    verify_ok: bool
    entries: int
    postings: int
    #: Members whose ledger balance differs from the sum of their open lots.
    members_checked: int
    member_lot_mismatches: int
    #: Region pools whose balance differs from the sum of their pool lots.
    pools_checked: int
    pool_lot_mismatches: int
    #: The sum of every account's balance (the trial balance): always 0.
    trial_balance_total: int
    #: Accounts whose held minutes exceed what their balance holds above the floor.
    over_held_accounts: int
    #: Redemptions whose clearing rows differ from their lot uses by origin site.
    clearing_row_mismatches: int
    problems: tuple[str, ...]

    def render(self) -> str:
        verdict = "all hold" if self.ok else f"{len(self.problems)}+ problems"
        lines = [
            f"invariants: {verdict}",
            f"  ledger.verify(): {'ok' if self.verify_ok else 'FAILED'} "
            f"({self.entries:,} entries, {self.postings:,} postings)",
            f"  member balance == open lots: {self.members_checked - self.member_lot_mismatches:,}"
            f"/{self.members_checked:,}",
            f"  pool balance == pool lots: {self.pools_checked - self.pool_lot_mismatches:,}"
            f"/{self.pools_checked:,}",
            f"  trial balance total: {self.trial_balance_total} (must be 0)",
            f"  accounts holding more than they have: {self.over_held_accounts}",
            f"  redemptions whose clearing rows differ from their lot uses: "
            f"{self.clearing_row_mismatches}",
        ]
        lines += [f"  ! {problem}" for problem in self.problems]
        return "\n".join(lines)


def check_invariants(bank: TimeBank, programme: str) -> InvariantReport:
    """Check, on the database behind ``bank``: ``ledger.verify()``; every member's balance
    equals the sum of their open lots (what ``bank.lots_total`` reads); every region pool's
    balance equals its pool lots (``bank.pool_lots_total``); all balances sum to zero; no
    account holds more minutes than it has above its floor; every redemption's clearing
    rows are its lot uses by origin site. Reads grouped sums, never the
    journal into memory (``verify`` aside, which the ledger runs in the database)."""
    report = bank.ledger.verify()
    problems = [f"verify: {p}" for p in report.problems[:LISTED_MAX]]
    found = bank._read(lambda conn: _sums(conn, programme))
    member_bad, pool_bad, total, over_held, checked_members, checked_pools = found
    clearing_bad = bank._read(lambda conn: _clearing_rows(conn, programme))
    problems += [
        f"member {m}: balance {b}, open lots {lot}" for m, b, lot in member_bad[:LISTED_MAX]
    ]
    problems += [f"pool {r}: balance {b}, pool lots {lot}" for r, b, lot in pool_bad[:LISTED_MAX]]
    if total != 0:
        problems.append(f"trial balance sums to {total}, not 0")
    problems += [f"account {code}: over-held" for code in over_held[:LISTED_MAX]]
    problems += [f"redemption entry {e}: clearing rows differ" for e in clearing_bad[:LISTED_MAX]]
    ok = (report.ok and not member_bad and not pool_bad and total == 0 and not over_held
          and not clearing_bad)
    return InvariantReport(
        ok=ok,
        verify_ok=report.ok,
        entries=report.entries,
        postings=report.postings,
        members_checked=checked_members,
        member_lot_mismatches=len(member_bad),
        pools_checked=checked_pools,
        pool_lot_mismatches=len(pool_bad),
        trial_balance_total=total,
        over_held_accounts=len(over_held),
        clearing_row_mismatches=len(clearing_bad),
        problems=tuple(problems),
    )


Mismatch = tuple[int | str, int, int]


def _clearing_rows(conn: Connection, programme: str) -> list[int]:
    """The programme's redemptions (entry ids) whose clearing rows differ from their lot
    uses."""
    programme_id = programme_row(conn, programme).id
    differing = _redeem.differing_origins(conn, redemptions.c.programme_id == programme_id)
    return sorted({row.entry_id for _, row in differing})


def _sums(
    conn: Connection, programme: str
) -> tuple[list[Mismatch], list[Mismatch], int, list[str], int, int]:
    programme_id = programme_row(conn, programme).id
    checked_members, member_bad = _lot_mismatches(
        conn, _lots.MEMBER, members.c.id, members.c.account_id, programme_id
    )
    checked_pools, pool_bad = _lot_mismatches(
        conn, _lots.POOL, regions.c.code, regions.c.pool_account_id, programme_id
    )
    total = int(
        conn.execute(select(func.coalesce(func.sum(accounts.c.posted_minutes), 0))).scalar_one()
    )
    over_held = [
        str(code)
        for code in conn.execute(
            select(accounts.c.code)
            .where(
                accounts.c.floor_minutes.is_not(None),
                accounts.c.posted_minutes - accounts.c.held_out_minutes < accounts.c.floor_minutes,
            )
            .order_by(accounts.c.code)
            .limit(LISTED_MAX)
        ).scalars()
    ]
    return member_bad, pool_bad, total, over_held, checked_members, checked_pools


def _lot_mismatches(
    conn: Connection, holder: _lots.Holder, label: Any, account_id: Any, programme_id: int
) -> tuple[int, list[Mismatch]]:
    """How many holders (members or pools, named by ``label``) were checked, and those
    whose ledger balance differs from the sum of their open lots, streamed row by row."""
    table = label.table
    lot_sums = (
        select(holder.owner, func.sum(holder.table.c.remaining_minutes).label("minutes"))
        .group_by(holder.owner)
        .subquery()
    )
    rows = conn.execute(
        select(label, accounts.c.posted_minutes, func.coalesce(lot_sums.c.minutes, 0))
        .join(accounts, accounts.c.id == account_id)
        .outerjoin(lot_sums, lot_sums.c[holder.owner.name] == table.c.id)
        .where(table.c.programme_id == programme_id)
        .order_by(label)
    )
    checked = 0
    bad: list[Mismatch] = []
    for name, balance, lot_total in rows:
        checked += 1
        if int(balance) != int(lot_total):
            bad.append((name, int(balance), int(lot_total)))
    return checked, bad
