"""Holds: two-phase transfers, as TigerBeetle's pending transfers. A hold reserves minutes on
the debit account (``held_out``) and room on the credit account (``held_in``); it resolves
exactly once: posted (at most the held minutes), voided, or expired."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, insert, select, update
from sqlalchemy import exc as sa_exc

from timebank import _accounts, _entries, errors
from timebank._db import KeyRace, violated
from timebank._entries import Clock, Draft
from timebank.models import EntryCommand, HoldCommand, HoldView, PostingSpec
from timebank.schema import accounts, holds


def create(conn: Connection, cmd: HoldCommand, clock: Clock, *, check_replays: bool) -> int:
    if check_replays:
        existing = _by_key(conn, cmd.idempotency_key)
        if existing is not None:
            _check_replay(cmd, existing)
            return existing.id
    locked = _accounts.lock(conn, (cmd.debit, cmd.credit), clock())
    now = clock()
    debit, credit = locked[cmd.debit], locked[cmd.credit]
    try:
        inserted = conn.execute(insert(holds).values(_row(cmd, debit.id, credit.id, now)))
    except sa_exc.IntegrityError as exc:
        if violated(exc, "idempotency_key"):
            raise KeyRace from exc
        raise
    debit.require_open()
    credit.require_open()
    if cmd.expires_at is not None and cmd.expires_at <= now:
        raise errors.HoldExpiredError(
            f"expires_at {cmd.expires_at.isoformat()} is not after now ({now.isoformat()})"
        )
    _reserve(debit, credit, cmd.amount_minutes)
    if cmd.expires_at is not None:
        for account in (debit, credit):
            if account.next_hold_expiry_at is None or cmd.expires_at < account.next_hold_expiry_at:
                account.next_hold_expiry_at = cmd.expires_at
                account.expiry_dirty = True
    _accounts.write_back(conn, locked.values())
    assert inserted.inserted_primary_key is not None, "an INSERT returns its primary key"
    return int(inserted.inserted_primary_key[0])


def _row(cmd: HoldCommand, debit_id: int, credit_id: int, now: datetime) -> dict[str, Any]:
    return {
        "idempotency_key": cmd.idempotency_key,
        "code": cmd.code,
        "debit_account_id": debit_id,
        "credit_account_id": credit_id,
        "amount_minutes": cmd.amount_minutes,
        "status": "pending",
        "operator": cmd.operator,
        "memo": cmd.memo,
        "metadata": cmd.metadata,
        "created_at": now,
        "expires_at": cmd.expires_at,
    }


def _reserve(debit: _accounts.LockedAccount, credit: _accounts.LockedAccount, amount: int) -> None:
    """Check both limits as if the hold were posted, then reserve."""
    for account, minutes in ((debit, -amount), (credit, amount)):
        refusal = _accounts.limit_refusal(account, minutes)
        if refusal is not None:
            raise refusal
    debit.held_out_minutes += amount
    credit.held_in_minutes += amount
    debit.version += 1
    credit.version += 1


def _check_replay(cmd: HoldCommand, view: HoldView) -> None:
    fields = [
        name
        for name in (
            "code",
            "debit",
            "credit",
            "amount_minutes",
            "operator",
            "memo",
            "metadata",
            "expires_at",
        )
        if getattr(cmd, name) != getattr(view, name)
    ]
    if fields:
        raise errors.IdempotencyConflictError(cmd.idempotency_key, fields)


def resolve(
    conn: Connection,
    hold_id: int,
    *,
    key: str,
    post_minutes: int | None,
    void: bool,
    operator: str,
    memo: str,
    occurred_at: datetime | None,
    clock: Clock,
) -> int | None:
    """Post (``void=False``) or void a pending hold; returns the posted entry id, if any.

    A repeated call with the same ``key`` returns what the first call did and writes nothing.
    """
    ids = conn.execute(
        select(holds.c.debit_account_id, holds.c.credit_account_id).where(holds.c.id == hold_id)
    ).first()
    if ids is None:
        raise errors.HoldNotFoundError(f"no hold with id {hold_id}")
    # One instant for the whole operation: the hold is live or expired once, not expired
    # again by a later clock reading while its minutes are being released.
    now = clock()
    frozen_clock: Clock = lambda: now  # noqa: E731
    # Accounts first, in the canonical order, then the hold row: the library's lock order.
    # Locking also expires the hold if its time has passed.
    locked = _accounts.lock_ids(conn, tuple(ids), now)
    # Locking may have expired other holds of these accounts: keep that, whatever follows.
    _accounts.write_back(conn, locked.values())
    hold = conn.execute(select(holds).where(holds.c.id == hold_id).with_for_update()).one()
    if hold.status != "pending":
        request = _Resolution(key, void, post_minutes, operator, memo, occurred_at)
        return _resolved_replay(conn, hold, request)
    if hold.expires_at is not None and hold.expires_at <= now:
        raise errors.HoldExpiredError(f"hold {hold_id} expired at {hold.expires_at.isoformat()}")
    amount = hold.amount_minutes if post_minutes is None else post_minutes
    if not void and amount > hold.amount_minutes:
        raise errors.InvalidAmountError(
            f"cannot post {amount} minutes from hold {hold_id} of {hold.amount_minutes}"
        )
    by_id = {a.id: a for a in locked.values()}
    pair = (by_id[hold.debit_account_id], by_id[hold.credit_account_id])
    _release(*pair, hold.amount_minutes)
    # The hold leaves the pending set, so its expiry must leave the accounts' hint: a stale
    # hint falls due later and the next lock rewrites the rows, even for a replay of this.
    # The hint is the soonest pending expiry, so only an account whose hint is this hold's
    # expiry can change (no query for the others: a site's account holds every booking).
    if hold.expires_at is not None:
        due_here = [a for a in pair if a.next_hold_expiry_at == hold.expires_at]
        _accounts.refresh_next_expiry(conn, due_here, leaving=hold_id)
    _accounts.write_back(conn, locked.values())
    entry_id = None
    if not void:
        entry_id = _post_from(
            conn,
            hold,
            key=key,
            amount=amount,
            operator=operator,
            memo=memo,
            occurred_at=occurred_at,
            clock=frozen_clock,
        )
    _mark(
        conn,
        hold_id,
        _Resolution(key, void, post_minutes, operator, memo, occurred_at),
        entry_id=entry_id,
        now=now,
    )
    return entry_id


def _release(debit: _accounts.LockedAccount, credit: _accounts.LockedAccount, amount: int) -> None:
    debit.held_out_minutes -= amount
    credit.held_in_minutes -= amount
    debit.version += 1
    credit.version += 1


def _post_from(
    conn: Connection,
    hold: Row[Any],
    *,
    key: str,
    amount: int,
    operator: str,
    memo: str,
    occurred_at: datetime | None,
    clock: Clock,
) -> int:
    codes: dict[int, str] = dict(
        conn.execute(
            select(accounts.c.id, accounts.c.code).where(
                accounts.c.id.in_((hold.debit_account_id, hold.credit_account_id))
            )
        ).all()
    )
    cmd = EntryCommand(
        idempotency_key=key,
        code=hold.code,
        operator=operator,
        memo=memo,
        occurred_at=occurred_at,
        postings=(
            PostingSpec(account=codes[hold.debit_account_id], amount_minutes=-amount),
            PostingSpec(account=codes[hold.credit_account_id], amount_minutes=amount),
        ),
    )
    [entry_id], created = _entries.post(conn, [Draft(cmd)], clock, check_replays=True)
    if not created:
        # The key belongs to an entry that did not come from this hold.
        raise errors.IdempotencyConflictError(key, ["hold"])
    return entry_id


@dataclass(frozen=True, slots=True)
class _Resolution:
    key: str
    void: bool
    post_minutes: int | None
    operator: str
    memo: str
    occurred_at: datetime | None


def _resolved_replay(conn: Connection, hold: Row[Any], request: _Resolution) -> int | None:
    """A resolved hold: the same request again is a replay; anything else is refused."""
    if hold.status == "expired":
        raise errors.HoldExpiredError(f"hold {hold.id} expired at {hold.expires_at.isoformat()}")
    wanted = "voided" if request.void else "posted"
    if hold.resolution_key != request.key or hold.status != wanted:
        raise errors.HoldResolvedError(f"hold {hold.id} is already {hold.status}")
    if request.void:
        fields = [
            name
            for name, asked, stored in (
                ("operator", request.operator, hold.resolved_by),
                ("reason", request.memo, hold.resolution_memo),
            )
            if asked != stored
        ]
        if fields:
            raise errors.IdempotencyConflictError(request.key, fields)
        return None
    [entry] = _entries.load(conn, [hold.posted_entry_id])
    posted = max(p.amount_minutes for p in entry.postings)
    fields = []
    if posted != (hold.amount_minutes if request.post_minutes is None else request.post_minutes):
        fields.append("amount_minutes")
    if request.operator != entry.operator:
        fields.append("operator")
    if request.memo != entry.memo:
        fields.append("memo")
    if request.occurred_at is not None and request.occurred_at != entry.occurred_at:
        fields.append("occurred_at")
    if fields:
        raise errors.IdempotencyConflictError(request.key, fields)
    return entry.id


def _mark(
    conn: Connection,
    hold_id: int,
    request: _Resolution,
    *,
    entry_id: int | None,
    now: datetime,
) -> None:
    key = request.key
    try:
        done = conn.execute(
            update(holds)
            .where(holds.c.id == hold_id, holds.c.status == "pending")
            .values(
                status="voided" if request.void else "posted",
                resolved_at=now,
                resolution_key=key,
                resolved_by=request.operator,
                resolution_memo=request.memo,
                posted_entry_id=entry_id,
            )
        ).rowcount
    except sa_exc.IntegrityError as exc:
        if violated(exc, "resolution_key"):
            raise errors.IdempotencyConflictError(key, ["hold"]) from exc
        raise
    if done != 1:
        raise errors.HoldResolvedError(f"hold {hold_id} was resolved concurrently")


def expire_all(conn: Connection, clock: Clock, *, limit: int) -> int:
    """Expire pending holds past their expiry, touching at most about ``limit`` holds' accounts;
    return how many holds expired."""
    now = clock()
    rows = conn.execute(
        select(holds.c.debit_account_id, holds.c.credit_account_id)
        .where(holds.c.status == "pending", holds.c.expires_at <= now)
        .order_by(holds.c.expires_at)
        .limit(limit)
    ).all()
    if not rows:
        return 0
    expired: list[int] = []
    locked = _accounts.lock_ids(conn, {i for row in rows for i in row}, now, expired=expired)
    _accounts.write_back(conn, locked.values())
    return sum(expired)


def _by_key(conn: Connection, key: str) -> HoldView | None:
    # A locking read sees the latest committed row even under REPEATABLE READ. It locks the
    # hold row only: accounts are locked by the writers, in their canonical order.
    hold_id = conn.execute(
        select(holds.c.id).where(holds.c.idempotency_key == key).with_for_update(read=True)
    ).scalar()
    if hold_id is None:
        return None
    return load(conn, holds.c.id == hold_id)[0]


def load(conn: Connection, where: Any) -> list[HoldView]:
    debit = accounts.alias("debit")
    credit = accounts.alias("credit")
    query = (
        select(holds, debit.c.code.label("debit_code"), credit.c.code.label("credit_code"))
        .join(debit, debit.c.id == holds.c.debit_account_id)
        .join(credit, credit.c.id == holds.c.credit_account_id)
        .where(where)
        .order_by(holds.c.id)
    )
    return [
        HoldView(
            id=r["id"],
            idempotency_key=r["idempotency_key"],
            code=r["code"],
            debit=r["debit_code"],
            credit=r["credit_code"],
            amount_minutes=r["amount_minutes"],
            status=r["status"],
            operator=r["operator"],
            memo=r["memo"],
            metadata=r["metadata"],
            created_at=r["created_at"],
            expires_at=r["expires_at"],
            resolved_at=r["resolved_at"],
            resolved_by=r["resolved_by"],
            resolution_memo=r["resolution_memo"],
            posted_entry_id=r["posted_entry_id"],
        )
        for r in conn.execute(query).mappings()
    ]
