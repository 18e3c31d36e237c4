"""Reads. Each is bounded: by one row, one index probe, or one page."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    ColumnElement,
    Connection,
    RowMapping,
    and_,
    bindparam,
    func,
    or_,
    select,
    tuple_,
)

from timebank import _collector, errors
from timebank.models import (
    AccountView,
    BalanceAsOf,
    BalanceView,
    IntegrityReport,
    StatementLine,
    StatementPage,
    TrialBalance,
    TrialBalanceLine,
)
from timebank.schema import accounts, entries, holds, postings


def account(conn: Connection, code: str) -> AccountView:
    row = conn.execute(select(accounts).where(accounts.c.code == code)).mappings().first()
    if row is None:
        raise errors.AccountNotFoundError([code])
    return AccountView(**{f: row[f] for f in AccountView.model_fields})


_BALANCE = select(
    accounts.c.id,
    accounts.c.posted_minutes,
    accounts.c.held_out_minutes,
    accounts.c.held_in_minutes,
    accounts.c.version,
    accounts.c.next_hold_expiry_at,
).where(accounts.c.code == bindparam("code"))


def balance(conn: Connection, code: str, now: datetime) -> BalanceView:
    """Constant time: the materialised row. Holds past their expiry no longer reserve
    anything even before a writer sweeps them, so they are left out here too."""
    row = conn.execute(_BALANCE, {"code": code}).first()
    if row is None:
        raise errors.AccountNotFoundError([code])
    held_out, held_in = row.held_out_minutes, row.held_in_minutes
    if row.next_hold_expiry_at is not None and row.next_hold_expiry_at <= now:
        held_out, held_in = _live_holds(conn, row.id, now)
    return BalanceView.model_construct(
        account=code,
        posted_minutes=row.posted_minutes,
        held_out_minutes=held_out,
        held_in_minutes=held_in,
        available_minutes=row.posted_minutes - held_out,
        version=row.version,
    )


def _live_holds(conn: Connection, account_id: int, now: datetime) -> tuple[int, int]:
    live = and_(
        holds.c.status == "pending", or_(holds.c.expires_at.is_(None), holds.c.expires_at > now)
    )
    out = conn.execute(
        select(func.coalesce(func.sum(holds.c.amount_minutes), 0)).where(
            live, holds.c.debit_account_id == account_id
        )
    ).scalar_one()
    inn = conn.execute(
        select(func.coalesce(func.sum(holds.c.amount_minutes), 0)).where(
            live, holds.c.credit_account_id == account_id
        )
    ).scalar_one()
    return int(out), int(inn)


def balance_as_of(conn: Connection, code: str, recorded_at: datetime) -> BalanceAsOf:
    """The posted balance the ledger showed at ``recorded_at``: one probe of the running
    balances by (account, recorded_at), whatever the length of the history."""
    minutes = posted_minutes_at(conn, _account_id(conn, code), recorded_at)
    return BalanceAsOf(account=code, recorded_at=recorded_at, posted_minutes=minutes)


def posted_minutes_at(conn: Connection, account_id: int, moment: datetime) -> int:
    """The account's posted balance at ``moment`` (recording time): the running balance of
    its last posting recorded by then, one probe of the index (account, recorded_at, entry)."""
    after = conn.execute(
        select(postings.c.balance_after_minutes)
        .where(postings.c.account_id == account_id, postings.c.recorded_at <= moment)
        .order_by(postings.c.recorded_at.desc(), postings.c.entry_id.desc())
        .limit(1)
    ).scalar()
    return int(after or 0)


def _account_id(conn: Connection, code: str) -> int:
    account_id = conn.execute(select(accounts.c.id).where(accounts.c.code == code)).scalar()
    if account_id is None:
        raise errors.AccountNotFoundError([code])
    return int(account_id)


def statement(conn: Connection, code: str, after: int | None, limit: int) -> StatementPage:
    """One page of an account's postings in recording order. Keyset pagination on the index
    (account, recorded_at, entry): ``after`` is the entry id of the previous page's last line,
    so a page costs the same whatever the length of the history."""
    account_id = _account_id(conn, code)
    query = (
        select(
            postings.c.entry_id,
            entries.c.idempotency_key,
            entries.c.code,
            entries.c.occurred_at,
            postings.c.recorded_at,
            entries.c.memo,
            postings.c.amount_minutes,
            postings.c.balance_after_minutes,
        )
        .join(entries, entries.c.id == postings.c.entry_id)
        .where(postings.c.account_id == account_id)
        .order_by(postings.c.recorded_at, postings.c.entry_id)
        .limit(limit + 1)
    )
    if after is not None:
        cursor_at = (
            select(postings.c.recorded_at)
            .where(postings.c.entry_id == after, postings.c.account_id == account_id)
            .scalar_subquery()
        )
        query = query.where(
            postings.c.recorded_at >= cursor_at,
            or_(postings.c.recorded_at > cursor_at, postings.c.entry_id > after),
        )
    rows = conn.execute(query).all()
    lines = tuple(
        StatementLine(
            entry_id=r[0],
            idempotency_key=r[1],
            code=r[2],
            occurred_at=r[3],
            recorded_at=r[4],
            memo=r[5],
            amount_minutes=r[6],
            balance_after_minutes=r[7],
        )
        for r in rows[:limit]
    )
    next_cursor = lines[-1].entry_id if len(rows) > limit else None
    return StatementPage(account=code, lines=lines, next_cursor=next_cursor)


def trial_balance(conn: Connection) -> TrialBalance:
    """Every account's posted balance, by code. A province has a million accounts: each
    line is built as its row is read, so a list of every row is never held beside the
    lines. (Not a server-side cursor: reads run outside a transaction on PostgreSQL.)"""
    result = conn.execute(
        select(accounts.c.code, accounts.c.type, accounts.c.posted_minutes).order_by(
            accounts.c.code
        )
    )
    by_type: dict[str, int] = {}
    lines = []
    with _collector.paused():  # every line made is kept
        for code, kind, posted in result:
            by_type[kind] = by_type.get(kind, 0) + posted
            lines.append(TrialBalanceLine(account=code, type=kind, posted_minutes=posted))
    return TrialBalance(
        lines=tuple(lines), by_type_minutes=by_type, total_minutes=sum(by_type.values())
    )


def verify(conn: Connection) -> IntegrityReport:
    """Replay the journal against the materialised state (an audit: reads everything)."""
    problems: list[str] = []
    sums = dict(
        conn.execute(
            select(postings.c.account_id, func.sum(postings.c.amount_minutes)).group_by(
                postings.c.account_id
            )
        ).all()
    )
    last = dict(
        conn.execute(
            select(postings.c.account_id, postings.c.balance_after_minutes).where(
                tuple_(postings.c.account_id, postings.c.entry_id).in_(
                    select(postings.c.account_id, func.max(postings.c.entry_id)).group_by(
                        postings.c.account_id
                    )
                )
            )
        ).all()
    )
    held_out = _held_by(conn, holds.c.debit_account_id)
    held_in = _held_by(conn, holds.c.credit_account_id)
    for row in conn.execute(select(accounts)).mappings():
        account_id, code = row["id"], row["code"]
        replayed = int(sums.get(account_id, 0))
        if row["posted_minutes"] != replayed or last.get(account_id, 0) != replayed:
            problems.append(
                f"{code}: materialised {row['posted_minutes']}, "
                f"postings sum {replayed}, last running {last.get(account_id, 0)}"
            )
        if (row["held_out_minutes"], row["held_in_minutes"]) != (
            held_out.get(account_id, 0),
            held_in.get(account_id, 0),
        ):
            problems.append(
                f"{code}: held {row['held_out_minutes']}/{row['held_in_minutes']} "
                f"!= pending holds {held_out.get(account_id, 0)}/"
                f"{held_in.get(account_id, 0)}"
            )
        _check_limits(row, problems)
    bad_entries = (
        conn.execute(
            select(postings.c.entry_id)
            .group_by(postings.c.entry_id)
            .having(or_(func.sum(postings.c.amount_minutes) != 0, func.count() < 2))
            .limit(100)
        )
        .scalars()
        .all()
    )
    problems.extend(f"entry {e}: postings do not balance" for e in bad_entries)
    n_entries = conn.execute(select(func.count()).select_from(entries)).scalar_one()
    n_with_postings = conn.execute(
        select(func.count(func.distinct(postings.c.entry_id)))
    ).scalar_one()
    if n_entries != n_with_postings:
        problems.append(f"{n_entries - n_with_postings} entries have no postings")
    total = sum(int(v) for v in sums.values())
    if total != 0:
        problems.append(f"all postings sum to {total}, not zero")
    n_postings = conn.execute(select(func.count()).select_from(postings)).scalar_one()
    return IntegrityReport(
        ok=not problems, problems=tuple(problems), entries=n_entries, postings=n_postings
    )


def _held_by(conn: Connection, column: ColumnElement[int]) -> dict[int, int]:
    return {
        k: int(v)
        for k, v in conn.execute(
            select(column, func.sum(holds.c.amount_minutes))
            .where(holds.c.status == "pending")
            .group_by(column)
        )
    }


def _check_limits(row: RowMapping, problems: list[str]) -> None:
    posted, out, inn = row["posted_minutes"], row["held_out_minutes"], row["held_in_minutes"]
    floor, ceiling, code = row["floor_minutes"], row["ceiling_minutes"], row["code"]
    if floor is not None and posted - out < floor:
        problems.append(f"{code}: {posted - out} available is below its floor {floor}")
    if ceiling is not None and posted + inn > ceiling:
        problems.append(f"{code}: {posted + inn} is above its ceiling {ceiling}")
